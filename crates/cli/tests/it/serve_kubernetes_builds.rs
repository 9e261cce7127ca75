//! A build's life under `kubeci serve --kubernetes`: queueing under `max_concurrency`,
//! cancel, retention, pods that can never start, the builds of deleted jobs, cron, logs,
//! and notifications — against the fake API server with the real kube client.

use crate::common;

use std::time::Duration;

use common::serve::{
    builds, configmap, http, job_yaml, json, serve_with, state, trigger, wait, Receiver, AUTHORIZED,
};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::Value;

fn job_in_store(server: &FakeApiServer, name: &str) -> Option<Value> {
    server
        .store()
        .get(6, "default", name)
        .ok()
        .map(|j| (*j).clone())
}

fn suspended(server: &FakeApiServer, name: &str) -> bool {
    job_in_store(server, name).is_some_and(|j| j["spec"]["suspend"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_builds_wait_for_their_slot_in_order_and_can_be_cancelled() {
    let server = FakeApiServer::start().await;
    // Build 1 runs until it is cancelled; the others finish at once.
    server.set_pod_behaviour(|pod| {
        if pod["metadata"]["labels"]["kubeci.io/build"] == "1" {
            PodBehaviour::Succeed {
                logs: vec!["working".into()],
                duration: Duration::from_secs(600),
            }
        } else {
            PodBehaviour::succeed()
        }
    });
    server
        .preload(vec![configmap(
            "queue",
            &job_yaml(
                "queue",
                "    max_concurrency: 1\n    retention:\n      keep: 2\n",
            ),
        )])
        .unwrap();
    let kubeci = serve_with(&server, &[]);
    for expected in 1..=3 {
        let (status, body) = trigger(&kubeci, "queue", None);
        assert_eq!(
            (status, body["number"].as_u64()),
            (201, Some(expected)),
            "{body}"
        );
    }
    wait("build 1 to run", || state(&kubeci, "queue", 1) == "running");
    assert!(!suspended(&server, "queue-1"));
    assert!(suspended(&server, "queue-2"), "build 2 waits for the slot");
    assert!(suspended(&server, "queue-3"));
    assert_eq!(state(&kubeci, "queue", 3), "queued");

    // Cancel the queued build 3: it never runs.
    let (status, body) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/queue/builds/3/cancel",
        &[AUTHORIZED],
    );
    assert_eq!(status, 200, "{body}");
    let cancelled: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cancelled["state"], "aborted");
    assert_eq!(cancelled["message"], "cancelled by api");

    // Cancel the running build 1: its pod goes, build 2 takes the slot and succeeds.
    let (status, _) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/queue/builds/1/cancel",
        &[AUTHORIZED],
    );
    assert_eq!(status, 200);
    wait("build 2 to succeed", || {
        state(&kubeci, "queue", 2) == "succeeded"
    });
    assert_eq!(
        state(&kubeci, "queue", 3),
        "aborted",
        "a cancelled build stays cancelled"
    );
    let pods_of_3 = server
        .store()
        .labelled(3, "default", "kubeci.io/job", "queue")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["kubeci.io/build"] == "3")
        .count();
    assert!(pods_of_3 == 0, "build 3 never got a pod");

    // Cancelling a finished build is refused and changes nothing.
    let (status, body) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/queue/builds/2/cancel",
        &[AUTHORIZED],
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(state(&kubeci, "queue", 2), "succeeded");
    let (status, _) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/queue/builds/2/cancel",
        &[],
    );
    assert_eq!(status, 401);

    // Retention keeps the newest two finished builds: build 1's Job is deleted.
    wait("build 1 to be deleted", || {
        job_in_store(&server, "queue-1").is_none()
    });
    let numbers: Vec<u64> = builds(&kubeci, "queue")
        .iter()
        .filter_map(|b| b["number"].as_u64())
        .collect();
    assert_eq!(numbers, [3, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_lets_its_builds_finish_or_cancels_them_by_option() {
    for cancel in [false, true] {
        let server = FakeApiServer::start().await;
        server.set_pod_behaviour(|pod| {
            if pod["metadata"]["labels"]["kubeci.io/build"] == "1" {
                PodBehaviour::Succeed {
                    logs: Vec::new(),
                    duration: if cancelled_variant(pod) {
                        Duration::from_secs(600)
                    } else {
                        Duration::from_millis(1500)
                    },
                }
            } else {
                PodBehaviour::succeed()
            }
        });
        let name = if cancel { "doomed" } else { "orphan" };
        server
            .preload(vec![configmap(name, &job_yaml(name, ""))])
            .unwrap();
        let flags: &[&str] = if cancel { &["--cancel-on-delete"] } else { &[] };
        let kubeci = serve_with(&server, flags);
        assert_eq!(trigger(&kubeci, name, None).0, 201);
        wait("the build to run", || state(&kubeci, name, 1) == "running");
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(server.client().await, "default");
        cms.delete(name, &DeleteParams::default()).await.unwrap();
        let expected = if cancel { "aborted" } else { "succeeded" };
        wait("the build's end", || state(&kubeci, name, 1) == expected);
        if cancel {
            let build = &builds(&kubeci, name)[0];
            assert_eq!(
                build["message"],
                "cancelled by kubeci (the job's ConfigMap was deleted)"
            );
        }
        assert_eq!(trigger(&kubeci, name, None).0, 404, "the job is gone");
    }
}

fn cancelled_variant(pod: &Value) -> bool {
    pod["metadata"]["labels"]["kubeci.io/job"] == "doomed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_starts_each_due_run_once_and_states_are_notified_once() {
    let server = FakeApiServer::start().await;
    server
        .preload(vec![configmap(
            "nightly",
            &job_yaml("nightly", "    triggers:\n      cron: '* * * * *'\n"),
        )])
        .unwrap();
    let receiver = Receiver::start().await;
    let kubeci = serve_with(&server, &["--notify-url", &receiver.url]);
    wait("the due cron run to start", || {
        builds(&kubeci, "nightly")
            .first()
            .is_some_and(|b| b["trigger"] == "cron")
    });
    wait("its success to be notified", || {
        receiver.finals("nightly", 1) == ["success"]
    });
    wait("the success to be recorded", || {
        builds(&kubeci, "nightly")[0]["reported"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s == "success"))
    });
    // Another kubeci (a restart) does not start the same run again.
    drop(kubeci);
    let kubeci = serve_with(&server, &["--notify-url", &receiver.url]);
    let ledger = server
        .store()
        .get(7, "default", "kubeci-job-nightly")
        .unwrap();
    let requests: Vec<Value> = serde_json::from_str(
        ledger["metadata"]["annotations"]["kubeci.io/requests"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let cron_keys: Vec<&str> = requests.iter().filter_map(|r| r["key"].as_str()).collect();
    // Each build is one distinct cron time (the test may cross a minute boundary).
    let jobs = Api::<Job>::namespaced(server.client().await, "default")
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let mut distinct = cron_keys.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), cron_keys.len());
    assert_eq!(jobs.len(), cron_keys.len(), "{cron_keys:?}");
    assert!(cron_keys.iter().all(|k| k.starts_with("cron:")));
    for (number, _) in receiver.accepted("nightly").keys() {
        assert_eq!(receiver.finals("nightly", *number).len(), 1);
    }
    drop(kubeci);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_log_streams_from_its_pod_and_retried_requests_start_nothing_new() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: vec!["step one".into(), "step two".into()],
        duration: Duration::from_millis(600),
    });
    server
        .preload(vec![configmap("logs", &job_yaml("logs", ""))])
        .unwrap();
    let kubeci = serve_with(
        &server,
        &[
            "--log-url-template",
            "https://logs.example/{namespace}/{pod}?from={start}&to={end}&b={job}-{build}",
        ],
    );
    let (status, first) = trigger(&kubeci, "logs", Some("retry-me"));
    assert_eq!(status, 201);
    let (status, again) = trigger(&kubeci, "logs", Some("retry-me"));
    assert_eq!(
        (status, &again["number"]),
        (200, &first["number"]),
        "the same build"
    );
    wait("the build to start", || {
        ["running", "succeeded"].contains(&state(&kubeci, "logs", 1).as_str())
    });
    let (status, log) = http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/logs/builds/1/log?follow=true",
        &[],
    );
    assert_eq!(status, 200);
    assert!(log.contains("step one\n"), "{log:?}");
    assert!(log.contains("step two\n"), "followed to the end: {log:?}");
    wait("the build to succeed", || {
        state(&kubeci, "logs", 1) == "succeeded"
    });
    let build = json(&kubeci, "/api/v1/jobs/default/logs/builds/1");
    let url = build["log_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://logs.example/default/logs-1-"),
        "{url}"
    );
    assert!(url.ends_with("&b=logs-1"), "{url}");
    assert!(!url.contains("{"), "{url}");
    assert_eq!(builds(&kubeci, "logs").len(), 1);
    let (status, _) = http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/logs/builds/9/log",
        &[],
    );
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_build_runs_end_to_end_through_the_local_engine() {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::git::Repo::new(dir.path());
    let commit = repo.head();
    let server = FakeApiServer::start().await;
    // The job names a remote repository (a cluster's builds cannot reach a path on
    // kubeci's machine); git's insteadOf makes it the local one, standing for the network.
    let url = "https://git.kubeci.test/team/local.git";
    let gitconfig = dir.path().join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!("[url \"{}\"]\n\tinsteadOf = {url}\n", repo.bare.display()),
    )
    .unwrap();
    let behaviour = PodBehaviour::RunLocally {
        kubeci_exe: env!("CARGO_BIN_EXE_kubeci").into(),
        secrets_dir: None,
        work_root: dir.path().join("pods"),
        env: vec![("GIT_CONFIG_GLOBAL".into(), gitconfig.display().to_string())],
    };
    server.set_pod_behaviour(move |_| behaviour.clone());
    let job = format!(
        "- job:\n    name: local\n    git:\n      url: {url}\n      branch: main\n    run_command: |\n      cat README.md\n      echo \"build $BUILD_NUMBER of $JOB_NAME at $GIT_COMMIT\"\n    timeout: 5m\n"
    );
    server.preload(vec![configmap("local", &job)]).unwrap();
    let kubeci = serve_with(&server, &[]);
    let (status, body) = trigger(&kubeci, "local", None);
    assert_eq!(status, 201, "{body}");
    wait("the build to succeed", || {
        state(&kubeci, "local", 1) == "succeeded"
    });
    let (status, log) = http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/local/builds/1/log",
        &[],
    );
    assert_eq!(status, 200);
    assert!(log.contains("checked out "), "the clone step's log: {log}");
    assert!(log.contains("test repository\n"), "{log}");
    assert!(
        log.contains(&format!("build 1 of local at {commit}\n")),
        "{log}"
    );

    // The Job is the build record (docs/design.md §3).
    let job = job_in_store(&server, "local-1").unwrap();
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels["kubeci.io/job"], "local");
    assert_eq!(labels["kubeci.io/build"], "1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "kubeci");
    let annotations = &job["metadata"]["annotations"];
    assert_eq!(annotations["kubeci.io/trigger"], "manual");
    assert_eq!(annotations["kubeci.io/requested-by"], "api");
    assert_eq!(annotations["kubeci.io/git-url"], url);
    assert_eq!(annotations["kubeci.io/branch"], "main");
    assert_eq!(
        annotations["kubeci.io/spec-hash"].as_str().unwrap().len(),
        64
    );
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 300);
}

/// With `--kubernetes`, a job whose repository is a path on kubeci's machine is invalid
/// (its build pod could not reach it): shown with the error, never built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_repository_path_is_an_error_with_kubernetes() {
    let server = FakeApiServer::start().await;
    let job =
        "- job:\n    name: here\n    git:\n      url: /srv/git/repo.git\n    run_command: make\n";
    server.preload(vec![configmap("here", job)]).unwrap();
    let kubeci = serve_with(&server, &[]);
    let jobs = common::serve::json(&kubeci, "/api/v1/jobs");
    let here = &jobs["items"][0];
    assert_eq!(here["valid"], false, "{jobs}");
    assert!(
        here["errors"][0]
            .as_str()
            .unwrap()
            .contains("a build pod cannot reach a path on kubeci's machine"),
        "{jobs}"
    );
    let (status, body) = trigger(&kubeci, "here", None);
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_over_64_kib_from_the_cluster_is_cut_and_marked() {
    let server = FakeApiServer::start().await;
    // A 1 MB line (a build printing without a newline), read from the API in pieces.
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: vec!["before".into(), "y".repeat(1_000_000), "after".into()],
        duration: Duration::from_millis(600),
    });
    server
        .preload(vec![configmap("long", &job_yaml("long", ""))])
        .unwrap();
    let kubeci = serve_with(&server, &[]);
    assert_eq!(trigger(&kubeci, "long", None).0, 201);
    wait("the build to start", || {
        ["running", "succeeded"].contains(&state(&kubeci, "long", 1).as_str())
    });
    let cut = format!("{} … [line cut at 65536 bytes]\n", "y".repeat(65536));
    for query in ["?follow=true", "", "?timestamps=true"] {
        let path = format!("/api/v1/jobs/default/long/builds/1/log{query}");
        let (status, log) = http(&kubeci, "GET", &path, &[]);
        let log = common::serve::dechunk(&log);
        assert_eq!(status, 200);
        let long = log
            .lines()
            .find(|l| l.contains("yyy"))
            .unwrap_or_else(|| panic!("{query}: no long line in {:.500}", log));
        assert!(
            format!("{long}\n").ends_with(&cut) && long.len() < cut.len() + 40,
            "{query}: a line of {} bytes, ending {:?}",
            long.len(),
            &long[long.len().saturating_sub(40)..]
        );
        assert!(
            log.contains("before\n") && log.contains("after\n"),
            "{query}"
        );
    }
    let (status, page) = http(&kubeci, "GET", "/jobs/default/long/builds/1", &[]);
    assert_eq!(status, 200);
    assert!(
        page.contains("[line cut at 65536 bytes]"),
        "the page shows the cut"
    );
}
