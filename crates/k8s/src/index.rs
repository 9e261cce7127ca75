//! The jobs declared in the cluster, indexed: a pure structure fed by the ConfigMap watch.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubeci_spec::tenancy::{self, NamespaceRules};
use kubeci_spec::{ConfigMapData, Job, LoadOptions, LoadedJob};

/// A ConfigMap's identity and version, to tell a new version from one already seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigMapKey {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Declared {
    pub resource_version: String,
    /// The job as its ConfigMap declares it.
    original: Arc<LoadedJob>,
    /// The job as kubeci uses it: the original, or, when an earlier ConfigMap declares
    /// the same job, the original marked as a repeat (invalid, see `kubeci_spec::shadowed`).
    pub job: Arc<LoadedJob>,
    /// The valid job, shared with webhook matching without a copy.
    pub spec: Option<Arc<Job>>,
    /// Its repository (`host/owner/name`, see `GitUrl::repository_key`).
    pub repository: Option<String>,
    /// The job before check names are decided: `job`, unless another job of the
    /// repository keeps its check name (`kubeci_spec::checkname`).
    unnamed: Arc<LoadedJob>,
    /// The name its builds are reported under on GitHub, while it is valid.
    pub check_name: Option<String>,
    /// The ConfigMap's uid, for the Events about it.
    pub uid: Option<String>,
    /// When the ConfigMap was created (seconds since the epoch), if known.
    created: Option<i64>,
}

/// The jobs of every watched ConfigMap, valid or not.
#[derive(Debug, Clone, Default)]
pub struct JobIndex {
    by_configmap: BTreeMap<ConfigMapKey, Declared>,
    /// The ConfigMaps declaring each (namespace, job name), in name order: the first
    /// valid one is the job, the others repeats.
    by_job: BTreeMap<(String, String), std::collections::BTreeSet<ConfigMapKey>>,
    /// The ConfigMaps declaring a job of each repository, valid before check names are
    /// decided: whose check names depend on each other.
    by_repository: BTreeMap<String, std::collections::BTreeSet<ConfigMapKey>>,
    /// The ConfigMaps whose job lost its check name since [`JobIndex::take_named_out`]
    /// was last called: their Warning Events are owed.
    named_out: Vec<ConfigMapKey>,
    /// What each Namespace allows (`kubeci_spec::tenancy`), when tenancy is on; `None`:
    /// every namespace builds anything (`--tenancy open`).
    tenancy: Option<BTreeMap<String, NamespaceRules>>,
}

/// The (namespace, job name) a declaration takes, if it could be read.
fn job_key(job: &LoadedJob) -> Option<(String, String)> {
    Some((job.namespace.clone(), job.name.clone()?))
}

/// What an update changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new or changed job; `errors` is true when it cannot be used.
    Updated { errors: bool },
    /// The same version as before: nothing to do.
    Unchanged,
}

impl JobIndex {
    /// An index whose jobs build only where their Namespaces allow them; no Namespace does
    /// until [`JobIndex::set_namespace`] says what it allows.
    pub fn with_tenancy() -> JobIndex {
        JobIndex {
            tenancy: Some(BTreeMap::new()),
            ..JobIndex::default()
        }
    }

    /// Reads a ConfigMap's job and records it under the ConfigMap.
    pub fn upsert(
        &mut self,
        configmap: ConfigMapData<'_>,
        resource_version: &str,
        options: &LoadOptions,
    ) -> Change {
        self.upsert_created(configmap, resource_version, None, options)
    }

    /// [`JobIndex::upsert`] of a ConfigMap created at `created` (seconds since the epoch):
    /// of two jobs declaring one check name, the older keeps it.
    pub fn upsert_created(
        &mut self,
        configmap: ConfigMapData<'_>,
        resource_version: &str,
        created: Option<i64>,
        options: &LoadOptions,
    ) -> Change {
        let key = ConfigMapKey {
            namespace: configmap.namespace.to_owned(),
            name: configmap.name.to_owned(),
        };
        if self
            .by_configmap
            .get(&key)
            .is_some_and(|d| d.resource_version == resource_version)
        {
            return Change::Unchanged;
        }
        let job = Arc::new(kubeci_spec::load_configmap(configmap, options));
        let previous = self.remove_key(&key);
        if let Some(group) = job_key(&job) {
            self.by_job.entry(group).or_default().insert(key.clone());
        }
        self.by_configmap.insert(
            key.clone(),
            Declared {
                resource_version: resource_version.to_owned(),
                original: Arc::clone(&job),
                job: Arc::clone(&job),
                spec: None,
                repository: None,
                unnamed: Arc::clone(&job),
                check_name: None,
                uid: previous.as_ref().and_then(|p| p.uid.clone()),
                created,
            },
        );
        for group in [previous.and_then(|p| job_key(&p.original)), job_key(&job)]
            .into_iter()
            .flatten()
        {
            self.settle(&group);
        }
        let errors = self
            .by_configmap
            .get(&key)
            .is_none_or(|d| d.job.has_errors());
        Change::Updated { errors }
    }

    /// Records the uid of ConfigMap `namespace/name`, for the Events about it.
    pub fn set_uid(&mut self, namespace: &str, name: &str, uid: Option<String>) {
        let key = ConfigMapKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        if let Some(declared) = self.by_configmap.get_mut(&key) {
            declared.uid = uid;
        }
    }

    /// The uid of a ConfigMap in the index.
    pub fn uid(&self, key: &ConfigMapKey) -> Option<String> {
        self.by_configmap.get(key)?.uid.clone()
    }

    /// Records what Namespace `name` allows now (`None`: it is gone, or not seen), and
    /// decides again the jobs it concerns (declared there, or building there). The
    /// ConfigMaps whose job it now refuses, or refuses for other reasons than before.
    pub fn set_namespace(
        &mut self,
        name: &str,
        rules: Option<NamespaceRules>,
    ) -> Vec<ConfigMapKey> {
        let Some(known) = self.tenancy.as_mut() else {
            return Vec::new();
        };
        let changed = match rules {
            Some(rules) => known.insert(name.to_owned(), rules.clone()) != Some(rules),
            None => known.remove(name).is_some(),
        };
        if !changed {
            return Vec::new();
        }
        let groups: Vec<(String, String)> = self
            .by_job
            .iter()
            .filter(|(group, keys)| group.0 == name || keys.iter().any(|k| k.namespace == name))
            .map(|(group, _)| group.clone())
            .collect();
        let refusal = |index: &JobIndex, key: &ConfigMapKey| {
            index
                .by_configmap
                .get(key)
                .and_then(|d| tenancy::refusal(&d.job))
        };
        let keys: Vec<ConfigMapKey> = groups
            .iter()
            .flat_map(|g| self.by_job.get(g).into_iter().flatten().cloned())
            .collect();
        let before: Vec<Option<String>> = keys.iter().map(|k| refusal(self, k)).collect();
        for group in &groups {
            self.settle(group);
        }
        keys.into_iter()
            .zip(before)
            .filter(|(key, before)| {
                let after = refusal(self, key);
                after.is_some() && after != *before
            })
            .map(|(key, _)| key)
            .collect()
    }

    /// Forgets the rules of every Namespace not in `present` (after a relist); the
    /// ConfigMaps whose job that refuses.
    pub fn retain_namespaces(&mut self, present: &[String]) -> Vec<ConfigMapKey> {
        let gone: Vec<String> = self
            .tenancy
            .iter()
            .flat_map(BTreeMap::keys)
            .filter(|name| !present.contains(name))
            .cloned()
            .collect();
        gone.iter()
            .flat_map(|name| self.set_namespace(name, None))
            .collect()
    }

    /// `loaded` as tenancy admits it: itself, or refused with its violations.
    fn admitted(&self, loaded: &Arc<LoadedJob>) -> Arc<LoadedJob> {
        let (Some(rules), Some(job), Some(configmap)) =
            (&self.tenancy, &loaded.job, &loaded.configmap)
        else {
            return Arc::clone(loaded);
        };
        let violations = tenancy::check(job, &configmap.namespace, &loaded.namespace, |ns| {
            rules.get(ns)
        });
        if violations.is_empty() {
            Arc::clone(loaded)
        } else {
            Arc::new(tenancy::refuse(loaded, &violations))
        }
    }

    /// Takes a ConfigMap's declaration out of the index, without settling its group.
    fn remove_key(&mut self, key: &ConfigMapKey) -> Option<Declared> {
        let removed = self.by_configmap.remove(key)?;
        if let Some(repository) = &removed.repository {
            self.leave_repository(repository, key);
            self.settle_names(repository);
        }
        if let Some(group) = job_key(&removed.original) {
            if let Some(keys) = self.by_job.get_mut(&group) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_job.remove(&group);
                }
            }
        }
        Some(removed)
    }

    /// Decides again which declaration of (namespace, job name) is the job and which are
    /// repeats, and what each offers.
    fn settle(&mut self, group: &(String, String)) {
        let keys: Vec<ConfigMapKey> = self
            .by_job
            .get(group)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        // Tenancy first: a declaration its Namespace refuses never stands over another.
        let originals: Vec<Arc<LoadedJob>> = keys
            .iter()
            .filter_map(|k| self.by_configmap.get(k).map(|d| self.admitted(&d.original)))
            .collect();
        let replacements =
            kubeci_spec::shadowed(&originals.iter().map(|j| &**j).collect::<Vec<_>>());
        let mut repositories = std::collections::BTreeSet::new();
        for ((key, original), replacement) in keys.iter().zip(&originals).zip(replacements) {
            let Some(declared) = self.by_configmap.get_mut(key) else {
                continue;
            };
            declared.unnamed = replacement.map_or_else(|| Arc::clone(original), Arc::new);
            let repository = declared
                .unnamed
                .job
                .as_ref()
                .and_then(kubeci_spec::checkname::repository_of);
            let before = std::mem::replace(&mut declared.repository, repository.clone());
            // Until its repository's names are decided, it stands as it is.
            declared.job = Arc::clone(&declared.unnamed);
            declared.spec = declared.job.job.clone().map(Arc::new);
            declared.check_name = None;
            if let Some(before) = before.filter(|b| Some(b) != repository.as_ref()) {
                self.leave_repository(&before, key);
                repositories.insert(before);
            }
            if let Some(repository) = repository {
                self.by_repository
                    .entry(repository.clone())
                    .or_default()
                    .insert(key.clone());
                repositories.insert(repository);
            }
        }
        for repository in &repositories {
            self.settle_names(repository);
        }
    }

    fn leave_repository(&mut self, repository: &str, key: &ConfigMapKey) {
        if let Some(keys) = self.by_repository.get_mut(repository) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_repository.remove(repository);
            }
        }
    }

    /// Decides again the check names of the jobs of `repository`: of two jobs declaring
    /// one name, the one whose ConfigMap is older keeps it (then the first in namespace and
    /// ConfigMap name order), so a newcomer cannot take a name from a job that had it; a
    /// job whose name another keeps is invalid.
    fn settle_names(&mut self, repository: &str) {
        let mut keys: Vec<ConfigMapKey> = self
            .by_repository
            .get(repository)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default();
        keys.sort_by_key(|k| {
            let created = self.by_configmap.get(k).and_then(|d| d.created);
            (created.is_none(), created, k.clone())
        });
        let unnamed: Vec<Arc<LoadedJob>> = keys
            .iter()
            .filter_map(|k| self.by_configmap.get(k).map(|d| Arc::clone(&d.unnamed)))
            .collect();
        let names = {
            let jobs: Vec<(&str, &Job)> = unnamed
                .iter()
                .filter_map(|l| Some((l.namespace.as_str(), l.job.as_ref()?)))
                .collect();
            kubeci_spec::checkname::check_names(&jobs)
        };
        let valid = keys.iter().zip(&unnamed).filter(|(_, l)| l.job.is_some());
        for ((key, loaded), name) in valid.zip(names) {
            let Some(declared) = self.by_configmap.get_mut(key) else {
                continue;
            };
            match name {
                Ok(name) => {
                    declared.job = Arc::clone(loaded);
                    declared.check_name = Some(name);
                }
                Err(taken) => {
                    let was_refused = declared
                        .job
                        .diagnostics
                        .iter()
                        .any(|d| d.code == "check-name-taken" && d.message == taken.message());
                    if !was_refused && !self.named_out.contains(key) {
                        self.named_out.push(key.clone());
                    }
                    let mut refused = (**loaded).clone();
                    kubeci_spec::checkname::refuse(&mut refused, &taken);
                    declared.job = Arc::new(refused);
                    declared.check_name = None;
                }
            }
            declared.spec = declared.job.job.clone().map(Arc::new);
        }
    }

    /// The ConfigMaps whose job lost its check name since the last call.
    pub fn take_named_out(&mut self) -> Vec<ConfigMapKey> {
        std::mem::take(&mut self.named_out)
    }

    /// The name job `name` of `namespace` reports under on GitHub, while it is valid.
    pub fn check_name(&self, namespace: &str, name: &str) -> Option<&str> {
        self.by_job
            .get(&(namespace.to_owned(), name.to_owned()))?
            .iter()
            .filter_map(|key| self.by_configmap.get(key))
            .find(|d| d.spec.is_some())?
            .check_name
            .as_deref()
    }

    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<Declared> {
        let removed = self.remove_key(&ConfigMapKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })?;
        if let Some(group) = job_key(&removed.original) {
            self.settle(&group);
        }
        Some(removed)
    }

    /// Forgets every ConfigMap (of `namespace`, the relisted watch's, when it watches
    /// one) not in `present` (after a relist).
    pub fn retain(&mut self, namespace: Option<&str>, present: &[ConfigMapKey]) {
        let present: std::collections::BTreeSet<&ConfigMapKey> = present.iter().collect();
        let gone: Vec<ConfigMapKey> = self
            .by_configmap
            .keys()
            .filter(|k| namespace.is_none_or(|ns| k.namespace == ns) && !present.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.remove(&key.namespace, &key.name);
        }
    }

    /// The valid jobs, with the namespace their builds run in; only those of these
    /// repositories (`GitUrl::repository_key`) when `repositories` is given.
    pub fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)> {
        self.by_configmap
            .values()
            .filter(|d| {
                repositories
                    .is_none_or(|keys| d.repository.as_ref().is_some_and(|r| keys.contains(r)))
            })
            .filter_map(|d| Some((d.job.namespace.clone(), d.spec.clone()?)))
            .collect()
    }

    pub fn all(&self) -> impl Iterator<Item = &LoadedJob> {
        self.by_configmap.values().map(|d| &*d.job)
    }

    /// Every declaration, shared without a copy.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<LoadedJob>> {
        self.by_configmap.values().map(|d| &d.job)
    }

    /// The valid job `name` whose builds run in `namespace`. When two ConfigMaps declare the
    /// same job, the first by ConfigMap name wins; the other shows as an invalid repeat.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&Arc<LoadedJob>> {
        self.by_job
            .get(&(namespace.to_owned(), name.to_owned()))?
            .iter()
            .filter_map(|key| self.by_configmap.get(key))
            .map(|d| &d.job)
            .find(|j| j.job.is_some())
    }

    /// Job `name` of `namespace` as its page shows it, shared: the valid job if there is
    /// one (an invalid declaration never stands over it), else the first declaration by
    /// ConfigMap name.
    pub fn find_declared(&self, namespace: &str, name: &str) -> Option<&Arc<LoadedJob>> {
        self.find(namespace, name).or_else(|| {
            self.by_job
                .get(&(namespace.to_owned(), name.to_owned()))?
                .iter()
                .find_map(|key| self.by_configmap.get(key))
                .map(|d| &d.job)
        })
    }

    /// Any job (valid or not) named `name` in `namespace`, for error messages.
    pub fn find_any(&self, namespace: &str, name: &str) -> Option<&LoadedJob> {
        self.find_declared(namespace, name).map(|j| &**j)
    }

    /// The namespaces that have jobs, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for (namespace, _) in self.by_job.keys() {
            if found.last() != Some(namespace) {
                found.push(namespace.clone());
            }
        }
        found
    }

    /// Whether any ConfigMap declares job `name` in `namespace`, valid or not.
    pub fn is_declared(&self, namespace: &str, name: &str) -> bool {
        self.by_job
            .contains_key(&(namespace.to_owned(), name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(job_yaml: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("job.yaml".to_owned(), job_yaml.to_owned())])
    }

    const JOB: &str = "- job:\n    name: demo\n    git: {url: 'https://github.com/o/r'}\n    run_command: make\n    timeout: 5m\n";

    #[test]
    fn configmaps_come_and_go_and_versions_are_not_reread() {
        let labels = BTreeMap::new();
        let mut index = JobIndex::default();
        let good = data(JOB);
        let cm = ConfigMapData {
            namespace: "team",
            name: "demo-cm",
            labels: &labels,
            data: &good,
        };
        assert_eq!(
            index.upsert(cm, "1", &LoadOptions::default()),
            Change::Updated { errors: false }
        );
        assert_eq!(
            index.upsert(cm, "1", &LoadOptions::default()),
            Change::Unchanged
        );
        assert_eq!(index.find("team", "demo").unwrap().spec_hash.len(), 64);
        let of = |keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            index.specs(Some(&keys)).len()
        };
        assert_eq!(of(&["github.com/o/r"]), 1, "matched by repository");
        assert_eq!(of(&["github.com/o/other"]), 0);
        assert_eq!(index.specs(None).len(), 1);
        assert!(index.find("other", "demo").is_none());

        let bad = data(&JOB.replace("run_command", "run_comand"));
        let edited = ConfigMapData { data: &bad, ..cm };
        assert_eq!(
            index.upsert(edited, "2", &LoadOptions::default()),
            Change::Updated { errors: true }
        );
        assert!(
            index.find("team", "demo").is_none(),
            "an invalid job cannot build"
        );
        assert!(
            index.find_any("team", "demo").is_some(),
            "but it is shown with its error"
        );

        index.retain(Some("elsewhere"), &[]);
        assert_eq!(index.all().count(), 1, "another watch's relist");
        index.retain(None, &[]);
        assert_eq!(index.all().count(), 0);
        assert_eq!(
            index.upsert(cm, "3", &LoadOptions::default()),
            Change::Updated { errors: false }
        );
        assert!(index.remove("team", "demo-cm").is_some());
        assert!(index.find_any("team", "demo").is_none());
    }

    #[test]
    fn a_refused_declaration_in_another_namespace_never_takes_over_a_jobs_page() {
        let labels = BTreeMap::new();
        let mut index = JobIndex::default();
        let valid = data(JOB);
        let intruder = data(&JOB.replace("    git:", "    namespace: default\n    git:"));
        // `aaa` sorts before `default`: first by ConfigMap, it used to be the page's job.
        index.upsert(
            ConfigMapData {
                namespace: "aaa",
                name: "demo",
                labels: &labels,
                data: &intruder,
            },
            "1",
            &LoadOptions::default(),
        );
        index.upsert(
            ConfigMapData {
                namespace: "default",
                name: "demo",
                labels: &labels,
                data: &valid,
            },
            "2",
            &LoadOptions::default(),
        );
        let shown = index.find_declared("default", "demo").unwrap();
        assert!(shown.job.is_some(), "default's valid job: {shown:?}");
        assert_eq!(shown.configmap.as_ref().unwrap().namespace, "default");
        let refused = index.find_declared("aaa", "demo").unwrap();
        assert!(refused.job.is_none());
        assert!(refused
            .diagnostics
            .iter()
            .any(|d| d.code == "namespace-not-allowed"));
    }

    #[test]
    fn a_second_configmap_declaring_the_same_job_is_a_repeat_until_the_first_goes() {
        let labels = BTreeMap::new();
        let mut index = JobIndex::default();
        let job = data(JOB);
        let cm = |name| ConfigMapData {
            namespace: "team",
            name,
            labels: &labels,
            data: &job,
        };
        index.upsert(cm("b-demo"), "1", &LoadOptions::default());
        assert_eq!(
            index.upsert(cm("a-demo"), "2", &LoadOptions::default()),
            Change::Updated { errors: false }
        );
        let owner = |index: &JobIndex| {
            index
                .find("team", "demo")
                .and_then(|j| j.configmap.as_ref())
                .map(|c| c.name.clone())
        };
        assert_eq!(owner(&index).as_deref(), Some("a-demo"), "first by name");
        assert_eq!(
            index
                .find_declared("team", "demo")
                .and_then(|j| j.configmap.as_ref())
                .map(|c| c.name.as_str()),
            Some("a-demo")
        );
        assert_eq!(index.specs(None).len(), 1, "one job, built once");
        let repeat = index
            .all()
            .find(|j| j.configmap.as_ref().is_some_and(|c| c.name == "b-demo"))
            .unwrap();
        assert!(repeat.job.is_none());
        let error = repeat.diagnostics.last().unwrap();
        assert_eq!(error.code, "duplicate-job");
        assert!(
            error.message.contains("ConfigMap team/a-demo"),
            "{}",
            error.message
        );

        index.remove("team", "a-demo");
        assert_eq!(
            owner(&index).as_deref(),
            Some("b-demo"),
            "the repeat takes over"
        );
        assert!(index.all().all(|j| !j.has_errors()));
        index.upsert(cm("a-demo"), "3", &LoadOptions::default());
        let renamed = data(&JOB.replace("name: demo", "name: other"));
        index.upsert(
            ConfigMapData {
                data: &renamed,
                ..cm("a-demo")
            },
            "4",
            &LoadOptions::default(),
        );
        assert_eq!(owner(&index).as_deref(), Some("b-demo"), "renamed away");
        assert!(index.find("team", "other").is_some());
        assert!(index.all().all(|j| !j.has_errors()));
    }

    #[test]
    fn an_invalid_job_stays_declared_until_its_configmap_goes() {
        let labels = BTreeMap::new();
        let mut index = JobIndex::default();
        let bad = data(&JOB.replace("run_command", "run_comand"));
        let good = data(&JOB.replace("name: demo", "name: other"));
        let cm = |name, data| ConfigMapData {
            namespace: "team",
            name,
            labels: &labels,
            data,
        };
        index.upsert(cm("demo-cm", &bad), "1", &LoadOptions::default());
        index.upsert(cm("other-cm", &good), "2", &LoadOptions::default());
        assert!(index.find("team", "demo").is_none(), "not buildable");
        assert!(index.is_declared("team", "demo"), "but its builds are kept");
        assert!(index.find_any("team", "demo").unwrap().has_errors());
        assert!(!index.is_declared("other-team", "demo"));

        let present = [ConfigMapKey {
            namespace: "team".into(),
            name: "other-cm".into(),
        }];
        index.retain(Some("team"), &present);
        assert!(!index.is_declared("team", "demo"), "its ConfigMap is gone");
        assert!(index.find_declared("team", "demo").is_none());
        assert!(index.is_declared("team", "other"));
    }

    fn named(index: &mut JobIndex, namespace: &str, name: &str, context: Option<&str>) -> Change {
        let labels = BTreeMap::new();
        let context = context.map_or_else(String::new, |c| format!("      context: {c}\n"));
        let yaml = format!(
            "- job:\n    name: {name}\n    git: {{url: 'https://github.com/victim/repo'}}\n    run_command: make\n    timeout: 5m\n    ghprb:\n      enabled: true\n{context}"
        );
        let data = data(&yaml);
        let cm = ConfigMapData {
            namespace,
            name,
            labels: &labels,
            data: &data,
        };
        index.upsert(cm, "1", &LoadOptions::default())
    }

    #[test]
    fn a_job_whose_check_name_another_job_keeps_is_invalid_until_it_is_free() {
        let mut index = JobIndex::default();
        assert_eq!(
            named(&mut index, "team-b", "deploy", None),
            Change::Updated { errors: false }
        );
        assert_eq!(index.check_name("team-b", "deploy"), Some("kubeci/deploy"));
        // team-a takes team-b's name: refused, with the job that keeps it; team-b's
        // default now names its namespace, as two namespaces build the repository.
        assert_eq!(
            named(&mut index, "team-a", "evil", Some("kubeci/deploy")),
            Change::Updated { errors: true }
        );
        assert!(index.find("team-a", "evil").is_none());
        assert!(index.specs(None).iter().all(|(ns, _)| ns == "team-b"));
        let refused = index.find_any("team-a", "evil").unwrap();
        let error = refused.diagnostics.last().unwrap();
        assert_eq!(error.code, "check-name-taken");
        assert!(
            error.message.contains("by job team-b/deploy"),
            "{}",
            error.message
        );
        assert_eq!(index.check_name("team-b", "deploy"), Some("kubeci/deploy"));
        assert_eq!(index.check_name("team-a", "evil"), None);
        // Another job of team-a with its own name: both namespaces build the repository.
        named(&mut index, "team-a", "lint", None);
        assert_eq!(
            index.check_name("team-a", "lint"),
            Some("kubeci/team-a/lint")
        );
        assert_eq!(
            index.check_name("team-b", "deploy"),
            Some("kubeci/team-b/deploy")
        );
        // team-b's job goes: the name is free, and team-a's job valid.
        index.remove("team-b", "deploy");
        assert!(index.find("team-a", "evil").is_some());
        assert_eq!(index.check_name("team-a", "evil"), Some("kubeci/deploy"));
        assert_eq!(index.check_name("team-a", "lint"), Some("kubeci/lint"));
    }

    #[test]
    fn a_job_refused_its_name_by_anothers_change_is_owed_an_event() {
        let mut index = JobIndex::default();
        named(&mut index, "team-a", "evil", Some("kubeci/deploy"));
        assert!(index.find("team-a", "evil").is_some(), "valid while alone");
        index.take_named_out();
        // team-b's `deploy` arrives: its default name is the one team-a declared.
        named(&mut index, "team-b", "deploy", None);
        assert!(index.find("team-a", "evil").is_none());
        let owed = index.take_named_out();
        assert_eq!(
            owed,
            [ConfigMapKey {
                namespace: "team-a".into(),
                name: "evil".into()
            }]
        );
        named(&mut index, "team-b", "lint", None);
        assert!(index.take_named_out().is_empty(), "once");
    }

    #[test]
    fn of_two_jobs_declaring_one_check_name_the_older_keeps_it() {
        let labels = BTreeMap::new();
        let declaring = |name: &str| {
            data(&format!(
                "- job:\n    name: {name}\n    git: {{url: 'https://github.com/victim/repo'}}\n    run_command: make\n    timeout: 5m\n    ghprb:\n      context: ci/deploy\n"
            ))
        };
        let (deploy, evil) = (declaring("deploy"), declaring("evil"));
        let mut index = JobIndex::default();
        let cm = |namespace, name, data| ConfigMapData {
            namespace,
            name,
            labels: &labels,
            data,
        };
        let options = LoadOptions::default();
        index.upsert_created(cm("team-b", "deploy", &deploy), "1", Some(1_000), &options);
        // team-a sorts first, but came later: team-b keeps its name.
        let change = index.upsert_created(cm("team-a", "evil", &evil), "1", Some(2_000), &options);
        assert_eq!(change, Change::Updated { errors: true });
        assert_eq!(index.check_name("team-b", "deploy"), Some("ci/deploy"));
        assert!(index.find("team-a", "evil").is_none());
    }

    fn enabled(name: &str, service_accounts: &[&str]) -> NamespaceRules {
        NamespaceRules {
            name: name.into(),
            enabled: true,
            service_accounts: service_accounts.iter().map(|s| (*s).to_owned()).collect(),
            ..NamespaceRules::default()
        }
    }

    #[test]
    fn with_tenancy_a_job_builds_only_while_its_namespace_allows_it() {
        // The ConfigMap's own labels claim what only the Namespace may say.
        let labels = BTreeMap::from([
            ("kubeci.io/builds".to_owned(), "enabled".to_owned()),
            (
                "kubeci.io/service-accounts".to_owned(),
                "deployer".to_owned(),
            ),
        ]);
        let mut index = JobIndex::with_tenancy();
        let job = data(&JOB.replace(
            "    timeout",
            "    service_account_name: deployer\n    timeout",
        ));
        let cm = ConfigMapData {
            namespace: "team",
            name: "demo-cm",
            labels: &labels,
            data: &job,
        };
        assert_eq!(
            index.upsert(cm, "1", &LoadOptions::default()),
            Change::Updated { errors: true },
            "refused: an Event is recorded"
        );
        assert!(index.find("team", "demo").is_none());
        assert!(index.specs(None).is_empty(), "GitHub builds nothing either");
        let shown = index.find_any("team", "demo").unwrap();
        assert_eq!(
            shown.diagnostics.last().unwrap().code,
            "tenancy-namespace-not-enabled"
        );

        let configmap = ConfigMapKey {
            namespace: "team".into(),
            name: "demo-cm".into(),
        };
        assert_eq!(
            index.set_namespace("team", Some(enabled("team", &[]))),
            std::slice::from_ref(&configmap),
            "refused for another reason now"
        );
        let refused = index.find_any("team", "demo").unwrap();
        assert_eq!(
            refused.diagnostics.last().unwrap().code,
            "tenancy-service-account"
        );
        assert_eq!(
            index.set_namespace("team", Some(enabled("team", &[]))),
            [],
            "the same rules again change nothing"
        );

        assert_eq!(
            index.set_namespace("team", Some(enabled("team", &["deployer"]))),
            []
        );
        assert!(
            index.find("team", "demo").is_some(),
            "allowed without a restart"
        );
        assert!(!index.find_any("team", "demo").unwrap().has_errors());
        assert_eq!(index.specs(None).len(), 1);
        assert_eq!(
            index.upsert(cm, "2", &LoadOptions::default()),
            Change::Updated { errors: false }
        );

        assert_eq!(
            index.retain_namespaces(&[]),
            [configmap],
            "the Namespace is gone"
        );
        assert!(index.find("team", "demo").is_none());
        assert!(index.is_declared("team", "demo"), "its builds are kept");
    }

    #[test]
    fn a_declaration_tenancy_refuses_never_stands_over_the_job() {
        let labels = BTreeMap::new();
        let mut index = JobIndex::with_tenancy();
        let options = LoadOptions {
            policy: kubeci_spec::NamespacePolicy {
                allowed: vec![("aaa".into(), "team".into())],
            },
            ..LoadOptions::default()
        };
        let intruder = data(&JOB.replace("    git:", "    namespace: team\n    git:"));
        let own = data(JOB);
        index.set_namespace("team", Some(enabled("team", &[])));
        for (namespace, data) in [("aaa", &intruder), ("team", &own)] {
            index.upsert(
                ConfigMapData {
                    namespace,
                    name: "demo",
                    labels: &labels,
                    data,
                },
                "1",
                &options,
            );
        }
        let job = index
            .find("team", "demo")
            .expect("team's own declaration builds");
        assert_eq!(job.configmap.as_ref().unwrap().namespace, "team");
        let open = JobIndex::default();
        assert!(open.tenancy.is_none(), "open: no rules at all");
    }
}
