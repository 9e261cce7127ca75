//! A Job rendered by kubeci, created in the fake API server, whose pod really runs
//! through the local engine: the clone step clones a local repository, the script runs,
//! the Job ends as Kubernetes ends it, and the log is readable through `pods/log`.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::runtime::wait::await_condition;
use kubeci_build::BuildRequest;
use kubeci_render::{render, JobOrigin, RenderConfig};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::json;

fn repository(dir: &std::path::Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("hello.txt"), "hello from the repository\n").unwrap();
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "--quiet",
        "-m",
        "one",
    ]);
    repo
}

/// Renders a build of a job running `script`, runs it in the fake cluster, and returns the
/// finished Job, its pod and the logs of its clone and build containers.
async fn build_in_cluster(script: &str, finished: &'static str) -> (Job, Pod, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let server = FakeApiServer::start().await;
    let behaviour = PodBehaviour::RunLocally {
        kubeci_exe: PathBuf::from(env!("CARGO_BIN_EXE_kubeci")),
        secrets_dir: None,
        work_root: dir.path().join("pods"),
        env: Vec::new(),
    };
    server.set_pod_behaviour(move |_| behaviour.clone());
    let spec: kubeci_spec::Job = serde_json::from_value(json!({"name": "local", "git": {"url": repo.display().to_string(), "branch": "main"}, "run_command": script})).unwrap();
    let origin = JobOrigin {
        namespace: "default".into(),
        spec_hash: "h".into(),
        chart_version: None,
    };
    let rendered = render(
        &spec,
        &origin,
        &BuildRequest::manual(7),
        &RenderConfig::default(),
    )
    .unwrap();
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    jobs.create(&PostParams::default(), &rendered)
        .await
        .unwrap();
    let condition = move |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == finished && c.status == "True"))
    };
    let job = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(jobs.clone(), "local-7", condition),
    )
    .await
    .expect("the build finishes")
    .unwrap()
    .unwrap();
    let pod = pods
        .list(&ListParams::default().labels("kubeci.io/job=local"))
        .await
        .unwrap()
        .items
        .remove(0);
    let name = pod.metadata.name.clone().unwrap();
    let log = |container: &str| LogParams {
        container: Some(container.into()),
        ..LogParams::default()
    };
    let clone_log = pods.logs(&name, &log("clone")).await.unwrap();
    let build_log = pods.logs(&name, &log("build")).await.unwrap();
    (job, pod, clone_log, build_log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_job_runs_its_pod_through_the_local_engine_and_completes() {
    let (job, pod, clone_log, build_log) = build_in_cluster(
        "cat hello.txt\necho \"build $BUILD_NUMBER of $JOB_NAME\"",
        "Complete",
    )
    .await;
    assert_eq!(job.status.unwrap().succeeded, Some(1));
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Succeeded"));
    assert!(clone_log.contains("checked out "), "{clone_log}");
    assert_eq!(build_log, "hello from the repository\nbuild 7 of local\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_build_fails_its_job_with_the_exit_code() {
    let (job, pod, _, build_log) = build_in_cluster("echo failing\nexit 4", "Failed").await;
    let failed = job
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(build_log, "failing\n");
    let state = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap();
    assert_eq!(state.terminated.unwrap().exit_code, 4);
}
