//! Job discovery: the ConfigMap watch that feeds the [`JobIndex`], and the Warning Events
//! on ConfigMaps whose job is invalid.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use kube::api::Api;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use kubeci_spec::{ConfigMapData, LoadOptions, Severity};

use crate::index::{self, JobIndex};

/// Follows job ConfigMaps into the index; invalid ones get a Warning Event. A relist
/// (after 410 Gone) drops the ConfigMaps deleted while the watch was down. With tenancy,
/// it begins once `namespaces_known` says the Namespaces were read.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn discover(
    api: Api<ConfigMap>,
    config: watcher::Config,
    lists: Arc<crate::lists::InitialLists>,
    index: Arc<RwLock<JobIndex>>,
    options: LoadOptions,
    recorder: Recorder,
    synced: Arc<AtomicBool>,
    wake: crate::cache::Wake,
    namespaces_known: Option<tokio::sync::watch::Receiver<bool>>,
) {
    if let Some(mut known) = namespaces_known {
        if known.wait_for(|known| *known).await.is_err() {
            return;
        }
    }
    let scope = api.namespace().map(str::to_owned);
    let config = lists.config(config).await;
    // The ConfigMaps of a (re)list, applied together when it is done: check names are
    // then decided once per repository, not once per ConfigMap (quadratic for a repository
    // many jobs build), and the index never holds half a list.
    let mut listed: Option<Vec<ConfigMap>> = None;
    // Their `managedFields` are never read: dropped as each arrives, not held for a list.
    let mut stream = watcher::watcher(api, config)
        .modify(|cm| cm.metadata.managed_fields = None)
        .backoff(crate::WatchBackoff::new())
        .boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        wake.everything();
        match event {
            Event::Init => listed = Some(Vec::new()),
            Event::InitApply(cm) => listed.get_or_insert_with(Vec::new).push(cm),
            Event::InitDone => {
                let configmaps = listed.take().unwrap_or_default();
                let invalid = apply_list(&index, scope.as_deref(), &configmaps, &options);
                synced.store(true, Ordering::SeqCst);
                for (namespace, name, uid) in invalid {
                    report_invalid(&index, &recorder, &namespace, &name, uid).await;
                }
                report_named_out(&index, &recorder, None).await;
            }
            Event::Delete(cm) => {
                index
                    .write()
                    .expect("the index lock")
                    .remove(&cm.namespace().unwrap_or_default(), &cm.name_any());
            }
            Event::Apply(cm) => {
                let namespace = cm.namespace().unwrap_or_default();
                let name = cm.name_any();
                let change = {
                    let mut index = index.write().expect("the index lock");
                    upsert(&mut index, &cm, &options)
                };
                if change == (index::Change::Updated { errors: true }) {
                    report_invalid(&index, &recorder, &namespace, &name, cm.uid()).await;
                }
                report_named_out(&index, &recorder, Some((&namespace, &name))).await;
            }
        }
    }
}

/// Applies ConfigMap `cm` to the index.
fn upsert(index: &mut JobIndex, cm: &ConfigMap, options: &LoadOptions) -> index::Change {
    let (namespace, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
    let empty = BTreeMap::new();
    let change = index.upsert_created(
        ConfigMapData {
            namespace: &namespace,
            name: &name,
            labels: cm.metadata.labels.as_ref().unwrap_or(&empty),
            data: cm.data.as_ref().unwrap_or(&empty),
        },
        cm.resource_version().as_deref().unwrap_or(""),
        cm.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        options,
    );
    index.set_uid(&namespace, &name, cm.uid());
    change
}

/// Applies a whole list of the ConfigMaps of `scope` (all namespaces: `None`), forgetting
/// those of the scope it does not hold; the new or changed ones whose job is invalid, for
/// their Events: (namespace, name, uid).
fn apply_list(
    index: &RwLock<JobIndex>,
    scope: Option<&str>,
    configmaps: &[ConfigMap],
    options: &LoadOptions,
) -> Vec<(String, String, Option<String>)> {
    let mut index = index.write().expect("the index lock");
    index.defer_names();
    let changes: Vec<index::Change> = configmaps
        .iter()
        .map(|cm| upsert(&mut index, cm, options))
        .collect();
    let present: Vec<index::ConfigMapKey> = configmaps
        .iter()
        .map(|cm| index::ConfigMapKey {
            namespace: cm.namespace().unwrap_or_default(),
            name: cm.name_any(),
        })
        .collect();
    index.retain(scope, &present);
    index.settle_deferred();
    present
        .into_iter()
        .zip(changes)
        .filter(|(key, change)| {
            *change != index::Change::Unchanged && !index.is_valid_configmap(key)
        })
        .map(|(key, _)| {
            let uid = index.uid(&key);
            (key.namespace, key.name, uid)
        })
        .collect()
}

/// Records a Warning Event on each ConfigMap whose job another's change just refused its
/// check name (but `except`, whose own Event says so already).
async fn report_named_out(
    index: &Arc<RwLock<JobIndex>>,
    recorder: &Recorder,
    except: Option<(&str, &str)>,
) {
    let refused: Vec<(index::ConfigMapKey, Option<String>)> = {
        let mut index = index.write().expect("the index lock");
        let keys = index.take_named_out();
        keys.into_iter()
            .map(|key| {
                let uid = index.uid(&key);
                (key, uid)
            })
            .collect()
    };
    for (key, uid) in refused {
        if except != Some((key.namespace.as_str(), key.name.as_str())) {
            report_invalid(index, recorder, &key.namespace, &key.name, uid).await;
        }
    }
}

/// Records a Warning Event on ConfigMap `namespace/name` (`uid`) with its job's errors.
pub(crate) async fn report_invalid(
    index: &Arc<RwLock<JobIndex>>,
    recorder: &Recorder,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) {
    let message: String = {
        let index = index.read().expect("the index lock");
        let found = index
            .shared()
            .find(|j| {
                j.configmap
                    .as_ref()
                    .is_some_and(|c| c.namespace == namespace && c.name == name)
            })
            .map(|j| {
                j.diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
        found.unwrap_or_default()
    };
    tracing::warn!(namespace, configmap = name, problem = %message, "a ConfigMap has an invalid job");
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid,
        ..ObjectReference::default()
    };
    let note: String = message.chars().take(1000).collect();
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "InvalidJob".into(),
        note: Some(note),
        action: "Validate".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(namespace, configmap = name, error = %e, "cannot record an Event on a ConfigMap");
    }
}
