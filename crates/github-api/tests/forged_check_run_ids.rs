//! A check run id read from a build's record (the `kubeci.io/reported` annotation of its
//! Job, which a tenant allowed to patch Jobs in its namespace can rewrite) is used only
//! once kubeci has confirmed with GitHub that it is this build's check run; each id once
//! per process. Against the fake GitHub over HTTP, as a GitHub App.

use std::sync::Arc;

use kubeci_engine::report::{CommitState, Report, ReportRecord, ReportTarget, Reported, Reporter};
use kubeci_engine::BuildState;
use kubeci_github_api::app::{App, AppKey};
use kubeci_github_api::{ChecksReporter, GitHubClient};
use kubeci_testkit::github::make_app_key;
use kubeci_testkit::FakeGitHub;

struct World {
    github: FakeGitHub,
    client: Arc<GitHubClient>,
    _dir: tempfile::TempDir,
}

/// The fake GitHub with kubeci's App installed on `victim`, and a client of the App.
async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("app.pem");
    let public_key = make_app_key(&key_file);
    let github = FakeGitHub::start_app(4242, public_key, "kubeci[bot]").await;
    github.install("victim", 11);
    let key = AppKey::from_pem(&std::fs::read(&key_file).unwrap()).unwrap();
    let client = GitHubClient::with_app(&github.url(), App { id: 4242, key }).unwrap();
    World {
        github,
        client: Arc::new(client),
        _dir: dir,
    }
}

/// Build 1 of `namespace/job`, of a pull request of `victim/repo`, shown as `context`.
fn target(namespace: &str, job: &str, context: &str) -> ReportTarget {
    ReportTarget {
        namespace: namespace.into(),
        job: job.into(),
        number: 1,
        build_name: format!("{job}-1"),
        trigger: Some("pull-request".into()),
        git_url: Some("https://github.com/victim/repo.git".into()),
        commit: Some("a".repeat(40)),
        pull_request: Some(7),
        url: format!("https://ci.example.com/jobs/{namespace}/{job}/builds/1"),
        context: Some(context.into()),
        created_at: Some(1_700_000_000),
        workdir: Some(String::new()),
        checkout_dir: Some("/workspace/src".into()),
    }
}

/// Reports `build` of `target` with `before` as its record; the check run id it used.
async fn report(
    checks: &ChecksReporter,
    target: &ReportTarget,
    build: &BuildState,
    before: &Reported,
) -> u64 {
    let state = match build {
        BuildState::Succeeded => CommitState::Success,
        BuildState::Failed { .. } => CommitState::Failure,
        _ => CommitState::Pending,
    };
    let report = Report {
        target,
        state,
        description: "a build",
        build,
        finished_at: Some(1_700_000_100),
        before,
        may_have_been_sent: false,
        log_tail: Some("the end of the log"),
        tests: None,
        known_flaky: &[],
    };
    let receipt = checks.report(&report).await.map_err(|e| e.message).unwrap();
    receipt.check_run.expect("a check run")
}

fn recorded(record: &str) -> Reported {
    ReportRecord::parse(Some(record)).of("github-checks")
}

fn failed() -> BuildState {
    BuildState::Failed {
        reason: "Error".into(),
        message: "tests failed".into(),
    }
}

fn reads_of(github: &FakeGitHub, id: u64) -> usize {
    let path = format!("/repos/victim/repo/check-runs/{id}");
    github
        .requests()
        .iter()
        .filter(|(method, p)| method == "GET" && *p == path)
        .count()
}

#[tokio::test]
async fn another_teams_check_run_id_written_into_a_tenants_own_record_is_not_updated() {
    let world = world().await;
    let checks = ChecksReporter::new(world.client.clone(), "github.com");
    // team-b's build of `deploy` fails: kubeci creates its check run `kubeci/deploy`.
    let victim = target("team-b", "deploy", "kubeci/deploy");
    let victim_id = report(&checks, &victim, &failed(), &Reported::default()).await;

    // team-a patches the record of its own build's Job (job `evil`, check `kubeci/evil`)
    // with team-b's check run id; kubeci reports that build's success.
    let mallory = target("team-a", "evil", "kubeci/evil");
    let forged = recorded(&format!("github-checks:pending,check-run={victim_id}"));
    let used = report(&checks, &mallory, &BuildState::Succeeded, &forged).await;

    let runs = world.github.check_runs();
    let deploy = runs.iter().find(|r| r.id == victim_id).unwrap();
    assert_eq!(
        deploy.history,
        ["completed:failure"],
        "team-b's check run changed"
    );
    assert_eq!(
        deploy.details_url,
        "https://ci.example.com/jobs/team-b/deploy/builds/1"
    );
    // team-a's build got its own check run, which its record will name from now on.
    assert_ne!(used, victim_id);
    let own = runs.iter().find(|r| r.id == used).unwrap();
    assert_eq!(
        (own.name.as_str(), own.external_id.as_str()),
        ("kubeci/evil", "team-a/evil/1")
    );
    assert_eq!(own.conclusion.as_deref(), Some("success"));
    assert_eq!(runs.len(), 2);
}

#[tokio::test]
async fn a_forged_id_does_not_hide_the_builds_own_check_run_nor_create_a_second_one() {
    let world = world().await;
    let checks = ChecksReporter::new(world.client.clone(), "github.com");
    let victim = target("team-b", "deploy", "kubeci/deploy");
    let victim_id = report(&checks, &victim, &failed(), &Reported::default()).await;
    let mallory = target("team-a", "evil", "kubeci/evil");
    let own = report(
        &checks,
        &mallory,
        &BuildState::Running,
        &Reported::default(),
    )
    .await;

    // The record of team-a's build named its own check run; it now names team-b's.
    let forged = recorded(&format!("github-checks:pending,check-run={victim_id}"));
    let used = report(&checks, &mallory, &BuildState::Succeeded, &forged).await;

    assert_eq!(used, own, "team-a's build is shown on its own check run");
    let runs = world.github.check_runs();
    assert_eq!(runs.len(), 2, "no second check run for team-a's build");
    let deploy = runs.iter().find(|r| r.id == victim_id).unwrap();
    assert_eq!(deploy.history, ["completed:failure"]);
    let evil = runs.iter().find(|r| r.id == own).unwrap();
    assert_eq!(evil.history, ["queued", "completed:success"]);
}

#[tokio::test]
async fn a_recorded_check_run_is_confirmed_once_then_updated_without_asking_again() {
    let world = world().await;
    let first = ChecksReporter::new(world.client.clone(), "github.com");
    let build = target("team-a", "app", "kubeci/app");
    let id = report(&first, &build, &BuildState::Running, &Reported::default()).await;
    let record = recorded(&format!("github-checks:pending,check-run={id}"));
    // Ids this reporter created need no confirmation.
    report(&first, &build, &BuildState::Running, &record).await;
    assert_eq!(reads_of(&world.github, id), 0);

    // A restarted kubeci (a new reporter) confirms the recorded id once, then trusts it.
    let restarted = ChecksReporter::new(world.client.clone(), "github.com");
    assert_eq!(
        report(&restarted, &build, &BuildState::Running, &record).await,
        id
    );
    assert_eq!(reads_of(&world.github, id), 1);
    assert_eq!(
        report(&restarted, &build, &BuildState::Succeeded, &record).await,
        id
    );
    assert_eq!(reads_of(&world.github, id), 1);

    let runs = world.github.check_runs();
    assert_eq!(
        runs.len(),
        1,
        "the recorded check run was updated, not replaced"
    );
    assert_eq!(runs[0].history, ["queued", "completed:success"]);
}

#[tokio::test]
async fn a_recorded_id_with_another_check_name_or_no_such_check_run_is_not_used() {
    let world = world().await;
    let checks = ChecksReporter::new(world.client.clone(), "github.com");
    // The same build once shown as `kubeci/old` (its job's context changed since).
    let old = target("team-a", "app", "kubeci/old");
    let old_id = report(&checks, &old, &BuildState::Running, &Reported::default()).await;
    let build = target("team-a", "app", "kubeci/app");
    let restarted = ChecksReporter::new(world.client.clone(), "github.com");
    let record = recorded(&format!("github-checks:pending,check-run={old_id}"));
    let used = report(&restarted, &build, &BuildState::Succeeded, &record).await;
    assert_ne!(used, old_id);
    // An id GitHub does not have (on this repository).
    let missing = recorded("github-checks:pending,check-run=999");
    let other = target("team-a", "other", "kubeci/other");
    let used_other = report(&restarted, &other, &BuildState::Succeeded, &missing).await;
    assert_ne!(used_other, 999);

    let runs = world.github.check_runs();
    let names: Vec<(&str, Option<&str>)> = runs
        .iter()
        .map(|r| (r.name.as_str(), r.conclusion.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("kubeci/old", None),
            ("kubeci/app", Some("success")),
            ("kubeci/other", Some("success"))
        ]
    );
}
