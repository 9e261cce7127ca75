//! A watched cache of build Jobs or pods kept packed: each object as the protobuf message of
//! the fields kubeci reads of it (its `kubeci_build::record` type, written by
//! `kubeci_build::record::protobuf::encode`), read back when asked for, and
//! grouped by the kubeci job it belongs to (its `kubeci.io/job` label), so a request for
//! one job's builds reads that job's objects only.
//!
//! Why packed: 10,000 finished builds and their pods are most of kubeci's memory on a real
//! cluster (issue 31's targets: ≤ 48 MB with 10,000 build Jobs, ≤ 64 MB with their pods
//! too). As Rust values, a kept Job costs ~2.5 KB (an `ObjectMeta` of 15 fields inline,
//! a B-tree node of 11 slots for three labels and another for five annotations, ~20 small
//! strings) and kube's reflector keyed each by four more strings; as JSON the same fields
//! are ~1 KB, as protobuf ~0.65 KB for a finished Job and ~0.45 KB for its pod (no field
//! names, times as integers). Reading one back takes microseconds, and the leader's passes
//! read only the jobs that changed (`kubeci_engine::scheduler::focus`); a whole pass (every
//! 5 minutes) reads all of them.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, RwLock};

use kube::runtime::watcher::Event;
use kube::ResourceExt;
use kubeci_build::keys;
use kubeci_build::record::protobuf::{FromProtobuf, ToProtobuf};

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

/// One object, packed.
struct Entry {
    /// Its `kubeci.io/job` label, which it is filed under.
    job: Option<Box<str>>,
    /// The protobuf message of its record.
    message: Box<[u8]>,
}

/// The objects of one namespace.
#[derive(Default)]
struct Namespace {
    by_name: HashMap<Box<str>, Entry>,
    by_job: HashMap<Box<str>, BTreeSet<Box<str>>>,
    /// The names of the objects `mark` holds for.
    marked: BTreeSet<Box<str>>,
}

#[derive(Default)]
struct Objects {
    namespaces: HashMap<Box<str>, Namespace>,
}

impl Objects {
    /// Takes object `name` out; the job it was filed under.
    fn remove(&mut self, namespace: &str, name: &str) -> Option<JobKey> {
        let objects = self.namespaces.get_mut(namespace)?;
        let entry = objects.by_name.remove(name)?;
        objects.marked.remove(name);
        let job = entry.job?;
        if let Some(names) = objects.by_job.get_mut(&job) {
            names.remove(name);
            if names.is_empty() {
                objects.by_job.remove(&job);
            }
        }
        Some((namespace.to_owned(), job.into()))
    }

    /// Files `entry` as object `name`; the jobs it was and is filed under.
    fn insert(&mut self, namespace: &str, name: &str, entry: Entry, marked: bool) -> Vec<JobKey> {
        let mut jobs: Vec<JobKey> = self.remove(namespace, name).into_iter().collect();
        let objects = match self.namespaces.get_mut(namespace) {
            Some(objects) => objects,
            None => self.namespaces.entry(namespace.into()).or_default(),
        };
        if let Some(job) = &entry.job {
            objects
                .by_job
                .entry(job.clone())
                .or_default()
                .insert(name.into());
            let key = (namespace.to_owned(), job.to_string());
            if !jobs.contains(&key) {
                jobs.push(key);
            }
        }
        if marked {
            objects.marked.insert(name.into());
        }
        objects.by_name.insert(name.into(), entry);
        jobs
    }
}

/// The cache of one watch. A re-list (`Init` … `InitDone`) builds a new one that replaces
/// the old at once, as kube's reflector does: the cache never holds half a list.
pub(crate) struct Packed<K> {
    current: RwLock<Objects>,
    relisting: Mutex<Option<Objects>>,
    /// Which objects are also kept apart, for [`Packed::marked`] (e.g. held pods).
    mark: fn(&K) -> bool,
    kind: PhantomData<fn() -> K>,
}

impl<K> Packed<K>
where
    K: kube::Resource + FromProtobuf + ToProtobuf,
{
    pub(crate) fn new(mark: fn(&K) -> bool) -> Packed<K> {
        Packed {
            current: RwLock::default(),
            relisting: Mutex::default(),
            mark,
            kind: PhantomData,
        }
    }

    /// Follows one watch event; whose objects it changed.
    pub(crate) fn apply(&self, event: &Event<K>) -> Changed {
        match event {
            Event::Apply(object) => {
                let (namespace, name, entry) = self.pack(object);
                let marked = (self.mark)(object);
                let mut current = self.current.write().expect("the cache lock");
                Changed::Jobs(current.insert(&namespace, &name, entry, marked))
            }
            Event::Delete(object) => {
                let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
                let mut current = self.current.write().expect("the cache lock");
                Changed::Jobs(current.remove(&namespace, &name).into_iter().collect())
            }
            Event::Init => {
                *self.relisting.lock().expect("the relist lock") = Some(Objects::default());
                Changed::Nothing
            }
            Event::InitApply(object) => {
                let (namespace, name, entry) = self.pack(object);
                let mut relisting = self.relisting.lock().expect("the relist lock");
                if let Some(objects) = relisting.as_mut() {
                    objects.insert(&namespace, &name, entry, (self.mark)(object));
                }
                Changed::Nothing
            }
            Event::InitDone => {
                let listed = self.relisting.lock().expect("the relist lock").take();
                if let Some(objects) = listed {
                    *self.current.write().expect("the cache lock") = objects;
                }
                Changed::All
            }
        }
    }

    /// `object`'s namespace, name and packed entry.
    fn pack(&self, object: &K) -> (String, String, Entry) {
        let message = object.to_protobuf().into_boxed_slice();
        let job = crate::label(object, keys::JOB).map(Box::from);
        let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
        (namespace, name, Entry { job, message })
    }

    /// `None` only for bytes [`Packed::pack`] did not write.
    fn unpack(entry: &Entry) -> Option<Arc<K>> {
        match K::from_protobuf(&entry.message) {
            Ok(object) => Some(Arc::new(object)),
            Err(error) => {
                tracing::error!(%error, "cannot read a packed object back");
                None
            }
        }
    }

    /// Object `name` of `namespace`.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let current = self.current.read().expect("the cache lock");
        let entry = current.namespaces.get(namespace)?.by_name.get(name)?;
        Self::unpack(entry)
    }

    /// The objects filed under job `job` of `namespace`.
    pub(crate) fn of_job(&self, namespace: &str, job: &str) -> Vec<Arc<K>> {
        let current = self.current.read().expect("the cache lock");
        let Some(objects) = current.namespaces.get(namespace) else {
            return Vec::new();
        };
        let names = objects.by_job.get(job).into_iter().flatten();
        names
            .filter_map(|name| objects.by_name.get(name).and_then(Self::unpack))
            .collect()
    }

    /// The jobs with objects, as (namespace, job).
    pub(crate) fn jobs(&self) -> Vec<JobKey> {
        let current = self.current.read().expect("the cache lock");
        let keys = current.namespaces.iter().flat_map(|(namespace, objects)| {
            let jobs = objects.by_job.keys();
            jobs.map(move |job| (namespace.to_string(), job.to_string()))
        });
        keys.collect()
    }

    /// The objects `mark` held for when they were last seen.
    pub(crate) fn marked(&self) -> Vec<Arc<K>> {
        let current = self.current.read().expect("the cache lock");
        let entries = current.namespaces.values().flat_map(|objects| {
            let by_name = &objects.by_name;
            objects.marked.iter().filter_map(|name| by_name.get(name))
        });
        entries.filter_map(Self::unpack).collect()
    }
}

#[cfg(test)]
mod tests;
