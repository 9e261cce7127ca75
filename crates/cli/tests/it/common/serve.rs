//! `kubeci serve --kubernetes`, the real binary, against the fake API server: start it,
//! talk to its API, and receive its build notifications.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubeci_testkit::FakeApiServer;
use serde_json::Value;

pub const TOKEN: &str = "a-test-token-of-some-length";

pub struct Kubeci {
    /// `None` for a [`Kubeci::probe`].
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Kubeci {
    /// A handle on a kubeci started elsewhere, to send requests from another thread.
    pub fn probe(port: u16) -> Kubeci {
        Kubeci {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A handle on a kubeci started by the test itself; its stderr is `dir/stderr`.
    pub fn adopt(child: Child, port: u16, dir: tempfile::TempDir) -> Kubeci {
        Kubeci {
            child: Some(child),
            port,
            dir,
        }
    }

    /// Kills the process at once (SIGKILL): no cleanup of any kind.
    pub fn kill(self) {
        drop(self);
    }

    /// Sends SIGTERM (as Kubernetes stops a pod) and waits up to `limit` for the process to
    /// exit; its exit status, `None` if it is still running.
    pub fn terminate(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The process id, for one started by the test.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Kubeci {
    /// SIGKILL: no cleanup of any kind.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `kubeci serve --kubernetes` against `server` (pending deadline 2 s, leader
/// Lease of 2 s) and waits for /readyz.
pub fn serve(server: &FakeApiServer) -> Kubeci {
    serve_with(server, &[])
}

pub fn serve_with(server: &FakeApiServer, extra: &[&str]) -> Kubeci {
    let kubeci = spawn(server, extra);
    super::git::wait_for(Duration::from_secs(30), "kubeci to be ready", || {
        http(&kubeci, "GET", "/readyz", &[]).0 == 200
    });
    kubeci
}

/// Starts it without waiting. Every Namespace of `server` is enabled for builds first, as
/// the administrator of an install enables its teams' (unless the test chose a
/// `--tenancy`).
pub fn spawn(server: &FakeApiServer, extra: &[&str]) -> Kubeci {
    if !extra.contains(&"--tenancy") {
        enable_builds(server);
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    spawn_in(dir, &kubeconfig, extra)
}

/// Labels every Namespace of `server` `kubeci.io/builds=enabled`, allowing the
/// ServiceAccount and the Secrets the seed job names where the test did not say which.
pub fn enable_builds(server: &FakeApiServer) {
    let mut store = server.store();
    for namespace in store.current(0, None) {
        let mut object = (*namespace).clone();
        let metadata = &mut object["metadata"];
        metadata["labels"]["kubeci.io/builds"] = "enabled".into();
        for (key, allowed) in [
            ("kubeci.io/service-accounts", "gus-test-jenkins"),
            ("kubeci.io/secrets", "github-key,aws-key"),
        ] {
            if metadata["annotations"][key].is_null() {
                metadata["annotations"][key] = allowed.into();
            }
        }
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        store.update(0, "", &name, object, false).unwrap();
    }
}

pub fn spawn_in(dir: tempfile::TempDir, kubeconfig: &std::path::Path, extra: &[&str]) -> Kubeci {
    spawn_with_env(dir, kubeconfig, extra, &[])
}

/// Starts it with these environment variables too.
pub fn spawn_with_env(
    dir: tempfile::TempDir,
    kubeconfig: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Kubeci {
    spawn_on(super::free_port(), dir, kubeconfig, extra, env)
}

/// Starts it listening on 127.0.0.1:`port`.
pub fn spawn_on(
    port: u16,
    dir: tempfile::TempDir,
    kubeconfig: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Kubeci {
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args([
            "serve",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token-file",
            token.to_str().unwrap(),
            "--pending-deadline",
            "2s",
        ])
        // A short leader Lease, unless the test chose one.
        .args(
            (!extra.contains(&"--lease-duration"))
                .then_some(["--lease-duration", "2s"])
                .into_iter()
                .flatten(),
        )
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Kubeci {
        child: Some(child),
        port,
        dir,
    }
}

/// One HTTP/1.1 request; (status, body). Status 0: no answer.
pub fn http(kubeci: &Kubeci, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    http_with_body(kubeci, method, path, headers, b"")
}

/// One HTTP/1.1 request with a body; (status, body). Status 0: no answer.
pub fn http_with_body(
    kubeci: &Kubeci,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", kubeci.port)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    // A refused request may be answered before the whole body is sent.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub const AUTHORIZED: (&str, &str) = ("Authorization", "Bearer a-test-token-of-some-length");

/// Sends `GET path` and reads the answer's head only: the stream to read the body from as
/// it comes (a followed log), and the head.
pub fn open_get(kubeci: &Kubeci, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", kubeci.port)).unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

/// POSTs a build request; (status, body as JSON).
pub fn trigger(kubeci: &Kubeci, job: &str, key: Option<&str>) -> (u16, Value) {
    trigger_in(kubeci, "default", job, key)
}

/// POSTs a build request for a job of `namespace`.
pub fn trigger_in(kubeci: &Kubeci, namespace: &str, job: &str, key: Option<&str>) -> (u16, Value) {
    let mut headers = vec![AUTHORIZED];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    let (status, body) = http(
        kubeci,
        "POST",
        &format!("/api/v1/jobs/{namespace}/{job}/builds"),
        &headers,
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub fn json(kubeci: &Kubeci, path: &str) -> Value {
    let (status, body) = http(kubeci, "GET", path, &[]);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

pub fn job_names(kubeci: &Kubeci) -> Vec<String> {
    json(kubeci, "/api/v1/jobs")["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str().map(str::to_owned))
        .collect()
}

pub fn builds(kubeci: &Kubeci, job: &str) -> Vec<Value> {
    builds_in(kubeci, "default", job)
}

pub fn builds_in(kubeci: &Kubeci, namespace: &str, job: &str) -> Vec<Value> {
    json(kubeci, &format!("/api/v1/jobs/{namespace}/{job}/builds"))["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The state of build `number` of `job`, as the API shows it.
pub fn state(kubeci: &Kubeci, job: &str, number: u64) -> String {
    state_in(kubeci, "default", job, number)
}

pub fn state_in(kubeci: &Kubeci, namespace: &str, job: &str, number: u64) -> String {
    builds_in(kubeci, namespace, job)
        .iter()
        .find(|b| b["number"] == number)
        .and_then(|b| b["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Polls `check` for up to 30 s.
pub fn wait(what: &str, check: impl FnMut() -> bool) {
    super::git::wait_for(Duration::from_secs(30), what, check);
}

/// The body of a chunked HTTP/1.1 answer.
pub fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

/// Checks that `stamped` (a log read with `?timestamps=true`) is `plain` (the same log
/// read without) with each line begun by when it was written, in order.
pub fn assert_timestamped(stamped: &str, plain: &str) {
    let mut times = Vec::new();
    let texts: Vec<&str> = stamped
        .lines()
        .map(|line| {
            let (at, text) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("a line without a time: {line:?} in {stamped}"));
            let at: jiff::Timestamp = at
                .parse()
                .unwrap_or_else(|e| panic!("{at:?} is not a time ({e}) in {stamped}"));
            times.push(at);
            text
        })
        .collect();
    assert_eq!(texts, plain.lines().collect::<Vec<_>>(), "{stamped}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in order: {stamped}"
    );
    // Real times, of now (a log API may round them to the second).
    let now = jiff::Timestamp::now();
    assert!(
        times
            .iter()
            .all(|t| t.duration_until(now).as_secs().abs() < 3600),
        "written within the hour: {stamped}"
    );
}

/// The seed's ConfigMap, as a JSON object.
pub fn seed() -> Value {
    let text = std::fs::read_to_string(
        super::repo_root().join("examples/seed/start-helm-test.configmap.yaml"),
    )
    .unwrap();
    let documents = kubeci_spec::yaml::parse_stream(
        &text,
        &kubeci_spec::yaml::PosMap::Identity,
        Default::default(),
    )
    .unwrap();
    documents.into_iter().flatten().next().unwrap().to_json()
}

/// A job ConfigMap in `default` declaring `job_yaml`.
pub fn configmap(name: &str, job_yaml: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {"ci-job-spec": "true"}},
        "data": {"job.yaml": job_yaml},
    })
}

/// A minimal valid job.
pub fn job_yaml(name: &str, extra: &str) -> String {
    format!("- job:\n    name: {name}\n    git:\n      url: https://github.com/example/{name}.git\n    run_command: make test\n    timeout: 10m\n{extra}")
}

/// An HTTP endpoint receiving kubeci's build notifications (`--notify-url`).
pub struct Receiver {
    pub url: String,
    /// Accepted deliveries: (job, build, state), once per idempotency key, as a receiver
    /// that honours it keeps them.
    accepted: Arc<Mutex<Vec<(String, u64, String)>>>,
    /// Every idempotency key accepted, with how often it came.
    keys: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Deliveries refused (answered 503).
    refused: Arc<Mutex<Vec<(String, u64, String)>>>,
    /// While true, every delivery is refused with 503.
    refusing: Arc<Mutex<bool>>,
}

impl Receiver {
    /// Starts it on the current Tokio runtime.
    pub async fn start() -> Receiver {
        let accepted: Arc<Mutex<Vec<(String, u64, String)>>> = Arc::default();
        let keys: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let refused: Arc<Mutex<Vec<(String, u64, String)>>> = Arc::default();
        let refusing = Arc::new(Mutex::new(false));
        let (a, k, r, f) = (
            accepted.clone(),
            keys.clone(),
            refused.clone(),
            refusing.clone(),
        );
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (a, k, r, f) = (a.clone(), k.clone(), r.clone(), f.clone());
                async move {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let entry = (
                        v["job"].as_str().unwrap_or("").to_owned(),
                        v["build"].as_u64().unwrap_or(0),
                        v["state"].as_str().unwrap_or("").to_owned(),
                    );
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    if *f.lock().unwrap() {
                        r.lock().unwrap().push(entry);
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    assert_eq!(
                        key,
                        v["id"].as_str().unwrap_or(""),
                        "the header is the body's id"
                    );
                    let mut keys = k.lock().unwrap();
                    let seen = keys.entry(key).or_insert(0);
                    *seen += 1;
                    if *seen == 1 {
                        a.lock().unwrap().push(entry);
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            accepted,
            keys,
            refused,
            refusing,
        }
    }

    /// How many times any report was delivered more than once (kubeci stopped between
    /// delivering and recording it).
    pub fn repeats(&self) -> usize {
        self.keys.lock().unwrap().values().map(|n| n - 1).sum()
    }

    pub fn refuse(&self, refuse: bool) {
        *self.refusing.lock().unwrap() = refuse;
    }

    /// How often each (build, state) of `job` was accepted.
    pub fn accepted(&self, job: &str) -> BTreeMap<(u64, String), usize> {
        let mut counts = BTreeMap::new();
        for (j, build, state) in self.accepted.lock().unwrap().iter() {
            if j == job {
                *counts.entry((*build, state.clone())).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The final states accepted for build `number` of `job`.
    pub fn finals(&self, job: &str, number: u64) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, b, s)| j == job && *b == number && s != "pending")
            .map(|(_, _, s)| s.clone())
            .collect()
    }

    pub fn refused_count(&self, job: &str, number: u64) -> usize {
        self.refused
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, b, _)| j == job && *b == number)
            .count()
    }
}
