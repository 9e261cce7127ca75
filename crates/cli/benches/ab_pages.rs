//! Two kubeci binaries side by side (issue 28's pairs): the pages and the REST API of this
//! build (A) and of another kubeci (B, e.g. the previous commit's), both serving the same
//! load at once — `serve --kubernetes` against one fake API server (§8: 1,000 jobs, 10,000
//! finished builds) and `serve --local` on two copies of one SQLite history (each build
//! with a 20-line log) — asked in turn, A then B then B then A, request by request. What
//! disturbs the machine disturbs both alike, so their ratio holds where runs of each alone,
//! minutes apart, drift by more than the difference sought. A local engine that archives
//! (the default since issue 29) first archives the seeded history once; pages are measured
//! after it has.
//!
//! Run: `KUBECI_B=/path/to/other/kubeci cargo bench -p kubeci --bench ab_pages`
//! (`KUBECI_A_LOCAL_ARGS=--no-archive`: A's local engine without its archive;
//! `KUBECI_AB_ONLY=local` or `kubernetes`: one engine's half).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kubeci_testkit::Options;

#[path = "support.rs"]
mod support;

use support::{build_job, configmap, cpu_seconds, get, percentile, seed_history, BUILDS, JOBS};

/// Requests per path, client count and binary.
const REQUESTS: usize = 400;

/// The paths measured, for request `i` ([`support::paths`], the log's only when `logs`).
fn paths(i: usize, logs: bool) -> Vec<(&'static str, String)> {
    let mut paths = support::paths(i).to_vec();
    if !logs {
        paths.pop();
    }
    paths
}

/// The latencies of A's and of B's answers to `path(r)`, [`REQUESTS`] each, from `clients`
/// clients at once, each asking A and B in turn (which first alternates).
fn side_by_side(
    ports: (u16, u16),
    clients: usize,
    path: impl Fn(usize) -> String + Copy + Send + 'static,
) -> (Vec<Duration>, Vec<Duration>) {
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                for r in 0..REQUESTS / clients {
                    let path = path(r * clients + c);
                    let order = if r % 2 == 0 {
                        [(ports.0, true), (ports.1, false)]
                    } else {
                        [(ports.1, false), (ports.0, true)]
                    };
                    for (port, is_a) in order {
                        let sent = Instant::now();
                        let (status, _) = get(port, &path);
                        assert_eq!(status, 200, "{path} on {}", if is_a { "A" } else { "B" });
                        if is_a { &mut a } else { &mut b }.push(sent.elapsed());
                    }
                }
                (a, b)
            })
        })
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for worker in workers {
        let (wa, wb) = worker.join().unwrap();
        a.extend(wa);
        b.extend(wb);
    }
    (a, b)
}

/// Prints p50 and p99 of A and B for each path, and B's p50 over A's.
fn report(engine: &str, ports: (u16, u16), logs: bool) {
    for clients in [1, 4] {
        println!("{engine}, {clients} client(s): A | B | B/A at p50");
        for which in 0..paths(0, logs).len() {
            let name = paths(0, logs)[which].0;
            let (mut a, mut b) =
                side_by_side(ports, clients, move |r| paths(r, logs)[which].1.clone());
            let (a50, a99) = (percentile(&mut a, 0.5), percentile(&mut a, 0.99));
            let (b50, b99) = (percentile(&mut b, 0.5), percentile(&mut b, 0.99));
            let ratio = b50.as_secs_f64() / a50.as_secs_f64();
            println!(
                "  {name:<30} p50 {a50:>9.2?} p99 {a99:>9.2?} | p50 {b50:>9.2?} p99 {b99:>9.2?} | {ratio:.2}"
            );
        }
    }
}

/// Waits until the server on `port` lists job `job-{JOBS-1}`.
fn wait_for_jobs(port: u16) {
    let started = Instant::now();
    let last = format!("/jobs/bench/job-{}", JOBS - 1);
    while get(port, &last).0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "jobs never read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until process `pid` is idle (under 5 % of a core over 2 s): a newer local engine
/// archives an older history once (the default since issue 29), and pages are compared
/// after that, not while it does. Says how long that took.
fn wait_until_idle(pid: u32, name: &str) {
    let started = Instant::now();
    loop {
        let before = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs(2));
        if cpu_seconds(pid) - before < 0.1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{name} never settled"
        );
    }
    println!("{name} idle after {:.0?}", started.elapsed());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The Kubernetes engine: two replicas of one cluster, one of each binary.
fn kubernetes(this: &Path, other: &Path) {
    let (runtime, server) = support::fake_api_server(Options {
        history: 50_000,
        ..Options::default()
    });
    let _guard = runtime.enter();
    let mut objects: Vec<serde_json::Value> = (0..JOBS).map(configmap).collect();
    objects.extend((0..BUILDS).map(build_job));
    server.preload(objects).unwrap();
    let (a, _) = support::start_exe(this, &server, &[], &[]);
    let (b, _) = support::start_exe(other, &server, &[], &[]);
    wait_for_jobs(a.port);
    wait_for_jobs(b.port);
    report(
        "serve --kubernetes (fake API server)",
        (a.port, b.port),
        false,
    );
    drop((a, b));
}

fn main() {
    let Some(other) = std::env::var_os("KUBECI_B").map(PathBuf::from) else {
        eprintln!("ab_pages compares this kubeci with another: set KUBECI_B to its path");
        std::process::exit(2);
    };
    let this: &Path = env!("CARGO_BIN_EXE_kubeci").as_ref();
    println!("A: {}\nB: {}", this.display(), other.display());

    let only = std::env::var("KUBECI_AB_ONLY").unwrap_or_default();
    if only != "local" {
        kubernetes(this, &other);
    }
    if only == "kubernetes" {
        return;
    }
    // The embedded engine: one seeded history, copied for each.
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    for i in 0..JOBS {
        std::fs::write(jobs.join(format!("job-{i}.yaml")), configmap(i).to_string()).unwrap();
    }
    let seeded = dir.path().join("seeded");
    std::fs::create_dir_all(&seeded).unwrap();
    seed_history(&seeded);
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    copy_dir(&seeded, &data_a);
    copy_dir(&seeded, &data_b);
    // `KUBECI_A_LOCAL_ARGS`: more flags for A's `serve --local` (`--no-archive`: its pages
    // without the archive's builds, which B may not know of).
    let a_args: Vec<String> = std::env::var("KUBECI_A_LOCAL_ARGS")
        .map(|args| args.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    println!("A's serve --local flags added: {a_args:?}");
    let (mut a, port_a) = support::start_local_exe_with(this, &jobs, &data_a, &a_args);
    let (mut b, port_b) = support::start_local_exe(&other, &jobs, &data_b);
    wait_for_jobs(port_a);
    wait_for_jobs(port_b);
    wait_until_idle(a.id(), "A");
    wait_until_idle(b.id(), "B");
    report("serve --local (SQLite)", (port_a, port_b), true);
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
