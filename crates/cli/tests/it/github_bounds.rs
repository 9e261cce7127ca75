//! What anyone can make kubeci do through GitHub stays bounded (issue 27): the metrics and
//! the log whatever headers deliveries carry (finding 3), and the calls to GitHub an
//! outsider's pull request or a resync makes (finding 5). `serve --local` with a fake
//! GitHub over HTTP.

use crate::common;

use std::time::Duration;

use std::path::Path;

use common::local::{configmap, Local};
use common::serve::{http, http_with_body, Kubeci};
use kubeci_testkit::FakeGitHub;
use serde_json::Value;

const TOKEN: &str = "gh-token-for-bound-tests";
const SECRET: &str = "bound-tests-webhook-secret";
const REPO: &str = "Codertocat/Hello-World";
const HELLO_WORLD: &str = "https://github.com/Codertocat/Hello-World.git";

/// A job building `REPO`'s pull requests, by authors only `admin` trusts.
fn pull_request_job(local: &Local) {
    local.write(
        "hello.yaml",
        &configmap(
            "hello",
            Path::new(HELLO_WORLD),
            "true",
            "        ghprb:\n          enabled: true\n          admin_users: [admin]\n",
        ),
    );
}

/// GitHub's `pull_request` payload (`action` on pull request `number` by `author`).
fn pr_payload(action: &str, number: u64, author: &str) -> Value {
    let fixture =
        common::repo_root().join("tests/fixtures/github-webhooks/pull_request.opened.json");
    let mut payload: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    payload["action"] = action.into();
    payload["number"] = number.into();
    let pr = &mut payload["pull_request"];
    pr["number"] = number.into();
    pr["user"]["login"] = author.into();
    pr["head"]["sha"] = format!("{number:040x}").into();
    payload
}

fn signed(kubeci: &Kubeci, event: &str, id: &str, payload: &Value) -> (u16, String) {
    let body = serde_json::to_vec(payload).unwrap();
    let signature = kubeci_github::signature::sign(SECRET.as_bytes(), &body);
    let headers = [
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", id),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    http_with_body(kubeci, "POST", "/hooks/github", &headers, &body)
}

/// GitHub calls so far whose path is `path`, or ends with `suffix`.
fn calls(github: &FakeGitHub, matches: impl Fn(&str) -> bool) -> usize {
    github
        .requests()
        .iter()
        .filter(|(method, path)| method == "GET" && matches(path))
        .count()
}

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
    // Each header is cut at 64 characters; the rest is the answer and the request's
    // fields (its id, method, path and route): about 430 bytes, against 8 KB uncut.
    assert!(longest < 512, "a line of {longest} bytes: {}", lines[0]);
    assert!(
        lines.iter().any(
            |l| l.starts_with("kubeci: GitHub delivery answered status=200 ")
                && l.ends_with(" delivery=72d3162e-cc78-11e3-81ab-4c9367dc0958 event=ping")
        ),
        "{lines:?}"
    );
}

/// An outsider opens a pull request that already has 1,000 comments, then reopens it five
/// times: kubeci asks for approval once, and reads at most three pages of comments in
/// all (it looks at the first ones, where its request is, and remembers it asked). Before,
/// each of the six deliveries read all eleven pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsiders_pull_request_with_many_comments_costs_a_bounded_number_of_reads() {
    let (local, _repo) = Local::new();
    pull_request_job(&local);
    let github = FakeGitHub::start(TOKEN, "kubeci-bot").await;
    let kubeci = serve_with_github(&local, &github, &["--github-resync", "0s"]);
    let opened = pr_payload("opened", 7, "stranger");
    github.set_pull_request(REPO, opened["pull_request"].clone());
    for i in 0..1_000 {
        github.add_comment(REPO, 7, "someone", &format!("comment {i}"));
    }
    let (status, answer) = signed(&kubeci, "pull_request", "open-7", &opened);
    assert_eq!(status, 200, "{answer}");
    for reopen in 0..5 {
        let (status, answer) = signed(
            &kubeci,
            "pull_request",
            &format!("reopen-7-{reopen}"),
            &pr_payload("reopened", 7, "stranger"),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let comments = "/repos/Codertocat/Hello-World/issues/7/comments";
    let reads = calls(&github, |path| path == comments);
    assert!(reads <= 3, "{reads} pages of comments read");
    let asked: Vec<_> = github
        .comments(REPO, 7)
        .into_iter()
        .filter(|(author, _)| author == "kubeci-bot")
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
}

/// A resync over a repository with 250 open pull requests looks at the newest 100 (one
/// page of the list, one look at each head's statuses) and says so in the log. Before, it
/// read all three pages and every head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_over_many_open_pull_requests_makes_a_bounded_number_of_calls() {
    let (local, _repo) = Local::new();
    pull_request_job(&local);
    let github = FakeGitHub::start(TOKEN, "kubeci-bot").await;
    for number in 1..=250 {
        github.set_pull_request(
            REPO,
            pr_payload("opened", number, "stranger")["pull_request"].clone(),
        );
    }
    let kubeci = serve_with_github(&local, &github, &["--github-resync", "1h"]);
    wait("the resync to say what it left", || {
        kubeci.log().contains(
            "the resync looked at the newest open pull requests of a repository; older ones are resynced by their next event repo=Codertocat/Hello-World looked_at=100",
        )
    });
    let lists = calls(&github, |path| {
        path == "/repos/Codertocat/Hello-World/pulls"
    });
    let heads = calls(&github, |path| path.ends_with("/statuses"));
    assert_eq!((lists, heads), (1, 100));
    let newest = format!(
        "/repos/Codertocat/Hello-World/commits/{:040x}/statuses",
        250
    );
    assert_eq!(calls(&github, |path| path == newest), 1, "newest first");
}
