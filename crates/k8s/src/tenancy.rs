//! Tenancy's edge: what each Namespace allows (its labels and annotations, see
//! `kubeci_spec::tenancy`) followed into the [`JobIndex`], and a Warning Event on each
//! ConfigMap whose job a Namespace change refuses.
//!
//! Watching every namespace, kubeci lists and watches Namespaces. Serving a list of
//! namespaces (`--namespace`), it watches each Namespace by name (a field selector on
//! `metadata.name`), which a ClusterRole whose rule names those Namespaces
//! (`resourceNames`) authorizes: no list of the cluster's other Namespaces.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::events::Recorder;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use kubeci_spec::tenancy::NamespaceRules;
use tokio::sync::watch;

use crate::index::{ConfigMapKey, JobIndex};

/// Where the Namespace followers send what they learn.
pub(crate) struct Follower {
    pub index: Arc<RwLock<JobIndex>>,
    pub recorder: Recorder,
    /// Told `true` once every follower read its Namespaces: job discovery waits for it, so
    /// no job is refused (and no Event recorded) before its Namespace was read.
    pub known: watch::Sender<bool>,
    pub wake: crate::cache::Wake,
}

fn rules_of(namespace: &Namespace) -> NamespaceRules {
    NamespaceRules::from_metadata(
        &namespace.name_any(),
        namespace.labels(),
        namespace.annotations(),
    )
}

/// Follows the Namespaces of `namespaces` (all of them when empty) into the index; each
/// watch's flag in `synced` is set once its first list is in.
pub(crate) fn follow(
    client: &Client,
    namespaces: &[String],
    to: Follower,
    synced: &mut Vec<Arc<AtomicBool>>,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let to = Arc::new(to);
    let remaining = Arc::new(AtomicUsize::new(scopes.len()));
    for only in scopes {
        let flag = Arc::new(AtomicBool::new(false));
        synced.push(flag.clone());
        tokio::spawn(watch_namespaces(
            Api::all(client.clone()),
            only,
            to.clone(),
            flag,
            remaining.clone(),
        ));
    }
}

/// Watches Namespace `only`, or every Namespace.
async fn watch_namespaces(
    api: Api<Namespace>,
    only: Option<String>,
    to: Arc<Follower>,
    synced: Arc<AtomicBool>,
    remaining: Arc<AtomicUsize>,
) {
    let config = match &only {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let mut listed: Option<Vec<String>> = None;
    let mut stream = watcher::watcher(api, config)
        .backoff(crate::WatchBackoff::new())
        .boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        let refused = match event {
            Event::Init => {
                listed = Some(Vec::new());
                continue;
            }
            Event::InitDone => {
                let present = listed.take().unwrap_or_default();
                let mut index = to.index.write().expect("the index lock");
                let refused = match &only {
                    Some(name) if !present.contains(name) => index.set_namespace(name, None),
                    Some(_) => Vec::new(),
                    None => index.retain_namespaces(&present),
                };
                drop(index);
                if !synced.swap(true, Ordering::SeqCst)
                    && remaining.fetch_sub(1, Ordering::SeqCst) == 1
                {
                    to.known.send_replace(true);
                }
                refused
            }
            Event::Delete(namespace) => to
                .index
                .write()
                .expect("the index lock")
                .set_namespace(&namespace.name_any(), None),
            Event::InitApply(namespace) | Event::Apply(namespace) => {
                let rules = rules_of(&namespace);
                if let Some(present) = listed.as_mut() {
                    present.push(rules.name.clone());
                }
                to.index
                    .write()
                    .expect("the index lock")
                    .set_namespace(&rules.name.clone(), Some(rules))
            }
        };
        settled(&to, refused).await;
    }
}

/// After the index changed: wakes the leader (queued builds of a refused job stop) and
/// records a Warning Event on each ConfigMap whose job is now refused.
async fn settled(to: &Follower, refused: Vec<ConfigMapKey>) {
    to.wake.everything();
    for key in refused {
        let uid = {
            let index = to.index.read().expect("the index lock");
            index.uid(&key)
        };
        crate::discover::report_invalid(&to.index, &to.recorder, &key.namespace, &key.name, uid)
            .await;
    }
}
