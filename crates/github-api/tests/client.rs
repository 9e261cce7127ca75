//! The GitHub client against the fake GitHub over HTTP: every call kubeci makes, paging,
//! the membership cache, and rate limits and errors read as GitHub writes them.

use std::time::Duration;

use kubeci_github_api::client::Status;
use kubeci_github_api::{GitHubClient, GitHubError};
use kubeci_testkit::FakeGitHub;
use serde_json::json;

const TOKEN: &str = "token-for-the-client-tests";

fn pr(number: u64, author: &str) -> serde_json::Value {
    json!({
        "number": number, "title": format!("change {number}"), "body": null, "draft": false,
        "user": {"login": author}, "labels": [{"name": "bug"}],
        "head": {"ref": "topic", "sha": format!("{number:040x}")},
        "base": {"ref": "main", "sha": "0".repeat(40)},
        "html_url": format!("https://github.com/o/r/pull/{number}"),
    })
}

#[tokio::test]
async fn every_call_kubeci_makes() {
    let github = FakeGitHub::start(TOKEN, "kubeci-bot").await;
    let client = GitHubClient::new(&github.url(), Some(TOKEN.into())).unwrap();
    for n in 1..=150 {
        github.set_pull_request("o/r", pr(n, "dev"));
    }
    let one = client.pull_request("o/r", 7).await.unwrap();
    assert_eq!(
        (one.number, one.author.as_str(), one.labels.clone()),
        (7, "dev", vec!["bug".to_owned()])
    );
    assert_eq!(one.head_sha, format!("{:040x}", 7));
    let (open, more) = client.open_pull_requests("O/R", 500).await.unwrap();
    assert_eq!((open.len(), more), (150, false), "both pages, any case");
    assert_eq!(open[0].number, 150, "newest first");
    let (open, more) = client.open_pull_requests("o/r", 120).await.unwrap();
    assert_eq!(
        (open.len(), more),
        (120, true),
        "at most as many as asked for"
    );

    github.add_member("acme", "dev");
    assert!(client.is_member("acme", "dev").await.unwrap());
    assert!(!client.is_member("acme", "stranger").await.unwrap());
    let asked = github.requests().len();
    assert!(client.is_member("ACME", "Dev").await.unwrap());
    assert_eq!(github.requests().len(), asked, "answered from the cache");

    let status = Status {
        state: "pending",
        context: "kubeci/demo",
        description: &"x".repeat(300),
        target_url: "https://ci.example.com/jobs/ns/demo/builds/1",
    };
    client.post_status("o/r", "abc123", &status).await.unwrap();
    let posted = github.statuses();
    assert_eq!(posted[0].description.len(), 140, "GitHub's limit");
    assert_eq!(
        client
            .statuses("o/r", "abc123")
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.context, s.state))
            .collect::<Vec<_>>(),
        [("kubeci/demo".to_owned(), "pending".to_owned())]
    );

    client.comment("o/r", 7, "hello").await.unwrap();
    assert_eq!(client.comments("o/r", 7, 1).await.unwrap(), ["hello"]);
    client.add_label("o/r", 7, "ok-to-test").await.unwrap();
    assert!(client
        .pull_request("o/r", 7)
        .await
        .unwrap()
        .labels
        .contains(&"ok-to-test".to_owned()));
    assert!(client.stats().calls > 5);
}

#[tokio::test]
async fn rate_limits_and_errors_say_whether_and_when_to_retry() {
    let github = FakeGitHub::start(TOKEN, "kubeci-bot").await;
    let client = GitHubClient::new(&github.url(), Some(TOKEN.into())).unwrap();
    github.set_pull_request("o/r", pr(1, "dev"));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (now + 120).to_string();
    github.fail_next(
        1,
        403,
        &[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &reset),
        ],
    );
    let error = client.pull_request("o/r", 1).await.unwrap_err();
    assert!(matches!(error, GitHubError::RateLimited { .. }), "{error}");
    assert!(error.is_retryable());
    let wait = error.retry_after().unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
        "{wait:?}"
    );

    github.fail_next(1, 429, &[("Retry-After", "7")]);
    let error = client.pull_request("o/r", 1).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    github.fail_next(1, 502, &[]);
    let error = client.pull_request("o/r", 1).await.unwrap_err();
    assert!(error.is_retryable(), "a 5xx is worth retrying: {error}");

    let stranger = GitHubClient::new(&github.url(), Some("a wrong token".into())).unwrap();
    let error = stranger.pull_request("o/r", 1).await.unwrap_err();
    assert!(
        matches!(error, GitHubError::Refused { status: 401, .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("Bad credentials"), "{error}");

    let missing = client.pull_request("o/r", 99).await.unwrap_err();
    assert!(matches!(missing, GitHubError::Refused { status: 404, .. }));

    let nowhere = GitHubClient::new("http://127.0.0.1:9", None).unwrap();
    let error = nowhere.pull_request("o/r", 1).await.unwrap_err();
    assert!(
        matches!(error, GitHubError::Unreachable { .. }) && error.is_retryable(),
        "{error}"
    );
    assert!(GitHubClient::new("not a url", None).is_err());
}
