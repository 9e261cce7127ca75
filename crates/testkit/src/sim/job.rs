//! The simulated Job controller's view of a Job: its conditions, its pods, its end.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{s, terminal, JOBS, JOB_TRACKING};
use crate::store::{now, Store};

/// A failing Job (its `FailureTarget` set) is `Failed`, with the target's reason, once
/// none of its pods runs (a deleted pod still stopping included).
pub(super) fn fail_once_ended(store: &mut Store, job: &Value, target: &Value, pods: &[Arc<Value>]) {
    if !pods.iter().all(|p| terminal(p)) {
        return;
    }
    let mut updated = job.clone();
    let mut conditions = (updated
        .pointer("/status/conditions")
        .and_then(Value::as_array))
    .cloned()
    .unwrap_or_default();
    conditions.push(condition(
        "Failed",
        &s(target, "/reason"),
        &s(target, "/message"),
    ));
    updated["status"]["conditions"] = json!(conditions);
    let namespace = s(job, "/metadata/namespace");
    let name = s(job, "/metadata/name");
    let _ = store.update(JOBS, &namespace, &name, updated, true);
}

pub(super) fn condition(kind: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now(), "lastTransitionTime": now()})
}

pub(super) fn has_condition(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

/// The pod a Job's controller creates from its template, owned by the Job.
pub(super) fn job_pod(job: &Value, name: &str, uid: &str) -> Value {
    let template = job
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    // As Kubernetes' Job controller: the template's finalizers, then its own.
    let mut finalizers: Vec<Value> = template
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    finalizers.push(json!(JOB_TRACKING));
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "finalizers": finalizers,
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The Job's pods that run, and how many succeeded and failed.
pub(super) fn tally(pods: &[Arc<Value>]) -> (Vec<&Arc<Value>>, usize, usize) {
    let active: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| !terminal(p) && p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    let succeeded = pods
        .iter()
        .filter(|p| p.pointer("/status/phase") == Some(&json!("Succeeded")))
        .count();
    let failed = pods
        .iter()
        .filter(|p| p.pointer("/status/phase") == Some(&json!("Failed")))
        .count();
    (active, succeeded, failed)
}

/// The two conditions of a Job's end, as the Job controller writes them: the target
/// (`SuccessCriteriaMet`, `FailureTarget`) and then the end itself (`Complete`, `Failed`).
pub(super) fn ended(kind: &str, target: &str, reason: &str, message: &str) -> [Value; 2] {
    [
        condition(target, reason, message),
        condition(kind, reason, message),
    ]
}

/// A suspended Job resumed: its `Suspended` condition turns false, its start time goes.
pub(super) fn resume(conditions: &mut [Value], status: &mut Value) {
    for c in conditions.iter_mut().filter(|c| c["type"] == "Suspended") {
        *c = json!({"type": "Suspended", "status": "False", "reason": "JobResumed", "message": "Job resumed", "lastProbeTime": now(), "lastTransitionTime": now()});
    }
    status
        .as_object_mut()
        .expect("status is a map")
        .remove("startTime");
}

/// The Job's `FailureTarget` condition, while it is failing (not yet `Failed`).
pub(super) fn failure_target(job: &Value) -> Option<Value> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "FailureTarget" && c["status"] == "True")
        .cloned()
}

/// A Job that completed, failed or is being deleted: its controller leaves it be.
pub(super) fn ended_or_going(job: &Value) -> bool {
    has_condition(job, "Complete")
        || has_condition(job, "Failed")
        || job.pointer("/metadata/deletionTimestamp").is_some()
}
