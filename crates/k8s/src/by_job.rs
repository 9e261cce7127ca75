//! The names of a watched cache's objects grouped by the kubeci job they belong to (their
//! `kubeci.io/job` label), kept from the same watch events as the cache: a request for one
//! job's builds looks up that job's Jobs and pods instead of scanning every cached one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};

use kube::runtime::watcher::Event;
use kube::ResourceExt;
use kubeci_build::keys;

/// (namespace, job label).
pub(crate) type JobKey = (String, String);

/// Whose objects a watch event changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Those of these jobs (two for an object whose label changed).
    Jobs(Vec<JobKey>),
    /// Anyone's: a re-list replaced the cache.
    All,
    Nothing,
}

#[derive(Default)]
struct Names {
    by_job: HashMap<JobKey, BTreeSet<String>>,
    /// Which job each object was filed under, so a delete (or a relabelled object) removes
    /// the entry the object was filed under even if its label changed since.
    filed: HashMap<(String, String), JobKey>,
}

impl Names {
    /// Files `object` under its job; the jobs it was and is filed under.
    fn insert<K: kube::Resource>(&mut self, object: &K) -> Vec<JobKey> {
        let mut jobs: Vec<JobKey> = self.remove(object).into_iter().collect();
        let Some(job) = crate::label(object, keys::JOB) else {
            return jobs;
        };
        let namespace = object.namespace().unwrap_or_default();
        let key = (namespace.clone(), job.to_owned());
        let name = object.name_any();
        self.by_job
            .entry(key.clone())
            .or_default()
            .insert(name.clone());
        self.filed.insert((namespace, name), key.clone());
        if !jobs.contains(&key) {
            jobs.push(key);
        }
        jobs
    }

    /// Takes `object` out; the job it was filed under.
    fn remove<K: kube::Resource>(&mut self, object: &K) -> Option<JobKey> {
        let object_key = (object.namespace().unwrap_or_default(), object.name_any());
        let job = self.filed.remove(&object_key)?;
        if let Some(names) = self.by_job.get_mut(&job) {
            names.remove(&object_key.1);
            if names.is_empty() {
                self.by_job.remove(&job);
            }
        }
        Some(job)
    }
}

/// The index of one cache. A re-list (`Init` … `InitDone`) builds a new index that replaces
/// the old one at once, as the cache itself does.
#[derive(Default)]
pub(crate) struct ByJob {
    current: RwLock<Names>,
    relisting: Mutex<Option<Names>>,
}

impl ByJob {
    /// Follows one watch event; whose objects it changed.
    pub(crate) fn apply<K: kube::Resource>(&self, event: &Event<K>) -> Changed {
        match event {
            Event::Apply(object) => {
                Changed::Jobs(self.current.write().expect("the index lock").insert(object))
            }
            Event::Delete(object) => Changed::Jobs(
                self.current
                    .write()
                    .expect("the index lock")
                    .remove(object)
                    .into_iter()
                    .collect(),
            ),
            Event::Init => {
                *self.relisting.lock().expect("the relist lock") = Some(Names::default());
                Changed::Nothing
            }
            Event::InitApply(object) => {
                if let Some(names) = self.relisting.lock().expect("the relist lock").as_mut() {
                    names.insert(object);
                }
                Changed::Nothing
            }
            Event::InitDone => {
                if let Some(names) = self.relisting.lock().expect("the relist lock").take() {
                    *self.current.write().expect("the index lock") = names;
                }
                Changed::All
            }
        }
    }

    /// The names of the objects of job `job` in `namespace`.
    pub(crate) fn names(&self, namespace: &str, job: &str) -> Vec<String> {
        self.current
            .read()
            .expect("the index lock")
            .by_job
            .get(&(namespace.to_owned(), job.to_owned()))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ObjectMeta;

    fn pod(namespace: &str, name: &str, job: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                labels: job.map(|job| [(keys::JOB.to_owned(), job.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn objects_are_found_by_their_job_until_deleted() {
        let index = ByJob::default();
        index.apply(&Event::Apply(pod("team", "build-1", Some("build"))));
        index.apply(&Event::Apply(pod("team", "build-2", Some("build"))));
        index.apply(&Event::Apply(pod("other", "build-3", Some("build"))));
        index.apply(&Event::Apply(pod("team", "stray", None)));
        assert_eq!(index.names("team", "build"), ["build-1", "build-2"]);
        assert_eq!(index.names("other", "build"), ["build-3"]);
        index.apply(&Event::Delete(pod("team", "build-1", Some("build"))));
        assert_eq!(index.names("team", "build"), ["build-2"]);
        assert!(index.names("team", "stray").is_empty());
    }

    #[test]
    fn a_relabelled_object_moves_and_its_delete_removes_it_under_its_old_label_too() {
        let index = ByJob::default();
        let key = |job: &str| ("team".to_owned(), job.to_owned());
        assert_eq!(
            index.apply(&Event::Apply(pod("team", "build-1", Some("build")))),
            Changed::Jobs(vec![key("build")])
        );
        assert_eq!(
            index.apply(&Event::Apply(pod("team", "build-1", Some("test")))),
            Changed::Jobs(vec![key("build"), key("test")]),
            "both jobs changed"
        );
        assert!(index.names("team", "build").is_empty());
        assert_eq!(index.names("team", "test"), ["build-1"]);
        assert_eq!(
            index.apply(&Event::Delete(pod("team", "build-1", None))),
            Changed::Jobs(vec![key("test")])
        );
        assert!(index.names("team", "test").is_empty());
        assert_eq!(
            index.apply(&Event::Apply(pod("team", "stray", None))),
            Changed::Jobs(vec![])
        );
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let index = ByJob::default();
        index.apply(&Event::Apply(pod("team", "gone", Some("build"))));
        index.apply(&Event::<Pod>::Init);
        index.apply(&Event::InitApply(pod("team", "kept", Some("build"))));
        assert_eq!(index.names("team", "build"), ["gone"]);
        assert_eq!(index.apply(&Event::<Pod>::InitDone), Changed::All);
        assert_eq!(index.names("team", "build"), ["kept"]);
    }
}
