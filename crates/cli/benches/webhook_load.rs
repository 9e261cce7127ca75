//! Load driver for `POST /hooks/github` (docs/design.md §8): signed 28 KB `pull_request`
//! deliveries per second, and the time from a delivery's receipt to the build's Job create
//! reaching the API server. The real `kubeci` binary against the fake API server (one
//! Tokio thread in this process, its simulation off), 1,000 job ConfigMaps declared, one
//! of them building the payloads' repository.
//!
//! A delivery that would build first asks GitHub (a fake on loopback, knowing the pull
//! requests) for its pull request's current head, as kubeci does since issue 17.
//!
//! Run: `cargo bench -p kubeci --bench webhook_load`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeci_testkit::{FakeApiServer, Options};
use serde_json::{json, Value};

const JOBS: usize = 1_000;
const SECRET: &str = "bench-webhook-secret";
const CLIENTS: usize = 8;

fn configmap(i: usize) -> Value {
    let job = if i == 0 {
        "- job:\n    name: hello\n    git:\n      url: git@github.com:Codertocat/Hello-World.git\n    run_command: make test\n    ghprb:\n      enabled: true\n      whitelisted_users: [Codertocat]\n".to_owned()
    } else {
        format!("- job:\n    name: job-{i}\n    git:\n      url: git@github.com:org/repo-{i}.git\n    run_command: make test\n    ghprb:\n      enabled: true\n")
    };
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("job-{i}"), "namespace": "bench", "labels": {"ci-job-spec": "true"}},
        "data": {"job.yaml": job},
    })
}

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/github-webhooks/pull_request.opened.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const GITHUB_TOKEN: &str = "bench-github-token";

/// The payload's pull request, and the new heads of step 3, as GitHub shows them: a
/// delivery that would build asks GitHub for its pull request's current head first.
fn github(payload: &Value) -> kubeci_testkit::github::FakeGitHub {
    let github = tokio::runtime::Handle::current().block_on(
        kubeci_testkit::github::FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot"),
    );
    let repo = payload["repository"]["full_name"].as_str().unwrap();
    github.set_pull_request(repo, payload["pull_request"].clone());
    for i in 0..200u64 {
        github.set_pull_request(repo, new_head(payload, i)["pull_request"].clone());
    }
    github
}

/// The delivery of step 3's `i`th new head.
fn new_head(payload: &Value, i: u64) -> Value {
    let mut delivery = payload.clone();
    delivery["pull_request"]["head"]["sha"] = format!("{:040x}", i + 1).into();
    delivery["pull_request"]["number"] = (1000 + i).into();
    delivery
}

fn start(server: &FakeApiServer, github: &kubeci_testkit::github::FakeGitHub) -> (Kubeci, u16) {
    let kubeci = support::start_for_github(server, SECRET, &github.url(), GITHUB_TOKEN);
    let port = kubeci.port;
    (kubeci, port)
}

/// Deliveries per second from `CLIENTS` threads sending `body` for `seconds`.
fn throughput(port: u16, body: Vec<u8>, seconds: u64) -> (f64, usize) {
    let signature = kubeci_github::signature::sign(SECRET.as_bytes(), &body);
    let (body, signature) = (Arc::new(body), Arc::new(signature));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (body, signature, done, failed) = (
                body.clone(),
                signature.clone(),
                done.clone(),
                failed.clone(),
            );
            std::thread::spawn(move || {
                while started.elapsed() < Duration::from_secs(seconds) {
                    if deliver_pull_request(port, "bench", &signature, &body) == 200 {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    (
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

#[path = "support.rs"]
mod support;

use support::{deliver_pull_request, percentile, Kubeci};

fn main() {
    let (runtime, server) = support::fake_api_server(Options {
        ..Options::default()
    });
    let _guard = runtime.enter();
    server.preload((0..JOBS).map(configmap).collect()).unwrap();
    let payload = fixture();
    let github = github(&payload);
    let (_kubeci, port) = start(&server, &github);
    let size = serde_json::to_vec_pretty(&payload).unwrap().len();

    // 1. Deliveries for a repository no job builds: verify, read, match, answer.
    let mut unwatched = payload.clone();
    unwatched["repository"]["full_name"] = "elsewhere/unwatched".into();
    for key in ["clone_url", "ssh_url", "html_url"] {
        unwatched["repository"][key] = "https://github.com/elsewhere/unwatched".into();
    }
    let (unwatched_rate, unwatched_failed) =
        throughput(port, serde_json::to_vec_pretty(&unwatched).unwrap(), 10);

    // 2. Redeliveries of a built head: as 1, plus the job's ledger read at the API server.
    let built = serde_json::to_vec_pretty(&payload).unwrap();
    let signature = kubeci_github::signature::sign(SECRET.as_bytes(), &built);
    assert_eq!(deliver_pull_request(port, "bench", &signature, &built), 200);
    let (redelivered_rate, redelivered_failed) = throughput(port, built, 10);

    // 3. Receipt → Job create at the API server, for deliveries of new heads.
    let mut latencies = Vec::new();
    for i in 0..200u64 {
        let delivery = new_head(&payload, i);
        let body = serde_json::to_vec_pretty(&delivery).unwrap();
        let signature = kubeci_github::signature::sign(SECRET.as_bytes(), &body);
        let sent = Instant::now();
        assert_eq!(deliver_pull_request(port, "bench", &signature, &body), 200);
        let create = server
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.verb == "create" && r.resource == "jobs" && r.received >= sent)
            .expect("the delivery's Job create");
        latencies.push(create.received - sent);
    }

    println!("payload: {size} bytes, signed; {JOBS} jobs declared; {CLIENTS} clients, a new connection per delivery");
    println!("deliveries for an unwatched repository: {unwatched_rate:.0}/s ({unwatched_failed} not 200)");
    println!("redeliveries of a built head (ledger read): {redelivered_rate:.0}/s ({redelivered_failed} not 200)");
    println!(
        "receipt → Job create at the API server: p50 {:?}, p99 {:?} (200 new heads, one at a time)",
        percentile(&mut latencies, 0.5),
        percentile(&mut latencies, 0.99)
    );
}
