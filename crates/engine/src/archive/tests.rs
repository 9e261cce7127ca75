use kubeci_build::{BuildRef, BuildRequest, PullRequest, Trigger};
use serde_json::json;

use super::*;
use crate::api::BuildFacts;
use crate::build::BuildState;
use crate::report::ReportRecord;

const T: i64 = 1_795_428_000;

fn facts(state: &BuildState) -> BuildFacts<'_> {
    BuildFacts {
        namespace: "ci",
        job: "web",
        number: 42,
        name: "web-42".into(),
        state,
        trigger: Some("pull-request".into()),
        requested_by: Some("alice".into()),
        commit: Some("4d7de2707d0240ba622e8f56097a34e57c61cb4d".into()),
        pull_request: Some(7),
        spec_hash: Some("abc123".into()),
        chart_version: Some("1.2.3".into()),
        reported: ReportRecord::parse(Some("github-checks:pending,running,check-run=9")).states(),
        pod: Some("web-42-xyz".into()),
        created_at: Some(T),
        started_at: Some(T + 5),
        finished_at: state.is_finished().then_some(T + 65),
        git_url: Some("https://user:token@github.com/o/r.git".into()),
        check_name: Some("kubeci/web".into()),
    }
}

fn request() -> BuildRequest {
    BuildRequest {
        number: 42,
        trigger: Trigger::PullRequest,
        commit: Some("4d7de2707d0240ba622e8f56097a34e57c61cb4d".into()),
        git_ref: Some("refs/pull/7/head".into()),
        branch: None,
        pull_request: Some(PullRequest {
            number: 7,
            author: Some("bob".into()),
            source_branch: Some("fix".into()),
            target_branch: Some("main".into()),
        }),
        requested_by: Some("alice".into()),
    }
}

fn every_state() -> Vec<BuildState> {
    vec![
        BuildState::Queued,
        BuildState::Pending { message: None },
        BuildState::Pending {
            message: Some("pulling the image".into()),
        },
        BuildState::Running,
        BuildState::Succeeded,
        BuildState::Failed {
            reason: "DeadlineExceeded".into(),
            message: "ran for 10m".into(),
        },
        BuildState::Error {
            reason: "CloneFailed".into(),
            message: "the clone step failed".into(),
        },
        BuildState::Aborted { by: None },
        BuildState::Aborted {
            by: Some("kubeci (superseded by build 43)".into()),
        },
    ]
}

#[test]
fn an_archived_build_shows_as_the_same_json_as_it_did_live() {
    let reported = ReportRecord::parse(Some("github-checks:pending,running,check-run=9"));
    let template =
        "https://logs.example/{namespace}/{pod}?job={job}&build={build}&from={start}&to={end}";
    for state in every_state() {
        for template in [None, Some(template)] {
            let live = BuildView::of(facts(&state), template);
            let record = ArchivedBuild::of(&facts(&state), &reported, request(), T + 70);
            // Written and read back as the archive does: JSON.
            let stored = serde_json::to_vec(&record).unwrap();
            let read: ArchivedBuild = serde_json::from_slice(&stored).unwrap();
            assert_eq!(read, record, "{state}");
            assert_eq!(
                serde_json::to_value(read.view(template)).unwrap(),
                serde_json::to_value(&live).unwrap(),
                "{state}, template {template:?}"
            );
            assert_eq!(read.build.state.state(), state, "every state reads back");
            // The index keeps the summary alone; a listing shows the same.
            let summary: ArchivedSummary =
                serde_json::from_value(serde_json::to_value(&read.build).unwrap()).unwrap();
            assert_eq!(summary.view("ci", "web", template), live, "{state}");
        }
    }
}

#[test]
fn an_archived_build_with_test_results_shows_their_counts_from_its_index_entry() {
    let record = ArchivedBuild::of(
        &facts(&BuildState::Failed {
            reason: "Error".into(),
            message: "exit 1".into(),
        }),
        &ReportRecord::default(),
        request(),
        T + 70,
    );
    let mut summary = record.build;
    assert_eq!(summary.view("ci", "web", None).tests, None, "none yet");
    let mut builder = kubeci_results::ResultsBuilder::new();
    for (name, outcome) in [
        ("a", kubeci_results::Outcome::Passed),
        ("b", kubeci_results::Outcome::Passed),
        ("c", kubeci_results::Outcome::Failed),
    ] {
        builder.case(kubeci_results::TestCase {
            classname: "pkg".into(),
            name: name.into(),
            outcome,
            ..Default::default()
        });
    }
    summary.tests = Some(kubeci_results::summarize(&builder.finish()));
    // As the index keeps it: JSON.
    let entry: ArchivedSummary =
        serde_json::from_value(serde_json::to_value(&summary).unwrap()).unwrap();
    let view = entry.view("ci", "web", None);
    let counts = view.tests.expect("its counts");
    assert_eq!((counts.passed, counts.failed), (2, 1));
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["tests"]["passed"], 2, "{json}");
    assert_eq!(json["tests"]["failed"], 1, "{json}");
}

#[test]
fn the_record_is_documented_json_with_credentials_hidden() {
    let state = BuildState::Aborted {
        by: Some("alice".into()),
    };
    let mut record = ArchivedBuild::of(&facts(&state), &ReportRecord::default(), request(), T + 70);
    record.complete = true;
    record.log = vec![
        ArchivedStep {
            name: "clone".into(),
            lines: 3,
            bytes: 120,
            incomplete: None,
        },
        ArchivedStep {
            name: "build".into(),
            lines: 1,
            bytes: 40,
            incomplete: Some("the pod was deleted before its log was read".into()),
        },
    ];
    assert_eq!(
        serde_json::to_value(&record).unwrap(),
        json!({
            "version": 1,
            "namespace": "ci",
            "job": "web",
            "complete": true,
            "number": 42,
            "name": "web-42",
            "state": {"phase": "aborted", "cancelled_by": "alice"},
            "trigger": "pull-request",
            "requested_by": "alice",
            "commit": "4d7de2707d0240ba622e8f56097a34e57c61cb4d",
            "pull_request": 7,
            "spec_hash": "abc123",
            "chart_version": "1.2.3",
            "reported": "",
            "pod": "web-42-xyz",
            "created_at": "2026-11-23T10:00:00Z",
            "started_at": "2026-11-23T10:00:05Z",
            "finished_at": "2026-11-23T10:01:05Z",
            "request": {
                "number": 42, "trigger": "pull-request",
                "commit": "4d7de2707d0240ba622e8f56097a34e57c61cb4d",
                "git_ref": "refs/pull/7/head", "branch": null,
                "pull_request": {"number": 7, "author": "bob",
                                 "source_branch": "fix", "target_branch": "main"},
                "requested_by": "alice"
            },
            "git_url": "https://***@github.com/o/r.git",
            "check_name": "kubeci/web",
            "archived_at": "2026-11-23T10:01:10Z",
            "log": [
                {"name": "clone", "lines": 3, "bytes": 120},
                {"name": "build", "lines": 1, "bytes": 40,
                 "incomplete": "the pod was deleted before its log was read"}
            ]
        })
    );
    assert_eq!(record.archived(), Archived::Complete);
}

#[test]
fn a_record_of_another_build_or_a_newer_kubeci_is_refused_for_what_it_is() {
    let state = BuildState::Succeeded;
    let record = ArchivedBuild::of(&facts(&state), &ReportRecord::default(), request(), T);
    let at = |number| BuildRef {
        namespace: "ci",
        job: "web",
        number,
    };
    assert_eq!(record.check(at(42)), Ok(()));
    let foreign = record.check(at(41)).unwrap_err();
    assert!(
        foreign.contains("record of build 42 of job ci/web, not of build 41"),
        "{foreign}"
    );
    let newer = ArchivedBuild {
        version: 2,
        ..record
    };
    let said = newer.check(at(42)).unwrap_err();
    assert!(
        said.contains("version 2") && said.contains("newer kubeci"),
        "{said}"
    );
    // Readers ignore fields they do not know.
    let mut value = serde_json::to_value(&newer).unwrap();
    value["coverage"] = json!({"lines": 0.8});
    assert!(serde_json::from_value::<ArchivedBuild>(value).is_ok());
}

#[test]
fn how_far_a_build_is_archived_reads_back_from_what_the_engines_write() {
    for archived in [Archived::First, Archived::Complete] {
        assert_eq!(Archived::parse(Some(archived.as_str())), archived);
    }
    for other in [None, Some(""), Some("yes"), Some("Complete")] {
        assert_eq!(Archived::parse(other), Archived::No, "{other:?}");
    }
    assert!(Archived::No < Archived::First && Archived::First < Archived::Complete);
}

#[test]
fn a_line_is_written_as_the_live_log_writes_it() {
    let at: jiff::Timestamp = "2026-11-30T07:33:35.120Z".parse().unwrap();
    let line = TimedLine {
        time: Some(at),
        text: b"make: all done".to_vec(),
    };
    assert_eq!(line.written(false), b"make: all done\n");
    assert_eq!(
        line.written(true),
        b"2026-11-30T07:33:35.12Z make: all done\n"
    );
    let untimed = TimedLine {
        time: None,
        text: b"\xffraw".to_vec(),
    };
    assert_eq!(untimed.written(true), b"\xffraw\n");
}

#[test]
fn a_step_begins_at_its_containers_first_line() {
    assert_eq!(step_of(b"==> clone: init container started"), Some("clone"));
    assert_eq!(step_of(b"==> build: container started"), Some("build"));
    assert_eq!(
        step_of("==> build: container started (/bin/bash -c …)".as_bytes()),
        Some("build"),
        "as the local engine writes it"
    );
    for not in [
        &b"==> build: container exited with code 1"[..],
        b"==> Build: container started",
        b"==> a/b: container started",
        b"==> build: container started (unclosed",
        b"==> build: container started later",
        b"build: container started",
        b"==> : container started",
        b"\xff",
    ] {
        assert_eq!(step_of(not), None, "{}", String::from_utf8_lossy(not));
    }
}
