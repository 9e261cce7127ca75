//! What anyone can make kubeci do through GitHub stays bounded (issue 27): the metrics and
//! the log whatever headers deliveries carry. `serve --local` with a fake GitHub over HTTP.

use crate::common;

use std::time::Duration;

use common::local::Local;
use common::serve::{http, http_with_body, Kubeci};
use kubeci_testkit::FakeGitHub;

const TOKEN: &str = "gh-token-for-bound-tests";
const SECRET: &str = "bound-tests-webhook-secret";

/// `serve --local` answering GitHub's webhooks with `local`'s jobs, calling `github`.
fn serve_with_github(local: &Local, github: &FakeGitHub, extra: &[&str]) -> Kubeci {
    std::fs::write(local.dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(local.dir.path().join("gh-token"), TOKEN).unwrap();
    let secret = local.dir.path().join("secret").display().to_string();
    let token = local.dir.path().join("gh-token").display().to_string();
    let url = github.url();
    let mut flags = vec![
        "--github-webhook-secret-file",
        secret.as_str(),
        "--github-token-file",
        token.as_str(),
        "--github-url",
        url.as_str(),
        "--github-host",
        "github.com",
    ];
    flags.extend_from_slice(extra);
    local.serve(&flags, &[])
}

fn wait(what: &str, check: impl FnMut() -> bool) {
    common::git::wait_for(Duration::from_secs(30), what, check);
}

/// 300 unsigned deliveries, each with its own 4,000-character `X-GitHub-Event` and
/// `X-GitHub-Delivery`: the delivery counter keeps one series for them all (`other`),
/// and each log line stays short. Before, each delivery added a series holding its header
/// to `/metrics`, and its two headers whole to the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_delivery_headers_leave_the_metrics_and_the_log_bounded() {
    let (local, _repo) = Local::new();
    let github = FakeGitHub::start(TOKEN, "kubeci-bot").await;
    let kubeci = serve_with_github(&local, &github, &["--github-resync", "0s"]);
    let deliveries = 300;
    for i in 0..deliveries {
        let event = format!("{}{i:04}", "e".repeat(3_996));
        let id = format!("{}{i:04}", "d".repeat(3_996));
        let headers = [
            ("X-GitHub-Event", event.as_str()),
            ("X-GitHub-Delivery", &id),
        ];
        let (status, _) = http_with_body(&kubeci, "POST", "/hooks/github", &headers, b"{}");
        assert_eq!(status, 401);
    }
    let body = b"{\"zen\": \"Keep it logically awesome.\"}";
    let signature = kubeci_github::signature::sign(SECRET.as_bytes(), body);
    let headers = [
        ("X-GitHub-Event", "ping"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let (status, answer) = http_with_body(&kubeci, "POST", "/hooks/github", &headers, body);
    assert_eq!(status, 200, "{answer}");

    let (status, metrics) = http(&kubeci, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kubeci_webhook_deliveries_total{"))
        .collect();
    assert_eq!(series.len(), 2, "{series:?}");
    assert!(
        series.contains(&"kubeci_webhook_deliveries_total{event=\"other\",status=\"401\"} 300"),
        "{series:?}"
    );
    assert!(
        series.contains(&"kubeci_webhook_deliveries_total{event=\"ping\",status=\"200\"} 1"),
        "{series:?}"
    );
    assert!(
        metrics.len() < 64 << 10,
        "/metrics is {} bytes",
        metrics.len()
    );

    let logged = || {
        kubeci
            .log()
            .lines()
            .filter(|l| l.contains("GitHub delivery"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    wait("every delivery to be logged", || {
        logged().len() == deliveries + 1
    });
    let lines = logged();
    let longest = lines.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 400, "a line of {longest} bytes: {}", lines[0]);
    assert!(
        lines.iter().any(|l| l.contains("GitHub delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 (ping): 200")),
        "{lines:?}"
    );
}
