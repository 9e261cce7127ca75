//! The Kubernetes engine's scenarios, each run twice: against the fake API server (pods run
//! by the local engine), and against a real control plane — the one `scripts/cluster up`
//! starts (`.ci/run` does), or any cluster named by `KUBECI_E2E_KUBECONFIG`. The
//! real-cluster tests are ignored unless asked for (`-- --include-ignored`); asked for
//! without a cluster, they fail, saying so. kubeci reaches either through a fault-injecting
//! proxy, which times the crashes and makes the outages; the test reads the cluster with
//! the kube client. See `common/cluster.rs` for what a cluster needs.
//!
//! Run against the local control plane:
//! `eval "$(scripts/cluster up)"; cargo test -p kubeci --test it on_a_real_cluster --
//! --include-ignored` (every suite's real-cluster variants; `serve_kubernetes_scenarios::`
//! runs this suite's both).

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::{assert_rbac_grants, TestCluster};
use common::serve::{builds_in, http, job_names, state_in, trigger_in, Kubeci, Receiver};

on_both!(served_edited_built_and_removed);
on_both!(killed_at_each_step_nothing_is_lost_duplicated_or_reported_twice);
on_both!(two_replicas_never_duplicate_and_one_reports);
on_both!(lost_watches_errors_and_a_vanished_api_server_are_waited_out);
on_both!(sigterm_hands_leadership_over_at_once_and_loses_nothing);

fn log(kubeci: &Kubeci, namespace: &str, job: &str, number: u64) -> String {
    let path = format!("/api/v1/jobs/{namespace}/{job}/builds/{number}/log");
    let (status, log) = http(kubeci, "GET", &path, &[]);
    assert_eq!(status, 200, "{log}");
    log
}

fn reported_success(kubeci: &Kubeci, namespace: &str, job: &str) -> bool {
    builds_in(kubeci, namespace, job).iter().all(|b| {
        b["reported"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s == "success"))
    })
}

/// A job is served when its ConfigMap is applied; an edit applies to the next build while
/// the running one keeps its spec; a build's log comes from its pod; a deleted ConfigMap
/// removes the job.
async fn served_edited_built_and_removed(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let first = cluster.job_yaml("edit", "sleep 4; echo spec-one", "");
    cluster.apply("edit", &first).await;
    let kubeci = cluster.serve(&[]);
    assert_eq!(job_names(&kubeci), ["edit"]);
    let spec_hash = |port: u16| {
        common::serve::json(&Kubeci::probe(port), "/api/v1/jobs")["items"][0]["spec_hash"].clone()
    };
    let served = spec_hash(kubeci.port);
    let (status, body) = trigger_in(&kubeci, &ns, "edit", None);
    assert_eq!(status, 201, "{body}");
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("build 1 to run", move || {
            state_in(&Kubeci::probe(port), &namespace, "edit", 1) == "running"
        })
        .await;
    cluster
        .apply(
            "edit",
            &cluster.job_yaml("edit", "echo spec-two at \"$GIT_COMMIT\"", ""),
        )
        .await;
    cluster
        .until_blocking("the edit to be served", move || spec_hash(port) != served)
        .await;
    let (status, second) = trigger_in(&kubeci, &ns, "edit", None);
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["number"], 2);
    let namespace = ns.clone();
    let probe = Kubeci::probe(port);
    cluster
        .until_blocking("both builds to succeed", move || {
            state_in(&probe, &namespace, "edit", 1) == "succeeded"
                && state_in(&probe, &namespace, "edit", 2) == "succeeded"
        })
        .await;
    assert!(
        log(&kubeci, &ns, "edit", 1).contains("spec-one\n"),
        "the running build kept its spec"
    );
    let second_log = log(&kubeci, &ns, "edit", 2);
    assert!(
        second_log.contains("spec-two at "),
        "the next build has the new one: {second_log}"
    );
    // A branch build names no commit: the one its clone step checked out reaches both
    // the build's environment and its record.
    let commit = common::serve::json(&kubeci, &format!("/api/v1/jobs/{ns}/edit/builds/2"))
        ["commit"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(commit.len(), 40, "the build records its commit: {commit:?}");
    assert!(
        second_log.contains(&format!("spec-two at {commit}\n")),
        "{second_log}"
    );
    // The log in steps, as the local engine writes it too: the clone's, then the build's.
    let clone_step = second_log.find("==> clone: init container started\n");
    let build_step = second_log.find("==> build: container started\n");
    assert!(
        clone_step.is_some() && clone_step < build_step,
        "{second_log}"
    );
    // On demand, each line begins with when it was written.
    let path = format!("/api/v1/jobs/{ns}/edit/builds/2/log?timestamps=true");
    let (status, stamped) = http(&kubeci, "GET", &path, &[]);
    assert_eq!(status, 200, "{stamped}");
    common::serve::assert_timestamped(
        &common::serve::dechunk(&stamped),
        &common::serve::dechunk(&second_log),
    );
    if let Some(head) = cluster.repo_head() {
        assert_eq!(commit, head, "the branch's head was built");
    }
    let hash = |job: &k8s_openapi::api::batch::v1::Job| {
        job.metadata.annotations.as_ref().unwrap()["kubeci.io/spec-hash"].clone()
    };
    let (one, two) = (
        cluster.job("edit-1").await.unwrap(),
        cluster.job("edit-2").await.unwrap(),
    );
    assert_ne!(hash(&one), hash(&two), "each Job records the spec it ran");
    let labels = one.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["kubeci.io/job"], "edit");
    assert_eq!(labels["kubeci.io/build"], "1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "kubeci");

    // kubeci creates Jobs, never pods: the Job controller made this pod, and on the real
    // control plane the real scheduler bound it to the node agent's node.
    let pods = cluster.pods("edit", 1).await;
    let owner = &pods[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Job", "edit-1", Some(true))
    );
    if let (true, Ok(node)) = (cluster.is_real(), std::env::var("KUBECI_E2E_NODE_AGENT")) {
        assert_eq!(
            pods[0].spec.as_ref().unwrap().node_name.as_deref(),
            Some(node.as_str())
        );
    }

    // Jobs are created with strict field validation: a real API server refuses an unknown
    // or duplicate field instead of dropping it, so these builds prove there is none.
    let creates: Vec<_> = cluster
        .proxy
        .gate()
        .requests()
        .into_iter()
        .filter(|r| r.verb == "create" && r.resource == "jobs")
        .collect();
    assert!(
        !creates.is_empty()
            && creates
                .iter()
                .all(|r| r.query.contains("fieldValidation=Strict")),
        "{creates:?}"
    );

    cluster.delete_configmap("edit").await;
    let probe = Kubeci::probe(port);
    cluster
        .until_blocking("the job to be gone", move || job_names(&probe).is_empty())
        .await;
    assert_rbac_grants(&cluster.proxy.gate().requests());
    drop(kubeci);
    cluster.finish().await;
}

/// kubeci keeps no local state: killed (SIGKILL) at any step of a build's life, a new
/// process carries on — no build lost, none duplicated, each final state reported once,
/// numbers never reused, also after old Jobs were deleted.
async fn killed_at_each_step_nothing_is_lost_duplicated_or_reported_twice(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    // Build 3 runs long enough to be killed during; the others finish at once.
    let job = cluster.job_yaml(
        "steady",
        "if [ \"$BUILD_NUMBER\" = 3 ]; then sleep 6; fi; echo built",
        "",
    );
    cluster.apply("steady", &job).await;
    let receiver = Receiver::start().await;
    let flags = ["--notify-url", receiver.url.as_str()];
    let start = || cluster.serve(&flags);
    let gate = cluster.proxy.gate();

    // 1. Killed after the request reached it, before the Job was created: the creates
    // are held at the proxy and never reach the cluster. Request A is retried by its
    // client with the same key; request B's client gives up — the new leader builds it.
    let kubeci = start();
    gate.hold("create", "jobs");
    let port = kubeci.port;
    let send = |key: &'static str| {
        let ns = ns.clone();
        std::thread::spawn(move || trigger_in(&Kubeci::probe(port), &ns, "steady", Some(key)))
    };
    let _a = send("request-a");
    let _b = send("request-b");
    cluster
        .until("both creates to reach the proxy", async || gate.held() >= 2)
        .await;
    kubeci.kill();
    gate.release(false);
    assert!(
        cluster.build_numbers("steady").await.is_empty(),
        "nothing was created"
    );
    let kubeci = start();
    let (status, retried) = trigger_in(&kubeci, &ns, "steady", Some("request-a"));
    assert_eq!(status, 200, "the retry is the same request: {retried}");
    cluster
        .until("request B to be built by the new leader", async || {
            cluster.build_numbers("steady").await.len() == 2
        })
        .await;
    assert_eq!(cluster.build_numbers("steady").await, [1, 2]);

    // 2. Killed right after the Job was created.
    let (status, third) = trigger_in(&kubeci, &ns, "steady", None);
    assert_eq!((status, third["number"].as_u64()), (201, Some(3)));
    kubeci.kill();
    // 3. ... and the next one is killed while build 3 runs.
    cluster
        .until("build 3 to run", async || {
            cluster.pod_running("steady", 3).await
        })
        .await;
    let kubeci = start();
    assert_eq!(state_in(&kubeci, &ns, "steady", 3), "running");
    kubeci.kill();

    // 4. Killed after build 3 finished, before its end was reported: the receiver is
    // refusing deliveries when the build completes.
    receiver.refuse(true);
    let kubeci = start();
    cluster
        .until("build 3 to complete", async || {
            cluster.completed("steady-3").await
        })
        .await;
    cluster
        .until("the report of its end to be attempted", async || {
            receiver.refused_count("steady", 3) > 0
        })
        .await;
    kubeci.kill();
    receiver.refuse(false);
    let kubeci = start();
    for number in 1..=3 {
        cluster
            .until("every build's end to be reported", async || {
                !receiver.finals("steady", number).is_empty()
            })
            .await;
    }
    let probe = Kubeci::probe(kubeci.port);
    let namespace = ns.clone();
    cluster
        .until_blocking("the reports to be recorded", move || {
            reported_success(&probe, &namespace, "steady")
        })
        .await;
    // Once per idempotency key: a kill between delivering a report and recording it on
    // the Job makes kubeci send it again, with the same key, which the receiver drops.
    for number in 1..=3 {
        assert_eq!(
            receiver.finals("steady", number),
            ["success"],
            "build {number}'s end reported exactly once"
        );
    }
    assert!(
        receiver.repeats() <= 4,
        "a repeat needs a kill in that window: {}",
        receiver.repeats()
    );
    assert_eq!(
        cluster.build_numbers("steady").await,
        [1, 2, 3],
        "none lost, none doubled"
    );

    // Old Jobs deleted, another restart: numbers are never reused.
    kubeci.kill();
    for name in ["steady-1", "steady-2", "steady-3"] {
        cluster.delete_job(name).await;
    }
    let kubeci = start();
    let (status, next) = trigger_in(&kubeci, &ns, "steady", None);
    assert_eq!((status, next["number"].as_u64()), (201, Some(4)));
    assert_rbac_grants(&gate.requests());
    drop(kubeci);
    cluster.finish().await;
}

/// Two replicas take requests at once: no duplicate Jobs, unique numbers, one reporter;
/// when the leader dies the other takes over.
async fn two_replicas_never_duplicate_and_one_reports(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    cluster
        .apply("shared", &cluster.job_yaml("shared", "echo built", ""))
        .await;
    let receiver = Receiver::start().await;
    let flags = ["--notify-url", receiver.url.as_str()];
    let one = cluster.serve(&flags);
    let two = cluster.serve(&flags);
    let ports = [one.port, two.port];
    const REQUESTS: usize = 8;
    let threads: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                // Each request is sent twice, to alternate replicas: a client retrying
                // against another replica behind the Service.
                let key = format!("request-{i}");
                let first = trigger_in(&Kubeci::probe(ports[i % 2]), &ns, "shared", Some(&key));
                let again = trigger_in(
                    &Kubeci::probe(ports[(i + 1) % 2]),
                    &ns,
                    "shared",
                    Some(&key),
                );
                (first, again)
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for thread in threads {
        let ((status, first), (again_status, again)) = thread.join().unwrap();
        assert_eq!(status, 201, "{first}");
        assert_eq!(again_status, 200, "{again}");
        assert_eq!(first["number"], again["number"]);
        assert!(
            numbers.insert(first["number"].as_u64().unwrap()),
            "unique numbers"
        );
    }
    let expected: Vec<u64> = (1..=REQUESTS as u64).collect();
    assert_eq!(numbers.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(cluster.build_numbers("shared").await, expected);
    for number in 1..=REQUESTS as u64 {
        cluster
            .until("each end to be reported", async || {
                !receiver.finals("shared", number).is_empty()
            })
            .await;
    }
    let probe = Kubeci::probe(one.port);
    let namespace = ns.clone();
    cluster
        .until_blocking("the reports to be recorded", move || {
            reported_success(&probe, &namespace, "shared")
        })
        .await;
    for number in 1..=REQUESTS as u64 {
        assert_eq!(
            receiver.finals("shared", number),
            ["success"],
            "build {number}"
        );
    }
    let leader = cluster.leader().await.expect("a leader");
    // The leader dies: the other replica takes over and reports the next build.
    let survivor = if one
        .log()
        .contains(&format!("this replica leads identity={leader}\n"))
    {
        one.kill();
        two
    } else {
        two.kill();
        one
    };
    let (status, next) = trigger_in(&survivor, &ns, "shared", None);
    let next_number = REQUESTS as u64 + 1;
    assert_eq!((status, next["number"].as_u64()), (201, Some(next_number)));
    cluster
        .until("the survivor to report it", async || {
            receiver.finals("shared", next_number) == ["success"]
        })
        .await;
    drop(survivor);
    cluster.finish().await;
}

/// Watches that drop or come back 410 Gone are resumed or relisted; an API server that
/// answers 500 or is gone for 30 s is waited out: kubeci keeps serving what it knows, then
/// catches up.
async fn lost_watches_errors_and_a_vanished_api_server_are_waited_out(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    cluster
        .apply("first", &cluster.job_yaml("first", "echo first", ""))
        .await;
    let mut kubeci = cluster.serve(&[]);
    let gate = cluster.proxy.gate();
    let lists = common::cluster::first_lists;

    // Watches dropped, and their resumption answered 410 Gone: relisted.
    let before = lists(gate);
    gate.expire_watches(4);
    gate.drop_watches();
    cluster
        .apply("second", &cluster.job_yaml("second", "echo second", ""))
        .await;
    let probe = Kubeci::probe(kubeci.port);
    cluster
        .until_blocking("the new job after a relist", move || {
            job_names(&probe).contains(&"second".to_owned())
        })
        .await;
    cluster
        .until(
            "410 Gone to make kubeci read a first list again",
            async || lists(gate) > before,
        )
        .await;

    // 500s: a build request fails cleanly with 503, the next one works.
    gate.fail_next(50, 500);
    let (status, body) = trigger_in(&kubeci, &ns, "first", None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "backend-failed");
    let probe = Kubeci::probe(kubeci.port);
    let namespace = ns.clone();
    cluster
        .until_blocking("the API server to answer again", move || {
            trigger_in(&probe, &namespace, "first", None).0 == 201
        })
        .await;

    // Gone for 30 s: kubeci keeps serving what it knows, then catches up.
    cluster.proxy.stop();
    let gone = std::time::Instant::now();
    while gone.elapsed() < Duration::from_secs(30) {
        assert!(
            kubeci.alive(),
            "kubeci crashed during the outage:\n{}",
            kubeci.log()
        );
        assert_eq!(http(&kubeci, "GET", "/healthz", &[]).0, 200);
        assert_eq!(job_names(&kubeci).len(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster.proxy.restart().await;
    cluster
        .apply("third", &cluster.job_yaml("third", "echo third", ""))
        .await;
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("a build of the job added after the outage", move || {
            let probe = Kubeci::probe(port);
            job_names(&probe).contains(&"third".to_owned())
                && trigger_in(&probe, &namespace, "third", None).0 == 201
        })
        .await;
    let probe = Kubeci::probe(port);
    let namespace = ns.clone();
    cluster
        .until_blocking("it to succeed", move || {
            state_in(&probe, &namespace, "third", 1) == "succeeded"
        })
        .await;
    assert!(kubeci.alive());
    drop(kubeci);
    cluster.finish().await;
}

/// Kubernetes stops a pod with SIGTERM: the leader gives its Lease back, so the other
/// replica leads at once (not after the Lease's 30 s), finishes answering and exits 0;
/// every build of the burst around it is built once and reported once.
async fn sigterm_hands_leadership_over_at_once_and_loses_nothing(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    cluster
        .apply("burst", &cluster.job_yaml("burst", "echo built", ""))
        .await;
    let receiver = Receiver::start().await;
    let flags = [
        "--notify-url",
        receiver.url.as_str(),
        "--lease-duration",
        "30s",
    ];
    let mut replicas = [cluster.serve(&flags), cluster.serve(&flags)];
    cluster
        .until("a leader", async || cluster.leader().await.is_some())
        .await;
    let leader = cluster.leader().await.unwrap();
    let leading = replicas
        .iter()
        .position(|r| {
            r.log()
                .contains(&format!("this replica leads identity={leader}\n"))
        })
        .expect("the leader's log says so");
    let ports = [replicas[0].port, replicas[1].port];
    const BUILDS: usize = 10;
    let burst: Vec<_> = (0..BUILDS)
        .map(|i| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                let key = format!("burst-{i}");
                trigger_in(&Kubeci::probe(ports[i % 2]), &ns, "burst", Some(&key))
            })
        })
        .collect();
    // Mid-burst, the leader is told to stop.
    let exited = replicas[leading].terminate(Duration::from_secs(20));
    let asked = std::time::Instant::now();
    let survivor = 1 - leading;
    for request in burst {
        let (status, body) = request.join().unwrap();
        // A request to the stopping replica may find it gone: the client retries it
        // against the survivor with its key (the Service would route it there).
        assert!(
            status == 201 || status == 0,
            "a request answered or not taken: {status} {body}"
        );
    }
    let status = exited.expect("the leader exits within 20 s of SIGTERM");
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    assert!(
        replicas[leading]
            .log()
            .contains("gave the leader Lease back"),
        "{}",
        replicas[leading].log()
    );
    let new_leader = loop {
        match cluster.leader().await {
            Some(holder) if holder != leader => break holder,
            _ => {}
        }
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "the other replica leads within 2 s of the SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(replicas[survivor]
        .log()
        .contains(&format!("this replica leads identity={new_leader}\n")));
    // Requests the stopping replica did not take, retried with their keys.
    for i in 0..BUILDS {
        let key = format!("burst-{i}");
        let (status, body) = trigger_in(&replicas[survivor], &ns, "burst", Some(&key));
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    let numbers = cluster.build_numbers("burst").await;
    assert_eq!(
        numbers,
        (1..=BUILDS as u64).collect::<Vec<_>>(),
        "each request built once"
    );
    for number in 1..=BUILDS as u64 {
        cluster
            .until("every end reported", async || {
                !receiver.finals("burst", number).is_empty()
            })
            .await;
        assert_eq!(
            receiver.finals("burst", number),
            ["success"],
            "build {number}"
        );
    }
    drop(replicas);
    cluster.finish().await;
}
