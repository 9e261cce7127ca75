//! What a build's Job and pod are read as: only the fields kubeci reads, picked while the
//! JSON is parsed, so the rest (`managedFields` above all, the pod's spec, images and
//! addresses) is never allocated. With 10,000 finished builds and their pods in the caches,
//! that is most of kubeci's memory (BENCHMARKS.md, "the real API server").
//!
//! Who reads what (keep this list true when a reader reads a new field):
//! - metadata: name and namespace (everywhere), uid (a pod's release, a collector's
//!   pod and its Job), resourceVersion (the caches, the `reported` patch), creation and
//!   deletion times and grace (`observe`, `pod_hold`), finalizers (`pod_hold`, `hold`),
//!   the controller owner reference (`collector`), kubeci's labels (`keys::MANAGED_BY`,
//!   `JOB`, `BUILD`) and, on Jobs, kubeci's annotations (`kubeci.io/…`: the record);
//! - a Job's `spec.suspend`, its status counts, start and completion times and its
//!   conditions that hold (`status: "True"`: `observe`, `hold`, `builds`, `backend`);
//! - a pod's phase, why it is unschedulable (its `PodScheduled: False` condition), and
//!   each container's name and state (`observe`, `pod_hold`, `hold::steps_of`).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

use crate::keys;

/// The labels kubeci reads.
const LABELS: [&str; 3] = [keys::MANAGED_BY, keys::JOB, keys::BUILD];

/// The prefix of every annotation kubeci writes on a build's Job.
const ANNOTATIONS: &str = "kubeci.io/";

/// Whether kubeci reads label `key`.
pub(super) fn is_kept_label(key: &str) -> bool {
    LABELS.contains(&key)
}

/// Whether annotation `key` of a build's Job is one kubeci wrote (its record).
pub(super) fn is_kept_annotation(key: &str) -> bool {
    key.starts_with(ANNOTATIONS)
}

/// The metadata kept, as sent.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    finalizers: Option<Vec<String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

impl Meta {
    /// As an `ObjectMeta`: kubeci's labels, the controller reference, and kubeci's
    /// annotations when `annotations` says to keep them (a Job's; a pod's carry none).
    pub(super) fn kept(self, annotations: bool) -> ObjectMeta {
        let labels = self.labels.map(|mut labels| {
            labels.retain(|key, _| is_kept_label(key));
            labels
        });
        let annotations = self.annotations.filter(|_| annotations).map(|mut all| {
            all.retain(|key, _| is_kept_annotation(key));
            all
        });
        let owner_references = self.owner_references.map(|mut owners| {
            owners.retain(|owner| owner.controller == Some(true));
            owners
        });
        ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            resource_version: self.resource_version,
            creation_timestamp: self.creation_timestamp,
            deletion_timestamp: self.deletion_timestamp,
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            labels,
            annotations,
            finalizers: self.finalizers,
            owner_references,
            ..ObjectMeta::default()
        }
    }
}

/// A condition of a Job, as sent.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    last_transition_time: Option<Time>,
}

/// A Job's status, as sent.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Status {
    active: Option<i32>,
    failed: Option<i32>,
    succeeded: Option<i32>,
    start_time: Option<Time>,
    completion_time: Option<Time>,
    conditions: Option<Vec<Condition>>,
}

impl Status {
    /// As a `JobStatus`: the counts, times, and the conditions that hold.
    pub(super) fn kept(self) -> JobStatus {
        let conditions = self.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.status == "True")
                .map(|c| JobCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    last_transition_time: c.last_transition_time,
                    last_probe_time: None,
                })
                .collect()
        });
        // No list where none holds: what protobuf, which cannot send an empty list, gives.
        let conditions = conditions.filter(|kept: &Vec<_>| !kept.is_empty());
        JobStatus {
            active: self.active,
            failed: self.failed,
            succeeded: self.succeeded,
            start_time: self.start_time,
            completion_time: self.completion_time,
            conditions,
            ..JobStatus::default()
        }
    }
}

/// A container's status, as sent: its name and state.
#[derive(Deserialize)]
struct Container {
    name: String,
    #[serde(default)]
    state: Option<ContainerState>,
}

impl Container {
    fn kept(self) -> ContainerStatus {
        let mut state = self.state;
        if let Some(terminated) = state.as_mut().and_then(|s| s.terminated.as_mut()) {
            terminated.container_id = None;
        }
        ContainerStatus {
            name: self.name,
            state,
            ..ContainerStatus::default()
        }
    }
}

/// A pod's condition, as sent.
#[derive(Deserialize)]
struct PodConditionSent {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A pod's status, as sent.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct PodStatusSent {
    phase: Option<String>,
    conditions: Option<Vec<PodConditionSent>>,
    init_container_statuses: Option<Vec<Container>>,
    container_statuses: Option<Vec<Container>>,
}

impl PodStatusSent {
    /// As a `PodStatus`: the phase, why it cannot be scheduled, its containers' states.
    pub(super) fn kept(self) -> PodStatus {
        let conditions = self.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "PodScheduled" && c.status == "False")
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message,
                    ..PodCondition::default()
                })
                .collect()
        });
        let conditions = conditions.filter(|kept: &Vec<_>| !kept.is_empty());
        let containers = |sent: Option<Vec<Container>>| {
            let kept = sent.map(|all| all.into_iter().map(Container::kept).collect());
            kept.filter(|kept: &Vec<_>| !kept.is_empty())
        };
        PodStatus {
            phase: self.phase,
            conditions,
            init_container_statuses: containers(self.init_container_statuses),
            container_statuses: containers(self.container_statuses),
            ..PodStatus::default()
        }
    }
}
