//! kubeci keeps no local state: killed (SIGKILL) at any step of a build's life, a new
//! process carries on — no build lost, none duplicated, each final state reported once,
//! numbers never reused. Two replicas at once share the work without duplicates. An API
//! server that fails or disappears is waited out.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::serve::{
    builds, configmap, http, job_yaml, serve_with, state, trigger, wait, Kubeci, Receiver,
};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::Value;

fn build_jobs(server: &FakeApiServer, job: &str) -> Vec<u64> {
    let mut numbers: Vec<u64> = server
        .store()
        .labelled(6, "default", "kubeci.io/job", job)
        .iter()
        .filter_map(|j| {
            j["metadata"]["labels"]["kubeci.io/build"]
                .as_str()?
                .parse()
                .ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

fn job_state_in_store(server: &FakeApiServer, name: &str) -> Option<Value> {
    server
        .store()
        .get(6, "default", name)
        .ok()
        .map(|j| (*j).clone())
}

fn completed(server: &FakeApiServer, name: &str) -> bool {
    job_state_in_store(server, name).is_some_and(|j| {
        j["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"))
    })
}

fn pod_running(server: &FakeApiServer, job: &str, build: &str) -> bool {
    server
        .store()
        .labelled(3, "default", "kubeci.io/job", job)
        .iter()
        .any(|p| {
            p["metadata"]["labels"]["kubeci.io/build"] == build && p["status"]["phase"] == "Running"
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_each_step_nothing_is_lost_duplicated_or_reported_twice() {
    let server = FakeApiServer::start().await;
    // Builds 3 and 4 run long enough to be killed during; the others finish at once.
    server.set_pod_behaviour(
        |pod| match pod["metadata"]["labels"]["kubeci.io/build"].as_str() {
            Some("3") => PodBehaviour::Succeed {
                logs: vec!["half way".into()],
                duration: Duration::from_secs(3),
            },
            _ => PodBehaviour::succeed(),
        },
    );
    server
        .preload(vec![configmap("steady", &job_yaml("steady", ""))])
        .unwrap();
    let receiver = Receiver::start().await;
    let flags = ["--notify-url", receiver.url.as_str()];
    let start = || serve_with(&server, &flags);

    // 1. Killed after the request reached it, before the Job was created: the creates
    // are held at the API server and never happen. Request A is retried by its client
    // with the same key; request B's client gives up — the new leader builds it anyway.
    let kubeci = start();
    server.gate().hold("create", "jobs");
    let port = kubeci.port;
    let send = |key: &'static str| {
        std::thread::spawn(move || {
            let probe = Kubeci::probe(port);
            trigger(&probe, "steady", Some(key))
        })
    };
    let _a = send("request-a");
    let _b = send("request-b");
    wait("both creates to reach the API server", || {
        server.gate().held() >= 2
    });
    kubeci.kill();
    server.gate().release(false);
    assert!(
        build_jobs(&server, "steady").is_empty(),
        "nothing was created"
    );
    let kubeci = start();
    let (status, retried) = trigger(&kubeci, "steady", Some("request-a"));
    assert_eq!(status, 200, "the retry is the same request: {retried}");
    wait("request B to be built by the new leader", || {
        build_jobs(&server, "steady").len() == 2
    });
    assert_eq!(build_jobs(&server, "steady"), [1, 2]);

    // 2. Killed right after the Job was created.
    let (status, third) = trigger(&kubeci, "steady", None);
    assert_eq!((status, third["number"].as_u64()), (201, Some(3)));
    kubeci.kill();
    // 3. ... and the next one is killed while build 3 runs.
    wait("build 3 to run", || pod_running(&server, "steady", "3"));
    let kubeci = start();
    wait("build 3 to run under the new process", || {
        state(&kubeci, "steady", 3) == "running"
    });
    kubeci.kill();

    // 4. Killed after build 3 finished, before its end was reported: the receiver is
    // refusing deliveries when the build completes.
    receiver.refuse(true);
    let kubeci = start();
    wait("build 3 to complete", || completed(&server, "steady-3"));
    wait("the report of its end to be attempted", || {
        receiver.refused_count("steady", 3) > 0
    });
    kubeci.kill();
    receiver.refuse(false);
    let kubeci = start();
    for number in 1..=3 {
        wait("every build's end to be reported", || {
            !receiver.finals("steady", number).is_empty()
        });
    }
    wait("the reports to be recorded", || {
        builds(&kubeci, "steady").iter().all(|b| {
            b["reported"]
                .as_array()
                .is_some_and(|r| r.iter().any(|s| s == "success"))
        })
    });
    for number in 1..=3 {
        assert_eq!(
            receiver.finals("steady", number),
            ["success"],
            "build {number}'s end reported exactly once"
        );
    }
    assert_eq!(
        build_jobs(&server, "steady"),
        [1, 2, 3],
        "none lost, none doubled"
    );

    // Old Jobs deleted, another restart: numbers are never reused.
    kubeci.kill();
    for name in ["steady-1", "steady-2", "steady-3"] {
        let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
            kube::Api::namespaced(server.client().await, "default");
        jobs.delete(name, &kube::api::DeleteParams::background())
            .await
            .unwrap();
    }
    let kubeci = start();
    let (status, next) = trigger(&kubeci, "steady", None);
    assert_eq!((status, next["number"].as_u64()), (201, Some(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_duplicate_and_one_reports() {
    let server = FakeApiServer::start().await;
    server
        .preload(vec![configmap("shared", &job_yaml("shared", ""))])
        .unwrap();
    let receiver = Receiver::start().await;
    let flags = ["--notify-url", receiver.url.as_str()];
    let one = serve_with(&server, &flags);
    let two = serve_with(&server, &flags);
    let ports = [one.port, two.port];
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let port = ports[i % 2];
            std::thread::spawn(move || {
                let probe = Kubeci::probe(port);
                // Each request is sent twice, to alternate replicas: a client retrying
                // against another replica behind the Service.
                let key = format!("request-{i}");
                let first = trigger(&probe, "shared", Some(&key));
                let again = trigger(&Kubeci::probe(ports[(i + 1) % 2]), "shared", Some(&key));
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
    assert_eq!(numbers, (1..=12).collect(), "{numbers:?}");
    assert_eq!(build_jobs(&server, "shared"), (1..=12).collect::<Vec<_>>());
    for number in 1..=12 {
        wait("each end to be reported", || {
            !receiver.finals("shared", number).is_empty()
        });
    }
    wait("the reports to be recorded", || {
        builds(&one, "shared").iter().all(|b| {
            b["reported"]
                .as_array()
                .is_some_and(|r| r.iter().any(|s| s == "success"))
        })
    });
    for number in 1..=12 {
        assert_eq!(
            receiver.finals("shared", number),
            ["success"],
            "build {number}"
        );
    }
    let leader = server.store().get(7, "default", "kubeci-leader").unwrap()["spec"]
        ["holderIdentity"]
        .as_str()
        .unwrap()
        .to_owned();
    // The leader dies: the other replica takes over and reports the next build.
    let (survivor, _) = if one.log().contains(&format!("{leader} leads")) {
        one.kill();
        (two, ())
    } else {
        two.kill();
        (one, ())
    };
    let (status, next) = trigger(&survivor, "shared", None);
    assert_eq!((status, next["number"].as_u64()), (201, Some(13)));
    wait("the survivor to report it", || {
        receiver.finals("shared", 13) == ["success"]
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_watches_errors_and_a_vanished_api_server_are_waited_out() {
    let server = FakeApiServer::start().await;
    server
        .preload(vec![configmap("first", &job_yaml("first", ""))])
        .unwrap();
    let mut kubeci = serve_with(&server, &[]);

    // Watches dropped and their history compacted (410 Gone on resume): relisted.
    server.compact();
    server.gate().drop_watches();
    server
        .preload(vec![configmap("second", &job_yaml("second", ""))])
        .unwrap();
    wait("the new job after a relist", || {
        common::serve::job_names(&kubeci).contains(&"second".to_owned())
    });

    // 500s: a build request fails cleanly with 503, the next one works.
    server.gate().fail_next(50, 500);
    let (status, body) = trigger(&kubeci, "first", None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "backend-failed");
    wait("the API server to answer again", || {
        trigger(&kubeci, "first", None).0 == 201
    });

    // Gone for 30 s: kubeci keeps serving what it knows, then catches up.
    server.stop();
    let gone = std::time::Instant::now();
    while gone.elapsed() < Duration::from_secs(30) {
        assert!(
            kubeci.alive(),
            "kubeci crashed during the outage:\n{}",
            kubeci.log()
        );
        assert_eq!(http(&kubeci, "GET", "/healthz", &[]).0, 200);
        assert_eq!(common::serve::job_names(&kubeci).len(), 2);
        std::thread::sleep(Duration::from_millis(500));
    }
    server.restart().await;
    server
        .preload(vec![configmap("third", &job_yaml("third", ""))])
        .unwrap();
    wait("the job added after the outage", || {
        common::serve::job_names(&kubeci).contains(&"third".to_owned())
    });
    wait("a build after the outage", || {
        trigger(&kubeci, "third", None).0 == 201
    });
    wait("it to succeed", || {
        state(&kubeci, "third", 1) == "succeeded"
    });
    assert!(kubeci.alive());
}
