//! kubeci's hold on build pods, on the fake API server: each step's log read from the pod
//! with its times into the archive (whole, in pieces of bounded size, or with what could
//! be read and why not), and the finalizer removed by a guarded JSON patch.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeci_archive::Archive;
use kubeci_build::record::BuildJob;
use kubeci_build::record::BuildPod;
use kubeci_build::BuildRef;
use kubeci_engine::archive::{StepLog, StepReadError};
use kubeci_k8s::hold::{pod_steps, release, Released, GAVE_UP};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::json;

/// A pod that stays unscheduled (the test writes its logs), with `finalizers`.
async fn held_pod(server: &FakeApiServer, name: &str, finalizers: &[&str]) -> Api<Pod> {
    server.set_pod_behaviour(|_| PodBehaviour::NeverSchedule);
    let pods: Api<Pod> = Api::namespaced(server.client().await, "default");
    let pod = json!({
        "metadata": {"name": name, "finalizers": finalizers,
                     "labels": {"kubeci.io/job": "demo", "kubeci.io/build": "7"}},
        "spec": {"restartPolicy": "Never",
                 "initContainers": [{"name": "clone", "image": "kubeci"}],
                 "containers": [{"name": "build", "image": "bash:5"}]},
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    pods
}

fn finalizers(pod: &Pod) -> Vec<String> {
    pod.metadata.finalizers.clone().unwrap_or_default()
}

const BUILD: BuildRef<'static> = BuildRef {
    namespace: "default",
    job: "demo",
    number: 7,
};

/// Every line of a step as read for the archive: (has a time, bytes), or the error that
/// ended it.
async fn lines_of(step: StepLog) -> (Vec<(bool, Vec<u8>)>, Option<StepReadError>) {
    let mut lines = step.lines;
    let mut out = Vec::new();
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => out.push((line.time.is_some(), line.text)),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn steps_of(client: &kube::Client, pod: &str) -> Vec<StepLog> {
    let pod = BuildPod {
        metadata: kube::api::ObjectMeta {
            name: Some(pod.to_owned()),
            ..Default::default()
        },
        status: None,
    };
    pod_steps(client, "default", Some(&pod), &BuildJob::default())
}

#[tokio::test]
async fn each_step_s_log_is_read_with_each_line_s_time_and_exact_bytes_after_its_step_line() {
    let server = FakeApiServer::start().await;
    let _pods = held_pod(&server, "demo-7-abc", &["kubeci.io/archive"]).await;
    {
        let mut store = server.store();
        store.append_log("default", "demo-7-abc", "clone", "Cloning into 'src'...");
        store.append_log("default", "demo-7-abc", "build", "make: all done\r");
        store.append_log("default", "demo-7-abc", "build", "  indented  ");
        store.append_log("default", "demo-7-abc", "build", "");
    }
    let steps = steps_of(&server.client().await, "demo-7-abc");
    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["clone", "build"]);
    let mut steps = steps.into_iter();
    assert_eq!(
        lines_of(steps.next().unwrap()).await,
        (
            vec![
                (true, b"==> clone: init container started".to_vec()),
                (true, b"Cloning into 'src'...".to_vec())
            ],
            None
        )
    );
    assert_eq!(
        lines_of(steps.next().unwrap()).await,
        (
            vec![
                (true, b"==> build: container started".to_vec()),
                (true, b"make: all done\r".to_vec()),
                (true, b"  indented  ".to_vec()),
                (true, Vec::new())
            ],
            None
        ),
        "every byte kept, a carriage return and spaces included"
    );
}

#[tokio::test]
async fn a_step_that_never_started_has_no_log_and_an_unreadable_one_says_why() {
    let server = FakeApiServer::start().await;
    let _pods = held_pod(&server, "demo-7-abc", &["kubeci.io/archive"]).await;
    server
        .store()
        .append_log("default", "demo-7-abc", "clone", "cloned");
    let client = server.client().await;
    let build = steps_of(&client, "demo-7-abc").pop().unwrap();
    assert_eq!(
        lines_of(build).await,
        (Vec::new(), None),
        "a container waiting to start wrote nothing"
    );

    // The pod is gone before its log was read: the API server says so, for good.
    for step in steps_of(&client, "demo-7-gone") {
        let (lines, error) = lines_of(step).await;
        assert_eq!(lines, []);
        let Some(StepReadError::Lost(why)) = error else {
            panic!("a pod that is gone loses its log: {error:?}");
        };
        assert!(
            why.contains("could not be read") && why.contains("demo-7-gone"),
            "{why}"
        );
    }

    // The API server cannot be reached: nothing is lost yet, the build is archived later.
    server.stop();
    let (lines, error) = lines_of(steps_of(&client, "demo-7-abc").remove(0)).await;
    assert_eq!(lines, []);
    assert!(matches!(error, Some(StepReadError::Retry(_))), "{error:?}");
}

#[tokio::test]
async fn a_build_whose_pod_is_gone_has_each_step_lost_and_says_why() {
    let client = FakeApiServer::start().await.client().await;
    let mut ran: BuildJob = serde_json::from_value(json!({"status": {
        "startTime": "2026-11-30T07:33:35Z", "failed": 1}}))
    .unwrap();
    for (job, why) in [
        (ran.clone(), "its pod was gone before its log could be read"),
        (
            {
                ran.metadata.annotations = Some(
                    [(
                        GAVE_UP.to_owned(),
                        "kubeci gave up after 86400 s".to_owned(),
                    )]
                    .into(),
                );
                ran
            },
            "kubeci gave up after 86400 s",
        ),
    ] {
        let steps = pod_steps(&client, "default", None, &job);
        assert_eq!(steps.len(), 2);
        for step in steps {
            let (lines, error) = lines_of(step).await;
            assert_eq!(lines, []);
            assert_eq!(error, Some(StepReadError::Lost(why.into())));
        }
    }
    assert!(
        pod_steps(&client, "default", None, &BuildJob::default()).is_empty(),
        "a build that never ran has no steps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_mb_log_is_archived_whole_line_by_line() {
    let server = FakeApiServer::start().await;
    let _pods = held_pod(&server, "demo-7-abc", &["kubeci.io/archive"]).await;
    let lines = 600_000usize;
    {
        let mut store = server.store();
        for i in 0..lines {
            let line = format!("{i:>10} {}", "x".repeat(88));
            store.append_log("default", "demo-7-abc", "build", &line);
        }
    }
    let archive = Archive::in_memory();
    let step = steps_of(&server.client().await, "demo-7-abc")
        .pop()
        .unwrap();
    // As the archive takes a step's lines (`BuildArchive::put_complete`).
    let stream = step.lines.map(|line| {
        line.map(|line| kubeci_archive::LogLine {
            time: line.time,
            text: line.text.into(),
        })
    });
    let written = archive.put_log(BUILD, "build", stream).await.unwrap();
    assert_eq!(written.lines, lines as u64 + 1, "its lines and the step's");
    let mut read = archive.log(BUILD, "build", 0).await.unwrap().unwrap();
    read.next().await.unwrap().unwrap();
    let (mut count, mut bytes) = (0usize, 0usize);
    while let Some(line) = read.next().await {
        let line = line.unwrap().line;
        assert!(line.time.is_some());
        assert_eq!(&line.text[..10], format!("{count:>10}").as_bytes());
        bytes += line.text.len() + 1;
        count += 1;
    }
    assert_eq!(count, lines);
    assert_eq!(bytes, 60_000_000, "60 MB of log, every byte");
}

#[tokio::test]
async fn release_removes_only_kubeci_s_finalizer_and_a_stale_read_loses_nobody_s_change() {
    let server = FakeApiServer::start().await;
    let pods = held_pod(
        &server,
        "demo-7-abc",
        &["example.com/other", "kubeci.io/archive"],
    )
    .await;
    let as_read: BuildPod = serde_json::from_value(
        serde_json::to_value(pods.get("demo-7-abc").await.unwrap()).unwrap(),
    )
    .unwrap();
    // Another controller adds its finalizer first, after kubeci read the pod.
    pods.patch(
        "demo-7-abc",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers":
            ["example.com/first", "example.com/other", "kubeci.io/archive"]}})),
    )
    .await
    .unwrap();
    let builds: Api<BuildPod> = Api::namespaced(server.client().await, "default");
    assert_eq!(release(&builds, &as_read).await.unwrap(), Released::Changed);
    assert_eq!(
        finalizers(&pods.get("demo-7-abc").await.unwrap()),
        [
            "example.com/first",
            "example.com/other",
            "kubeci.io/archive"
        ],
        "nothing changed: without the test, the finalizer at kubeci's old place would be gone"
    );
    let fresh = builds.get("demo-7-abc").await.unwrap();
    assert_eq!(release(&builds, &fresh).await.unwrap(), Released::Released);
    assert_eq!(
        finalizers(&pods.get("demo-7-abc").await.unwrap()),
        ["example.com/first", "example.com/other"]
    );
    assert_eq!(
        release(&builds, &fresh).await.unwrap(),
        Released::Changed,
        "released already: the test refuses a second removal"
    );
}

#[tokio::test]
async fn a_released_deleted_pod_goes_and_releasing_a_gone_pod_is_no_error() {
    let server = FakeApiServer::start().await;
    let pods = held_pod(&server, "demo-7-abc", &["kubeci.io/archive"]).await;
    pods.delete("demo-7-abc", &Default::default())
        .await
        .unwrap();
    let builds: Api<BuildPod> = Api::namespaced(server.client().await, "default");
    let deleting = builds.get("demo-7-abc").await.unwrap();
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "held while deleted"
    );
    assert_eq!(
        release(&builds, &deleting).await.unwrap(),
        Released::Released
    );
    assert!(pods.get_opt("demo-7-abc").await.unwrap().is_none());
    assert_eq!(release(&builds, &deleting).await.unwrap(), Released::Gone);
}
