//! `kubeci serve --kubernetes`, the real binary, against the fake API server with the real
//! kube client: jobs discovered from ConfigMaps, builds run as Jobs, numbers kept in the
//! cluster, and only the requests its RBAC allows — never a Secret.

use crate::common;

use std::time::Duration;

use common::serve::{builds, job_names, json, seed, serve, trigger, wait, Kubeci};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::Value;

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_job_is_served_built_edited_and_removed() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: vec!["ok".into()],
        duration: Duration::from_millis(20),
    });
    server.preload(vec![seed()]).unwrap();
    let kubeci = serve(&server);
    assert_eq!(job_names(&kubeci), ["start-helm-test"]);

    // A manual build runs as a Job carrying docs/design.md §3's labels and annotations.
    let (status, body) = trigger(&kubeci, "start-helm-test", None);
    assert_eq!(status, 201, "{body}");
    let created = body;
    assert_eq!(
        (created["number"].as_u64(), created["name"].as_str()),
        (Some(1), Some("start-helm-test-1"))
    );
    let jobs: Api<Job> = Api::namespaced(server.client().await, "default");
    let job = jobs.get("start-helm-test-1").await.unwrap();
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubeci.io/job"], "start-helm-test");
    assert_eq!(labels["kubeci.io/build"], "1");
    let annotations = job.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["kubeci.io/trigger"], "manual");
    let first_hash = annotations["kubeci.io/spec-hash"].clone();
    wait("the build to succeed", || {
        builds(&kubeci, "start-helm-test")
            .first()
            .is_some_and(|b| b["state"] == "succeeded")
    });
    let finished = &builds(&kubeci, "start-helm-test")[0];
    for key in ["created_at", "started_at", "finished_at"] {
        assert!(
            finished[key]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "{key}: {finished}"
        );
    }
    // The jobs page filters by the last build's state, as the cache holds it.
    let listed = |state: &str| {
        let (_, page) = common::serve::http(&kubeci, "GET", &format!("/?state={state}"), &[]);
        page.contains("<a href=\"/jobs/default/start-helm-test\">")
    };
    assert!(listed("succeeded") && !listed("failed") && !listed("never"));

    // An edit applies to the next build; the finished one keeps the spec it ran.
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut cm = cms.get("start-helm-test").await.unwrap();
    let job_yaml = cm.data.as_ref().unwrap()["job.yaml"].replace(
        "kubectl create namespace tiller",
        "kubectl create namespace tiller-2",
    );
    cm.data
        .as_mut()
        .unwrap()
        .insert("job.yaml".into(), job_yaml);
    cms.replace("start-helm-test", &PostParams::default(), &cm)
        .await
        .unwrap();
    let new_hash = |k: &Kubeci| {
        json(k, "/api/v1/jobs")["items"][0]["spec_hash"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    wait("the edit to be seen", || new_hash(&kubeci) != first_hash);
    server.set_pod_behaviour(|_| PodBehaviour::Fail {
        exit_code: 2,
        logs: vec!["no".into()],
        duration: Duration::from_millis(20),
    });
    let (status, _) = trigger(&kubeci, "start-helm-test", None);
    assert_eq!(status, 201);
    // The state filter goes by the newest build alone.
    wait("build 2 to fail", || {
        builds(&kubeci, "start-helm-test")
            .first()
            .is_some_and(|b| b["number"] == 2 && b["state"] == "failed")
    });
    assert!(listed("failed") && !listed("succeeded"));
    // The list reads kubeci's caches, which see the new Job once its watch event arrives.
    wait("build 2 to be listed", || {
        builds(&kubeci, "start-helm-test").len() == 2
    });
    let all = builds(&kubeci, "start-helm-test");
    assert_eq!(all[0]["number"], 2);
    assert_eq!(
        all[0]["spec_hash"].as_str(),
        Some(new_hash(&kubeci).as_str())
    );
    assert_eq!(
        all[1]["spec_hash"].as_str(),
        Some(first_hash.as_str()),
        "build 1 keeps its spec"
    );

    // Deleted: the job is gone.
    cms.delete("start-helm-test", &DeleteParams::default())
        .await
        .unwrap();
    wait("the job to be gone", || job_names(&kubeci).is_empty());
    let (status, _) = trigger(&kubeci, "start-helm-test", None);
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_numbers_survive_restarts_and_deleted_jobs() {
    let server = FakeApiServer::start().await;
    server.preload(vec![seed()]).unwrap();
    {
        let kubeci = serve(&server);
        for expected in 1..=2 {
            let (status, body) = trigger(&kubeci, "start-helm-test", None);
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["number"], expected);
        }
    }
    // The old Jobs are deleted and kubeci restarts: numbering goes on.
    let jobs: Api<Job> = Api::namespaced(server.client().await, "default");
    for name in ["start-helm-test-1", "start-helm-test-2"] {
        jobs.delete(name, &DeleteParams::background())
            .await
            .unwrap();
    }
    let kubeci = serve(&server);
    let (status, body) = trigger(&kubeci, "start-helm-test", None);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["number"], 3);
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_jobs_are_shown_and_reported_and_never_built() {
    let server = FakeApiServer::start().await;
    let mut broken = seed();
    let job_yaml = broken["data"]["job.yaml"]
        .as_str()
        .unwrap()
        .replace("run_command", "run_comand");
    broken["data"]["job.yaml"] = Value::String(job_yaml);
    server.preload(vec![broken]).unwrap();
    let kubeci = serve(&server);
    let listed = json(&kubeci, "/api/v1/jobs");
    let job = &listed["items"][0];
    assert_eq!(job["valid"], false);
    assert!(
        job["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown key `run_comand`"),
        "{job}"
    );
    let (status, body) = trigger(&kubeci, "start-helm-test", None);
    assert_eq!(status, 422, "{body}");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(server.client().await, "default");
    let mut reasons = Vec::new();
    for _ in 0..500 {
        reasons = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        if !reasons.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reasons, ["InvalidJob"]);
}

/// The recorded requests prove kubeci never asked for a Secret and used only what its
/// installed ClusterRole (deploy/manifests/kubeci.yaml, from the Helm chart) grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeci_uses_only_what_its_rbac_grants_and_never_a_secret() {
    let server = FakeApiServer::start().await;
    server.preload(vec![seed()]).unwrap();
    {
        let kubeci = serve(&server);
        let (status, _) = trigger(&kubeci, "start-helm-test", None);
        assert_eq!(status, 201);
        wait("the build to finish", || {
            builds(&kubeci, "start-helm-test")
                .first()
                .is_some_and(|b| b["state"] == "succeeded")
        });
        let _ = json(&kubeci, "/api/v1/jobs");
    }
    common::cluster::assert_rbac_grants(&server.requests());
}

/// Least privilege, both ways: a run that does everything kubeci does with the API —
/// discover jobs, report an invalid one (twice), build, answer a retried request (also one
/// whose build retention deleted), queue, cancel, stream a log, apply retention, release
/// an ended build's pod, lead, ask whose a collector's token is — uses every verb its
/// ClusterRole grants,
/// and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusterrole_grants_exactly_what_kubeci_uses() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|pod| {
        if pod["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("slow"))
        {
            PodBehaviour::Succeed {
                logs: vec!["slow".into()],
                duration: Duration::from_secs(60),
            }
        } else {
            PodBehaviour::Succeed {
                logs: vec!["ok".into()],
                duration: Duration::from_millis(20),
            }
        }
    });
    let job = |name: &str, extra: &str| {
        common::serve::configmap(
            name,
            &format!("- job:\n    name: {name}\n    git: {{url: 'https://github.com/o/r'}}\n    run_command: make\n    timeout: 5m\n{extra}"),
        )
    };
    let mut broken = job("broken", "");
    broken["data"]["job.yaml"] = Value::String("- job: {name: broken, run_comand: x}".into());
    server
        .preload(vec![
            job("kept", "    retention: {keep: 1}\n"),
            job("slow", "    max_concurrency: 1\n"),
            broken,
        ])
        .unwrap();
    {
        let kubeci = serve(&server);
        assert_eq!(trigger(&kubeci, "kept", Some("first")).0, 201);
        assert_eq!(trigger(&kubeci, "kept", None).0, 201);
        assert_eq!(trigger(&kubeci, "slow", Some("retried")).0, 201);
        assert_eq!(
            trigger(&kubeci, "slow", Some("retried")).0,
            200,
            "a retry answers with the build it started"
        );
        wait("retention to delete build 1", || {
            let numbers: Vec<u64> = builds(&kubeci, "kept")
                .iter()
                .filter_map(|b| b["number"].as_u64())
                .collect();
            numbers == [2]
        });
        // The Job itself gone from the API server too (kubeci's list drops it as soon as
        // its deletion starts), so the retry below cannot race the deletion.
        let jobs = kubeci_testkit::resources::find("batch", "v1", "jobs").unwrap();
        wait("build 1's Job to be gone", || {
            server.store().get(jobs, "default", "kept-1").is_err()
        });
        // A retry of a request whose build retention deleted: the ledger remembers it, the
        // cache has no such Job, and the API server is asked for it (`get jobs`).
        let (status, body) = trigger(&kubeci, "kept", Some("first"));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (410, Some("build-gone"))
        );
        let log = common::serve::http(
            &kubeci,
            "GET",
            "/api/v1/jobs/default/kept/builds/2/log",
            &[],
        );
        assert_eq!(log.0, 200, "{}", log.1);
        assert_eq!(trigger(&kubeci, "slow", None).0, 201);
        let cancel = common::serve::http(
            &kubeci,
            "POST",
            "/api/v1/jobs/default/slow/builds/1/cancel",
            &[common::serve::AUTHORIZED],
        );
        assert_eq!(cancel.0, 200, "{}", cancel.1);
        // The test's own requests say who they are, to be told from kubeci's.
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.headers.push((
            axum::http::header::USER_AGENT,
            axum::http::HeaderValue::from_static("the-test"),
        ));
        let client = kube::Client::try_from(config).unwrap();
        // Whose a build pod collector's token is: the cluster says (`create tokenreviews`)
        // — for a token whose claims name a build pod kubeci holds (build 2 of `kept`;
        // this kubeci, without an archive, then takes no file: `404`).
        reviewed_token(&client, &kubeci, "kept-2").await;
        // The invalid job again: the same Event, counted on the existing one.
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let mut edited = cms.get("broken").await.unwrap();
        edited.data.as_mut().unwrap().insert(
            "job.yaml".into(),
            "- job: {name: broken, run_comand: y}".into(),
        );
        cms.replace("broken", &PostParams::default(), &edited)
            .await
            .unwrap();
        wait("the invalid job's Event to be counted again", || {
            server
                .requests()
                .iter()
                .any(|r| r.resource == "events" && r.verb == "patch")
        });
        wait("the build after the cancelled one to finish", || {
            builds(&kubeci, "slow")
                .iter()
                .any(|b| b["number"] == 2 && b["state"] != "queued")
        });
        // An ended build's pod released: kubeci's finalizer taken off (`patch pods`).
        wait("an ended build's pod to be released", || {
            server
                .requests()
                .iter()
                .any(|r| r.resource == "pods" && r.verb == "patch")
        });
    }
    let kubecis = kubecis_requests(&server);
    let used = common::cluster::used(&kubecis);
    let mut granted = common::cluster::granted(&common::cluster::granted_rules());
    // The watches stream their first lists here; an API server that cannot makes them list
    // in pages (the next test): every other verb granted is used.
    for paged in paged_lists() {
        assert!(granted.remove(&paged), "{paged:?} is granted");
    }
    assert_eq!(used, granted, "used vs granted");
}

/// The requests kubeci made of `server` (the test's own are sent as `the-test`).
fn kubecis_requests(server: &FakeApiServer) -> Vec<kubeci_testkit::RecordedRequest> {
    let requests = server.requests().into_iter();
    requests.filter(|r| r.user_agent != "the-test").collect()
}

/// The lists kubeci's watches make on an API server that does not stream a watch's first
/// list: (API group, resource, verb).
fn paged_lists() -> [(String, String, String); 4] {
    [
        ("", "configmaps"),
        ("batch", "jobs"),
        ("", "pods"),
        ("coordination.k8s.io", "leases"),
    ]
    .map(|(group, resource)| (group.to_owned(), resource.to_owned(), "list".to_owned()))
}

/// On an API server without the WatchList feature (Kubernetes before 1.32, or with it
/// off), a watch asking for its first list streamed is refused: kubeci then reads them in
/// pages, with the `list` its ClusterRole grants for this, and serves as it does elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_api_server_that_does_not_stream_first_lists_kubeci_lists_in_pages() {
    let server = FakeApiServer::start_with(kubeci_testkit::Options {
        watch_list: false,
        ..kubeci_testkit::Options::default()
    })
    .await;
    let job = "- job:\n    name: paged\n    git: {url: 'https://github.com/o/r'}\n    run_command: make\n    timeout: 5m\n";
    server
        .preload(vec![common::serve::configmap("paged", job)])
        .unwrap();
    let kubeci = serve(&server);
    assert_eq!(trigger(&kubeci, "paged", None).0, 201);
    wait("build 1 to succeed", || {
        builds(&kubeci, "paged")
            .iter()
            .any(|b| b["number"] == 1 && b["state"] == "succeeded")
    });
    let kubecis = kubecis_requests(&server);
    let used = common::cluster::used(&kubecis);
    for paged in paged_lists() {
        assert!(used.contains(&paged), "{paged:?} used");
    }
    common::cluster::assert_rbac_grants(&kubecis);
}

/// Presents a `kubeci-collect` token bound to the pod of build Job `job` (asked of the
/// fake API server as the kubelet asks for a projected token) until kubeci holds that
/// pod: its claims then pass, and kubeci asks the cluster whose it is — answered other
/// than `401` (a token screened out by its claims is `401`, unreviewed).
async fn reviewed_token(client: &kube::Client, kubeci: &common::serve::Kubeci, job: &str) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let selector = format!("job-name={job}");
    let mut pod = None;
    for _ in 0..600 {
        let listed = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await;
        pod = listed.unwrap().items.into_iter().next();
        if pod.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pod = pod.expect("the build's pod within 30 s");
    let (name, uid) = (pod.metadata.name.unwrap(), pod.metadata.uid.unwrap());
    let request = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["kubeci-collect"], "expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name, "uid": uid}}});
    let request = hyper::Request::builder()
        .method("POST")
        .uri("/api/v1/namespaces/default/serviceaccounts/default/token")
        .header("content-type", "application/json")
        .body(request.to_string().into_bytes())
        .unwrap();
    let answer: Value = serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    let token = answer["status"]["token"].as_str().unwrap().to_owned();
    // Until kubeci's caches hold the pod, its claims are refused unreviewed (401).
    common::serve::wait("kubeci to hold the build's pod", || {
        let auth = format!("Bearer {token}");
        let put = common::serve::http(
            kubeci,
            "PUT",
            "/internal/v1/outputs/artifacts/x",
            &[("Authorization", &auth)],
        );
        put.0 != 401
    });
}

/// A followed log of a build still queued (no pod yet) is answered at once and streams
/// once the build's pod runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_of_a_queued_build_streams_once_its_pod_runs() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|pod| {
        let first = pod["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("q-1-"));
        PodBehaviour::Succeed {
            logs: vec![if first {
                "first"
            } else {
                "second build's line"
            }
            .into()],
            duration: Duration::from_secs(if first { 60 } else { 0 }),
        }
    });
    server
        .preload(vec![common::serve::configmap(
            "q",
            "- job:\n    name: q\n    git: {url: 'https://github.com/o/r'}\n    run_command: make\n    timeout: 5m\n    max_concurrency: 1\n",
        )])
        .unwrap();
    let kubeci = serve(&server);
    assert_eq!(trigger(&kubeci, "q", None).0, 201);
    assert_eq!(trigger(&kubeci, "q", None).0, 201);
    let state = |number: u64| {
        builds(&kubeci, "q")
            .iter()
            .find(|b| b["number"] == number)
            .map(|b| b["state"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    wait("build 1 to run, build 2 to queue", || {
        state(1) == "running" && state(2) == "queued"
    });
    use std::io::Read;
    let (mut stream, head) =
        common::serve::open_get(&kubeci, "/api/v1/jobs/default/q/builds/2/log?follow=true");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(state(2), "queued", "still queued when answered");
    let cancel = common::serve::http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/q/builds/1/cancel",
        &[common::serve::AUTHORIZED],
    );
    assert_eq!(cancel.0, 200, "{}", cancel.1);
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(body.contains("second build's line"), "{body}");
}
