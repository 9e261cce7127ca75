//! What the load drivers share: starting the real `kubeci serve --kubernetes` against the
//! fake API server and waiting for /readyz, the §9 load, requests, and percentiles.
// Each driver uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubeci_testkit::{FakeApiServer, Options};
use serde_json::{json, Value};

/// The load of docs/design.md §8: job ConfigMaps and finished builds (ten per job).
pub const JOBS: usize = 1_000;
pub const BUILDS: usize = 10_000;

/// The process, its port, and its directory (kept while it runs); killed when dropped.
pub struct Kubeci {
    pub child: Child,
    pub port: u16,
    /// Its kubeconfig and files, removed when it is dropped.
    _dir: tempfile::TempDir,
}

impl Kubeci {
    pub fn new(child: Child, port: u16, dir: tempfile::TempDir) -> Kubeci {
        Kubeci {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Kubeci {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Job ConfigMap `job-{i}` of namespace `bench`.
pub fn configmap(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("job-{i}"), "namespace": "bench", "labels": {"ci-job-spec": "true"}},
        "data": {"job.yaml": format!("- job:\n    name: job-{i}\n    git:\n      url: git@github.com:example/repo-{i}.git\n    run_command: make test\n    timeout: 30m\n")},
    })
}

/// Finished build `i / JOBS + 1` of job `i % JOBS`.
pub fn build_job(i: usize) -> Value {
    let job = i % JOBS;
    let number = i / JOBS + 1;
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("job-{job}-{number}"), "namespace": "bench",
            "labels": {"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": format!("job-{job}"), "kubeci.io/build": number.to_string()},
            "annotations": {"kubeci.io/trigger": "manual", "kubeci.io/spec-hash": "0"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "bash:5"}]}}},
        "status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-23T10:00:00Z"}],
                   "completionTime": "2026-11-23T10:00:00Z", "succeeded": 1},
    })
}

/// The status of one request (0: no answer).
pub fn status(port: u16, method: &str, path: &str, headers: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: l\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return 0;
    }
    String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0)
}

/// The fake API server on a one-thread runtime of its own (kubeci gets the rest of the
/// machine), its simulated controller off.
pub fn fake_api_server(options: Options) -> (tokio::runtime::Runtime, FakeApiServer) {
    fake_api_server_as(Options {
        simulate: false,
        ..options
    })
}

/// The fake API server on a one-thread runtime of its own, exactly as `options` say.
pub fn fake_api_server_as(options: Options) -> (tokio::runtime::Runtime, FakeApiServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(FakeApiServer::start_with(options));
    (runtime, server)
}

/// One GET, its answer read to the end: (status, body bytes); status 0: no answer.
pub fn get(port: u16, path: &str) -> (u16, usize) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, 0);
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, 0);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let status = String::from_utf8_lossy(answer.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0);
    let body = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |end| answer.len() - end - 4);
    (status, body)
}

/// One GET's body as text (empty without an answer).
pub fn get_text(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// One GET's body as JSON (`null` without one).
pub fn get_json(port: u16, path: &str) -> Value {
    serde_json::from_str(&get_text(port, path)).unwrap_or(Value::Null)
}

/// The resident memory of a process, in MB (0 once it is gone).
/// The CPU time process `pid` has used (user + system), in seconds (USER_HZ is 100 on
/// Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command (which may hold spaces and parentheses): utime and stime are the
    // 12th and 13th fields.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A process's resident memory sampled every `every` until [`PeakRss::stop`]: its peak.
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::Mutex<f64>>,
    sampling: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32, every: Duration) -> PeakRss {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let peak = Arc::new(Mutex::new(rss_mb(pid)));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    let rss = rss_mb(pid);
                    let mut peak = peak.lock().unwrap();
                    *peak = peak.max(rss);
                    drop(peak);
                    std::thread::sleep(every);
                }
            })
        };
        PeakRss {
            peak,
            sampling,
            sampler,
        }
    }

    /// Stops sampling; the peak in MB.
    pub fn stop(self) -> f64 {
        self.sampling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap();
        let peak = *self.peak.lock().unwrap();
        peak
    }
}

/// Starts kubeci as `start` does, taking GitHub webhooks signed with `secret` (GitHub's API
/// unreachable, no resync): the drivers that deliver webhooks.
pub fn start_for_webhooks(server: &FakeApiServer, secret: &str) -> Kubeci {
    let (kubeci, _) = start(
        server,
        &[("secret", secret)],
        &[
            "--github-webhook-secret-file",
            "{dir}/secret",
            "--github-url",
            "http://127.0.0.1:9",
            "--github-resync",
            "0s",
        ],
    );
    kubeci
}

/// Starts `kubeci serve --local JOBS --data DATA` on a free port (it is not waited for);
/// the process and its port.
pub fn start_local(jobs: &std::path::Path, data: &std::path::Path) -> (Child, u16) {
    start_local_exe(env!("CARGO_BIN_EXE_kubeci").as_ref(), jobs, data)
}

/// [`start_local`] with the kubeci at `exe`.
pub fn start_local_exe(
    exe: &std::path::Path,
    jobs: &std::path::Path,
    data: &std::path::Path,
) -> (Child, u16) {
    start_local_exe_with(exe, jobs, data, &[])
}

/// [`start_local_exe`] with `args` added to `serve --local`'s.
pub fn start_local_exe_with(
    exe: &std::path::Path,
    jobs: &std::path::Path,
    data: &std::path::Path,
    args: &[String],
) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(exe)
        .args(["serve", "--local"])
        .arg(jobs)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

/// Starts kubeci taking GitHub webhooks signed with `secret`, GitHub's API at `github_url`
/// (called with `token`), no resync.
pub fn start_for_github(
    server: &FakeApiServer,
    secret: &str,
    github_url: &str,
    token: &str,
) -> Kubeci {
    let (kubeci, _) = start(
        server,
        &[("secret", secret), ("github-token", token)],
        &[
            "--github-webhook-secret-file",
            "{dir}/secret",
            "--github-token-file",
            "{dir}/github-token",
            "--github-url",
            github_url,
            "--github-resync",
            "0s",
        ],
    );
    kubeci
}

/// Labels every Namespace of `server` `kubeci.io/builds=enabled` (tenancy), as an
/// install's administrator enables its teams'.
fn enable_builds(server: &FakeApiServer) {
    let mut store = server.store();
    for namespace in store.current(0, None) {
        let mut object = (*namespace).clone();
        object["metadata"]["labels"]["kubeci.io/builds"] = "enabled".into();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        store.update(0, "", &name, object, false).unwrap();
    }
}

/// Starts `kubeci serve --kubernetes` on a free port with `files` written to its directory
/// (`args` may name them through `{dir}`), and waits for /readyz; the time it took.
pub fn start(server: &FakeApiServer, files: &[(&str, &str)], args: &[&str]) -> (Kubeci, Duration) {
    start_exe(env!("CARGO_BIN_EXE_kubeci").as_ref(), server, files, args)
}

/// [`start`] with the kubeci at `exe`.
pub fn start_exe(
    exe: &std::path::Path,
    server: &FakeApiServer,
    files: &[(&str, &str)],
    args: &[&str],
) -> (Kubeci, Duration) {
    start_exe_with_env(exe, server, files, args, &[])
}

/// [`start`] with `env` added to kubeci's environment (e.g. an archive's `AWS_*`).
pub fn start_with_env(
    server: &FakeApiServer,
    files: &[(&str, &str)],
    args: &[&str],
    env: &[(String, String)],
) -> (Kubeci, Duration) {
    let exe = env!("CARGO_BIN_EXE_kubeci").as_ref();
    start_exe_with_env(exe, server, files, args, env)
}

/// [`start_exe`] with `env` added to kubeci's environment.
pub fn start_exe_with_env(
    exe: &std::path::Path,
    server: &FakeApiServer,
    files: &[(&str, &str)],
    args: &[&str],
    env: &[(String, String)],
) -> (Kubeci, Duration) {
    enable_builds(server);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().display().to_string();
    let started = Instant::now();
    let child = Command::new(exe)
        .args([
            "serve",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(args.iter().map(|a| a.replace("{dir}", &path)))
        .env("KUBECONFIG", &kubeconfig)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kubeci = Kubeci {
        child,
        port,
        _dir: dir,
    };
    while status(port, "GET", "/readyz", "") != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    (kubeci, started.elapsed())
}

/// One `pull_request` delivery (`id`, signed with `signature`) on a new connection, as
/// GitHub sends them; the status (0 when no answer).
pub fn deliver_pull_request(port: u16, id: &str, signature: &str, body: &[u8]) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {id}\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return 0;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(response.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// Job creations per minute: 4 clients POSTing builds of `job-0` … `job-99` of `namespace`
/// for 20 s, with `auth` (a header line).
pub fn creations_per_minute(port: u16, namespace: &str, auth: &str) -> f64 {
    let created = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (created, namespace, auth) =
                (created.clone(), namespace.to_owned(), auth.to_owned());
            std::thread::spawn(move || {
                let mut i = w;
                while started.elapsed() < Duration::from_secs(20) {
                    let path = format!("/api/v1/jobs/{namespace}/job-{}/builds", i % 100);
                    if status(port, "POST", &path, &auth) == 201 {
                        created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    i += 4;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    created.load(std::sync::atomic::Ordering::Relaxed) as f64 * 60.0
        / started.elapsed().as_secs_f64()
}

/// A `serve --local` data directory holding the §9 history: builds 1..=10 of each job,
/// finished, each with a 20-line log.
pub fn seed_history(data: &std::path::Path) {
    let mut store = kubeci_local::store::Store::open(&data.join("kubeci.db")).unwrap();
    let now = 1_790_000_000;
    for i in 0..BUILDS {
        let job = format!("job-{}", i % JOBS);
        let name = &job;
        seed_build(&mut store, &job, now, now + 95, |number| {
            (0..20).map(move |seq| {
                let text = format!("\x1b[32mok\x1b[0m step {seq} of build {number} of {name}");
                (
                    Some((now + 5) * 1_000_000_000 + seq as i64 * 1_000_000),
                    text.into_bytes(),
                )
            })
        });
    }
}

/// Adds to the local engine's `store` the next build of `bench/JOB`: started at `now`,
/// with the log `log` gives for its number (each line's time in nanoseconds and its
/// text), succeeded at `ended`. Its number.
pub fn seed_build<I>(
    store: &mut kubeci_local::store::Store,
    job: &str,
    now: i64,
    ended: i64,
    log: impl FnOnce(u64) -> I,
) -> u64
where
    I: IntoIterator<Item = (Option<i64>, Vec<u8>)>,
{
    let request = kubeci_build::BuildRequest::manual(0);
    let manifest = |_| Ok("{}".to_owned());
    let (number, _) = store
        .allocate(&kubeci_local::store::NewBuild {
            namespace: "bench",
            job,
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
        .set_state("bench", job, number, &running, now)
        .unwrap();
    for (seq, (written_at, text)) in (0..).zip(log(number)) {
        let line = kubeci_local::store::LogLine {
            seq,
            written_at,
            text,
        };
        store.append_log("bench", job, number, &line).unwrap();
    }
    let done = kubeci_engine::BuildState::Succeeded;
    store.set_state("bench", job, number, &done, ended).unwrap();
    number
}

/// The pages and API paths the load drivers measure, for job `i` (its builds are
/// 1..=10): the log's last.
pub fn paths(i: usize) -> [(&'static str, String); 6] {
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

/// How many namespaces the scale runs spread their jobs over.
pub const SCALE_NAMESPACES: usize = 10;

/// Job `job-{i}`'s namespace in the scale runs: `scale-{i % SCALE_NAMESPACES}`.
pub fn scale_namespace(i: usize) -> String {
    format!("scale-{}", i % SCALE_NAMESPACES)
}

/// Job `job-{i}`'s ConfigMap in the scale runs, in [`scale_namespace`]`(i)`.
pub fn scale_configmap(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("job-{i}"), "namespace": scale_namespace(i), "labels": {"ci-job-spec": "true"}},
        "data": {"job.yaml": format!("- job:\n    name: job-{i}\n    git:\n      url: git@github.com:example/repo-{i}.git\n      branch: main\n    run_command: make test\n    timeout: 30m\n")},
    })
}

/// `samples` GETs of `path` from `clients` clients at once: p50, p99, the body's size.
pub fn latency(
    port: u16,
    path: &str,
    samples: usize,
    clients: usize,
) -> (Duration, Duration, usize) {
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || {
                (0..samples / clients)
                    .map(|_| {
                        let sent = Instant::now();
                        let (status, size) = get(port, &path);
                        assert_eq!(status, 200, "GET {path}");
                        (sent.elapsed(), size)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let taken: Vec<(Duration, usize)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let size = taken.last().map_or(0, |t| t.1);
    let mut times: Vec<Duration> = taken.into_iter().map(|t| t.0).collect();
    (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        size,
    )
}
