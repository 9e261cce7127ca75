//! Reports to GitHub as an App, at scale (issue 19): 1,000 pull requests of one repository
//! delivered by webhook to the real `kubeci serve --kubernetes` on the fake API server,
//! whose simulated kubelet runs every build for `REPORT_RUN_SECONDS`, so they run together
//! and finish at about the same time. kubeci reports each build as a check run to the
//! fake GitHub, which verifies every JWT and hands out installation tokens. Recorded: the
//! GitHub calls per build (the delivery's own look at its pull request; the check run's
//! creation and updates), installation tokens made, and how long after the builds
//! finished every check run was completed. Checked: one check run per head, each
//! completed with success.
//!
//! Run: `cargo bench -p kubeci --bench github_reports`
//! (`REPORT_BUILDS`, `REPORT_RUN_SECONDS` change the load).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeci_testkit::{Options, PodBehaviour};
use serde_json::{json, Value};

#[path = "support.rs"]
mod support;

const SECRET: &str = "report-bench-webhook-secret";
const REPO: &str = "Codertocat/Hello-World";
const APP_ID: u64 = 9_001;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/github-webhooks/pull_request.opened.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Pull request `number`'s `opened` delivery: by a trusted author, head `number` in hex.
fn delivery(fixture: &Value, number: u64) -> Vec<u8> {
    let mut payload = fixture.clone();
    payload["number"] = number.into();
    let pr = &mut payload["pull_request"];
    pr["number"] = number.into();
    pr["head"]["sha"] = format!("{number:040x}").into();
    pr["head"]["ref"] = format!("change-{number}").into();
    serde_json::to_vec(&payload).unwrap()
}

/// GitHub calls by kind, from the fake's request log.
fn calls_by_kind(requests: &[(String, String)]) -> BTreeMap<&'static str, usize> {
    let mut calls = BTreeMap::new();
    for (method, path) in requests {
        let kind = match (method.as_str(), path.as_str()) {
            (_, p) if p.ends_with("/installation") => "installation look-ups",
            (_, p) if p.ends_with("/access_tokens") => "installation tokens",
            ("POST", p) if p.ends_with("/check-runs") => "check runs created",
            ("PATCH", _) => "check runs updated",
            ("GET", p) if p.contains("/check-runs") => "check runs looked for",
            ("GET", p) if p.contains("/pulls/") => "pull requests read (deliveries)",
            _ => "other",
        };
        *calls.entry(kind).or_default() += 1;
    }
    calls
}

// Long on purpose: a load driver read top to bottom (start, load, measure, print), each step
// using what the one before set up; helpers would hide the order the figures depend on.
fn main() {
    let builds = setting("REPORT_BUILDS", 1_000) as u64;
    let run_for = Duration::from_secs(setting("REPORT_RUN_SECONDS", 30) as u64);
    let (runtime, server) = support::fake_api_server_as(Options {
        history: 200_000,
        ..Options::default()
    });
    server.set_pod_behaviour(move |_| PodBehaviour::Succeed {
        logs: (1..=20).map(|n| format!("step {n} of 20")).collect(),
        duration: run_for,
    });
    let _guard = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    let public_key = kubeci_testkit::github::make_app_key(&key);
    let github = runtime.block_on(kubeci_testkit::FakeGitHub::start_app(
        APP_ID,
        public_key,
        "kubeci-bot",
    ));
    github.install("Codertocat", 1);
    let fixture = fixture();
    let bodies: Vec<Vec<u8>> = (1..=builds).map(|n| delivery(&fixture, n)).collect();
    for body in &bodies {
        let payload: Value = serde_json::from_slice(body).unwrap();
        github.set_pull_request(REPO, payload["pull_request"].clone());
    }
    let job = "- job:\n    name: hello\n    git:\n      url: git@github.com:Codertocat/Hello-World.git\n    run_command: make test\n    ghprb:\n      enabled: true\n      whitelisted_users: [Codertocat]\n";
    server
        .preload(vec![json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hello", "namespace": "reports", "labels": {"ci-job-spec": "true"}},
            "data": {"job.yaml": job},
        })])
        .unwrap();
    let url = github.url();
    let key = key.display().to_string();
    let (kubeci, _) = support::start(
        &server,
        &[("secret", SECRET)],
        &[
            "--github-webhook-secret-file",
            "{dir}/secret",
            "--github-app-id",
            &APP_ID.to_string(),
            "--github-app-key-file",
            &key,
            "--github-url",
            &url,
            "--github-host",
            "github.com",
            "--github-resync",
            "0s",
        ],
    );
    let port = kubeci.port;

    // The deliveries, from 8 clients.
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let delivered_at = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (bodies, next) = (bodies.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return };
                let signature = kubeci_github::signature::sign(SECRET.as_bytes(), body);
                let status =
                    support::deliver_pull_request(port, &format!("r-{i}"), &signature, body);
                assert_eq!(status, 200, "delivery {i}");
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let delivered_in = delivered_at.elapsed();

    // Until every check run is completed.
    let completed = || {
        github
            .check_runs()
            .iter()
            .filter(|run| run.status == "completed")
            .count() as u64
    };
    let mut first_completed = None;
    while completed() < builds {
        if first_completed.is_none() && completed() > 0 {
            first_completed = Some(Instant::now());
        }
        assert!(
            delivered_at.elapsed() < run_for + Duration::from_secs(600),
            "only {} of {builds} check runs completed",
            completed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_completed_at = Instant::now();
    let first_completed = first_completed.unwrap_or(all_completed_at);
    let all_completed_after = all_completed_at - first_completed;
    // The last build ends `run_for` after its delivery, at the latest.
    let last_build_ended = delivered_at + delivered_in + run_for;
    let lag = all_completed_at.saturating_duration_since(last_build_ended);

    let runs = github.check_runs();
    let mut per_head: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &runs {
        *per_head.entry(run.head_sha.as_str()).or_default() += 1;
    }
    let doubled = per_head.values().filter(|n| **n != 1).count();
    let failed = runs
        .iter()
        .filter(|run| run.conclusion.as_deref() != Some("success"))
        .count();
    let calls = calls_by_kind(&github.requests());
    let report_calls: usize = calls
        .iter()
        .filter(|(kind, _)| kind.starts_with("check runs"))
        .map(|(_, n)| n)
        .sum();
    let all_calls: usize = calls.values().sum();

    println!("github_reports: {builds} pull request builds of one repository, each running {}s, reported as check runs by a GitHub App", run_for.as_secs());
    println!("deliveries: {builds} in {delivered_in:.2?}");
    println!(
        "check runs completed over {all_completed_after:.2?} (the builds end over the {delivered_in:.2?} their deliveries took); the last {lag:.2?} after the last build's end"
    );
    for (kind, n) in &calls {
        println!("  {kind:<34} {n:>6}");
    }
    println!(
        "GitHub calls per build: {:.2} to report it (check runs), {:.2} in all (with its delivery's look at the pull request, installations and tokens)",
        report_calls as f64 / builds as f64,
        all_calls as f64 / builds as f64
    );
    println!("invariants: {} check runs for {builds} heads, {doubled} heads without exactly one, {failed} not completed with success", runs.len());
    assert_eq!(runs.len() as u64, builds);
    assert_eq!(doubled, 0);
    assert_eq!(failed, 0);
    assert!(github.refused_jwts().is_empty());
    drop(kubeci);
}
