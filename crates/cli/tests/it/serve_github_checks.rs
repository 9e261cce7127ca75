//! The pull request builder as a GitHub App reporting check runs, end to end (see
//! `serve_github.rs` for the world they run in): one check run per build from queued to its
//! conclusion, untrusted heads waiting on one, re-runs, and check runs across a hand-over
//! or a kill between two GitHub calls.

use crate::common;

use std::time::Duration;

use common::serve::{builds, configmap};
use kubeci_testkit::FakeGitHub;
use serde_json::{json, Value};

use crate::serve_github::*;

/// A second job of the repository: it always succeeds, and builds pushes to main too.
const LINT_JOB: &str = "- job:\n    name: lint\n    git:\n      url: https://github.com/Codertocat/Hello-World.git\n      branch: main\n    run_command: echo \"linted $GIT_COMMIT\"\n    triggers:\n      push:\n        branches: [main]\n    ghprb:\n      enabled: true\n      whitelisted_users: [friend]\n";

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
        first.log().contains("kubeci: this replica leads identity=")
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
    wait("the next kubeci to lead", || {
        next.log().contains("kubeci: this replica leads identity=")
    });
    wait("build 1's check run, from the next leader", || {
        !check_runs_of(&world.github, &head).is_empty()
    });
    let runs = check_runs_of(&world.github, &head);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].external_id, "default/hello/1");
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
        wait("kubeci to lead", || {
            kubeci
                .log()
                .contains("kubeci: this replica leads identity=")
        });
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
