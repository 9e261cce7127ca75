//! Load driver for the pages and the REST API (docs/design.md §8, issue 7): 1,000 jobs and
//! 10,000 finished builds, served by both engines — `serve --kubernetes` against the fake
//! API server, and `serve --local` with that history in its SQLite database (each build
//! with a 20-line log) — and the latency of each page and API answer, read to the end,
//! from one client and from four at once; then the server's memory. Last, the jobs page
//! at 10,000 jobs (issue 20: at most 200 KB, p99 at most 50 ms) on both engines: its first
//! page, a later one, and filtered by text and by state.
//!
//! Run: `cargo bench -p kubeci --bench ui_load` (`-- many-jobs`: the 10,000 jobs alone)

use std::time::{Duration, Instant};

use kubeci_local::store::{NewBuild, Store};
use kubeci_testkit::Options;

#[path = "support.rs"]
mod support;

use support::{build_job, configmap, get, percentile, rss_mb, BUILDS, JOBS};

/// Requests per path and client count.
const REQUESTS: usize = 200;

/// The paths measured, for job `i` (its builds are 1..=10).
fn paths(i: usize) -> [(&'static str, String); 6] {
    let job = i % JOBS;
    let build = i % (BUILDS / JOBS) + 1;
    [
        ("jobs page `/`", "/".to_owned()),
        ("job page", format!("/jobs/bench/job-{job}")),
        (
            "build page",
            format!("/jobs/bench/job-{job}/builds/{build}"),
        ),
        ("`GET /api/v1/jobs`", "/api/v1/jobs".to_owned()),
        (
            "`GET …/builds` (first page)",
            format!("/api/v1/jobs/bench/job-{job}/builds"),
        ),
        (
            "`GET …/builds/{n}/log`",
            format!("/api/v1/jobs/bench/job-{job}/builds/{build}/log"),
        ),
    ]
}

/// p50 and p99 of each path, from `clients` clients at once; `logs`: whether the engine
/// has logs (the fake API server runs no pods, so it has none).
fn measure(
    port: u16,
    clients: usize,
    logs: bool,
) -> Vec<(&'static str, Duration, Duration, usize)> {
    let measured = if logs { 6 } else { 5 };
    (0..measured)
        .map(|which| {
            let (p50, p99, bytes) = latency(port, clients, move |r| paths(r)[which].1.clone());
            (paths(0)[which].0, p50, p99, bytes)
        })
        .collect()
}

/// Jobs in the jobs page's scale test.
const MANY_JOBS: usize = 10_000;

/// p50, p99 and largest size of [`REQUESTS`] answers from `clients` clients at once, the
/// `r`th request asking for `path(r)`.
fn latency(
    port: u16,
    clients: usize,
    path: impl Fn(usize) -> String + Copy + Send + 'static,
) -> (Duration, Duration, usize) {
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                (0..REQUESTS / clients)
                    .map(|r| {
                        let path = path(r * clients + c);
                        let sent = Instant::now();
                        let (status, bytes) = get(port, &path);
                        assert_eq!(status, 200, "{path}");
                        (sent.elapsed(), bytes)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(Duration, usize)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let mut times: Vec<Duration> = answers.iter().map(|a| a.0).collect();
    let bytes = answers.iter().map(|a| a.1).max().unwrap_or(0);
    (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        bytes,
    )
}

/// The jobs page of a server holding [`MANY_JOBS`] jobs; `state_filter`: a state filter
/// that matches jobs on that engine (each page measured shows a page of jobs).
fn report_many_jobs(engine: &str, port: u16, state_filter: &'static str) {
    let pages = [
        ("first page", "/"),
        ("page 50", "/?page=50"),
        ("text filter", "/?q=job-99"),
        ("state filter", state_filter),
    ];
    for clients in [1, 4] {
        println!("{engine}, {MANY_JOBS} jobs, jobs page, {clients} client(s):");
        for (what, path) in pages {
            let (p50, p99, bytes) = latency(port, clients, move |_| path.to_owned());
            assert!(bytes > 20_000, "{engine}: {path} shows no page of jobs");
            println!("  {what:<30} p50 {p50:>10.2?}  p99 {p99:>10.2?}  ({bytes} bytes)");
        }
    }
}

/// Both engines with [`MANY_JOBS`] jobs, one finished build each.
fn many_jobs() {
    let (runtime, server) = support::fake_api_server(Options {
        history: 50_000,
        ..Options::default()
    });
    let _guard = runtime.enter();
    let mut objects: Vec<serde_json::Value> = (0..MANY_JOBS).map(configmap).collect();
    objects.extend((0..MANY_JOBS).map(|i| {
        let mut job = build_job(i % JOBS);
        let name = format!("job-{i}");
        job["metadata"]["name"] = format!("{name}-1").into();
        job["metadata"]["labels"]["kubeci.io/job"] = name.into();
        job["metadata"]["labels"]["kubeci.io/build"] = "1".into();
        job
    }));
    server.preload(objects).unwrap();
    let (kubeci, _) = support::start(&server, &[], &[]);
    // The fake API server starts no pod for these Jobs: their builds are pending.
    report_many_jobs(
        "serve --kubernetes (fake API server)",
        kubeci.port,
        "/?state=running",
    );
    drop(kubeci);

    let dir = tempfile::tempdir().unwrap();
    let (jobs, data) = (dir.path().join("jobs"), dir.path().join("data"));
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..MANY_JOBS {
        std::fs::write(jobs.join(format!("job-{i}.yaml")), configmap(i).to_string()).unwrap();
    }
    let (mut child, port) = support::start_local(&jobs, &data);
    let started = Instant::now();
    let last = format!("/jobs/bench/job-{}", MANY_JOBS - 1);
    while get(port, &last).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "jobs never read"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    report_many_jobs("serve --local (SQLite, no builds)", port, "/?state=never");
    let _ = child.kill();
    let _ = child.wait();
}

fn report(engine: &str, port: u16, pid: u32, logs: bool) {
    for clients in [1, 4] {
        println!("{engine}, {clients} client(s):");
        for (what, p50, p99, bytes) in measure(port, clients, logs) {
            println!("  {what:<30} p50 {p50:>10.2?}  p99 {p99:>10.2?}  ({bytes} bytes)");
        }
    }
    println!("  RSS after: {:.1} MB", rss_mb(pid));
}

/// A `serve --local` data directory holding the §9 history: builds 1..=10 of each job,
/// finished, each with a 20-line log.
fn seed_history(data: &std::path::Path) {
    let mut store = Store::open(&data.join("kubeci.db")).unwrap();
    let request = kubeci_build::BuildRequest::manual(0);
    let now = 1_790_000_000;
    for i in 0..BUILDS {
        let job = format!("job-{}", i % JOBS);
        let manifest = |_| Ok("{}".to_owned());
        let (number, _) = store
            .allocate(&NewBuild {
                namespace: "bench",
                job: &job,
                request: &request,
                key: None,
                manifest: &manifest,
                spec_hash: "0",
                chart_version: None,
                git_url: None,
                check_name: None,
                now,
                floor: None,
            })
            .unwrap();
        let running = kubeci_engine::BuildState::Running;
        store
            .set_state("bench", &job, number, &running, now)
            .unwrap();
        for seq in 0..20 {
            let line = kubeci_local::store::LogLine {
                seq,
                written_at: Some((now + 5) * 1_000_000_000 + seq as i64 * 1_000_000),
                text: format!("\x1b[32mok\x1b[0m step {seq} of build {number} of {job}")
                    .into_bytes(),
            };
            store.append_log("bench", &job, number, &line).unwrap();
        }
        let done = kubeci_engine::BuildState::Succeeded;
        store
            .set_state("bench", &job, number, &done, now + 95)
            .unwrap();
    }
}

fn main() {
    // `cargo bench -p kubeci --bench ui_load -- many-jobs`: the 10,000-job pages alone.
    if std::env::args().any(|a| a == "many-jobs") {
        many_jobs();
        return;
    }
    // The Kubernetes engine.
    let (runtime, server) = support::fake_api_server(Options {
        history: 50_000,
        ..Options::default()
    });
    let _guard = runtime.enter();
    let mut objects: Vec<serde_json::Value> = (0..JOBS).map(configmap).collect();
    objects.extend((0..BUILDS).map(build_job));
    server.preload(objects).unwrap();
    let (kubeci, _) = support::start(&server, &[], &[]);
    report(
        "serve --kubernetes (fake API server)",
        kubeci.port,
        kubeci.child.id(),
        false,
    );
    drop(kubeci);

    // The embedded engine.
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..JOBS {
        // JSON is YAML.
        std::fs::write(jobs.join(format!("job-{i}.yaml")), configmap(i).to_string()).unwrap();
    }
    let seeding = Instant::now();
    seed_history(&data);
    println!(
        "(seeded {BUILDS} builds with logs in {:.1?})",
        seeding.elapsed()
    );
    let (mut child, port) = support::start_local(&jobs, &data);
    let started = Instant::now();
    while get(port, "/readyz").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Ready means the jobs are read; wait until they are all listed.
    while get(port, "/jobs/bench/job-999").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "jobs never read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    report("serve --local (SQLite)", port, child.id(), true);
    let _ = child.kill();
    let _ = child.wait();
    many_jobs();
}
