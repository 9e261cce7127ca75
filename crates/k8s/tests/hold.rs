//! kubeci's hold on build pods, on the fake API server: each step's log read from the pod
//! with its times into the archive (whole, in pieces of bounded size, or with what could
//! be read and why not), and the finalizer removed by a guarded JSON patch.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubeci_archive::Archive;
use kubeci_build::record::BuildPod;
use kubeci_build::BuildRef;
use kubeci_k8s::hold::{archive_pod_logs, release, Released};
use kubeci_k8s::steplog::read_step;
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

async fn archived_lines(archive: &Archive, step: &str) -> Vec<(bool, Vec<u8>)> {
    let Some(mut lines) = archive.log(BUILD, step, 0).await.unwrap() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(line) = lines.next().await {
        let line = line.unwrap().line;
        out.push((line.time.is_some(), line.text.to_vec()));
    }
    out
}

#[tokio::test]
async fn each_step_s_log_is_archived_with_each_line_s_time_and_exact_bytes() {
    let server = FakeApiServer::start().await;
    let pods = held_pod(&server, "demo-7-abc", &["kubeci.io/archive"]).await;
    {
        let mut store = server.store();
        store.append_log("default", "demo-7-abc", "clone", "Cloning into 'src'...");
        store.append_log("default", "demo-7-abc", "build", "make: all done\r");
        store.append_log("default", "demo-7-abc", "build", "  indented  ");
        store.append_log("default", "demo-7-abc", "build", "");
    }
    let archive = Archive::in_memory();
    let found = archive_pod_logs(&server.client().await, &archive, BUILD, "demo-7-abc")
        .await
        .unwrap();
    assert_eq!(found.gaps, [], "both logs were read whole");
    assert_eq!(
        archived_lines(&archive, "clone").await,
        [(true, b"Cloning into 'src'...".to_vec())]
    );
    assert_eq!(
        archived_lines(&archive, "build").await,
        [
            (true, b"make: all done\r".to_vec()),
            (true, b"  indented  ".to_vec()),
            (true, Vec::new())
        ]
    );
    drop(pods);
}

#[tokio::test]
async fn a_step_that_never_started_has_an_empty_log_and_an_unreadable_one_says_why() {
    let server = FakeApiServer::start().await;
    let _pods = held_pod(&server, "demo-7-abc", &["kubeci.io/archive"]).await;
    server
        .store()
        .append_log("default", "demo-7-abc", "clone", "cloned");
    let archive = Archive::in_memory();
    let client = server.client().await;
    let found = archive_pod_logs(&client, &archive, BUILD, "demo-7-abc")
        .await
        .unwrap();
    assert_eq!(found.gaps, [], "a container waiting to start wrote nothing");
    assert_eq!(archived_lines(&archive, "build").await, []);

    // The pod is gone before its log was read (its node went with it).
    let found = archive_pod_logs(&client, &archive, BUILD, "demo-7-gone")
        .await
        .unwrap();
    let steps: Vec<&str> = found.gaps.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(steps, ["clone", "build"]);
    assert!(
        found.gaps[0].1.contains("could not be read") && found.gaps[0].1.contains("demo-7-gone"),
        "{:?}",
        found.gaps
    );
    assert_eq!(
        archived_lines(&archive, "clone").await,
        [],
        "archived with what was read: nothing"
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
    let (stream, gap) = read_step(
        Api::namespaced(server.client().await, "default"),
        "demo-7-abc".into(),
        "build",
    );
    let written = archive.put_log(BUILD, "build", stream).await.unwrap();
    assert_eq!(gap.why(), None);
    assert_eq!(written.lines, lines as u64);
    let mut read = archive.log(BUILD, "build", 0).await.unwrap().unwrap();
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
