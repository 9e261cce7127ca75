//! `kubeci serve --local DIR` as GitHub's pull request builder: webhooks build pull
//! requests with the local engine too, and a kill between two GitHub calls still leaves one
//! check run per build.

use crate::common;

use common::local::{configmap, Local};
use common::serve::http_with_body;
use serde_json::Value;

use std::path::Path;

use crate::serve_local::{build, fixture_repo_alias, log, wait, HELLO_WORLD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_webhooks_build_pull_requests_with_the_local_engine_too() {
    let (local, repo) = Local::new();
    let github = kubeci_testkit::FakeGitHub::start("gh-token-for-local-tests", "kubeci-bot").await;
    let gitconfig = fixture_repo_alias(&local, &repo);
    // The pull request also rewrites a job definition inside its tree: kubeci never reads
    // it — the job is the ConfigMap's (docs/security.md).
    let own_job = configmap("hello", Path::new(HELLO_WORLD), "echo pwned", "");
    repo.write("job.yaml", &own_job);
    repo.write("ci/hello.yaml", &own_job);
    let head = repo.commit("a change that also edits the job");
    repo.push_head_to("refs/pull/2/head");
    let job = configmap(
        "hello",
        Path::new(HELLO_WORLD),
        "echo \"built $GIT_COMMIT\"",
        "        ghprb:\n          enabled: true\n          whitelisted_users: [friend]\n",
    );
    local.write("hello.yaml", &job);
    std::fs::write(local.dir.path().join("secret"), "local-webhook-secret").unwrap();
    std::fs::write(
        local.dir.path().join("gh-token"),
        "gh-token-for-local-tests",
    )
    .unwrap();
    let secret = local.dir.path().join("secret").display().to_string();
    let token = local.dir.path().join("gh-token").display().to_string();
    let url = github.url();
    let flags = [
        "--github-webhook-secret-file",
        secret.as_str(),
        "--github-token-file",
        token.as_str(),
        "--github-url",
        url.as_str(),
        "--github-host",
        "github.com",
        "--github-resync",
        "0s",
    ];
    let kubeci = local.serve(&flags, &[("GIT_CONFIG_GLOBAL", gitconfig.as_str())]);
    let fixture =
        common::repo_root().join("tests/fixtures/github-webhooks/pull_request.opened.json");
    let mut payload: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    payload["pull_request"]["user"]["login"] = "friend".into();
    payload["pull_request"]["head"]["sha"] = head.clone().into();
    let body = serde_json::to_vec(&payload).unwrap();
    // GitHub shows this head as the pull request's current one.
    github.set_pull_request("Codertocat/Hello-World", payload["pull_request"].clone());
    let signature = kubeci_github::signature::sign(b"local-webhook-secret", &body);
    let headers = [
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "l-1"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let (status, answer) = http_with_body(&kubeci, "POST", "/hooks/github", &headers, &body);
    assert_eq!(status, 200, "{answer}");
    wait("the PR build to succeed", || {
        build(&kubeci, "hello", 1)["state"] == "succeeded"
    });
    let built = log(&kubeci, "hello", 1);
    assert!(built.contains(&format!("built {head}")), "{built}");
    assert!(
        !built.contains("pwned"),
        "the PR's own job definition ran: {built}"
    );
    wait("its statuses", || {
        github
            .statuses()
            .iter()
            .filter(|s| s.sha == head)
            .map(|s| s.state.as_str())
            .collect::<Vec<_>>()
            == ["pending", "success"]
    });
}

/// The local engine as a GitHub App reporting check runs, killed between two GitHub calls
/// about a pull request's build — before the check run is created, after GitHub created
/// it but before kubeci heard (its answer lost), once it is in progress — and started
/// again on the same data directory: one check run per build, in its final state (a build
/// the restart interrupted ends as an error; one still queued runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_two_github_calls_the_local_engine_keeps_one_check_run_per_build() {
    #[derive(Debug, Clone, Copy)]
    enum StopAt {
        Calls(usize),
        AnswerLost(usize),
        InProgress,
    }
    let (local, repo) = Local::new();
    let key = local.dir.path().join("app.pem");
    let public_key = kubeci_testkit::github::make_app_key(&key);
    let github = kubeci_testkit::FakeGitHub::start_app(1717, public_key, "kubeci-bot").await;
    github.install("Codertocat", 5);
    let gitconfig = fixture_repo_alias(&local, &repo);
    let job = configmap(
        "hello",
        Path::new(HELLO_WORLD),
        "sleep 10; echo \"built $GIT_COMMIT\"",
        "        ghprb:\n          enabled: true\n          whitelisted_users: [friend]\n",
    );
    local.write("hello.yaml", &job);
    std::fs::write(local.dir.path().join("secret"), "local-webhook-secret").unwrap();
    let secret = local.dir.path().join("secret").display().to_string();
    let (key, url) = (key.display().to_string(), github.url());
    let flags = [
        "--github-webhook-secret-file",
        secret.as_str(),
        "--github-app-id",
        "1717",
        "--github-app-key-file",
        key.as_str(),
        "--github-url",
        url.as_str(),
        "--github-host",
        "github.com",
        "--github-resync",
        "0s",
        "--github-timeout",
        "1s",
    ];
    let env = [("GIT_CONFIG_GLOBAL", gitconfig.as_str())];
    let fixture =
        common::repo_root().join("tests/fixtures/github-webhooks/pull_request.opened.json");
    let stops = [StopAt::Calls(3), StopAt::AnswerLost(3), StopAt::InProgress];
    for (number, stop) in (2u64..).zip(stops) {
        let head = repo.commit(&format!("change to #{number}"));
        repo.push_head_to(&format!("refs/pull/{number}/head"));
        let mut payload: Value = serde_json::from_slice(&std::fs::read(&fixture).unwrap()).unwrap();
        payload["number"] = number.into();
        let pr = &mut payload["pull_request"];
        pr["number"] = number.into();
        pr["user"]["login"] = "friend".into();
        pr["head"]["sha"] = head.clone().into();
        pr["head"]["ref"] = format!("change-{number}").into();
        github.set_pull_request("Codertocat/Hello-World", pr.clone());
        let body = serde_json::to_vec(&payload).unwrap();
        let kubeci = local.serve(&flags, &env);
        match stop {
            StopAt::Calls(served) => github.hold_after(served),
            StopAt::AnswerLost(served) => github.lose_answers_after(served),
            StopAt::InProgress => {}
        }
        let signature = kubeci_github::signature::sign(b"local-webhook-secret", &body);
        let delivery = format!("l-{number}");
        let headers = [
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", delivery.as_str()),
            ("X-Hub-Signature-256", signature.as_str()),
        ];
        let (status, answer) = http_with_body(&kubeci, "POST", "/hooks/github", &headers, &body);
        assert_eq!(status, 200, "{answer}");
        let runs = || -> Vec<kubeci_testkit::github::FakeCheckRun> {
            github
                .check_runs()
                .into_iter()
                .filter(|run| run.head_sha == head)
                .collect()
        };
        if let StopAt::InProgress = stop {
            wait("the check run in progress", || {
                runs().iter().any(|run| run.status == "in_progress")
            });
            github.hold_after(0);
        }
        wait("kubeci to wait for GitHub", || github.held() > 0);
        kubeci.kill();
        github.let_go();
        let again = local.serve(&flags, &env);
        wait("the check run to complete", || {
            runs().iter().any(|run| run.status == "completed")
        });
        let runs = runs();
        assert_eq!(
            runs.len(),
            1,
            "{stop:?}: one check run per build: {runs:#?}"
        );
        // Interrupted while it ran, or run by the restarted kubeci if it was still
        // queued: the check run ends as the build did.
        let state = build(&again, "hello", number - 1)["state"].clone();
        let end = match state.as_str() {
            Some("error") => "completed:failure",
            Some("succeeded") => "completed:success",
            other => panic!("{stop:?}: the build ended {other:?}"),
        };
        assert_eq!(
            runs[0].history.last().map(String::as_str),
            Some(end),
            "{stop:?}: {:?}",
            runs[0].history
        );
        drop(again);
    }
}
