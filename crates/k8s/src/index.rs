//! The jobs declared in the cluster, indexed: a pure structure fed by the ConfigMap watch.

use std::collections::BTreeMap;
use std::sync::Arc;

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
    pub job: Arc<LoadedJob>,
    /// The valid job, shared with webhook matching without a copy.
    pub spec: Option<Arc<Job>>,
    /// Its repository (`host/owner/name`, see `GitUrl::repository_key`).
    pub repository: Option<String>,
}

/// The jobs of every watched ConfigMap, valid or not.
#[derive(Debug, Clone, Default)]
pub struct JobIndex {
    by_configmap: BTreeMap<ConfigMapKey, Declared>,
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
    /// Reads a ConfigMap's job and records it under the ConfigMap.
    pub fn upsert(
        &mut self,
        configmap: ConfigMapData<'_>,
        resource_version: &str,
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
        let job = kubeci_spec::load_configmap(configmap, options);
        let errors = job.has_errors();
        let spec = job.job.clone().map(Arc::new);
        let repository = spec.as_ref().and_then(|s| {
            kubeci_spec::giturl::GitUrl::parse(&s.git.url)
                .ok()?
                .repository_key()
        });
        self.by_configmap.insert(
            key,
            Declared {
                resource_version: resource_version.to_owned(),
                job: Arc::new(job),
                spec,
                repository,
            },
        );
        Change::Updated { errors }
    }

    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<Declared> {
        self.by_configmap.remove(&ConfigMapKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Forgets every ConfigMap not in `present` (after a relist).
    pub fn retain(&mut self, present: &[ConfigMapKey]) {
        self.by_configmap.retain(|k, _| present.contains(k));
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
    /// same job, the first by ConfigMap name wins (the other is reported by lint).
    pub fn find(&self, namespace: &str, name: &str) -> Option<&Arc<LoadedJob>> {
        self.shared().find(|j| {
            j.namespace == namespace && j.name.as_deref() == Some(name) && j.job.is_some()
        })
    }

    /// Any job (valid or not) named `name` in `namespace`, shared.
    pub fn find_declared(&self, namespace: &str, name: &str) -> Option<&Arc<LoadedJob>> {
        self.shared()
            .find(|j| j.namespace == namespace && j.name.as_deref() == Some(name))
    }

    /// Any job (valid or not) named `name` in `namespace`, for error messages.
    pub fn find_any(&self, namespace: &str, name: &str) -> Option<&LoadedJob> {
        self.all()
            .find(|j| j.namespace == namespace && j.name.as_deref() == Some(name))
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

        index.retain(&[]);
        assert_eq!(index.all().count(), 0);
        assert_eq!(
            index.upsert(cm, "3", &LoadOptions::default()),
            Change::Updated { errors: false }
        );
        assert!(index.remove("team", "demo-cm").is_some());
        assert!(index.find_any("team", "demo").is_none());
    }
}
