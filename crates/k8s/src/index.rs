//! The jobs declared in the cluster, indexed: a pure structure fed by the ConfigMap watch.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubeci_spec::tenancy::{self, NamespaceRules};
use kubeci_spec::{Catalogue, ConfigMapData, Job, LoadOptions, LoadedJob};

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
    /// While a whole list is applied ([`JobIndex::defer_names`]), the repositories whose
    /// check names are decided at its end.
    deferred: Option<std::collections::BTreeSet<String>>,
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
            self.settle_names_of(repository.clone());
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
                .as_deref()
                .and_then(kubeci_spec::checkname::repository_of);
            let before = std::mem::replace(&mut declared.repository, repository.clone());
            // Until its repository's names are decided, it stands as it is.
            declared.job = Arc::clone(&declared.unnamed);
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
        for repository in repositories {
            self.settle_names_of(repository);
        }
    }

    /// Decides the check names of `repository` now, or at the end of the list being applied.
    fn settle_names_of(&mut self, repository: String) {
        match self.deferred.as_mut() {
            Some(deferred) => {
                deferred.insert(repository);
            }
            None => self.settle_names(&repository),
        }
    }

    /// Check names are decided when [`JobIndex::settle_deferred`] is called, once for each
    /// repository the changes until then touched: what applying a whole list of
    /// ConfigMaps does, under one lock.
    pub fn defer_names(&mut self) {
        self.deferred.get_or_insert_with(Default::default);
    }

    /// Decides the check names [`JobIndex::defer_names`] left undecided.
    pub fn settle_deferred(&mut self) {
        for repository in self.deferred.take().unwrap_or_default() {
            self.settle_names(&repository);
        }
    }

    /// Whether ConfigMap `key` declares a job that is valid now.
    pub fn is_valid_configmap(&self, key: &ConfigMapKey) -> bool {
        self.by_configmap
            .get(key)
            .is_some_and(|d| !d.job.has_errors())
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
                .filter_map(|l| Some((l.namespace.as_str(), l.job.as_deref()?)))
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
        }
    }

    /// What Namespace `namespace` allows now, when tenancy is on (`Some(None)`: a Namespace
    /// not seen, which allows nothing); `None` with `--tenancy open`.
    pub fn namespace_rules(&self, namespace: &str) -> Option<Option<NamespaceRules>> {
        self.tenancy
            .as_ref()
            .map(|known| known.get(namespace).cloned())
    }

    /// The ConfigMaps whose job lost its check name since the last call.
    pub fn take_named_out(&mut self) -> Vec<ConfigMapKey> {
        std::mem::take(&mut self.named_out)
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

    /// Every declaration, shared without a copy.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<LoadedJob>> {
        self.by_configmap.values().map(|d| &d.job)
    }
}

/// The jobs as the engine's commands look them up. When two ConfigMaps declare the same
/// job, the first valid one by ConfigMap name is the job; the others show as repeats.
impl Catalogue for JobIndex {
    fn declarations(&self, namespace: &str, name: &str) -> Vec<&Arc<LoadedJob>> {
        self.by_job
            .get(&(namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(|key| self.by_configmap.get(key))
            .map(|d| &d.job)
            .collect()
    }

    fn all(&self) -> Vec<Arc<LoadedJob>> {
        self.shared().cloned().collect()
    }

    /// The valid jobs, with the namespace their builds run in; only those of these
    /// repositories (`GitUrl::repository_key`) when `repositories` is given.
    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)> {
        self.by_configmap
            .values()
            .filter(|d| {
                repositories
                    .is_none_or(|keys| d.repository.as_ref().is_some_and(|r| keys.contains(r)))
            })
            .filter_map(|d| Some((d.job.namespace.clone(), d.job.job.clone()?)))
            .collect()
    }

    fn check_name(&self, namespace: &str, name: &str) -> Option<String> {
        self.by_job
            .get(&(namespace.to_owned(), name.to_owned()))?
            .iter()
            .filter_map(|key| self.by_configmap.get(key))
            .find(|d| d.job.job.is_some())?
            .check_name
            .clone()
    }

    /// With tenancy on, only a repository Namespace `namespace` (seen, labelled for builds)
    /// lists in `kubeci.io/repositories`, or any when it lists none.
    fn allows_repository(&self, namespace: &str, repository: &str) -> bool {
        match self.namespace_rules(namespace) {
            None => true,
            Some(None) => false,
            Some(Some(rules)) => rules.enabled && rules.allows_repository(Some(repository)),
        }
    }

    /// The namespaces that have jobs, sorted.
    fn namespaces(&self) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for (namespace, _) in self.by_job.keys() {
            if found.last() != Some(namespace) {
                found.push(namespace.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests;
