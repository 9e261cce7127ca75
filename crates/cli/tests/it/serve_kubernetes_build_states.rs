//! The Kubernetes engine's build states, each scenario run on both clusters (see
//! `serve_kubernetes_scenarios.rs`): pods that cannot start, queues and cancel, timeouts,
//! builds no node can take, invalid jobs, builds just created, and log followers.

use crate::common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::serve::{builds_in, http, state_in, trigger_in, Kubeci, AUTHORIZED};
use kubeci_testkit::sim::MISSING_IMAGE;
use serde_json::Value;

on_both!(builds_whose_pod_cannot_start_fail_with_kubernetes_reason);
on_both!(queued_builds_run_in_order_cancel_stops_pods_and_retention_deletes);
on_both!(a_build_past_its_timeout_fails_with_deadline_exceeded);
on_both!(a_build_no_node_can_take_fails_as_unschedulable);
on_both!(an_invalid_job_is_shown_reported_as_an_event_and_never_built);
on_both!(a_build_just_created_is_readable_and_cancellable_on_every_replica);
on_both!(log_followers_share_one_stream_are_capped_and_wait_with_backoff);

/// A build whose pod can never start — its Secret does not exist, its image cannot be
/// pulled — fails after the pending deadline (2 s here) with Kubernetes' own message,
/// recorded on the Job, whose pod is deleted.
async fn builds_whose_pod_cannot_start_fail_with_kubernetes_reason(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let needs_secret =
        cluster.job_yaml("needs-secret", "echo never", "    aws_secret: aws-creds\n");
    let bad_image = cluster.job_yaml_in_image("bad-image", MISSING_IMAGE, "echo never", "");
    // Its Namespace allows the Secret, which does not exist.
    cluster
        .annotate_namespace(&[("kubeci.io/secrets", Some("aws-creds"))])
        .await;
    cluster.apply("needs-secret", &needs_secret).await;
    cluster.apply("bad-image", &bad_image).await;
    let kubeci = cluster.serve(&[]);
    assert_eq!(trigger_in(&kubeci, &ns, "needs-secret", None).0, 201);
    assert_eq!(trigger_in(&kubeci, &ns, "bad-image", None).0, 201);
    let failed = move |port: u16, namespace: &str, job: &str| -> Option<Value> {
        builds_in(&Kubeci::probe(port), namespace, job)
            .into_iter()
            .next()
            .filter(|b| b["state"] == "error")
    };
    let port = kubeci.port;
    for job in ["needs-secret", "bad-image"] {
        let namespace = ns.clone();
        cluster
            .until_blocking(&format!("{job} to fail"), move || {
                failed(port, &namespace, job).is_some()
            })
            .await;
    }
    let message = |job: &str| {
        failed(port, &ns, job).unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let secret = message("needs-secret");
    assert!(
        secret.contains("secret \"aws-creds\" not found"),
        "Kubernetes' own message: {secret}"
    );
    let image = message("bad-image");
    // ErrImagePull's or ImagePullBackOff's message, whichever the kubelet wrote last.
    assert!(
        image.contains(MISSING_IMAGE) && image.contains("pull"),
        "Kubernetes' own message: {image}"
    );
    // The jobs page's state filter, which reads the newest build states kept from the
    // watch events, shows both as failed.
    let (_, page) = http(
        &kubeci,
        "GET",
        &format!("/?namespace={ns}&state=failed"),
        &[],
    );
    for job in ["needs-secret", "bad-image"] {
        assert!(
            page.contains(&format!("<a href=\"/jobs/{ns}/{job}\">")),
            "{job}: {page}"
        );
    }
    // The failure is recorded on the Job, which is stopped: its pod is gone.
    cluster
        .until("the failure to be recorded on the Job", async || {
            cluster.job("needs-secret-1").await.is_some_and(|job| {
                job.metadata
                    .annotations
                    .unwrap_or_default()
                    .get("kubeci.io/error")
                    .is_some_and(|e| e.starts_with("CreateContainerConfigError: "))
            })
        })
        .await;
    let job = cluster.job("needs-secret-1").await.unwrap();
    assert_eq!(job.spec.unwrap().suspend, Some(true));
    cluster
        .until("the stuck pod to be deleted", async || {
            !cluster.pod_exists("needs-secret", 1).await
        })
        .await;
    drop(kubeci);
    cluster.finish().await;
}

fn build_in(kubeci: &Kubeci, namespace: &str, job: &str, number: u64) -> Value {
    common::serve::json(
        kubeci,
        &format!("/api/v1/jobs/{namespace}/{job}/builds/{number}"),
    )
}

fn cancel(kubeci: &Kubeci, namespace: &str, job: &str, number: u64) -> (u16, Value) {
    let path = format!("/api/v1/jobs/{namespace}/{job}/builds/{number}/cancel");
    let (status, body) = http(kubeci, "POST", &path, &[AUTHORIZED]);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// `max_concurrency: 1` queues builds as suspended Jobs released in order; cancelling a
/// queued build means it never gets a pod; cancelling a running one suspends its Job, and
/// the Job controller deletes its pod (whose processes stop); `retention.keep` deletes the
/// oldest finished build's Job, and the garbage collector its pod.
async fn queued_builds_run_in_order_cancel_stops_pods_and_retention_deletes(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let job = cluster.job_yaml(
        "queue",
        "if [ \"$BUILD_NUMBER\" = 1 ]; then echo working; sleep 600; fi; echo done",
        "    max_concurrency: 1\n    retention:\n      keep: 2\n",
    );
    cluster.apply("queue", &job).await;
    let kubeci = cluster.serve(&[]);
    for expected in 1..=3 {
        let (status, body) = trigger_in(&kubeci, &ns, "queue", None);
        assert_eq!(
            (status, body["number"].as_u64()),
            (201, Some(expected)),
            "{body}"
        );
    }
    cluster
        .until("build 1 to run", async || {
            cluster.pod_running("queue", 1).await
        })
        .await;
    let suspended = async |name: &str| {
        cluster
            .job(name)
            .await
            .and_then(|j| j.spec?.suspend)
            .unwrap_or(false)
    };
    assert!(!suspended("queue-1").await);
    assert!(suspended("queue-2").await, "build 2 waits for the slot");
    assert!(suspended("queue-3").await);
    assert_eq!(state_in(&kubeci, &ns, "queue", 3), "queued");

    let (status, cancelled) = cancel(&kubeci, &ns, "queue", 3);
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("aborted")),
        "{cancelled}"
    );
    let (status, cancelled) = cancel(&kubeci, &ns, "queue", 1);
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("aborted")),
        "{cancelled}"
    );
    cluster
        .until(
            "build 1's pod to be deleted by the Job controller",
            async || !cluster.pod_exists("queue", 1).await,
        )
        .await;
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("build 2 to take the slot and succeed", move || {
            state_in(&Kubeci::probe(port), &namespace, "queue", 2) == "succeeded"
        })
        .await;
    assert_eq!(
        state_in(&kubeci, &ns, "queue", 3),
        "aborted",
        "a cancelled build stays cancelled"
    );
    assert!(
        !cluster.pod_exists("queue", 3).await,
        "build 3 never got a pod"
    );
    assert_eq!(
        cancel(&kubeci, &ns, "queue", 2).0,
        409,
        "a finished build cannot be cancelled"
    );

    // keep: 2 — the two newest finished builds (by number) stay; build 1's Job goes, and
    // its pod with it.
    cluster
        .until("retention to delete build 1", async || {
            cluster.build_numbers("queue").await == [2, 3]
        })
        .await;
    cluster
        .until("the deleted builds' pods to be collected", async || {
            cluster.pods("queue", 1).await.is_empty()
        })
        .await;
    // kubeci took build 2's end from its pod; the Job controller records it on the Job
    // too, up to a second later.
    cluster
        .until("build 2's Job to be complete", async || {
            cluster.completed("queue-2").await
        })
        .await;
    drop(kubeci);
    cluster.finish().await;
}

/// `timeout` is the Job's `activeDeadlineSeconds`: past it the Job controller fails the
/// Job (`DeadlineExceeded`) and deletes its pod; kubeci reports the build failed in those
/// words.
async fn a_build_past_its_timeout_fails_with_deadline_exceeded(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let job = cluster.job_yaml("slow", "echo started; sleep 600", "    timeout: 3s\n");
    cluster.apply("slow", &job).await;
    let kubeci = cluster.serve(&[]);
    assert_eq!(trigger_in(&kubeci, &ns, "slow", None).0, 201);
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("the build to fail", move || {
            state_in(&Kubeci::probe(port), &namespace, "slow", 1) == "failed"
        })
        .await;
    let build = build_in(&kubeci, &ns, "slow", 1);
    assert_eq!(
        build["message"], "the build ran longer than its timeout",
        "{build}"
    );
    let conditions = cluster
        .job("slow-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded")),
        "{conditions:?}"
    );
    cluster
        .until("the timed-out pod to be deleted", async || {
            cluster.pods("slow", 1).await.iter().all(|p| {
                p.metadata.deletion_timestamp.is_some()
                    || matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed" | "Succeeded")
                    )
            })
        })
        .await;
    drop(kubeci);
    cluster.finish().await;
}

/// A `node_selector` no node matches leaves the pod unschedulable; past the pending
/// deadline the build fails with the scheduler's own words.
async fn a_build_no_node_can_take_fails_as_unschedulable(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let job = cluster.job_yaml(
        "nowhere",
        "echo never",
        "    node_selector:\n      kubeci.io/test-pool: does-not-exist\n",
    );
    cluster.apply("nowhere", &job).await;
    let kubeci = cluster.serve(&[]);
    assert_eq!(trigger_in(&kubeci, &ns, "nowhere", None).0, 201);
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("the build to fail", move || {
            state_in(&Kubeci::probe(port), &namespace, "nowhere", 1) == "error"
        })
        .await;
    let build = build_in(&kubeci, &ns, "nowhere", 1);
    let message = build["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Unschedulable") || message.contains("nodes are available"),
        "the scheduler's words: {build}"
    );
    drop(kubeci);
    cluster.finish().await;
}

/// A ConfigMap whose job is invalid is listed with its error, refuses builds, and gets a
/// Warning Event (`InvalidJob`) that `kubectl describe configmap` shows.
async fn an_invalid_job_is_shown_reported_as_an_event_and_never_built(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let broken = cluster
        .job_yaml("broken", "echo never", "")
        .replace("run_command", "run_comand");
    cluster.apply("broken", &broken).await;
    let kubeci = cluster.serve(&[]);
    let listed = common::serve::json(&kubeci, "/api/v1/jobs");
    let job = &listed["items"][0];
    assert_eq!(job["valid"], false, "{job}");
    assert!(
        job["errors"][0]
            .as_str()
            .unwrap_or_default()
            .contains("unknown key `run_comand`"),
        "{job}"
    );
    assert_eq!(trigger_in(&kubeci, &ns, "broken", None).0, 422);
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .until("a Warning Event on the ConfigMap", async || {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("InvalidJob")
                        && e.type_.as_deref() == Some("Warning")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
                })
        })
        .await;
    // The same problem again (the ConfigMap changed, its job did not get better): the
    // Event is counted again, not repeated.
    cluster
        .apply("broken", &format!("{broken}# edited\n"))
        .await;
    cluster
        .until("the Event to be patched", async || {
            cluster
                .proxy
                .gate()
                .requests()
                .iter()
                .any(|r| r.resource == "events" && r.verb == "patch")
        })
        .await;
    if cluster.is_real() {
        // What `kubectl describe` reads: the same Event through core/v1.
        let core: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(cluster.client.clone(), &ns);
        let listed = core.list(&Default::default()).await.unwrap().items;
        assert!(
            listed
                .iter()
                .any(|e| e.reason.as_deref() == Some("InvalidJob")
                    && e.involved_object.name.as_deref() == Some("broken")),
            "{listed:?}"
        );
    }
    assert!(cluster.build_numbers("broken").await.is_empty());
    drop(kubeci);
    cluster.finish().await;
}

/// A build the API just reported (`201`) can be read and cancelled at once, on the replica
/// that created it and on another, before either one's watch has delivered its Job: the
/// Job watches of both are cut and held for the whole exchange.
async fn a_build_just_created_is_readable_and_cancellable_on_every_replica(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    cluster
        .apply("fresh", &cluster.job_yaml("fresh", "sleep 60", ""))
        .await;
    let one = cluster.serve(&[]);
    let two = cluster.serve(&[]);
    let gate = cluster.proxy.gate();
    gate.hold("watch", "jobs");
    gate.drop_watches();
    cluster
        .until("both replicas' Job watches to be held", async || {
            gate.held() >= 2
        })
        .await;
    for number in 1..=3u64 {
        let (status, body) = trigger_in(&one, &ns, "fresh", None);
        assert_eq!(
            (status, body["number"].as_u64()),
            (201, Some(number)),
            "{body}"
        );
        for (replica, kubeci) in [("the creating replica", &one), ("the other", &two)] {
            let path = format!("/api/v1/jobs/{ns}/fresh/builds/{number}");
            let (status, build) = http(kubeci, "GET", &path, &[]);
            assert_eq!(status, 200, "{replica}: {build}");
            let page = format!("/jobs/{ns}/fresh/builds/{number}");
            let (status, html) = http(kubeci, "GET", &page, &[]);
            assert_eq!(status, 200, "{replica}: {html}");
        }
    }
    let (status, cancelled) = cancel(&two, &ns, "fresh", 3);
    assert_eq!(
        status, 200,
        "cancelled by the replica that did not create it: {cancelled}"
    );
    assert_eq!(cancelled["state"], "aborted", "{cancelled}");
    let (status, cancelled) = cancel(&one, &ns, "fresh", 2);
    assert_eq!(status, 200, "{cancelled}");
    gate.release(true);
    for number in 1..=3 {
        cancel(&one, &ns, "fresh", number);
    }
    let probe = Kubeci::probe(two.port);
    let namespace = ns.clone();
    cluster
        .until_blocking("every build to end as cancelled", move || {
            (1..=3).all(|n| state_in(&probe, &namespace, "fresh", n) == "aborted")
        })
        .await;
    drop((one, two));
    cluster.finish().await;
}

/// An HTTP/1.0 GET of a followed log (the answer ends with the connection): its status
/// is sent to `head` as soon as it arrives, then the body is read to the end (or until
/// `give_up`).
fn follow_log(
    port: u16,
    path: String,
    head: std::sync::mpsc::Sender<u16>,
    give_up: Duration,
) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(give_up)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: l\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut told = false;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
        if !told && answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&answer[9..12]).parse().unwrap_or(0);
            let _ = head.send(status);
            told = true;
        }
    }
    if !told {
        let _ = head.send(0);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// Followers of one build share one stream from the cluster and each gets the whole
/// log; past `--max-log-followers` a follower is answered 503; while a container cannot
/// start, its log is asked for with a growing pause, once for all its followers.
async fn log_followers_share_one_stream_are_capped_and_wait_with_backoff(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let chatty = "for i in $(seq 1 50); do echo line $i; sleep 0.1; done";
    cluster
        .apply("chatty", &cluster.job_yaml("chatty", chatty, ""))
        .await;
    cluster
        .apply(
            "stuck",
            &cluster.job_yaml_in_image("stuck", MISSING_IMAGE, "echo never", ""),
        )
        .await;
    const FOLLOWERS: usize = 12;
    let kubeci = cluster.serve(&["--max-log-followers", &FOLLOWERS.to_string()]);
    let gate = cluster.proxy.gate();
    assert_eq!(trigger_in(&kubeci, &ns, "chatty", None).0, 201);
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("the build to print its first line", move || {
            let path = format!("/api/v1/jobs/{namespace}/chatty/builds/1/log");
            http(&Kubeci::probe(port), "GET", &path, &[])
                .1
                .contains("line 1\n")
        })
        .await;
    gate.clear_requests();
    let path = format!("/api/v1/jobs/{ns}/chatty/builds/1/log?follow=true");
    let (heads, statuses) = std::sync::mpsc::channel();
    let followers: Vec<_> = (0..FOLLOWERS)
        .map(|_| {
            let (path, heads) = (path.clone(), heads.clone());
            std::thread::spawn(move || follow_log(port, path, heads, Duration::from_secs(60)))
        })
        .collect();
    for _ in 0..FOLLOWERS {
        let status = statuses.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(status, 200);
    }
    let (status, refused) = http(&kubeci, "GET", &path, &[]);
    assert_eq!(status, 503, "one follower too many: {refused}");
    assert!(refused.contains("too-many-followers"), "{refused}");
    let logs: Vec<String> = followers.into_iter().map(|f| f.join().unwrap()).collect();
    let whole = follow_log(
        port,
        format!("/api/v1/jobs/{ns}/chatty/builds/1/log"),
        std::sync::mpsc::channel().0,
        Duration::from_secs(30),
    );
    assert!(whole.contains("line 50\n"), "{whole}");
    for followed in &logs {
        assert_eq!(followed, &whole, "every follower got the whole log");
    }
    let upstreams = gate
        .requests()
        .into_iter()
        .filter(|r| r.resource == "pods/log" && r.query.contains("follow=true"))
        .count();
    assert!(
        upstreams <= 2,
        "{FOLLOWERS} followers, one followed stream per container: {upstreams}"
    );

    // A build whose container cannot start: its followers wait on one upstream, which
    // asks ever more rarely.
    assert_eq!(trigger_in(&kubeci, &ns, "stuck", None).0, 201);
    let (heads, statuses) = std::sync::mpsc::channel();
    let path = format!("/api/v1/jobs/{ns}/stuck/builds/1/log?follow=true");
    let waiting: Vec<_> = (0..FOLLOWERS)
        .map(|_| {
            let (path, heads) = (path.clone(), heads.clone());
            std::thread::spawn(move || follow_log(port, path, heads, Duration::from_secs(8)))
        })
        .collect();
    for _ in 0..FOLLOWERS {
        assert_eq!(statuses.recv_timeout(Duration::from_secs(30)).unwrap(), 200);
    }
    gate.clear_requests();
    // The measured window (not a synchronisation): what the followers cost in 6 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let asked = gate
        .requests()
        .into_iter()
        .filter(|r| r.resource == "pods/log")
        .count();
    assert!(
        asked <= 12,
        "20 waiting followers asked {asked} times in 6 s"
    );
    for follower in waiting {
        follower.join().unwrap();
    }
    drop(kubeci);
    cluster.finish().await;
}
