//! Finished builds as Kubernetes leaves them, for benches that store thousands on a real
//! API server: a build Job's status as the Job controller writes a finished one's, its pod
//! as the Job controller creates it (on no scheduler and no node, so nothing runs it) and
//! the status a kubelet writes for it; and [`in_parallel`], to store them 16 requests at
//! a time. Shared by real_cluster_memory.rs and versus_prow_cost.rs.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// The commit every stored build checked out.
pub const COMMIT: &str = "4d7de2707d0240ba622e8f56097a34e57c61cb4d";

/// `at` (seconds since the epoch) as RFC 3339.
pub fn time(at: i64) -> String {
    jiff::Timestamp::from_second(at).unwrap().to_string()
}

/// Whether build `i` failed (its `build` step exited 1): one in five.
pub fn failed(i: usize) -> bool {
    i % 5 == 4
}

/// The status the Job controller writes for finished build `i`, which ran from `start`.
pub fn job_status(i: usize, start: i64) -> Value {
    let end = start + 95;
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": "True", "reason": reason, "message": message,
               "lastProbeTime": time(end), "lastTransitionTime": time(end)})
    };
    if failed(i) {
        let message = "Job has reached the specified backoff limit";
        json!({"status": {"conditions": [condition("FailureTarget", "BackoffLimitExceeded", message),
                                         condition("Failed", "BackoffLimitExceeded", message)],
               "startTime": time(start), "failed": 1, "ready": 0, "terminating": 0,
               "uncountedTerminatedPods": {}}})
    } else {
        let message = "Reached expected number of succeeded pods";
        json!({"status": {"conditions": [condition("SuccessCriteriaMet", "CompletionsReached", message),
                                         condition("Complete", "CompletionsReached", message)],
               "startTime": time(start), "completionTime": time(end), "succeeded": 1,
               "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}})
    }
}

/// The pod the Job controller creates for `job` (created as Pending, its status later).
pub fn build_pod(job: &Job, i: usize) -> Pod {
    let name = job.metadata.name.clone().unwrap();
    let uid = job.metadata.uid.clone().unwrap();
    let template = job.spec.as_ref().unwrap().template.clone();
    let mut pod = json!({
        "metadata": {"name": format!("{name}-{:05x}", i), "generateName": format!("{name}-"),
            "namespace": job.metadata.namespace, "labels": template.metadata.as_ref().unwrap().labels,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                 "controller": true, "blockOwnerDeletion": true}]},
        "spec": template.spec,
    });
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("batch.kubernetes.io/job-name", name.as_str()),
        ("controller-uid", uid.as_str()),
        ("job-name", name.as_str()),
    ] {
        pod["metadata"]["labels"][key] = json!(value);
    }
    pod["spec"]["schedulerName"] = json!("bench.kubeci.io/nobody");
    serde_json::from_value(pod).unwrap()
}

/// The status the kubelet writes for the finished pod of build `i`, started at `start`.
pub fn pod_status(pod: &Pod, i: usize, start: i64) -> Value {
    let spec = pod.spec.as_ref().unwrap();
    let image = |c: &k8s_openapi::api::core::v1::Container| c.image.clone().unwrap_or_default();
    let mounts = |c: &k8s_openapi::api::core::v1::Container| {
        let mounts: Vec<Value> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| json!({"name": m.name, "mountPath": m.mount_path}))
            .collect();
        mounts
    };
    let container = |c: &k8s_openapi::api::core::v1::Container,
                     code: i32,
                     from: i64,
                     to: i64,
                     message: Option<String>| {
        let id = format!(
            "containerd://{:064x}",
            (i as u128) << 8 | u128::from(c.name.len() as u8)
        );
        json!({"name": c.name, "image": image(c), "imageID": format!("{}@sha256:{:064x}", image(c), i),
               "containerID": id, "ready": false, "restartCount": 0, "started": false,
               "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                         "startedAt": time(from), "finishedAt": time(to), "containerID": id, "message": message}},
               "lastState": {}, "volumeMounts": mounts(c),
               "user": {"linux": {"uid": 1000, "gid": 1000, "supplementalGroups": [1000]}}})
    };
    let clone = &spec.init_containers.as_ref().unwrap()[0];
    let build = &spec.containers[0];
    let end = start + 95;
    let code = if failed(i) { 1 } else { 0 };
    let condition = |kind: &str, ok: bool, at: i64| {
        let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": time(at)});
        if !ok && kind != "PodReadyToStartContainers" {
            c["reason"] = json!("PodCompleted");
        }
        c
    };
    json!({"status": {
        "phase": if failed(i) { "Failed" } else { "Succeeded" },
        "conditions": [condition("PodReadyToStartContainers", false, end), condition("Initialized", true, start + 4),
                       condition("Ready", false, end), condition("ContainersReady", false, end),
                       condition("PodScheduled", true, start)],
        "hostIP": "10.0.0.7", "hostIPs": [{"ip": "10.0.0.7"}],
        "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 2), "podIPs": [{"ip": format!("10.244.{}.{}", i / 250, i % 250 + 2)}],
        "startTime": time(start),
        "initContainerStatuses": [container(clone, 0, start + 1, start + 4, Some(format!("commit={COMMIT}\nbranch=main\n")))],
        "containerStatuses": [container(build, code, start + 5, end, None)],
    }})
}

/// Runs `each` over `items`, 16 at a time; their results in order.
pub async fn in_parallel<T, R, F>(items: Vec<T>, each: impl Fn(T) -> F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: std::future::Future<Output = R> + Send + 'static,
{
    let mut pending = tokio::task::JoinSet::new();
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (index, item) in items.into_iter().enumerate() {
        if pending.len() >= 16 {
            let (at, result) = pending.join_next().await.unwrap().unwrap();
            results[at] = Some(result);
        }
        let work = each(item);
        pending.spawn(async move { (index, work.await) });
    }
    while let Some(done) = pending.join_next().await {
        let (at, result) = done.unwrap();
        results[at] = Some(result);
    }
    results.into_iter().map(Option::unwrap).collect()
}
