//! A build's Job and pod as the caches keep them (`kubeci_build::record`, only the fields
//! kubeci reads) give every decision the whole objects give: the build's summary and state,
//! the commit it checked out, what to do with its held pod, whether its collector may hand
//! files over, its steps. The objects are a real API server's (kube-apiserver 1.35, with
//! their `managedFields`), in the states a build goes through.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_engine::collector::{authorize_pod, CollectorIdentity};
use kubeci_engine::{observe, pod_hold};
use serde_json::{json, Value};

const JOB: &str = include_str!("records/job.json");
const POD: &str = include_str!("records/pod.json");

/// `value` with `patch` merged in (JSON merge patch: `null` removes).
fn merged(value: &Value, patch: Value) -> Value {
    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        into.remove(&key);
                    } else {
                        merge(into.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
            (into, patch) => *into = patch,
        }
    }
    let mut value = value.clone();
    merge(&mut value, patch);
    value
}

/// The Job in each state a build's Job goes through.
fn jobs() -> Vec<Value> {
    let complete: Value = serde_json::from_str(JOB).unwrap();
    let condition = |kind: &str, reason: &str| {
        json!({"type": kind, "status": "True", "reason": reason, "message": "m",
               "lastProbeTime": "2026-12-07T05:01:39Z", "lastTransitionTime": "2026-12-07T05:01:39Z"})
    };
    let not_yet = json!({"type": "Complete", "status": "False", "lastTransitionTime": "2026-12-07T05:00:00Z"});
    vec![
        complete.clone(),
        merged(
            &complete,
            json!({"status": {"completionTime": null, "succeeded": null, "failed": 1,
                "conditions": [condition("FailureTarget", "BackoffLimitExceeded"), condition("Failed", "BackoffLimitExceeded")]}}),
        ),
        merged(
            &complete,
            json!({"status": {"completionTime": null, "succeeded": null,
                "conditions": [condition("FailureTarget", "DeadlineExceeded"), condition("Failed", "DeadlineExceeded")]}}),
        ),
        merged(
            &complete,
            json!({"status": {"completionTime": null, "succeeded": null, "active": 1, "conditions": [not_yet]}}),
        ),
        merged(
            &complete,
            json!({"spec": {"suspend": true}, "status": {"completionTime": null, "succeeded": null, "startTime": null,
                "conditions": [condition("Suspended", "JobSuspended")]}}),
        ),
        merged(
            &complete,
            json!({"metadata": {"annotations": {"kubeci.io/cancelled-by": "ada", "kubeci.io/finished-at": "2026-12-07T05:02:00Z"}},
                   "status": {"completionTime": null, "conditions": null}}),
        ),
        merged(
            &complete,
            json!({"metadata": {"annotations": {"kubeci.io/error": "ImagePullBackOff: no such image",
                   "kubeci.io/reported": "github-checks=final", "kubeci.io/archived": "whole",
                   "kubeci.io/pr": "12", "kubeci.io/outputs": "{\"workdir\":\"\",\"test_reports\":[\"*.xml\"],\"artifacts\":[]}"}},
                   "status": {"completionTime": null, "conditions": null}}),
        ),
    ]
}

/// The pod in each state a build's pod goes through.
fn pods() -> Vec<Value> {
    let failed: Value = serde_json::from_str(POD).unwrap();
    let terminated = |code: i32, message: Option<&str>| {
        json!({"terminated": {"exitCode": code, "reason": "Error", "message": message,
               "startedAt": "2026-12-07T05:00:01Z", "finishedAt": "2026-12-07T05:00:04Z", "containerID": "containerd://1"}})
    };
    let waiting = |reason: &str| json!({"waiting": {"reason": reason, "message": "back-off pulling image \"bash:5\""}});
    let statuses = |pod: &Value, init: Value, main: Value| {
        let mut status = pod["status"].clone();
        status["initContainerStatuses"][0]["state"] = init;
        status["containerStatuses"][0]["state"] = main;
        merged(pod, json!({"status": status}))
    };
    let running = merged(&failed, json!({"status": {"phase": "Running"}}));
    let pending = merged(&failed, json!({"status": {"phase": "Pending"}}));
    vec![
        failed.clone(),
        statuses(
            &merged(&failed, json!({"status": {"phase": "Succeeded"}})),
            failed["status"]["initContainerStatuses"][0]["state"].clone(),
            terminated(0, None),
        ),
        statuses(
            &failed,
            terminated(12, Some("clone: not found")),
            json!({"waiting": {"reason": "PodInitializing"}}),
        ),
        statuses(
            &running,
            failed["status"]["initContainerStatuses"][0]["state"].clone(),
            json!({"running": {"startedAt": "2026-12-07T05:00:05Z"}}),
        ),
        statuses(
            &pending,
            failed["status"]["initContainerStatuses"][0]["state"].clone(),
            waiting("ImagePullBackOff"),
        ),
        merged(
            &pending,
            json!({"status": {"initContainerStatuses": null, "containerStatuses": null, "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastProbeTime": null,
                 "lastTransitionTime": "2026-12-07T05:00:00Z", "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}]}}),
        ),
        merged(
            &running,
            json!({"metadata": {"deletionTimestamp": "2026-12-07T05:00:40Z", "deletionGracePeriodSeconds": 30}}),
        ),
        merged(&failed, json!({"metadata": {"finalizers": null}})),
    ]
}

fn whole_job(value: &Value) -> BuildJob {
    BuildJob::from(serde_json::from_value::<Job>(value.clone()).unwrap())
}

fn whole_pod(value: &Value) -> BuildPod {
    BuildPod::from(serde_json::from_value::<Pod>(value.clone()).unwrap())
}

/// Everything kubeci decides from a build's Job and pod, at times around its run.
fn decisions(job: &BuildJob, pod: &BuildPod) -> Vec<String> {
    let created = job
        .metadata
        .creation_timestamp
        .as_ref()
        .unwrap()
        .0
        .as_second();
    let who = CollectorIdentity {
        namespace: "ci".into(),
        pod: pod.metadata.name.clone().unwrap(),
        pod_uid: pod.metadata.uid.clone().unwrap(),
    };
    let mut seen = vec![
        format!("{:?}", observe::checked_out_commit([pod])),
        format!("{:?}", observe::is_settled(job)),
        format!("{:?}", observe::finished_at(job)),
        format!("{:?}", authorize_pod(&who, Some(pod), Some(job))),
        format!("{:?}", pod.metadata.name),
        format!(
            "{:?}",
            (
                job.metadata.name.as_ref(),
                job.metadata.namespace.as_ref(),
                job.metadata.resource_version.as_ref()
            )
        ),
    ];
    let status = pod.status.as_ref().unwrap();
    for containers in [&status.init_container_statuses, &status.container_statuses] {
        let names: Vec<&str> = containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        seen.push(format!("{names:?}"));
    }
    for later in [0, 60, 400, 3600, 40 * 24 * 3600] {
        let now = created + later;
        for reporting in [false, true] {
            let summary = observe::summarize(job, &[pod], now, 300, reporting);
            seen.push(format!("{summary:?}"));
        }
        seen.push(format!(
            "{:?}",
            observe::summarize::<BuildPod>(job, &[], now, 300, true)
        ));
        seen.push(format!("{:?}", pod_hold::pod_hold(pod, now, 3600)));
    }
    seen
}

#[test]
fn a_build_read_as_kept_gives_every_decision_the_whole_objects_give() {
    for job in jobs() {
        for pod in pods() {
            let (kept_job, kept_pod): (BuildJob, BuildPod) = (
                serde_json::from_value(job.clone()).unwrap(),
                serde_json::from_value(pod.clone()).unwrap(),
            );
            assert_eq!(
                decisions(&kept_job, &kept_pod),
                decisions(&whole_job(&job), &whole_pod(&pod)),
                "job {job}\npod {pod}"
            );
        }
    }
}

#[test]
fn a_build_read_as_kept_holds_a_fraction_of_the_objects() {
    let (job, pod): (Value, Value) = (
        serde_json::from_str(JOB).unwrap(),
        serde_json::from_str(POD).unwrap(),
    );
    let kept_job: BuildJob = serde_json::from_value(job.clone()).unwrap();
    let kept_pod: BuildPod = serde_json::from_value(pod.clone()).unwrap();
    // What the caches would hold had they kept every field kubeci's types have.
    let whole_job = whole_job(&job);
    let whole_pod = whole_pod(&pod);
    assert!(
        whole_job.metadata.managed_fields.is_some() && whole_pod.metadata.managed_fields.is_some()
    );
    assert_eq!(kept_job.metadata.managed_fields, None);
    assert_eq!(kept_pod.metadata.managed_fields, None);
    assert!(
        size(&kept_job) * 4 < size(&whole_job),
        "{} of {}",
        size(&kept_job),
        size(&whole_job)
    );
    assert!(
        size(&kept_pod) * 5 < size(&whole_pod),
        "{} of {}",
        size(&kept_pod),
        size(&whole_pod)
    );
}

/// The size of a value as JSON: how much of the object is kept.
fn size<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).unwrap().len()
}

/// The Kubernetes engine's caches keep each record as its JSON and read it back when asked
/// (`kubeci_k8s`'s packed caches): a record written so reads back as it was, in every state.
#[test]
fn a_kept_record_written_as_json_reads_back_the_same() {
    for job in jobs() {
        let kept: BuildJob = serde_json::from_value(job).unwrap();
        let packed = serde_json::to_vec(&kept).unwrap();
        assert_eq!(serde_json::from_slice::<BuildJob>(&packed).unwrap(), kept);
    }
    for pod in pods() {
        let kept: BuildPod = serde_json::from_value(pod).unwrap();
        let packed = serde_json::to_vec(&kept).unwrap();
        assert_eq!(serde_json::from_slice::<BuildPod>(&packed).unwrap(), kept);
    }
}
