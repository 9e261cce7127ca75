//! The simulated Job controller and kubelet: Jobs become pods that follow a script or
//! really run through the local engine, and Jobs end as Kubernetes ends them.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, Condition};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::json;

fn job(name: &str, extra_spec: serde_json::Value) -> Job {
    let mut value = json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "busybox:1.36", "command": ["true"]}]}}},
    });
    kubeci_spec_merge(&mut value["spec"], extra_spec);
    serde_json::from_value(value).unwrap()
}

fn kubeci_spec_merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    if let (Some(t), serde_json::Value::Object(p)) = (target.as_object_mut(), patch) {
        for (k, v) in p {
            t.insert(k, v);
        }
    }
}

fn condition(kind: &'static str) -> impl Condition<Job> {
    move |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
    }
}

fn reason(job: &Job, kind: &str) -> String {
    job.status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap()
        .reason
        .clone()
        .unwrap()
}

async fn wait(jobs: &Api<Job>, name: &str, kind: &'static str) -> Job {
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(jobs.clone(), name, condition(kind)),
    )
    .await
    .unwrap_or_else(|_| panic!("job {name} never became {kind}"))
    .unwrap()
    .unwrap()
}

async fn pod_of(pods: &Api<Pod>, job: &str) -> Pod {
    let selector = format!("batch.kubernetes.io/job-name={job}");
    for _ in 0..500 {
        if let Some(pod) = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
        {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no pod for job {job}");
}

async fn waiting_reason(pods: &Api<Pod>, job: &str, init: bool) -> (String, String) {
    for _ in 0..500 {
        let pod = pod_of(pods, job).await;
        let statuses = if init {
            pod.status
                .as_ref()
                .and_then(|s| s.init_container_statuses.clone())
        } else {
            pod.status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
        };
        if let Some(waiting) = statuses
            .and_then(|s| s.into_iter().next())
            .and_then(|s| s.state)
            .and_then(|s| s.waiting)
        {
            if waiting.reason.as_deref() != Some("PodInitializing") {
                return (
                    waiting.reason.unwrap_or_default(),
                    waiting.message.unwrap_or_default(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pod of {job} never waited");
}

#[tokio::test]
async fn a_succeeding_pod_completes_its_job_and_its_log_is_readable() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: vec!["compiling".into(), "tests passed".into()],
        duration: Duration::from_millis(50),
    });
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    jobs.create(&PostParams::default(), &job("ok", json!({})))
        .await
        .unwrap();
    let done = wait(&jobs, "ok", "Complete").await;
    let status = done.status.unwrap();
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.active, Some(0));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    let types: Vec<String> = status
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    let pod = pod_of(&pods, "ok").await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(pod.metadata.owner_references.unwrap()[0].kind, "Job");
    let log = pods
        .logs(pod.metadata.name.as_deref().unwrap(), &Default::default())
        .await
        .unwrap();
    assert_eq!(log, "compiling\ntests passed\n");
}

#[tokio::test]
async fn a_failing_pod_fails_its_job_with_the_exit_code() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Fail {
        exit_code: 3,
        logs: vec!["boom".into()],
        duration: Duration::ZERO,
    });
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    jobs.create(&PostParams::default(), &job("bad", json!({})))
        .await
        .unwrap();
    let failed = wait(&jobs, "bad", "Failed").await;
    assert_eq!(reason(&failed, "Failed"), "BackoffLimitExceeded");
    let pod = pod_of(&pods, "bad").await;
    let terminated = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_with_deadline_exceeded() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: Vec::new(),
        duration: Duration::from_secs(60),
    });
    let jobs: Api<Job> = Api::namespaced(server.client().await, "default");
    jobs.create(
        &PostParams::default(),
        &job("slow", json!({"activeDeadlineSeconds": 1})),
    )
    .await
    .unwrap();
    let failed = wait(&jobs, "slow", "Failed").await;
    assert_eq!(reason(&failed, "Failed"), "DeadlineExceeded");
    let message = failed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .message
        .unwrap();
    assert_eq!(message, "Job was active longer than specified deadline");
}

#[tokio::test]
async fn suspending_a_job_deletes_its_pods_and_resuming_starts_one() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: Vec::new(),
        duration: Duration::from_secs(60),
    });
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    jobs.create(
        &PostParams::default(),
        &job("queued", json!({"suspend": true})),
    )
    .await
    .unwrap();
    wait(&jobs, "queued", "Suspended").await;
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "a suspended job has no pod"
    );
    jobs.patch(
        "queued",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    let first = pod_of(&pods, "queued").await;
    jobs.patch(
        "queued",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    wait(&jobs, "queued", "Suspended").await;
    for _ in 0..500 {
        if pods
            .get_opt(first.metadata.name.as_deref().unwrap())
            .await
            .unwrap()
            .is_none()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("suspend did not delete the active pod");
}

#[tokio::test]
async fn pods_that_cannot_start_say_why_as_kubernetes_does() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|pod| {
        match pod
            .pointer("/metadata/labels/job-name")
            .and_then(|n| n.as_str())
        {
            Some("unschedulable") => PodBehaviour::NeverSchedule,
            Some("bad-image") => PodBehaviour::ImagePullError,
            _ => PodBehaviour::MissingSecret {
                secret: "aws-key".into(),
            },
        }
    });
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["unschedulable", "bad-image", "no-secret"] {
        jobs.create(&PostParams::default(), &job(name, json!({})))
            .await
            .unwrap();
    }
    assert_eq!(
        waiting_reason(&pods, "no-secret", false).await,
        (
            "CreateContainerConfigError".into(),
            "secret \"aws-key\" not found".into()
        )
    );
    let (reason, message) = waiting_reason(&pods, "bad-image", false).await;
    assert!(
        reason == "ErrImagePull" || reason == "ImagePullBackOff",
        "{reason}"
    );
    assert!(message.contains("busybox:1.36"), "{message}");
    let pod = pod_of(&pods, "unschedulable").await;
    for _ in 0..500 {
        let pod = pods
            .get(pod.metadata.name.as_deref().unwrap())
            .await
            .unwrap();
        if let Some(condition) = pod
            .status
            .and_then(|s| s.conditions)
            .and_then(|c| c.into_iter().find(|c| c.type_ == "PodScheduled"))
        {
            assert_eq!(
                (condition.status.as_str(), condition.reason.as_deref()),
                ("False", Some("Unschedulable"))
            );
            let events: Api<Event> = Api::namespaced(client.clone(), "default");
            let reasons: Vec<String> = events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            assert!(
                reasons.contains(&"FailedScheduling".to_owned()),
                "{reasons:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the pod was never marked unschedulable");
}

/// A pod whose template holds a finalizer, deleted while it runs: its containers are
/// killed (it fails, as the kubelet ends it), the Job controller takes its own finalizer
/// off, and the pod stays — being deleted, its log readable — until the last one goes.
#[tokio::test]
async fn a_finalizer_keeps_a_pod_deleted_mid_run_with_its_log_until_it_is_removed() {
    let server = FakeApiServer::start().await;
    // A line every 100 ms, for far longer than the test.
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: (0..10_000).map(|i| format!("line {i}")).collect(),
        duration: Duration::from_secs(1000),
    });
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut held = job("held", json!({}));
    held.spec.as_mut().unwrap().template.metadata =
        Some(serde_json::from_value(json!({"finalizers": ["kubeci.io/archive"]})).unwrap());
    jobs.create(&PostParams::default(), &held).await.unwrap();
    let pod = pod_of(&pods, "held").await;
    let name = pod.metadata.name.clone().unwrap();
    assert_eq!(
        pod.metadata.finalizers.as_deref(),
        Some(
            &[
                "kubeci.io/archive".to_owned(),
                "batch.kubernetes.io/job-tracking".to_owned()
            ][..]
        ),
        "the template's finalizers, then the Job controller's"
    );
    // Wait for the first line: the pod runs.
    for _ in 0..500 {
        if pods
            .logs(&name, &Default::default())
            .await
            .is_ok_and(|l| !l.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pods.delete(&name, &Default::default()).await.unwrap();
    let mut deleted = pods.get(&name).await.unwrap();
    for _ in 0..500 {
        if deleted.metadata.finalizers.as_deref() == Some(&["kubeci.io/archive".to_owned()][..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        deleted = pods.get(&name).await.unwrap();
    }
    assert!(deleted.metadata.deletion_timestamp.is_some());
    assert_eq!(
        deleted.metadata.finalizers.as_deref(),
        Some(&["kubeci.io/archive".to_owned()][..]),
        "the Job controller counted the pod and took only its own finalizer off"
    );
    assert_eq!(
        deleted.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed"),
        "its containers were killed"
    );
    let log = pods.logs(&name, &Default::default()).await.unwrap();
    assert!(log.starts_with("line 0\n"), "{log}");
    let killed_at = log.lines().count();
    // Longer than a line's pause: a pod still running would have written one more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pods.logs(&name, &Default::default())
            .await
            .unwrap()
            .lines()
            .count(),
        killed_at,
        "its log ended when it was killed"
    );
    let release = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "kubeci.io/archive"},
                         {"op": "remove", "path": "/metadata/finalizers/0"}]);
    pods.patch(
        &name,
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(release).unwrap()),
    )
    .await
    .unwrap();
    assert!(
        pods.get_opt(&name).await.unwrap().is_none(),
        "the last finalizer removed, the pod is gone"
    );
}
