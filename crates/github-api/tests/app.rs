//! The client as a GitHub App against the fake GitHub over HTTP, which verifies every JWT
//! with the App's public key (signature, issuer, times) and hands out installation tokens
//! that expire: installations found once per repository or organisation, one token per
//! installation reused, renewed when refused or in its last minutes, rate limits per
//! installation, and a clear error where the App is not installed; check runs, asked for by
//! name.

use std::sync::Arc;
use std::time::Duration;

use kubeci_github_api::app::{App, AppKey};
use kubeci_github_api::client::Status;
use kubeci_github_api::{GitHubClient, GitHubError};
use kubeci_testkit::github::make_app_key;
use kubeci_testkit::FakeGitHub;
use serde_json::json;

const APP_ID: u64 = 4242;

fn pr(number: u64) -> serde_json::Value {
    json!({
        "number": number, "title": "change", "body": null, "draft": false,
        "user": {"login": "dev"}, "labels": [],
        "head": {"ref": "topic", "sha": format!("{number:040x}")},
        "base": {"ref": "main", "sha": "0".repeat(40)},
        "html_url": format!("https://github.com/o/r/pull/{number}"),
    })
}

struct World {
    github: FakeGitHub,
    client: Arc<GitHubClient>,
    _dir: tempfile::TempDir,
}

/// The fake GitHub as App `APP_ID` sees it, installed on `o` (11) and `acme` (12), and a
/// client signing in with the App's key.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("app.pem");
    let public_key = make_app_key(&key_file);
    let github = FakeGitHub::start_app(APP_ID, public_key, "kubeci[bot]").await;
    github.install("o", 11);
    github.install("acme", 12);
    github.set_pull_request("o/r", pr(7));
    let key = AppKey::from_pem(&std::fs::read(&key_file).unwrap()).unwrap();
    let client = GitHubClient::with_app(&github.url(), App { id: APP_ID, key }).unwrap();
    World {
        github,
        client: Arc::new(client),
        _dir: dir,
    }
}

fn calls_to(github: &FakeGitHub, suffix: &str) -> usize {
    github
        .requests()
        .iter()
        .filter(|(_, path)| path.ends_with(suffix))
        .count()
}

#[tokio::test]
async fn an_app_calls_as_the_installation_of_each_repository_and_organisation() {
    let World { github, client, .. } = world().await;
    assert_eq!(client.pull_request("o/r", 7).await.unwrap().number, 7);
    github.add_member("acme", "dev");
    assert!(client.is_member("acme", "dev").await.unwrap());
    let status = Status {
        state: "pending",
        context: "kubeci/demo",
        description: "Queued",
        target_url: "https://ci.example.com/jobs/ns/demo/builds/1",
    };
    for _ in 0..3 {
        client
            .post_status("O/R", &"a".repeat(40), &status)
            .await
            .unwrap();
    }
    assert_eq!(github.statuses().len(), 3);
    assert!(
        github.refused_jwts().is_empty(),
        "{:?}",
        github.refused_jwts()
    );
    assert_eq!(
        (
            calls_to(&github, "/repos/o/r/installation"),
            calls_to(&github, "/orgs/acme/installation")
        ),
        (1, 1),
        "each installation looked up once"
    );
    assert_eq!(
        github.tokens_made(),
        2,
        "one token per installation, reused"
    );
    let stats = client.stats();
    assert_eq!(stats.tokens_made, 2);
    assert_eq!(
        stats.rate_limit_by_installation.get(&11),
        Some(&(5000 - 4)),
        "o's installation: a pull request and three statuses"
    );
    assert_eq!(stats.rate_limit_by_installation.get(&12), Some(&(5000 - 1)));

    // An `installation` event: which installation covers what is asked again.
    client.forget_installations();
    client.pull_request("o/r", 7).await.unwrap();
    assert_eq!(calls_to(&github, "/repos/o/r/installation"), 2);
    assert_eq!(
        github.tokens_made(),
        2,
        "the installation's token is still good"
    );
}

#[tokio::test]
async fn a_burst_of_calls_shares_one_look_up_and_one_token() {
    let World { github, client, .. } = world().await;
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.pull_request("o/r", 7).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(calls_to(&github, "/repos/o/r/installation"), 1);
    assert_eq!(calls_to(&github, "/access_tokens"), 1);
    assert_eq!(github.requests().len(), 42);
}

#[tokio::test]
async fn an_expired_token_is_renewed_and_a_token_in_its_last_minutes_is_not_used() {
    let World { github, client, .. } = world().await;
    client.pull_request("o/r", 7).await.unwrap();
    github.expire_tokens();
    client
        .pull_request("o/r", 7)
        .await
        .expect("the refused token is replaced and the call made again");
    assert_eq!(github.tokens_made(), 2);
    client.pull_request("o/r", 7).await.unwrap();
    assert_eq!(github.tokens_made(), 2, "the new token is kept");

    github.set_token_lifetime(Duration::from_secs(4 * 60));
    github.expire_tokens();
    client.pull_request("o/r", 7).await.unwrap();
    client.pull_request("o/r", 7).await.unwrap();
    assert_eq!(
        github.tokens_made(),
        4,
        "a token that expires within five minutes is used for no second call"
    );
}

#[tokio::test]
async fn a_jwt_of_another_key_is_refused_and_an_app_not_installed_is_named() {
    let World { github, .. } = world().await;
    let dir = tempfile::tempdir().unwrap();
    make_app_key(&dir.path().join("other.pem"));
    let other = AppKey::from_pem(&std::fs::read(dir.path().join("other.pem")).unwrap()).unwrap();
    let impostor = GitHubClient::with_app(
        &github.url(),
        App {
            id: APP_ID,
            key: other,
        },
    )
    .unwrap();
    let error = impostor.pull_request("o/r", 7).await.unwrap_err();
    assert!(
        matches!(error, GitHubError::Refused { status: 401, .. }),
        "{error}"
    );
    assert!(
        github
            .refused_jwts()
            .iter()
            .any(|why| why.contains("signature")),
        "{:?}",
        github.refused_jwts()
    );

    let error = world()
        .await
        .client
        .pull_request("elsewhere/r", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GitHubError::NoInstallation { .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "GET /repos/elsewhere/r/installation: kubeci's GitHub App is not installed on the \
         repository elsewhere/r; install it there (docs/github.md)"
    );
}

#[test]
fn the_key_shows_nothing_of_itself() {
    let dir = tempfile::tempdir().unwrap();
    make_app_key(&dir.path().join("app.pem"));
    let pem = std::fs::read_to_string(dir.path().join("app.pem")).unwrap();
    let app = App {
        id: APP_ID,
        key: AppKey::from_pem(pem.as_bytes()).unwrap(),
    };
    let shown = format!("{app:?}");
    let secret_line = pem.lines().nth(1).unwrap();
    assert!(!shown.contains(secret_line), "{shown}");
    assert!(shown.contains("<private>"), "{shown}");
}

#[tokio::test]
async fn a_check_name_is_asked_for_whole_in_the_query() {
    let world = world().await;
    let client = &world.client;
    // Every character that could end a query value, start an escape, or need UTF-8.
    let awkward = "ci: a/b?c#d e%f&g=h+i é";
    let sha = "a".repeat(40);
    for name in [awkward, "ci", "ci: a/b"] {
        client
            .create_check_run("o/r", json!({"name": name, "head_sha": sha}))
            .await
            .unwrap();
    }
    for name in [awkward, "ci"] {
        let found: Vec<String> = client
            .check_runs("o/r", &sha, Some(name))
            .await
            .unwrap()
            .into_iter()
            .map(|run| run.name)
            .collect();
        assert_eq!(found, [name], "GitHub reads the check name back whole");
    }
}
