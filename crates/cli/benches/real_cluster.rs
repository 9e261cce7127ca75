//! Load driver for `kubeci serve --kubernetes` on the real control plane of
//! `scripts/cluster up`, measured as `serve_load` measures it on the fake API server: start
//! to `/readyz` with 1,000 job ConfigMaps and 10,000 build Jobs stored in the API server,
//! RSS at that load, ConfigMap change → job served, build request → Job created → its pod's
//! first container started (through the real Job controller, scheduler and node agent), and
//! Job creations per minute at the kube client's defaults.
//!
//! Run: `eval "$(scripts/cluster up)"; cargo bench -p kubeci --bench real_cluster`
//!
//! `-- --burst`: only 50 concurrent build requests of one job, answered (three rounds, a
//! new job each); with `KUBECI_B=PATH` another kubeci binary's rounds alternate with
//! this one's.
//!
//! `-- --memory`: only start, memory and idle CPU with 10,000 finished builds, without and
//! then with their pods (`real_cluster_memory.rs`); with `KUBECI_B=PATH`, alternating.

#[path = "finished_builds.rs"]
mod finished;
#[path = "real_cluster_memory.rs"]
mod memory;
#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};
use support::{percentile, rss_mb, status, Kubeci, BUILDS, JOBS};

const TOKEN: &str = "bench-token-of-some-length";

/// Job ConfigMap `job-{i}`: builds land on no node (so the create-rate run starts no
/// processes) and queue one at a time.
fn configmap(ns: &str, i: usize) -> Value {
    let mut cm = support::configmap(i);
    cm["metadata"]["namespace"] = json!(ns);
    cm["data"]["job.yaml"] = json!(format!("- job:\n    name: job-{i}\n    git:\n      url: git@github.com:example/repo-{i}.git\n    run_command: make test\n    timeout: 30m\n    max_concurrency: 1\n    node_selector:\n      kubeci.io/bench: nowhere\n"));
    cm
}

/// Finished build `i`: a Job kubeci stopped (suspended, cancelled), so no controller runs it.
fn build_job(ns: &str, i: usize) -> Value {
    let mut job = support::build_job(i);
    job["metadata"]["namespace"] = json!(ns);
    job["metadata"]["annotations"]["kubeci.io/cancelled-by"] = json!("bench");
    job["spec"]["suspend"] = json!(true);
    job["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["true"]);
    job.as_object_mut().unwrap().remove("status");
    job
}

fn start(kubeconfig: &std::path::Path, ns: &str) -> (Kubeci, Duration) {
    start_exe(env!("CARGO_BIN_EXE_kubeci").as_ref(), kubeconfig, ns)
}

fn start_exe(exe: &std::path::Path, kubeconfig: &std::path::Path, ns: &str) -> (Kubeci, Duration) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let child = std::process::Command::new(exe)
        .args([
            "serve",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--namespace", ns, "--lease-namespace", ns])
        .args([
            "--token-file",
            &dir.path().join("token").display().to_string(),
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let kubeci = Kubeci::new(child, port, dir);
    while status(port, "GET", "/readyz", "") != 200 {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    (kubeci, started.elapsed())
}

/// Creates `objects`, 16 requests in flight.
async fn create_all(client: &kube::Client, objects: Vec<Value>) {
    let mut pending = tokio::task::JoinSet::new();
    for object in objects {
        if pending.len() >= 16 {
            pending.join_next().await.unwrap().unwrap();
        }
        let client = client.clone();
        pending.spawn(async move {
            let ns = object["metadata"]["namespace"].as_str().unwrap().to_owned();
            if object["kind"] == "Job" {
                let job: Job = serde_json::from_value(object).unwrap();
                Api::<Job>::namespaced(client, &ns)
                    .create(&PostParams::default(), &job)
                    .await
                    .unwrap();
            } else {
                let cm: ConfigMap = serde_json::from_value(object).unwrap();
                Api::<ConfigMap>::namespaced(client, &ns)
                    .create(&PostParams::default(), &cm)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
}

/// Creates namespace `ns`, its builds enabled (tenancy), and waits for its `default`
/// ServiceAccount.
fn make_namespace(runtime: &tokio::runtime::Runtime, client: &kube::Client, ns: &str) {
    runtime.block_on(async {
        let namespace =
            json!({"metadata": {"name": ns, "labels": {"kubeci.io/builds": "enabled"}}});
        let namespace: Namespace = serde_json::from_value(namespace).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), ns);
        while accounts.get_opt("default").await.unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// 50 build requests of one job at once, each answered: p50 and p99 of the answers over
/// three rounds (a new job each), this kubeci's and, with `KUBECI_B`, another's in turn.
fn burst(runtime: &tokio::runtime::Runtime, client: kube::Client, kubeconfig: &std::path::Path) {
    const AT_ONCE: usize = 50;
    let ns = format!("bench-burst-{}", std::process::id());
    make_namespace(runtime, &client, &ns);
    let own: std::path::PathBuf = env!("CARGO_BIN_EXE_kubeci").into();
    let mut binaries = vec![("this kubeci", own)];
    if let Some(other) = std::env::var_os("KUBECI_B") {
        binaries.push(("KUBECI_B", other.into()));
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let mut answers: Vec<Vec<Duration>> = vec![Vec::new(); binaries.len()];
    for round in 0..3 {
        for (which, (_, exe)) in binaries.iter().enumerate() {
            let job = format!("burst-{round}-{which}");
            let mut cm = configmap(&ns, 0);
            cm["metadata"]["name"] = json!(job);
            cm["data"]["job.yaml"] = json!(format!("- job:\n    name: {job}\n    git:\n      url: git@github.com:example/burst.git\n    run_command: make test\n    max_concurrency: 1\n    node_selector:\n      kubeci.io/bench: nowhere\n"));
            let cm: ConfigMap = serde_json::from_value(cm).unwrap();
            runtime
                .block_on(cms.create(&PostParams::default(), &cm))
                .unwrap();
            let (kubeci, _) = start_exe(exe, kubeconfig, &ns);
            let path = format!("/api/v1/jobs/{ns}/{job}/builds");
            while status(kubeci.port, "GET", &path, "") != 200 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let port = kubeci.port;
            let requests: Vec<_> = (0..AT_ONCE)
                .map(|_| {
                    let (path, auth) = (path.clone(), auth.clone());
                    std::thread::spawn(move || {
                        let sent = Instant::now();
                        assert_eq!(status(port, "POST", &path, &auth), 201);
                        sent.elapsed()
                    })
                })
                .collect();
            answers[which].extend(requests.into_iter().map(|r| r.join().unwrap()));
            drop(kubeci);
        }
    }
    runtime.block_on(async {
        let _ = Api::<Namespace>::all(client)
            .delete(&ns, &Default::default())
            .await;
    });
    for ((name, _), mut took) in binaries.into_iter().zip(answers) {
        println!(
            "{AT_ONCE} concurrent build requests of one job ({name}): answered p50 {:?}, p99 {:?} (3 rounds)",
            percentile(&mut took, 0.5),
            percentile(&mut took, 0.99)
        );
    }
}

// Long on purpose: one measurement on the real control plane, its steps in the order the
// figures in BENCHMARKS.md were taken; each needs the objects the step before created.
fn measure(runtime: &tokio::runtime::Runtime, client: kube::Client, kubeconfig: &std::path::Path) {
    let ns = format!("bench-{}", std::process::id());
    make_namespace(runtime, &client, &ns);
    let loading = Instant::now();
    let mut objects: Vec<Value> = (0..JOBS).map(|i| configmap(&ns, i)).collect();
    objects.extend((0..BUILDS).map(|i| build_job(&ns, i)));
    runtime.block_on(create_all(&client, objects));
    let loaded_in = loading.elapsed();
    // The Job controller syncs each new Job once (a suspended one gets its `Suspended`
    // condition): measured from settled, as a cluster that has held its builds for a while.
    let settling = Instant::now();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    loop {
        let listed = runtime.block_on(jobs.list(&ListParams::default())).unwrap();
        let synced = listed
            .items
            .iter()
            .filter(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Suspended"))
            })
            .count();
        if synced == BUILDS {
            break;
        }
        assert!(
            settling.elapsed() < Duration::from_secs(900),
            "{synced} of {BUILDS} Jobs synced"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let settled_in = settling.elapsed();

    let mut ready = Vec::new();
    for _ in 0..5 {
        let (kubeci, took) = start(kubeconfig, &ns);
        ready.push(took);
        drop(kubeci);
    }
    let (kubeci, _) = start(kubeconfig, &ns);
    std::thread::sleep(Duration::from_secs(3));
    let loaded_rss = rss_mb(kubeci.child.id());
    let port = kubeci.port;

    // ConfigMap change → job served.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let mut visible = Vec::new();
    for i in 0..100 {
        let cm: ConfigMap = serde_json::from_value(configmap(&ns, JOBS + i)).unwrap();
        let path = format!("/api/v1/jobs/{ns}/job-{}/builds", JOBS + i);
        let sent = Instant::now();
        runtime
            .block_on(cms.create(&PostParams::default(), &cm))
            .unwrap();
        while status(port, "GET", &path, "") != 200 {
            assert!(sent.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_micros(200));
        }
        visible.push(sent.elapsed());
    }

    // Build request → Job created → pod Running: a job whose pods run (`sleep`), one build
    // at a time so each is measured alone.
    let runner = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "runner", "namespace": ns, "labels": {"ci-job-spec": "true"}},
        "data": {"job.yaml": "- job:\n    name: runner\n    image: bash:5\n    git:\n      url: https://example.invalid/never-cloned.git\n    run_command: sleep 1\n    timeout: 5m\n"}});
    let runner: ConfigMap = serde_json::from_value(runner).unwrap();
    runtime
        .block_on(cms.create(&PostParams::default(), &runner))
        .unwrap();
    while status(port, "GET", &format!("/api/v1/jobs/{ns}/runner/builds"), "") != 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (mut to_job, mut to_running) = (Vec::new(), Vec::new());
    for number in 1..=20u64 {
        let sent = Instant::now();
        assert_eq!(
            status(
                port,
                "POST",
                &format!("/api/v1/jobs/{ns}/runner/builds"),
                &auth
            ),
            201
        );
        to_job.push(sent.elapsed());
        let selector = format!("kubeci.io/job=runner,kubeci.io/build={number}");
        loop {
            let listed = runtime
                .block_on(pods.list(&ListParams::default().labels(&selector)))
                .unwrap();
            let running = listed.items.iter().any(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    || p.status
                        .as_ref()
                        .and_then(|s| s.init_container_statuses.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| {
                                c.state
                                    .as_ref()
                                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                            })
                        })
            });
            if running {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(60),
                "build {number} never ran"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        to_running.push(sent.elapsed());
        let _ = runtime.block_on(jobs.delete(&format!("runner-{number}"), &Default::default()));
    }

    // Job creations per minute: 4 clients POSTing builds of 100 jobs for 20 s (their
    // builds queue, and the released ones land on no node).
    let per_minute = support::creations_per_minute(port, &ns, &auth);
    drop(kubeci);
    runtime.block_on(async {
        let _ = Api::<Namespace>::all(client)
            .delete(&ns, &Default::default())
            .await;
    });

    println!(
        "== the real API server ({JOBS} job ConfigMaps + {BUILDS} Jobs stored in {loaded_in:.1?}; the Job controller synced them in {settled_in:.1?})"
    );
    println!(
        "start to /readyz: median {:?}, max {:?} (5 runs)",
        percentile(&mut ready, 0.5),
        percentile(&mut ready, 1.0)
    );
    println!("RSS at that load: {loaded_rss:.1} MB");
    println!(
        "ConfigMap created → job served: p50 {:?}, p99 {:?} (100 changes)",
        percentile(&mut visible, 0.5),
        percentile(&mut visible, 0.99)
    );
    println!(
        "build request → Job created (201): p50 {:?}, p99 {:?}; → its pod's first container started: p50 {:?}, p99 {:?} (20 builds)",
        percentile(&mut to_job, 0.5),
        percentile(&mut to_job, 0.99),
        percentile(&mut to_running, 0.5),
        percentile(&mut to_running, 0.99)
    );
    println!(
        "Job creations: {per_minute:.0}/min (4 API clients; kube client defaults, no QPS limit)"
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let path = std::env::var_os("KUBECI_E2E_KUBECONFIG")
        .expect("the real API server: eval \"$(scripts/cluster up)\" first");
    let kubeconfig = std::path::PathBuf::from(path);
    let client = runtime.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    });
    if std::env::args().any(|a| a == "--burst") {
        burst(&runtime, client, &kubeconfig);
    } else if std::env::args().any(|a| a == "--memory") {
        memory::memory(&runtime, client, &kubeconfig);
    } else {
        measure(&runtime, client, &kubeconfig);
    }
}
