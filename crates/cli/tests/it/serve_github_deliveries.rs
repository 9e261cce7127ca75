//! Deliveries as GitHub sends them (its real payloads), and the secret: each fixture's
//! outcome, bad signatures starting nothing, no secret refusing everything, the secret and
//! token from the environment, and an App that cannot sign in stopping kubeci at start.

use crate::common;

use common::serve::{builds, serve_with};
use kubeci_testkit::FakeGitHub;
use serde_json::json;

use crate::serve_github::*;

// Long on purpose: a table of GitHub's real deliveries and their outcomes over one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fixture_gives_its_outcome_and_bad_signatures_start_nothing() {
    let world = World::new(false).await;
    let kubeci = world.serve("0s");
    let posted = |github: &FakeGitHub| {
        github
            .requests()
            .iter()
            .filter(|(m, _)| m == "POST")
            .count()
    };

    // Refused, for every fixture: wrong secret, no signature, SHA-1 only, a body changed
    // after signing.
    for (event, file) in [
        ("ping", "ping.json"),
        ("pull_request", "pull_request.opened.json"),
        ("pull_request", "pull_request.reopened.json"),
        ("pull_request", "pull_request.synchronize.json"),
        ("pull_request", "pull_request.closed.json"),
        ("issue_comment", "issue_comment.created.json"),
        ("push", "push.json"),
    ] {
        let body = fixture(file);
        let wrong = kubeci_github::signature::sign(b"another secret", &body);
        let good = kubeci_github::signature::sign(SECRET.as_bytes(), &body);
        let mut altered = body.clone();
        altered[10] ^= 1;
        for (what, body, headers) in [
            (
                "a wrong secret",
                &body,
                vec![("X-Hub-Signature-256", wrong.as_str())],
            ),
            ("no signature", &body, vec![]),
            (
                "SHA-1 only",
                &body,
                vec![(
                    "X-Hub-Signature",
                    "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
                )],
            ),
            (
                "an altered body",
                &altered,
                vec![("X-Hub-Signature-256", good.as_str())],
            ),
        ] {
            let (status, answer) = deliver(&kubeci, event, "refused", body, &headers);
            assert_eq!(status, 401, "{file}, {what}: {answer}");
            assert_eq!(answer["error"]["code"], "bad-signature", "{file}, {what}");
        }
    }
    assert!(builds(&kubeci, "hello").is_empty(), "nothing started");
    assert_eq!(posted(&world.github), 0, "nothing posted");

    // Each fixture, correctly signed.
    let (status, answer) = signed(&kubeci, "ping", "d-1", &fixture("ping.json"));
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("pong")));
    world
        .github
        .set_pull_request(REPO, pr_json(&fixture("pull_request.opened.json")));
    let (status, answer) = signed(
        &kubeci,
        "pull_request",
        "d-2",
        &fixture("pull_request.opened.json"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["builds"],
        json!([{"namespace": "default", "job": "hello", "number": 1, "created": true}])
    );
    assert!(
        world.server.store().get(6, "default", "hello-1").is_ok(),
        "the build's Job exists before the delivery is acknowledged"
    );
    wait("the build to be listed", || {
        !builds(&kubeci, "hello").is_empty()
    });
    let build = &builds(&kubeci, "hello")[0];
    assert_eq!(build["commit"], "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(build["pull_request"], 2);
    assert_eq!(build["trigger"], "pull-request");
    for (file, id) in [
        ("pull_request.reopened.json", "d-3"),
        ("pull_request.synchronize.json", "d-4"),
    ] {
        let (status, answer) = signed(&kubeci, "pull_request", id, &fixture(file));
        assert_eq!(status, 200, "{file}: {answer}");
        assert_eq!(
            answer["builds"][0]["created"], false,
            "{file}: the same head is the same build"
        );
    }
    wait("build 1 to run", || state_of(&kubeci, 1) == "running");
    let (status, answer) = signed(
        &kubeci,
        "pull_request",
        "d-5",
        &fixture("pull_request.closed.json"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["cancelled"],
        json!([{"namespace": "default", "job": "hello", "number": 1}])
    );
    wait("build 1 to be aborted", || {
        state_of(&kubeci, 1) == "aborted"
    });
    let (status, answer) = signed(
        &kubeci,
        "issue_comment",
        "d-6",
        &fixture("issue_comment.created.json"),
    );
    assert_eq!(status, 200);
    assert!(
        answer["outcome"]
            .as_str()
            .unwrap()
            .contains("not a pull request"),
        "{answer}"
    );
    let (status, answer) = signed(&kubeci, "push", "d-7", &fixture("push.json"));
    assert_eq!(status, 200);
    assert_eq!(answer["reasons"], json!(["a deleted ref starts nothing"]));
    assert_eq!(builds(&kubeci, "hello").len(), 1);

    // Malformed JSON, and a body over GitHub's 25 MB limit.
    let garbage = b"{\"action\": ";
    assert_eq!(signed(&kubeci, "pull_request", "d-8", garbage).0, 400);
    let huge = vec![b' '; 25 * 1024 * 1024 + 1];
    assert_eq!(signed(&kubeci, "pull_request", "d-9", &huge).0, 413);
    // Unsigned, it is refused before its body is read.
    assert_eq!(deliver(&kubeci, "pull_request", "d-9", &huge, &[]).0, 401);
    assert_eq!(builds(&kubeci, "hello").len(), 1);

    // What happened, as metrics.
    let (status, metrics) = common::serve::http(&kubeci, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    for line in [
        "kubeci_webhook_deliveries_total{event=\"ping\",status=\"200\"} 1",
        "kubeci_webhook_deliveries_total{event=\"ping\",status=\"401\"} 4",
        "kubeci_webhook_deliveries_total{event=\"pull_request\",status=\"400\"} 1",
        "kubeci_builds{namespace=\"default\",job=\"hello\",state=\"aborted\"} 1",
        "kubeci_queue_length 0",
        "# TYPE kubeci_github_api_calls_total counter",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_every_delivery_is_refused() {
    let world = World::new(false).await;
    let kubeci = serve_with(&world.server, &[]);
    let body = fixture("pull_request.opened.json");
    let (status, answer) = signed(&kubeci, "pull_request", "d-1", &body);
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["code"], "no-webhook-secret");
    assert!(builds(&kubeci, "hello").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_token_can_come_from_the_environment() {
    let world = World::new(false).await;
    common::serve::enable_builds(&world.server);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    world.server.write_kubeconfig(&kubeconfig).unwrap();
    let url = world.github.url();
    let kubeci = common::serve::spawn_with_env(
        dir,
        &kubeconfig,
        &[
            "--github-url",
            &url,
            "--github-host",
            "github.com",
            "--github-resync",
            "0s",
        ],
        &[
            ("KUBECI_GITHUB_WEBHOOK_SECRET", SECRET),
            ("KUBECI_GITHUB_TOKEN", GITHUB_TOKEN),
        ],
    );
    wait("kubeci to be ready", || {
        common::serve::http(&kubeci, "GET", "/readyz", &[]).0 == 200
    });
    let untrusted = pr_payload("opened", 9, "stranger", &"a".repeat(40), &[]);
    let (status, answer) = signed(&kubeci, "pull_request", "e-1", &untrusted);
    assert_eq!(
        status, 200,
        "the secret from the environment verifies: {answer}"
    );
    assert_eq!(
        world.github.comments(REPO, 9).len(),
        1,
        "the token from the environment is used"
    );
}

/// A GitHub App's flags are checked at start: a key that cannot sign, a missing half, an id
/// that is not a number, or a token besides the App stop kubeci with what to do — never
/// at the first webhook — and the key is never shown.
#[test]
fn a_github_app_that_cannot_sign_in_stops_kubeci_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("app.pem");
    kubeci_testkit::github::make_app_key(&good);
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "ghp_this is a token, not a key\n").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, GITHUB_TOKEN).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let (good, bad, token) = (path(&good), path(&bad), path(&token));
    let data = path(&dir.path().join("data"));
    for (flags, says) in [
        (
            vec!["--github-app-id", "1717", "--github-app-key-file", &bad],
            "--github-app-key-file: the GitHub App's private key cannot be used: it is not a PEM private key",
        ),
        (
            vec!["--github-app-id", "1717"],
            "--github-app-id needs the App's private key: --github-app-key-file FILE",
        ),
        (
            vec!["--github-app-key-file", &good],
            "the GitHub App's private key needs its App: --github-app-id ID",
        ),
        (
            vec!["--github-app-id", "my-app", "--github-app-key-file", &good],
            "--github-app-id \"my-app\" is not an App id",
        ),
        (
            vec![
                "--github-app-id",
                "1717",
                "--github-app-key-file",
                &good,
                "--github-token-file",
                &token,
            ],
            "both a GitHub token (--github-token-file or $KUBECI_GITHUB_TOKEN) and a GitHub App",
        ),
        (
            vec!["--github-token-file", &token, "--github-report", "checks"],
            "--github-report checks needs a GitHub App (--github-app-id)",
        ),
    ] {
        let mut args = vec!["serve", "--local", "examples", "--data", &data];
        args.extend(flags.iter().copied());
        let run = common::kubeci(&args);
        assert_ne!(run.code, 0, "{flags:?}");
        assert!(run.stderr.contains(says), "{flags:?}: {}", run.stderr);
        let key = std::fs::read_to_string(&good).unwrap();
        assert!(
            !run.stderr.contains(key.lines().nth(1).unwrap()),
            "the key is never shown"
        );
    }
}
