//! The scale run (issue 9): the real `kubeci serve --kubernetes` on the fake API server
//! with 10,000 job ConfigMaps, then 1,000 builds requested at once and running together
//! (the fake's simulated Job controller and kubelet run each pod for a while), then all
//! finishing. Recorded: kubeci's memory and CPU in each phase, the latency of requests,
//! of the pages and the API while the 1,000 run, and how long each phase took. Checked:
//! every request one build, every build succeeded and its final state reported once.
//!
//! Run: `cargo bench -p kubeci --bench scale`
//! (`SCALE_JOBS`, `SCALE_BUILDS`, `SCALE_RUN_SECONDS` change the load;
//! `SCALE_QUIET_SECONDS` the window without requests, e.g. to attach a profiler.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeci_testkit::{Options, PodBehaviour};
use serde_json::Value;

#[path = "support.rs"]
mod support;

use support::{
    cpu_seconds, get, percentile, rss_mb, scale_configmap, scale_namespace, status,
    SCALE_NAMESPACES,
};

const TOKEN: &str = "scale-token-of-some-length";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Build states by kubeci's own count (`kubeci_builds` in /metrics).
fn states(port: u16) -> BTreeMap<String, usize> {
    let text = support::get_text(port, "/metrics");
    let mut states = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("kubeci_builds{")) {
        let state = line
            .split("state=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("?");
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *states.entry(state.to_owned()).or_insert(0) += count as usize;
    }
    states
}

/// Where kubeci's build notifications go: each (namespace/job, build, state) counted,
/// and every idempotency key.
#[derive(Default)]
struct Reports {
    finals: Mutex<BTreeMap<(String, u64), Vec<String>>>,
    deliveries: AtomicUsize,
    keys: Mutex<BTreeMap<String, usize>>,
}

async fn receive(reports: Arc<Reports>) -> String {
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: String| {
            let reports = reports.clone();
            async move {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                reports.deliveries.fetch_add(1, Ordering::Relaxed);
                let key = v["id"].as_str().unwrap_or("").to_owned();
                let first = {
                    let mut keys = reports.keys.lock().unwrap();
                    let seen = keys.entry(key).or_insert(0);
                    *seen += 1;
                    *seen == 1
                };
                let state = v["state"].as_str().unwrap_or("").to_owned();
                if first && matches!(state.as_str(), "success" | "failure" | "error") {
                    let build = (
                        format!(
                            "{}/{}",
                            v["namespace"].as_str().unwrap_or(""),
                            v["job"].as_str().unwrap_or("")
                        ),
                        v["build"].as_u64().unwrap_or(0),
                    );
                    reports
                        .finals
                        .lock()
                        .unwrap()
                        .entry(build)
                        .or_default()
                        .push(state);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// `samples` GETs of each path from `clients` clients at once: (path, p50, p99, max, bytes).
fn latencies(
    port: u16,
    paths: &[String],
    samples: usize,
    clients: usize,
) -> Vec<(String, Duration, Duration, Duration, usize)> {
    paths
        .iter()
        .map(|path| {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let mut taken = Vec::new();
                        let mut bytes = 0;
                        for _ in 0..samples / clients {
                            let sent = Instant::now();
                            let (code, size) = get(port, &path);
                            taken.push(sent.elapsed());
                            assert_eq!(code, 200, "GET {path}");
                            bytes = size;
                        }
                        (taken, bytes)
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut bytes = 0;
            for worker in workers {
                let (taken, size) = worker.join().unwrap();
                all.extend(taken);
                bytes = size;
            }
            (
                path.clone(),
                percentile(&mut all, 0.5),
                percentile(&mut all, 0.99),
                percentile(&mut all, 1.0),
                bytes,
            )
        })
        .collect()
}

// Long on purpose: a load driver read top to bottom (start, load, measure, print), each step
// using what the one before set up; helpers would hide the order the figures depend on.
fn main() {
    let jobs = setting("SCALE_JOBS", 10_000);
    let builds = setting("SCALE_BUILDS", 1_000).min(jobs);
    let run_for = Duration::from_secs(setting("SCALE_RUN_SECONDS", 120) as u64);

    // The simulated kubelet runs every pod for `run_for`: long enough for all the builds
    // to be running at once while they are measured.
    let (runtime, server) = support::fake_api_server_as(Options {
        history: 200_000,
        ..Options::default()
    });
    server.set_pod_behaviour(move |_| PodBehaviour::Succeed {
        logs: (1..=60).map(|n| format!("step {n} of 60")).collect(),
        duration: run_for,
    });
    let _guard = runtime.enter();
    let reports = Arc::new(Reports::default());
    let notify_url = runtime.block_on(receive(reports.clone()));

    server
        .preload((0..jobs).map(scale_configmap).collect())
        .unwrap();
    let (kubeci, ready_in) = support::start(
        &server,
        &[("token", TOKEN)],
        &["--token-file", "{dir}/token", "--notify-url", &notify_url],
    );
    let pid = kubeci.child.id();
    let port = kubeci.port;

    let peak_rss = support::PeakRss::start(pid, Duration::from_millis(100));

    let jobs_listed = support::get_json(port, "/api/v1/jobs");
    assert_eq!(jobs_listed["items"].as_array().map(Vec::len), Some(jobs));
    let idle_cpu_start = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_seconds(pid) - idle_cpu_start) / 10.0;
    let idle_rss = rss_mb(pid);

    // The burst: one build for each of `builds` jobs, from 8 clients.
    let cpu_before_burst = cpu_seconds(pid);
    let burst_started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= builds {
                        return taken;
                    }
                    let path = format!("/api/v1/jobs/{}/job-{i}/builds", scale_namespace(i));
                    let sent = Instant::now();
                    let code = status(
                        port,
                        "POST",
                        &path,
                        &format!("Authorization: Bearer {TOKEN}\r\nIdempotency-Key: scale-{i}\r\n"),
                    );
                    assert_eq!(code, 201, "POST {path}");
                    taken.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut trigger_latency: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let burst_took = burst_started.elapsed();

    // All running at once.
    let mut peak_running = 0;
    loop {
        let running = states(port).get("running").copied().unwrap_or(0);
        peak_running = peak_running.max(running);
        if running == builds {
            break;
        }
        assert!(
            burst_started.elapsed() < run_for,
            "only {running} of {builds} builds running before the first could finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all_running_after = burst_started.elapsed();
    let burst_cpu = cpu_seconds(pid) - cpu_before_burst;
    let running_rss = rss_mb(pid);

    // While they run: kubeci alone, then the pages and the API.
    let quiet = setting("SCALE_QUIET_SECONDS", 5) as u64;
    println!("quiet for {quiet}s: kubeci (pid {pid}) has {builds} builds running and no requests");
    let steady_cpu_start = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(quiet));
    let steady_cpu = (cpu_seconds(pid) - steady_cpu_start) / quiet as f64;
    let some = builds / 2;
    let ns = scale_namespace(some);
    let paths = vec![
        "/healthz".to_owned(),
        "/api/v1/jobs".to_owned(),
        "/".to_owned(),
        format!("/jobs/{ns}/job-{some}"),
        format!("/api/v1/jobs/{ns}/job-{some}/builds"),
        format!("/jobs/{ns}/job-{some}/builds/1"),
        format!("/api/v1/jobs/{ns}/job-{some}/builds/1/log"),
        "/metrics".to_owned(),
    ];
    let served_cpu_start = cpu_seconds(pid);
    let served_started = Instant::now();
    let one_client = latencies(port, &paths, 40, 1);
    let four_clients = latencies(port, &paths, 40, 4);
    let served_cpu = (cpu_seconds(pid) - served_cpu_start) / served_started.elapsed().as_secs_f64();
    let still_running = states(port).get("running").copied().unwrap_or(0);

    // The end: all finish (each pod `run_for` after it started) and are reported.
    let finish_wait = Instant::now();
    loop {
        let succeeded = states(port).get("succeeded").copied().unwrap_or(0);
        let reported = reports.finals.lock().unwrap().len();
        if succeeded == builds && reported == builds {
            break;
        }
        assert!(
            finish_wait.elapsed() < run_for + Duration::from_secs(300),
            "{succeeded} succeeded, {reported} reported of {builds} ({} notifications)",
            reports.deliveries.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all_done_after = burst_started.elapsed();
    let total_cpu = cpu_seconds(pid);
    let end_rss = rss_mb(pid);
    let peak_rss = peak_rss.stop().max(end_rss);

    // Invariants, read from the cluster and the receiver.
    let client = runtime.block_on(server.client());
    let store_jobs = runtime
        .block_on(
            kube::Api::<k8s_openapi::api::batch::v1::Job>::all(client).list(
                &kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=kubeci"),
            ),
        )
        .unwrap()
        .items;
    let mut per_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in &store_jobs {
        let labels = job.metadata.labels.clone().unwrap_or_default();
        if let Some(name) = labels.get("kubeci.io/job") {
            per_job
                .entry(format!(
                    "{}/{name}",
                    job.metadata.namespace.as_deref().unwrap_or("")
                ))
                .or_default()
                .push(labels.get("kubeci.io/build").cloned().unwrap_or_default());
        }
    }
    let once = per_job
        .values()
        .filter(|numbers| numbers.len() == 1)
        .count();
    let finals = reports.finals.lock().unwrap();
    let reported_once = finals
        .values()
        .filter(|s| s.as_slice() == ["success"])
        .count();
    let repeats: usize = reports.keys.lock().unwrap().values().map(|n| n - 1).sum();

    println!("jobs: {jobs} ConfigMaps in {SCALE_NAMESPACES} namespaces; builds: {builds} at once, each running {}s", run_for.as_secs());
    println!(
        "start to /readyz: {ready_in:?}; idle: RSS {idle_rss:.1} MB, CPU {:.1}% of a core",
        idle_cpu * 100.0
    );
    println!(
        "burst: {builds} POSTs from 8 clients in {burst_took:?} ({:.0}/s); latency p50 {:?}, p99 {:?}, max {:?}; CPU {burst_cpu:.1} s",
        builds as f64 / burst_took.as_secs_f64(),
        percentile(&mut trigger_latency, 0.5),
        percentile(&mut trigger_latency, 0.99),
        percentile(&mut trigger_latency, 1.0),
    );
    println!("all {builds} running {all_running_after:?} after the first request (peak seen running: {peak_running})");
    println!(
        "with {builds} running: RSS {running_rss:.1} MB; CPU {:.1}% of a core unasked, {:.1}% while serving the requests below; still running after them: {still_running}",
        steady_cpu * 100.0,
        served_cpu * 100.0
    );
    for (label, rows) in [("1 client", &one_client), ("4 clients", &four_clients)] {
        for (path, p50, p99, max, bytes) in rows {
            println!("  {label:9} GET {path:48} p50 {p50:>10.2?} p99 {p99:>10.2?} max {max:>10.2?} ({bytes} bytes)");
        }
    }
    println!(
        "all succeeded and reported {all_done_after:?} after the first request; RSS {end_rss:.1} MB at the end, peak {:.1} MB; kubeci CPU in all {total_cpu:.1} s",
        peak_rss
    );
    println!(
        "invariants: {} build Jobs for {} jobs, {once} with exactly one; {reported_once} builds reported succeeded exactly once; {} notifications, {repeats} repeated keys",
        store_jobs.len(),
        per_job.len(),
        reports.deliveries.load(Ordering::Relaxed),
    );
    assert_eq!(once, builds, "every request exactly one build");
    assert_eq!(per_job.len(), builds);
    assert_eq!(reported_once, builds, "every build reported succeeded once");
}
