//! The GitHub pull request builder end to end: the real `kubeci serve --kubernetes`, the
//! fake API server (pods run by the local engine, cloning a local repository that git maps
//! GitHub's URL to), a fake GitHub over HTTP, and GitHub's real webhook payloads.

use crate::common;

use std::time::Duration;

use common::serve::{builds, configmap, http_with_body, serve_with, Kubeci};
use kubeci_testkit::{FakeApiServer, FakeGitHub, PodBehaviour};
use serde_json::{json, Value};

pub(crate) const SECRET: &str = "a-webhook-secret-for-the-tests";
pub(crate) const GITHUB_TOKEN: &str = "a-github-token-for-the-tests";
pub(crate) const REPO: &str = "Codertocat/Hello-World";
pub(crate) const REPO_URL: &str = "https://github.com/Codertocat/Hello-World.git";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        common::repo_root()
            .join("tests/fixtures/github-webhooks")
            .join(name),
    )
    .unwrap()
}

/// POSTs a delivery to `/hooks/github`; (status, JSON answer).
fn deliver(
    kubeci: &Kubeci,
    event: &str,
    id: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut all = vec![
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", id),
    ];
    all.extend_from_slice(headers);
    let (status, answer) = http_with_body(kubeci, "POST", "/hooks/github", &all, body);
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

pub(crate) fn signed(kubeci: &Kubeci, event: &str, id: &str, body: &[u8]) -> (u16, Value) {
    let signature = kubeci_github::signature::sign(SECRET.as_bytes(), body);
    deliver(
        kubeci,
        event,
        id,
        body,
        &[("X-Hub-Signature-256", &signature)],
    )
}

/// A `pull_request` payload: the real `opened` one, with this action, number, author,
/// head and labels.
pub(crate) fn pr_payload(
    action: &str,
    number: u64,
    author: &str,
    head: &str,
    labels: &[&str],
) -> Vec<u8> {
    let mut payload: Value = serde_json::from_slice(&fixture("pull_request.opened.json")).unwrap();
    payload["action"] = action.into();
    payload["number"] = number.into();
    let pr = &mut payload["pull_request"];
    pr["number"] = number.into();
    pr["user"]["login"] = author.into();
    pr["head"]["sha"] = head.into();
    pr["head"]["ref"] = format!("change-{number}").into();
    pr["labels"] = labels.iter().map(|l| json!({"name": l})).collect();
    serde_json::to_vec(&payload).unwrap()
}

pub(crate) fn comment_payload(number: u64, id: u64, author: &str, body: &str) -> Vec<u8> {
    let mut payload: Value =
        serde_json::from_slice(&fixture("issue_comment.created.json")).unwrap();
    payload["issue"]["number"] = number.into();
    payload["issue"]["pull_request"] =
        json!({"url": format!("https://api.github.com/repos/{REPO}/pulls/{number}")});
    payload["comment"]["id"] = id.into();
    payload["comment"]["user"]["login"] = author.into();
    payload["comment"]["body"] = body.into();
    serde_json::to_vec(&payload).unwrap()
}

/// The pull request's JSON as GitHub's API serves it.
pub(crate) fn pr_json(payload: &[u8]) -> Value {
    serde_json::from_slice::<Value>(payload).unwrap()["pull_request"].clone()
}

const JOB: &str = "- job:\n    name: hello\n    git:\n      url: https://github.com/Codertocat/Hello-World.git\n      branch: main\n    run_command: if [ -f slow ]; then sleep 30; fi; if [ -f pause ]; then sleep 10; fi; if [ -f broken ]; then printf '\\033[31mbroken at %s\\033[0m\\n' \"$GIT_COMMIT\"; exit 3; fi; echo \"built $GIT_COMMIT\"\n    timeout: 5m\n    ghprb:\n      enabled: true\n      admin_users: [admin]\n      whitelisted_users: [friend, Codertocat]\n";

/// Who kubeci calls GitHub as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// A personal token's owner.
    Token,
    /// A GitHub App installed on the repository's owner, reporting commit statuses
    /// (`--github-report statuses`).
    App,
    /// The same App, reporting check runs (an App's default).
    AppChecks,
    /// [`Caller::AppChecks`] waiting up to 10 minutes for GitHub: a new leader's takeover
    /// grace is then 40 minutes, far beyond any wait of a test.
    AppChecksPatient,
}

const APP_ID: u64 = 1717;

pub(crate) struct World {
    pub(crate) server: FakeApiServer,
    pub(crate) github: FakeGitHub,
    dir: tempfile::TempDir,
    repo: common::git::Repo,
    caller: Caller,
}

/// The fake GitHub, as a token's owner or as the App sees it (installed on the
/// repository's owner); the App's private key is written to `dir/app.pem`.
async fn fake_github(caller: Caller, dir: &std::path::Path) -> FakeGitHub {
    match caller {
        Caller::Token => {
            std::fs::write(dir.join("github-token"), GITHUB_TOKEN).unwrap();
            FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot").await
        }
        Caller::App | Caller::AppChecks | Caller::AppChecksPatient => {
            let public_key = kubeci_testkit::github::make_app_key(&dir.join("app.pem"));
            let github = FakeGitHub::start_app(APP_ID, public_key, "kubeci-bot").await;
            github.install("Codertocat", 77);
            github
        }
    }
}

/// The flags that make kubeci call GitHub as `caller` (see [`fake_github`]).
fn caller_flags(caller: Caller, dir: &std::path::Path) -> Vec<String> {
    let file = |name: &str| dir.join(name).display().to_string();
    match caller {
        Caller::Token => vec!["--github-token-file".into(), file("github-token")],
        Caller::App => vec![
            "--github-app-id".into(),
            APP_ID.to_string(),
            "--github-app-key-file".into(),
            file("app.pem"),
            "--github-report".into(),
            "statuses".into(),
        ],
        Caller::AppChecks => vec![
            "--github-app-id".into(),
            APP_ID.to_string(),
            "--github-app-key-file".into(),
            file("app.pem"),
            "--github-timeout".into(),
            "1s".into(),
        ],
        Caller::AppChecksPatient => vec![
            "--github-app-id".into(),
            APP_ID.to_string(),
            "--github-app-key-file".into(),
            file("app.pem"),
            "--github-timeout".into(),
            "10m".into(),
        ],
    }
}

impl World {
    /// `run_locally`: pods really run (cloning the local repository); otherwise they run
    /// for a minute without output.
    pub(crate) async fn new(run_locally: bool) -> World {
        World::calling_as(run_locally, Caller::Token).await
    }

    pub(crate) async fn calling_as(run_locally: bool, caller: Caller) -> World {
        let dir = tempfile::tempdir().unwrap();
        let repo = common::git::Repo::new(&dir.path().join("git"));
        let gitconfig = dir.path().join("gitconfig");
        std::fs::write(
            &gitconfig,
            format!(
                "[url \"{}\"]\n\tinsteadOf = {REPO_URL}\n",
                repo.bare.display()
            ),
        )
        .unwrap();
        let server = FakeApiServer::start().await;
        let behaviour = if run_locally {
            PodBehaviour::RunLocally {
                kubeci_exe: env!("CARGO_BIN_EXE_kubeci").into(),
                secrets_dir: None,
                work_root: dir.path().join("pods"),
                env: vec![("GIT_CONFIG_GLOBAL".into(), gitconfig.display().to_string())],
            }
        } else {
            PodBehaviour::Succeed {
                logs: Vec::new(),
                duration: Duration::from_secs(60),
            }
        };
        server.set_pod_behaviour(move |_| behaviour.clone());
        server.preload(vec![configmap("hello", JOB)]).unwrap();
        let github = fake_github(caller, dir.path()).await;
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        World {
            server,
            github,
            dir,
            repo,
            caller,
        }
    }

    pub(crate) fn serve(&self, resync: &str) -> Kubeci {
        self.serve_also(resync, &[])
    }

    /// [`World::serve`] with `extra` flags.
    pub(crate) fn serve_also(&self, resync: &str, extra: &[&str]) -> Kubeci {
        let secret = self.dir.path().join("secret").display().to_string();
        let url = self.github.url();
        let caller = caller_flags(self.caller, self.dir.path());
        let caller: Vec<&str> = caller.iter().map(String::as_str).collect();
        serve_with(
            &self.server,
            &[
                &caller[..],
                &[
                    "--github-webhook-secret-file",
                    &secret,
                    "--github-url",
                    &url,
                    "--github-host",
                    "github.com",
                    "--github-bot",
                    "kubeci-bot",
                    "--github-resync",
                    resync,
                    "--base-url",
                    "https://ci.example.com",
                ],
                extra,
            ]
            .concat(),
        )
    }

    /// A new head commit of pull request `number`, pushed to `refs/pull/N/head`; `slow`
    /// makes its build take 30 s.
    pub(crate) fn push_pr(&self, number: u64, slow: bool) -> String {
        if slow {
            self.repo.write("slow", "yes\n");
        } else {
            let _ = std::fs::remove_file(self.dir.path().join("git/work/slow"));
        }
        let sha = self.repo.commit(&format!("change to #{number}"));
        self.repo.push_head_to(&format!("refs/pull/{number}/head"));
        sha
    }

    /// A new head of pull request `number` by `author` (see [`World::push_pr`]), as
    /// GitHub shows it now; the head and its `action` delivery.
    pub(crate) fn pull_request(
        &self,
        action: &str,
        number: u64,
        author: &str,
        slow: bool,
    ) -> (String, Vec<u8>) {
        let head = self.push_pr(number, slow);
        let payload = pr_payload(action, number, author, &head, &[]);
        self.github.set_pull_request(REPO, pr_json(&payload));
        (head, payload)
    }

    /// The states posted on `sha` for context `kubeci/hello`, in order.
    fn states(&self, sha: &str) -> Vec<String> {
        states_posted(&self.github, sha)
    }
}

/// The states posted on `sha` for context `kubeci/hello`, in order.
fn states_posted(github: &FakeGitHub, sha: &str) -> Vec<String> {
    github
        .statuses()
        .into_iter()
        .filter(|s| s.sha == sha && s.context == "kubeci/hello")
        .map(|s| s.state)
        .collect()
}

pub(crate) fn wait(what: &str, check: impl FnMut() -> bool) {
    common::git::wait_for(Duration::from_secs(60), what, check);
}

fn state_of(kubeci: &Kubeci, number: u64) -> String {
    common::serve::state(kubeci, "hello", number)
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_pull_requests_build_and_report_untrusted_ones_wait_for_an_admin() {
    pull_requests_build_once_trusted(World::calling_as(true, Caller::Token).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_trusted_pull_requests_build_and_report_untrusted_ones_wait() {
    let world = World::calling_as(true, Caller::App).await;
    pull_requests_build_once_trusted(world).await;
}

/// A trusted author's pull request is built at its head and reported, once even when its
/// delivery is replayed after the build is gone; an untrusted one gets one comment and no
/// build until an admin says "ok to test".
async fn pull_requests_build_once_trusted(world: World) {
    let kubeci = world.serve("0s");

    // A whitelisted author opens a pull request: its head is built and reported.
    let (head, opened) = world.pull_request("opened", 2, "friend", false);
    let (status, answer) = signed(&kubeci, "pull_request", "p-1", &opened);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"][0]["number"], 1);
    wait("build 1 to succeed", || state_of(&kubeci, 1) == "succeeded");
    let (_, log) = common::serve::http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/hello/builds/1/log",
        &[],
    );
    assert!(
        log.contains(&format!("built {head}")),
        "the PR head was built: {log}"
    );
    wait("the final status", || {
        world.states(&head).last().map(String::as_str) == Some("success")
    });
    assert_eq!(world.states(&head), ["pending", "success"]);
    let status = world
        .github
        .statuses()
        .into_iter()
        .find(|s| s.sha == head)
        .unwrap();
    assert_eq!(status.repo, REPO);
    assert_eq!(
        status.target_url,
        "https://ci.example.com/jobs/default/hello/builds/1"
    );
    // The same delivery again starts nothing new.
    let (_, again) = signed(&kubeci, "pull_request", "p-1", &opened);
    assert_eq!(
        again["builds"][0],
        json!({"namespace": "default", "job": "hello", "number": 1, "created": false})
    );
    // Replayed after its build was deleted (as retention does): still nothing new — the
    // head's request key is kept as long as GitHub may redeliver (three days).
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(world.server.client().await, "default");
    jobs.delete("hello-1", &Default::default()).await.unwrap();
    wait("build 1 to be gone", || {
        common::serve::builds(&kubeci, "hello").is_empty()
    });
    let (status, replayed) = signed(&kubeci, "pull_request", "p-1", &opened);
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["builds"][0]["number"], 1, "{replayed}");
    assert_eq!(replayed["builds"][0]["created"], false, "{replayed}");
    assert!(
        common::serve::builds(&kubeci, "hello").is_empty(),
        "no build again"
    );

    // An untrusted author: one comment asking an admin, no build — also after a push.
    let (_, untrusted) = world.pull_request("opened", 3, "stranger", false);
    let (status, answer) = signed(&kubeci, "pull_request", "p-2", &untrusted);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"], json!([]));
    assert!(answer["reasons"][0]
        .as_str()
        .unwrap()
        .contains("stranger is not trusted"));
    let (pushed_head, pushed) = world.pull_request("synchronize", 3, "stranger", false);
    assert_eq!(signed(&kubeci, "pull_request", "p-3", &pushed).0, 200);
    assert_eq!(
        signed(&kubeci, "pull_request", "p-2", &untrusted).0,
        200,
        "a redelivery"
    );
    let comments = world.github.comments(REPO, 3);
    assert_eq!(comments.len(), 1, "one request for approval: {comments:?}");
    assert_eq!(comments[0].0, "kubeci-bot");
    assert!(comments[0].1.contains("ok to test"), "{comments:?}");
    assert!(
        builds(&kubeci, "hello").is_empty(),
        "no build for the untrusted PR (build 1 was deleted above)"
    );

    // Someone else's "ok to test" does nothing; an admin's adds the label and builds.
    let (_, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-1",
        &comment_payload(3, 501, "stranger", "ok to test"),
    );
    assert_eq!(answer["builds"], json!([]));
    let (status, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-2",
        &comment_payload(3, 502, "admin", "OK to test"),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"][0]["number"], 2);
    let labels = world.github.pull_request(REPO, 3).unwrap()["labels"].clone();
    assert!(
        labels
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "ok-to-test"),
        "{labels}"
    );
    wait("the approved build to succeed", || {
        state_of(&kubeci, 2) == "succeeded"
    });
    wait("its status", || {
        world.states(&pushed_head).last().map(String::as_str) == Some("success")
    });
    // The bot's own comment never triggers.
    let (_, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-3",
        &comment_payload(3, 503, "kubeci-bot", "test this please"),
    );
    assert!(answer["builds"].is_null(), "{answer}");
    assert_eq!(builds(&kubeci, "hello").len(), 1, "build 2 only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_supersedes_the_running_build_and_a_cancelled_build_reports_error() {
    a_push_supersedes_the_running_build(World::new(true).await).await;
}

/// As an App, with its installation's tokens expiring while the first build runs: the
/// refused token is replaced, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_a_token_expiring_mid_build_is_renewed() {
    let world = World::calling_as(true, Caller::App).await;
    let github = a_push_supersedes_the_running_build(world).await;
    assert!(
        github.refused_jwts().is_empty(),
        "{:?}",
        github.refused_jwts()
    );
    assert_eq!(
        github.tokens_made(),
        2,
        "one token until it expired, then one more for the rest"
    );
}

async fn a_push_supersedes_the_running_build(world: World) -> FakeGitHub {
    let kubeci = world.serve("0s");
    let (slow_head, opened) = world.pull_request("opened", 2, "friend", true);
    assert_eq!(signed(&kubeci, "pull_request", "s-1", &opened).0, 200);
    wait("build 1 to run", || state_of(&kubeci, 1) == "running");
    wait("its pending status", || {
        !world.states(&slow_head).is_empty()
    });
    if world.caller == Caller::App {
        world.github.expire_tokens();
    }
    let (new_head, pushed) = world.pull_request("synchronize", 2, "friend", false);
    let (status, answer) = signed(&kubeci, "pull_request", "s-2", &pushed);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"][0]["number"], 2);
    wait("the old build to be aborted", || {
        state_of(&kubeci, 1) == "aborted"
    });
    wait("the new one to succeed", || {
        state_of(&kubeci, 2) == "succeeded"
    });
    wait("both final statuses", || {
        world.states(&slow_head).last().map(String::as_str) == Some("error")
            && world.states(&new_head).last().map(String::as_str) == Some("success")
    });
    let cancelled = world
        .github
        .statuses()
        .into_iter()
        .find(|s| s.sha == slow_head && s.state == "error")
        .unwrap();
    assert!(
        cancelled
            .description
            .contains("cancelled by kubeci (superseded by build 2)"),
        "{cancelled:?}"
    );
    world.github
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_survive_a_restart_and_rate_limits_and_the_resync_heals_a_missed_webhook() {
    let world = World::new(true).await;
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 2, "friend", false);
    // GitHub refuses everything (rate limit spent, reset in an hour) while the build runs
    // and finishes; kubeci is killed before it could report, and a new one reports.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (now + 3600).to_string();
    // The delivery's own look at the pull request's current head still gets through.
    world.github.serve_next(1);
    world.github.fail_next(
        10_000,
        403,
        &[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &reset),
        ],
    );
    assert_eq!(signed(&kubeci, "pull_request", "r-1", &opened).0, 200);
    wait("build 1 to succeed", || state_of(&kubeci, 1) == "succeeded");
    let refused = || {
        world
            .github
            .requests()
            .iter()
            .filter(|(m, p)| (m == "POST" && p.contains("/statuses/")) || p.ends_with("/statuses"))
            .count()
    };
    wait("a status to be attempted", || refused() > 0);
    let attempts = refused();
    kubeci.kill();
    assert!(world.states(&head).is_empty(), "nothing posted yet");
    assert!(
        attempts <= 2,
        "the rate limit's reset is honoured, not hammered: {attempts} attempts"
    );
    world.github.clear_faults();
    // A Retry-After answer is waited out too.
    world.github.fail_next(1, 429, &[("Retry-After", "1")]);
    let kubeci = world.serve("1s");
    wait("the final status after the restart", || {
        world.states(&head).last().map(String::as_str) == Some("success")
    });
    assert_eq!(
        world
            .states(&head)
            .iter()
            .filter(|s| *s == "success")
            .count(),
        1,
        "posted once: {:?}",
        world.states(&head)
    );

    // A pull request whose webhook never arrived: the resync builds its head, once.
    let missed = world.push_pr(4, false);
    world.github.set_pull_request(
        REPO,
        pr_json(&pr_payload("opened", 4, "friend", &missed, &[])),
    );
    let untrusted = world.push_pr(5, false);
    world.github.set_pull_request(
        REPO,
        pr_json(&pr_payload("opened", 5, "stranger", &untrusted, &[])),
    );
    wait("the resync to build the missed head", || {
        builds(&kubeci, "hello")
            .iter()
            .any(|b| b["pull_request"] == 4 && b["state"] == "succeeded")
    });
    wait("its status", || {
        world.states(&missed).last().map(String::as_str) == Some("success")
    });
    let pr_builds = |n: u64| {
        builds(&kubeci, "hello")
            .iter()
            .filter(|b| b["pull_request"] == n)
            .count()
    };
    assert_eq!(pr_builds(4), 1);
    assert_eq!(pr_builds(2), 1, "a head with a status is not built again");
    assert_eq!(pr_builds(5), 0, "the resync never builds an untrusted head");
    assert!(world.github.comments(REPO, 5).is_empty(), "nor comments");
}

/// The pull request flow on both kinds of cluster — the fake API server, and the real
/// control plane of `scripts/cluster up` with its node agent — against the fake GitHub:
/// a trusted author's pull request is built at its head and reported pending then success;
/// an untrusted one gets one comment and no build until an admin says "ok to test".
mod on_both_clusters {
    use super::*;
    use common::cluster::TestCluster;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_fake_api_server() {
        pull_requests(TestCluster::fake().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
    async fn on_a_real_cluster() {
        pull_requests(TestCluster::real().await).await;
    }

    // Long on purpose: one scenario on both clusters, read top to bottom as a pull request lives
    // (opened, pushed, commented on, closed); each step needs the state the one before left.
    async fn pull_requests(cluster: TestCluster) {
        let ns = cluster.namespace.clone();
        let repo = common::git::Repo::new(&cluster.dir().join("github"));
        cluster.map_repository(REPO_URL, &repo.bare);
        cluster.apply("hello", JOB).await;
        let github = FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot").await;
        let secret = cluster.dir().join("secret");
        let token = cluster.dir().join("github-token");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::write(&token, GITHUB_TOKEN).unwrap();
        let url = github.url();
        let kubeci = cluster.serve(&[
            "--github-webhook-secret-file",
            secret.to_str().unwrap(),
            "--github-token-file",
            token.to_str().unwrap(),
            "--github-url",
            &url,
            "--github-host",
            "github.com",
            "--github-bot",
            "kubeci-bot",
            "--github-resync",
            "0s",
        ]);
        let port = kubeci.port;
        let state =
            move |number: u64| common::serve::state_in(&Kubeci::probe(port), &ns, "hello", number);

        let head = repo.commit("change to #2");
        repo.push_head_to("refs/pull/2/head");
        let opened = pr_payload("opened", 2, "friend", &head, &[]);
        github.set_pull_request(REPO, pr_json(&opened));
        let (status, answer) = signed(&kubeci, "pull_request", "p-1", &opened);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["builds"][0]["number"], 1, "{answer}");
        let state_1 = state.clone();
        cluster
            .until_blocking("build 1 to succeed", move || state_1(1) == "succeeded")
            .await;
        let (_, log) = common::serve::http(
            &kubeci,
            "GET",
            &format!("/api/v1/jobs/{}/hello/builds/1/log", cluster.namespace),
            &[],
        );
        assert!(
            log.contains(&format!("built {head}")),
            "the PR head was built: {log}"
        );
        cluster
            .until("the final status", async || {
                states_posted(&github, &head).last().map(String::as_str) == Some("success")
            })
            .await;
        assert_eq!(states_posted(&github, &head), ["pending", "success"]);

        let untrusted_head = repo.commit("change to #3");
        repo.push_head_to("refs/pull/3/head");
        let untrusted = pr_payload("opened", 3, "stranger", &untrusted_head, &[]);
        github.set_pull_request(REPO, pr_json(&untrusted));
        let (status, answer) = signed(&kubeci, "pull_request", "p-2", &untrusted);
        assert_eq!((status, &answer["builds"]), (200, &json!([])), "{answer}");
        let comments = github.comments(REPO, 3);
        assert_eq!(comments.len(), 1, "{comments:?}");
        assert!(comments[0].1.contains("ok to test"), "{comments:?}");
        assert_eq!(
            cluster.build_numbers("hello").await,
            [1],
            "no build for the untrusted PR"
        );

        let (status, answer) = signed(
            &kubeci,
            "issue_comment",
            "c-1",
            &comment_payload(3, 502, "admin", "ok to test"),
        );
        assert_eq!(
            (status, &answer["builds"][0]["number"]),
            (200, &json!(2)),
            "{answer}"
        );
        cluster
            .until_blocking("the approved build to succeed", move || {
                state(2) == "succeeded"
            })
            .await;
        cluster
            .until("its status", async || {
                states_posted(&github, &untrusted_head)
                    .last()
                    .map(String::as_str)
                    == Some("success")
            })
            .await;
        drop(kubeci);
        cluster.finish().await;
    }
}

/// The check runs of `sha`, in the order they were created.
pub(crate) fn check_runs_of(
    github: &FakeGitHub,
    sha: &str,
) -> Vec<kubeci_testkit::github::FakeCheckRun> {
    github
        .check_runs()
        .into_iter()
        .filter(|run| run.head_sha == sha)
        .collect()
}

/// The check run of `sha` once it completed (at most one, asserted).
fn completed_check_run(github: &FakeGitHub, sha: &str) -> kubeci_testkit::github::FakeCheckRun {
    wait("the check run to complete", || {
        check_runs_of(github, sha)
            .iter()
            .any(|run| run.status == "completed")
    });
    let runs = check_runs_of(github, sha);
    assert_eq!(runs.len(), 1, "one check run per job and head: {runs:#?}");
    runs[0].clone()
}

/// Its statuses went in order through some of `queued`, `in_progress`, then `end`, each
/// once.
fn assert_went_to(run: &kubeci_testkit::github::FakeCheckRun, end: &str) {
    let order = ["queued", "in_progress", end];
    let mut at = 0;
    for step in &run.history {
        let found = order[at..].iter().position(|s| s == step);
        assert!(found.is_some(), "{step} out of order in {:?}", run.history);
        at += found.unwrap() + 1;
    }
    assert_eq!(
        run.history.last().map(String::as_str),
        Some(end),
        "{:?}",
        run.history
    );
}

/// As a GitHub App, builds are reported as check runs (an App's default): one per job
/// and head, from queued to its conclusion, with the trigger, why it failed and the end of
/// its log (without its colours); a superseded build's check run is cancelled, saying by
/// whom.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_each_build_is_one_check_run_from_queued_to_its_conclusion() {
    let world = World::calling_as(true, Caller::AppChecks).await;
    let kubeci = world.serve("0s");

    let (head, opened) = world.pull_request("opened", 2, "friend", false);
    assert_eq!(signed(&kubeci, "pull_request", "k-1", &opened).0, 200);
    let run = completed_check_run(&world.github, &head);
    assert_went_to(&run, "completed:success");
    assert_eq!(
        (
            run.name.as_str(),
            run.external_id.as_str(),
            run.details_url.as_str()
        ),
        (
            "kubeci/hello",
            "default/hello/1",
            "https://ci.example.com/jobs/default/hello/builds/1"
        )
    );
    assert!(run.completed_at.is_some());
    let title = run.output["title"].as_str().unwrap();
    let summary = run.output["summary"].as_str().unwrap();
    assert!(title.starts_with("Succeeded in "), "{title}");
    assert!(
        summary.contains("| Trigger | pull request #2 |"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("built {head}")),
        "the log's end: {summary}"
    );
    assert!(world.states(&head).is_empty(), "no commit statuses besides");

    world.repo.write("broken", "yes\n");
    let broken = world.push_pr(3, false);
    std::fs::remove_file(world.dir.path().join("git/work/broken")).unwrap();
    let opened = pr_payload("opened", 3, "friend", &broken, &[]);
    world.github.set_pull_request(REPO, pr_json(&opened));
    assert_eq!(signed(&kubeci, "pull_request", "k-2", &opened).0, 200);
    let run = completed_check_run(&world.github, &broken);
    assert_went_to(&run, "completed:failure");
    let summary = run.output["summary"].as_str().unwrap();
    assert!(
        run.output["title"]
            .as_str()
            .unwrap()
            .starts_with("Failed in "),
        "{}",
        run.output
    );
    assert!(summary.contains("| Why | "), "{summary}");
    assert!(
        summary.contains(&format!("broken at {broken}")),
        "{summary}"
    );
    assert!(!summary.contains('\u{1b}'), "colours stripped: {summary:?}");

    let (slow, opened) = world.pull_request("opened", 4, "friend", true);
    assert_eq!(signed(&kubeci, "pull_request", "k-3", &opened).0, 200);
    wait("the slow build's check run in progress", || {
        check_runs_of(&world.github, &slow)
            .iter()
            .any(|run| run.status == "in_progress")
    });
    let (newer, pushed) = world.pull_request("synchronize", 4, "friend", false);
    assert_eq!(signed(&kubeci, "pull_request", "k-4", &pushed).0, 200);
    let cancelled = completed_check_run(&world.github, &slow);
    assert_went_to(&cancelled, "completed:cancelled");
    assert_eq!(
        cancelled.output["title"],
        "Cancelled by kubeci (superseded by build 4)"
    );
    assert_went_to(
        &completed_check_run(&world.github, &newer),
        "completed:success",
    );

    // One installation token for all of it, and the installation's rate limit in the
    // metrics; an `installation` event makes kubeci look the installations up again.
    let (_, metrics) = common::serve::http(&kubeci, "GET", "/metrics", &[]);
    assert!(
        metrics
            .lines()
            .any(|l| l == "kubeci_github_installation_tokens_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("kubeci_github_installation_rate_limit_remaining{installation=\"77\"} ")),
        "{metrics}"
    );
    let installed = json!({"action": "added", "installation": {"id": 77}});
    let (status, answer) = signed(
        &kubeci,
        "installation_repositories",
        "i-1",
        &serde_json::to_vec(&installed).unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["outcome"],
        "the App's installations changed: they are looked up again"
    );
}

/// A `check_run` delivery about `run` on `head` of pull request `number`, by `sender`:
/// `rerequested`, or `requested_action` with the button `identifier`.
pub(crate) fn check_run_payload(
    run: &kubeci_testkit::github::FakeCheckRun,
    number: u64,
    sender: &str,
    identifier: Option<&str>,
) -> Vec<u8> {
    let opened: Value = serde_json::from_slice(&fixture("pull_request.opened.json")).unwrap();
    let mut payload = json!({
        "action": if identifier.is_some() { "requested_action" } else { "rerequested" },
        "check_run": {
            "id": run.id, "name": run.name, "head_sha": run.head_sha,
            "external_id": run.external_id, "status": run.status,
            "pull_requests": [{"number": number, "head": {"sha": run.head_sha}}],
        },
        "repository": opened["repository"],
        "sender": {"login": sender},
    });
    if let Some(identifier) = identifier {
        payload["requested_action"] = json!({ "identifier": identifier });
    }
    serde_json::to_vec(&payload).unwrap()
}

/// As a GitHub App, an untrusted pull request's head gets a check run waiting for an
/// admin's approval, with "Approve and build": clicked by someone else it changes nothing
/// and says so; clicked by an admin it approves the pull request (the `ok-to-test`
/// label) and builds it. A check run's "Re-run" and the suite's re-run build the head
/// again — an untrusted head only for someone the job trusts — once per delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_untrusted_heads_wait_on_a_check_run_and_re_runs_build_again() {
    let world = World::calling_as(true, Caller::AppChecks).await;
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 3, "stranger", false);
    for _ in 0..2 {
        assert_eq!(signed(&kubeci, "pull_request", "u-1", &opened).0, 200);
    }
    let waiting = check_runs_of(&world.github, &head);
    assert_eq!(
        waiting.len(),
        1,
        "one, though delivered twice: {waiting:#?}"
    );
    let approval = waiting[0].clone();
    assert_eq!(approval.history, ["completed:action_required"]);
    assert_eq!(approval.name, "kubeci/hello");
    assert_eq!(approval.actions[0]["identifier"], "approve");
    assert_eq!(approval.actions[0]["label"], "Approve and build");
    let summary = approval.output["summary"].as_str().unwrap();
    assert!(
        summary.contains("@stranger") && summary.contains("@admin"),
        "{summary}"
    );
    assert_eq!(world.github.comments(REPO, 3).len(), 1, "and one comment");

    // A re-run of an untrusted head by its author, and the button clicked by someone
    // who is not an admin: nothing is built, and the check run says why.
    let (_, answer) = signed(
        &kubeci,
        "check_run",
        "r-1",
        &check_run_payload(&approval, 3, "stranger", None),
    );
    assert_eq!(answer["builds"], json!([]), "{answer}");
    assert!(answer["reasons"][0]
        .as_str()
        .unwrap()
        .contains("may not re-run an untrusted pull request"));
    let (status, answer) = signed(
        &kubeci,
        "check_run",
        "a-1",
        &check_run_payload(&approval, 3, "friend", Some("approve")),
    );
    assert_eq!((status, &answer["builds"]), (200, &json!([])), "{answer}");
    let refused = check_runs_of(&world.github, &head)[0].clone();
    assert_eq!(refused.history, ["completed:action_required"]);
    let summary = refused.output["summary"].as_str().unwrap();
    assert!(summary.contains("@friend clicked"), "{summary}");
    assert!(
        summary.contains("friend is not an admin of this job: nothing changed"),
        "{summary}"
    );
    assert!(builds(&kubeci, "hello").is_empty());

    // The admin clicks: approved, built.
    let (status, answer) = signed(
        &kubeci,
        "check_run",
        "a-2",
        &check_run_payload(&approval, 3, "admin", Some("approve")),
    );
    assert_eq!(
        (status, &answer["builds"][0]["number"]),
        (200, &json!(1)),
        "{answer}"
    );
    let labels = world.github.pull_request(REPO, 3).unwrap()["labels"].clone();
    assert!(labels.to_string().contains("ok-to-test"), "{labels}");
    wait("build 1 to succeed", || state_of(&kubeci, 1) == "succeeded");
    let runs = check_runs_of(&world.github, &head);
    assert_eq!(
        runs[0].history.last().map(String::as_str),
        Some("completed:neutral")
    );
    assert_eq!(runs[0].output["title"], "Approved by @admin");
    assert_eq!(runs[0].actions, json!([]));
    wait("the build's check run to complete", || {
        check_runs_of(&world.github, &head)
            .iter()
            .any(|run| run.external_id == "default/hello/1" && run.status == "completed")
    });

    // Re-runs of the approved head: of the build's check run (by anyone: the pull
    // request is trusted now), redelivered; then of the whole suite.
    let build_run = check_runs_of(&world.github, &head)
        .into_iter()
        .find(|run| run.external_id == "default/hello/1")
        .unwrap();
    let rerun = check_run_payload(&build_run, 3, "stranger", None);
    let (_, answer) = signed(&kubeci, "check_run", "r-2", &rerun);
    assert_eq!(answer["builds"][0]["number"], 2, "{answer}");
    let (_, again) = signed(&kubeci, "check_run", "r-2", &rerun);
    assert_eq!(
        again["builds"][0],
        json!({"namespace": "default", "job": "hello", "number": 2, "created": false})
    );
    let opened: Value = serde_json::from_slice(&fixture("pull_request.opened.json")).unwrap();
    let suite = json!({
        "action": "rerequested",
        "check_suite": {"head_sha": head, "pull_requests": [{"number": 3}]},
        "repository": opened["repository"],
        "sender": {"login": "friend"},
    });
    let (_, answer) = signed(
        &kubeci,
        "check_suite",
        "s-1",
        &serde_json::to_vec(&suite).unwrap(),
    );
    assert_eq!(answer["builds"][0]["number"], 3, "{answer}");
    // Build 3 supersedes build 2 (the same pull request), if it still ran.
    wait("the builds' check runs to complete", || {
        check_runs_of(&world.github, &head)
            .iter()
            .filter(|run| run.external_id.starts_with("default/hello/"))
            .filter(|run| run.status == "completed")
            .count()
            == 3
    });
    let runs = check_runs_of(&world.github, &head);
    assert_eq!(
        runs.len(),
        4,
        "the approval's, and one per build: {runs:#?}"
    );
    let last = runs
        .iter()
        .find(|run| run.external_id == "default/hello/3")
        .unwrap();
    assert_went_to(last, "completed:success");
}

/// A second job of the repository: it always succeeds, and builds pushes to main too.
const LINT_JOB: &str = "- job:\n    name: lint\n    git:\n      url: https://github.com/Codertocat/Hello-World.git\n      branch: main\n    run_command: echo \"linted $GIT_COMMIT\"\n    triggers:\n      push:\n        branches: [main]\n    ghprb:\n      enabled: true\n      whitelisted_users: [friend]\n";

/// The completed check run of `job`'s build `number` (waited for).
fn completed_build_run(
    github: &FakeGitHub,
    sha: &str,
    job: &str,
    number: u64,
) -> kubeci_testkit::github::FakeCheckRun {
    let external_id = format!("default/{job}/{number}");
    wait(&format!("the check run of {external_id}"), || {
        check_runs_of(github, sha)
            .iter()
            .any(|run| run.external_id == external_id && run.status == "completed")
    });
    check_runs_of(github, sha)
        .into_iter()
        .find(|run| run.external_id == external_id)
        .unwrap()
}

/// "Re-run failed checks" (a `check_suite rerequested`, which GitHub sends for "Re-run all
/// checks" too) rebuilds only the jobs whose last build of the head failed — here for a
/// fork's pull request, which GitHub leaves out of check payloads, so kubeci finds it from
/// its own builds. A push build's check run re-runs as a push of its branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_re_runs_rebuild_the_failed_checks_a_forks_head_and_a_push() {
    let world = World::calling_as(true, Caller::AppChecks).await;
    world
        .server
        .preload(vec![configmap("lint", LINT_JOB)])
        .unwrap();
    let kubeci = world.serve("0s");
    world.repo.write("broken", "yes\n");
    let (head, opened) = world.pull_request("opened", 5, "friend", false);
    assert_eq!(signed(&kubeci, "pull_request", "f-1", &opened).0, 200);
    assert_went_to(
        &completed_build_run(&world.github, &head, "hello", 1),
        "completed:failure",
    );
    assert_went_to(
        &completed_build_run(&world.github, &head, "lint", 1),
        "completed:success",
    );

    let repository = serde_json::from_slice::<Value>(&opened).unwrap()["repository"].clone();
    let suite = json!({
        "action": "rerequested",
        "check_suite": {"head_sha": head, "head_branch": "topic", "pull_requests": []},
        "repository": repository,
        "sender": {"login": "friend"},
    });
    let suite = serde_json::to_vec(&suite).unwrap();
    let (status, answer) = signed(&kubeci, "check_suite", "f-2", &suite);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["builds"],
        json!([{"namespace": "default", "job": "hello", "number": 2, "created": true}]),
        "the failed check only: {answer}"
    );
    assert!(
        answer["reasons"]
            .to_string()
            .contains("the suite's failed checks"),
        "{answer}"
    );
    let again = completed_build_run(&world.github, &head, "hello", 2);
    assert_went_to(&again, "completed:failure");
    assert_eq!(builds(&kubeci, "hello")[0]["pull_request"], 5);
    assert_eq!(builds(&kubeci, "lint").len(), 1, "lint passed: not re-run");

    // A push to main builds lint; its check run's Re-run builds that commit again, as a
    // push of main.
    std::fs::remove_file(world.dir.path().join("git/work/broken")).unwrap();
    let pushed = world.repo.commit("fixed");
    world.repo.push_head_to("refs/heads/main");
    let push = json!({
        "ref": "refs/heads/main", "after": pushed, "deleted": false,
        "repository": repository, "sender": {"login": "Codertocat"},
    });
    let (_, answer) = signed(&kubeci, "push", "f-3", &serde_json::to_vec(&push).unwrap());
    assert_eq!(answer["builds"][0]["job"], "lint", "{answer}");
    let run = completed_build_run(&world.github, &pushed, "lint", 2);
    assert_went_to(&run, "completed:success");
    let mut rerun: Value =
        serde_json::from_slice(&check_run_payload(&run, 0, "Codertocat", None)).unwrap();
    rerun["check_run"]["pull_requests"] = json!([]);
    rerun["check_run"]["check_suite"] = json!({"head_branch": "main"});
    let (_, answer) = signed(
        &kubeci,
        "check_run",
        "f-4",
        &serde_json::to_vec(&rerun).unwrap(),
    );
    assert_eq!(
        answer["builds"],
        json!([{"namespace": "default", "job": "lint", "number": 3, "created": true}]),
        "{answer}"
    );
    let rebuilt = &builds(&kubeci, "lint")[0];
    assert_eq!(
        (&rebuilt["trigger"], &rebuilt["commit"]),
        (&json!("push"), &json!(pushed)),
        "{rebuilt}"
    );
    assert_went_to(
        &completed_build_run(&world.github, &pushed, "lint", 3),
        "completed:success",
    );
}

/// A leader stopped with SIGTERM gives its Lease back once its report calls have ended, so
/// the next leader reports the builds from before at once: it does not wait out the
/// takeover grace (40 minutes here), which is for a leader that vanished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigterm_handover_the_next_leader_reports_builds_from_before_at_once() {
    let world = World::calling_as(false, Caller::AppChecksPatient).await;
    let fast_takeover = ["--lease-duration", "2s"];
    let mut first = world.serve_also("0s", &fast_takeover);
    wait("the first kubeci to lead", || {
        first.log().contains(" leads")
    });
    // The delivery's calls (the installation, its token, the pull request) are served;
    // every report fails, so the build's check run is still owed when it stops.
    world.github.serve_next(3);
    world.github.fail_next(100_000, 500, &[]);
    let (head, opened) = world.pull_request("opened", 8, "friend", false);
    let (status, answer) = signed(&first, "pull_request", "h-1", &opened);
    assert_eq!((status, &answer["builds"][0]["number"]), (200, &json!(1)));
    wait("the first kubeci to try to report", || {
        world
            .github
            .requests()
            .iter()
            .any(|(_, path)| path.contains("check-runs"))
    });
    let stopped = first.terminate(Duration::from_secs(20));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}");
    assert!(
        first.log().contains("gave the leader Lease back"),
        "{}",
        first.log()
    );
    assert!(check_runs_of(&world.github, &head).is_empty());

    world.github.clear_faults();
    let next = world.serve_also("0s", &fast_takeover);
    wait("the next kubeci to lead", || next.log().contains(" leads"));
    wait("build 1's check run, from the next leader", || {
        !check_runs_of(&world.github, &head).is_empty()
    });
    let runs = check_runs_of(&world.github, &head);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].external_id, "default/hello/1");
}

/// Where [`killed_between_two_github_calls_a_build_still_has_one_check_run_in_its_final_state`]
/// stops kubeci.
#[derive(Debug, Clone, Copy)]
enum StopAt {
    /// After its first n GitHub calls.
    Calls(usize),
    /// Once the check run is in progress, before its last update.
    InProgress,
    /// After creating the check run, before recording it on the build (the API server
    /// holds the record, then loses it).
    Unrecorded,
}

/// kubeci killed between two of its GitHub calls about a pull request's build — after the
/// delivery's own calls (the installation, its token, the pull request), after creating
/// the check run (recorded, or not), after updating it to in progress — and started
/// again: exactly one check run for the job and head, in its final state. (Each build
/// runs 10 s: longer than the 4 s a build from before the lead may wait for its first
/// report, so it is seen in progress either way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_two_github_calls_a_build_still_has_one_check_run_in_its_final_state() {
    let world = World::calling_as(true, Caller::AppChecks).await;
    let stops = [
        StopAt::Calls(3),
        StopAt::Calls(4),
        StopAt::InProgress,
        StopAt::Unrecorded,
    ];
    for (number, stop) in (2..).zip(stops) {
        world.repo.write("pause", "yes\n");
        let (head, opened) = world.pull_request("opened", number, "friend", false);
        let fast_takeover = ["--lease-duration", "2s"];
        let kubeci = world.serve_also("0s", &fast_takeover);
        wait("kubeci to lead", || kubeci.log().contains(" leads"));
        match stop {
            StopAt::Calls(served) => world.github.hold_after(served),
            // The record of its reports (and its release, if it waits in a queue).
            StopAt::Unrecorded => world.server.gate().hold("patch", "jobs"),
            StopAt::InProgress => {}
        }
        let (status, answer) = signed(&kubeci, "pull_request", &format!("x-{number}"), &opened);
        assert_eq!(status, 200, "{answer}");
        let created = || !check_runs_of(&world.github, &head).is_empty();
        match stop {
            StopAt::Calls(_) => wait("kubeci to wait for GitHub", || world.github.held() > 0),
            StopAt::InProgress => {
                wait("the check run in progress", || {
                    check_runs_of(&world.github, &head)
                        .iter()
                        .any(|run| run.status == "in_progress")
                });
                world.github.hold_after(0);
                wait("kubeci to wait for GitHub", || world.github.held() > 0);
            }
            StopAt::Unrecorded => wait("the check run created, its record held", || {
                created() && world.server.gate().held() > 0
            }),
        }
        kubeci.kill();
        world.github.let_go();
        world.server.gate().release(false);
        let again = world.serve_also("0s", &fast_takeover);
        let run = completed_check_run(&world.github, &head);
        assert_went_to(&run, "completed:success");
        assert_eq!(state_of(&again, number - 1), "succeeded", "{stop:?}");
        drop(again);
    }
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
