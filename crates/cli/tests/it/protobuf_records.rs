//! kubeci follows build Jobs and pods in Kubernetes' protobuf encoding
//! (`kubeci_build::record::protobuf`, its own reader of the fields it keeps). What it reads
//! from a real kube-apiserver's protobuf watch must be the record it reads from the same
//! objects in JSON, in every state a build's Job and pod go through: this checks the
//! reader's field numbers, its envelope and framing, and what Go's `omitempty` leaves out,
//! against the API server itself; and that each record, packed as kubeci's caches pack it
//! (`ToProtobuf`), reads back the same.

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use kubeci_build::record::protobuf::{self, FromProtobuf, ToProtobuf};
use kubeci_build::record::{BuildJob, BuildPod};
use serde_json::{json, Value};

use crate::common::cluster::TestCluster;

const T0: &str = "2026-12-07T10:00:00Z";
const T1: &str = "2026-12-07T10:01:35Z";

fn labels(build: usize) -> Value {
    json!({"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": "demo",
           "kubeci.io/build": build.to_string(), "team": "a"})
}

/// Build `build`'s Job, managed by no controller (`spec.managedBy`): only the test writes
/// its status.
fn job(build: usize, suspend: bool) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": format!("demo-{build}"), "labels": labels(build),
            "annotations": {"kubeci.io/trigger": "manual", "kubeci.io/pr": "12", "other.io/x": "y"},
            "finalizers": ["kubeci.io/hold"]},
        "spec": {"suspend": suspend, "backoffLimit": 0, "managedBy": "test.kubeci.io/nobody",
            "template": {"metadata": {"labels": labels(build)},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "bash:5"}]}}}
    }))
    .unwrap()
}

fn condition(kind: &str, reason: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": "m",
           "lastProbeTime": T1, "lastTransitionTime": T1})
}

/// The statuses a build's Job goes through, as the Job controller writes them.
fn job_statuses() -> Vec<Value> {
    let counts = json!({"ready": 0, "terminating": 0, "uncountedTerminatedPods": {}});
    let with = |status: Value| {
        let mut all = counts.clone();
        all.as_object_mut()
            .unwrap()
            .extend(status.as_object().unwrap().clone());
        json!({"status": all})
    };
    vec![
        with(json!({"startTime": T0, "active": 1})),
        with(
            json!({"startTime": T0, "completionTime": T1, "succeeded": 1, "conditions": [
            condition("SuccessCriteriaMet", "CompletionsReached"), condition("Complete", "CompletionsReached")]}),
        ),
        with(json!({"startTime": T0, "failed": 1, "conditions": [
            condition("FailureTarget", "BackoffLimitExceeded"), condition("Failed", "BackoffLimitExceeded")]})),
    ]
}

/// A build's pod (no scheduler takes it, so only the test writes its status).
fn pod(build: usize, owner: &Job) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("demo-{build}-pod"), "labels": labels(build),
            "finalizers": ["kubeci.io/hold"],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": owner.metadata.name,
                "uid": owner.metadata.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"restartPolicy": "Never", "schedulerName": "test.kubeci.io/nobody",
            "initContainers": [{"name": "clone", "image": "kubeci/clone"}],
            "containers": [{"name": "build", "image": "bash:5"}]}
    }))
    .unwrap()
}

fn terminated(code: i32, message: Option<&str>) -> Value {
    json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
        "message": message, "startedAt": T0, "finishedAt": T1, "containerID": "containerd://1"}})
}

fn container(name: &str, state: Value) -> Value {
    json!({"name": name, "image": "bash:5", "imageID": "", "ready": false, "restartCount": 0, "state": state})
}

/// The statuses a build's pod goes through, as the scheduler and kubelet write them.
fn pod_statuses() -> Vec<Value> {
    let scheduled = |ok: bool| {
        json!({"type": "PodScheduled", "status": if ok { "True" } else { "False" },
               "reason": if ok { Value::Null } else { json!("Unschedulable") },
               "message": "0/1 nodes are available", "lastTransitionTime": T0})
    };
    let status = |phase: &str, init: Value, main: Value| {
        json!({"status": {"phase": phase, "startTime": T0,
            "conditions": [scheduled(true), {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": T1}],
            "initContainerStatuses": [container("clone", init)],
            "containerStatuses": [container("build", main)]}})
    };
    let waiting =
        |reason: &str| json!({"waiting": {"reason": reason, "message": "back-off pulling image"}});
    vec![
        json!({"status": {"phase": "Pending", "conditions": [scheduled(false)]}}),
        status("Pending", terminated(0, None), waiting("ImagePullBackOff")),
        status(
            "Running",
            terminated(0, None),
            json!({"running": {"startedAt": T0}}),
        ),
        status(
            "Failed",
            terminated(12, Some("clone: not found")),
            waiting("PodInitializing"),
        ),
        status(
            "Failed",
            terminated(0, None),
            terminated(-1, Some("killed")),
        ),
        status("Succeeded", terminated(0, None), terminated(0, None)),
    ]
}

/// Every object of `url` (a resource URL) as kubeci reads it from a protobuf watch that
/// streams its first list, by name, and the resource version that list ended at. The watch is
/// read only up to that end: the cluster's own controllers may change the objects after it
/// (the pod garbage collector force-deletes a terminating pod no node took).
async fn from_protobuf<K: FromProtobuf + kube::Resource>(
    client: &kube::Client,
    url: &str,
) -> (BTreeMap<String, K>, String) {
    let query = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=30";
    let request = http::Request::get(format!("{url}?{query}"))
        .header("Accept", "application/vnd.kubernetes.protobuf;stream=watch")
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut objects, mut buffer) = (BTreeMap::new(), Vec::new());
    loop {
        let Some(len) = buffer
            .get(..4)
            .map(|n| u32::from_be_bytes(n.try_into().unwrap()) as usize)
        else {
            buffer.extend_from_slice(&next_chunk(&mut body).await);
            continue;
        };
        if buffer.len() < 4 + len {
            buffer.extend_from_slice(&next_chunk(&mut body).await);
            continue;
        }
        let frame: Vec<u8> = buffer.drain(..4 + len).skip(4).collect();
        let (kind, object) = protobuf::watch_event(&frame).unwrap();
        match kind {
            "ADDED" => {
                let object = K::from_enveloped(object).unwrap();
                objects.insert(object.meta().name.clone().unwrap(), object);
            }
            "BOOKMARK" => {
                let envelope = protobuf::envelope(object).unwrap();
                let bookmark = protobuf::bookmark(envelope.raw).unwrap();
                if bookmark.initial_events_end {
                    return (objects, bookmark.resource_version);
                }
            }
            other => panic!("a {other} event before the first list ended"),
        }
    }
}

/// The next piece of a watch's body; the watch must not end before its first list has.
async fn next_chunk(body: &mut kube::client::Body) -> bytes::Bytes {
    loop {
        let frame = body.frame().await;
        let frame = frame.expect("the watch ended before its first list did");
        if let Ok(data) = frame.unwrap().into_data() {
            return data;
        }
    }
}

/// Every object of `api` in JSON, by name, as it was at `resource_version`.
async fn from_json<K>(api: &Api<K>, resource_version: &str) -> BTreeMap<String, K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let at = ListParams::default()
        .at(resource_version)
        .matching(VersionMatch::Exact);
    let listed = api.list(&at).await.unwrap();
    let named = listed.items.into_iter();
    named.map(|o| (o.meta().name.clone().unwrap(), o)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
async fn a_real_api_server_s_protobuf_reads_as_the_records_its_json_does() {
    let cluster = TestCluster::real().await;
    let (client, ns) = (cluster.client.clone(), cluster.namespace.clone());
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (post, patch) = (PostParams::default(), PatchParams::default());
    let owner = jobs.create(&post, &job(0, true)).await.unwrap();
    for (build, status) in job_statuses().into_iter().enumerate() {
        let created = jobs.create(&post, &job(build + 1, false)).await.unwrap();
        let name = created.metadata.name.unwrap();
        jobs.patch_status(&name, &patch, &Patch::Merge(&status))
            .await
            .unwrap();
    }
    for (build, status) in pod_statuses().into_iter().enumerate() {
        let created = pods.create(&post, &pod(build, &owner)).await.unwrap();
        let name = created.metadata.name.unwrap();
        pods.patch_status(&name, &patch, &Patch::Merge(&status))
            .await
            .unwrap();
    }
    // Being deleted: held by its finalizer, with a deletion time and grace.
    pods.delete("demo-2-pod", &DeleteParams::default())
        .await
        .unwrap();

    let job_api: Api<BuildJob> = Api::namespaced(client.clone(), &ns);
    let (read_jobs, version) = from_protobuf::<BuildJob>(&client, job_api.resource_url()).await;
    assert_eq!(read_jobs, from_json(&job_api, &version).await);
    assert_eq!(read_jobs.len(), 4);
    let pod_api: Api<BuildPod> = Api::namespaced(client.clone(), &ns);
    let (read_pods, version) = from_protobuf::<BuildPod>(&client, pod_api.resource_url()).await;
    assert_eq!(read_pods, from_json(&pod_api, &version).await);
    assert_eq!(read_pods.len(), 6);
    // kubeci's caches keep each record as protobuf of its own writing: it must read back
    // the same, in every state.
    for job in read_jobs.values() {
        assert_eq!(&BuildJob::from_protobuf(&job.to_protobuf()).unwrap(), job);
    }
    for pod in read_pods.values() {
        assert_eq!(&BuildPod::from_protobuf(&pod.to_protobuf()).unwrap(), pod);
    }
    let deleted = &read_pods["demo-2-pod"].metadata;
    assert!(
        deleted.deletion_timestamp.is_some() && deleted.deletion_grace_period_seconds.is_some()
    );

    for name in read_pods.keys() {
        let release = json!({"metadata": {"finalizers": null}});
        pods.patch(name, &patch, &Patch::Merge(&release))
            .await
            .unwrap();
    }
    for name in read_jobs.keys() {
        let release = json!({"metadata": {"finalizers": null}});
        jobs.patch(name, &patch, &Patch::Merge(&release))
            .await
            .unwrap();
    }
    cluster.finish().await;
}
