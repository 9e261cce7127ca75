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

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        common::repo_root()
            .join("tests/fixtures/github-webhooks")
            .join(name),
    )
    .unwrap()
}

/// POSTs a delivery to `/hooks/github`; (status, JSON answer).
pub(crate) fn deliver(
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

pub(crate) const JOB: &str = "- job:\n    name: hello\n    git:\n      url: https://github.com/Codertocat/Hello-World.git\n      branch: main\n    run_command: if [ -f slow ]; then sleep 30; fi; if [ -f pause ]; then sleep 10; fi; if [ -f broken ]; then printf '\\033[31mbroken at %s\\033[0m\\n' \"$GIT_COMMIT\"; exit 3; fi; echo \"built $GIT_COMMIT\"\n    timeout: 5m\n    ghprb:\n      enabled: true\n      admin_users: [admin]\n      whitelisted_users: [friend, Codertocat]\n";

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

pub(crate) const APP_ID: u64 = 1717;

pub(crate) struct World {
    pub(crate) server: FakeApiServer,
    pub(crate) github: FakeGitHub,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) repo: common::git::Repo,
    pub(crate) caller: Caller,
}

/// The fake GitHub, as a token's owner or as the App sees it (installed on the
/// repository's owner); the App's private key is written to `dir/app.pem`.
pub(crate) async fn fake_github(caller: Caller, dir: &std::path::Path) -> FakeGitHub {
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
pub(crate) fn caller_flags(caller: Caller, dir: &std::path::Path) -> Vec<String> {
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
    pub(crate) fn states(&self, sha: &str) -> Vec<String> {
        states_posted(&self.github, sha)
    }
}

/// The states posted on `sha` for context `kubeci/hello`, in order.
pub(crate) fn states_posted(github: &FakeGitHub, sha: &str) -> Vec<String> {
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

pub(crate) fn state_of(kubeci: &Kubeci, number: u64) -> String {
    common::serve::state(kubeci, "hello", number)
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
pub(crate) async fn pull_requests_build_once_trusted(world: World) {
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

mod on_both_clusters;

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

/// Where `serve_github_checks::killed_between_two_github_calls_a_build_still_has_one_check_run_in_its_final_state`
/// stops kubeci.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StopAt {
    /// After its first n GitHub calls.
    Calls(usize),
    /// Once the check run is in progress, before its last update.
    InProgress,
    /// After creating the check run, before recording it on the build (the API server
    /// holds the record, then loses it).
    Unrecorded,
}
