//! A build's test results on GitHub, against the fake GitHub over HTTP with the production
//! client: a check run ends with the counts in its title and summary and one annotation per
//! failed test with a file in the repository — at most fifty to a request, each once, also
//! when a report is sent again after a batch failed — and a commit status says the counts.

use std::collections::BTreeSet;
use std::sync::Arc;

use kubeci_engine::report::{CommitState, Report, ReportTarget, Reported, Reporter};
use kubeci_engine::BuildState;
use kubeci_github_api::app::{App, AppKey};
use kubeci_github_api::{ChecksReporter, GitHubClient, GitHubReporter};
use kubeci_results::{Outcome, ResultsBuilder, TestCase, TestResults};
use kubeci_testkit::github::{make_app_key, FakeCheckRun};
use kubeci_testkit::FakeGitHub;

/// The fake GitHub with kubeci's App installed on `owner`, and a client of the App.
async fn app_world() -> (FakeGitHub, Arc<GitHubClient>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("app.pem");
    let public_key = make_app_key(&key_file);
    let github = FakeGitHub::start_app(4242, public_key, "kubeci[bot]").await;
    github.install("owner", 11);
    let key = AppKey::from_pem(&std::fs::read(&key_file).unwrap()).unwrap();
    let client = GitHubClient::with_app(&github.url(), App { id: 4242, key }).unwrap();
    (github, Arc::new(client), dir)
}

/// Build 1 of `team/app`, of a pull request of `owner/repo`, its job running in `backend`.
fn target() -> ReportTarget {
    ReportTarget {
        namespace: "team".into(),
        job: "app".into(),
        number: 1,
        build_name: "app-1".into(),
        trigger: Some("pull-request".into()),
        git_url: Some("https://github.com/owner/repo.git".into()),
        commit: Some("a".repeat(40)),
        pull_request: Some(7),
        url: "https://ci.example.com/jobs/team/app/builds/1".into(),
        context: Some("kubeci/app".into()),
        created_at: Some(1_700_000_000),
        workdir: Some("backend".into()),
        checkout_dir: Some("/workspace/src".into()),
    }
}

/// 300 passed, 4 skipped and 120 failed: 100 name their file relative to the workdir, 10
/// absolute in the pod, 5 none, 5 a file outside the repository.
fn results() -> TestResults {
    let mut builder = ResultsBuilder::new();
    let case = |name: String, outcome| TestCase {
        classname: "tests.suite".into(),
        name,
        outcome,
        ..TestCase::default()
    };
    for n in 0..300 {
        builder.case(case(format!("ok_{n}"), Outcome::Passed));
    }
    for n in 0..4 {
        builder.case(case(format!("skipped_{n}"), Outcome::Skipped));
    }
    for n in 0..120 {
        let file = match n {
            0..100 => Some(format!("tests/test_{n}.py")),
            100..110 => Some(format!("/workspace/src/backend/tests/test_{n}.py")),
            110..115 => None,
            _ => Some(format!("/usr/lib/python3/site-packages/lib_{n}.py")),
        };
        builder.case(TestCase {
            message: Some(format!("assert {n} == 0")),
            details: Some(format!("Traceback\n  File \"tests/test_{n}.py\", line {n}")),
            output: Some(format!("output of {n}")),
            file,
            line: Some(n + 1),
            ..case(format!("test_{n}"), Outcome::Failed)
        });
    }
    builder.finish()
}

fn failed() -> BuildState {
    BuildState::Failed {
        reason: "Error".into(),
        message: "tests failed".into(),
    }
}

fn report<'a>(
    target: &'a ReportTarget,
    state: CommitState,
    build: &'a BuildState,
    before: &'a Reported,
    may_have_been_sent: bool,
    tests: Option<&'a TestResults>,
) -> Report<'a> {
    Report {
        target,
        state,
        description: "Build failed: tests failed",
        build,
        finished_at: Some(1_700_000_100),
        before,
        may_have_been_sent,
        log_tail: Some("the end of the log"),
        tests,
        known_flaky: &[],
    }
}

/// The 110 failed tests with a file in the repository: their ids.
fn annotated_ids() -> BTreeSet<String> {
    (0..110).map(|n| format!("tests.suite::test_{n}")).collect()
}

/// Every annotation once, each request with at most fifty, every path in the repository.
fn assert_annotated_once(run: &FakeCheckRun) {
    assert!(
        run.annotation_requests.iter().all(|n| *n <= 50),
        "{:?}",
        run.annotation_requests
    );
    let titles: Vec<String> = run
        .annotations
        .iter()
        .map(|a| a["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles.len(), 110, "each annotation once");
    assert_eq!(
        titles.iter().cloned().collect::<BTreeSet<_>>(),
        annotated_ids()
    );
    for annotation in &run.annotations {
        let title = annotation["title"].as_str().unwrap();
        let n: u32 = title.rsplit('_').next().unwrap().parse().unwrap();
        assert_eq!(
            annotation["path"],
            format!("backend/tests/test_{n}.py"),
            "{annotation}"
        );
        assert_eq!(annotation["start_line"], n + 1);
        assert_eq!(annotation["annotation_level"], "failure");
        assert_eq!(
            annotation["message"],
            format!("assert {n} == 0\n\nTraceback\n  File \"tests/test_{n}.py\", line {n}")
        );
        assert_eq!(annotation["raw_details"], format!("output of {n}"));
    }
}

#[tokio::test]
async fn a_build_with_120_failed_tests_ends_its_check_run_with_each_annotation_once() {
    let (github, client, _dir) = app_world().await;
    let checks = ChecksReporter::new(client, "github.com");
    let target = target();
    let nothing = Reported::default();
    let queued = report(
        &target,
        CommitState::Pending,
        &BuildState::Queued,
        &nothing,
        false,
        None,
    );
    let id = checks.report(&queued).await.unwrap().check_run.unwrap();
    let results = results();
    let before = Reported {
        states: vec![CommitState::Pending],
        check_run: Some(id),
    };
    let build = failed();
    let end = report(
        &target,
        CommitState::Failure,
        &build,
        &before,
        false,
        Some(&results),
    );
    checks.report(&end).await.map_err(|e| e.message).unwrap();

    let runs = github.check_runs();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_eq!(
        run.output["title"],
        "Failed in 1m 40s: 300 passed, 120 failed, 4 skipped"
    );
    let summary = run.output["summary"].as_str().unwrap();
    assert!(summary.contains("| 300 | 120 | 0 | 0 | 4 |"), "{summary}");
    assert!(summary.contains("110 failed tests are marked on their line"));
    assert!(summary.contains("the end of the log"));
    assert_eq!(
        run.annotation_requests,
        [50, 50, 10],
        "the first fifty with the end"
    );
    assert_annotated_once(run);
}

#[tokio::test]
async fn a_report_sent_again_after_a_batch_failed_adds_only_the_annotations_github_lacks() {
    let (github, client, _dir) = app_world().await;
    let checks = ChecksReporter::new(client, "github.com");
    let target = target();
    let nothing = Reported::default();
    let queued = report(
        &target,
        CommitState::Pending,
        &BuildState::Queued,
        &nothing,
        false,
        None,
    );
    let id = checks.report(&queued).await.unwrap().check_run.unwrap();
    let results = results();
    let before = Reported {
        states: vec![CommitState::Pending],
        check_run: Some(id),
    };
    let build = failed();

    // The end and the next fifty reach GitHub; the last ten get a 502.
    github.serve_next(2);
    github.fail_next(1, 502, &[]);
    let end = report(
        &target,
        CommitState::Failure,
        &build,
        &before,
        false,
        Some(&results),
    );
    let error = checks.report(&end).await.unwrap_err();
    assert!(error.retryable, "{}", error.message);
    assert_eq!(github.check_runs()[0].annotations.len(), 100);

    // The scheduler sends it again, as a report that may have been sent.
    let again = report(
        &target,
        CommitState::Failure,
        &build,
        &before,
        true,
        Some(&results),
    );
    checks.report(&again).await.map_err(|e| e.message).unwrap();
    let run = &github.check_runs()[0];
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    assert_annotated_once(run);
    // Once more (its record was lost): GitHub has them all, nothing is added.
    checks.report(&again).await.map_err(|e| e.message).unwrap();
    assert_annotated_once(&github.check_runs()[0]);
}

#[tokio::test]
async fn a_commit_status_says_the_counts() {
    let github = FakeGitHub::start("t0ken", "kubeci-bot").await;
    let client = GitHubClient::new(&github.url(), Some("t0ken".into())).unwrap();
    let statuses = GitHubReporter::new(Arc::new(client), "github.com");
    let target = target();
    let nothing = Reported::default();
    let results = results();
    let build = failed();
    let end = report(
        &target,
        CommitState::Failure,
        &build,
        &nothing,
        false,
        Some(&results),
    );
    statuses.report(&end).await.map_err(|e| e.message).unwrap();
    let posted = github.statuses();
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].description,
        "Build failed: 300 passed, 120 failed, 4 skipped · tests failed"
    );
}
