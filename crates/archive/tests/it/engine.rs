//! `Archive` as the engine's `BuildArchive`: a build's first record, then all of it (its
//! steps' logs, its final record, its index entry), written again without a second copy,
//! read back; a step whose pod was lost is kept as read and said so; a failure that may
//! pass commits nothing; an object that is not kubeci's is an error on its build only.

use futures_util::StreamExt;
use kubeci_archive::Archive;
use kubeci_build::BuildRequest;
use kubeci_engine::api::BuildFacts;
use kubeci_engine::archive::{
    ArchiveErrorKind, ArchivedBuild, BuildArchive, StepLines, StepLog, StepReadError, TimedLine,
};
use kubeci_engine::report::ReportRecord;
use kubeci_engine::BuildState;

use crate::common::{at, build, stores, JOB};

const T: i64 = 1_795_428_000;

fn record(number: u64, state: &BuildState) -> ArchivedBuild {
    let facts = BuildFacts {
        namespace: "ci",
        job: "web",
        number,
        name: format!("web-{number}"),
        state,
        trigger: Some("manual".into()),
        requested_by: Some("alice".into()),
        commit: None,
        pull_request: None,
        spec_hash: Some("abc".into()),
        chart_version: None,
        reported: Vec::new(),
        pod: Some(format!("web-{number}")),
        created_at: Some(T),
        started_at: Some(T + 1),
        finished_at: state.is_finished().then_some(T + 60),
        git_url: None,
        check_name: None,
    };
    let request = BuildRequest::manual(number);
    ArchivedBuild::of(&facts, &ReportRecord::default(), request, T + 61)
}

fn line(text: &str) -> TimedLine {
    TimedLine {
        time: Some(at("2026-12-01T10:00:00.5Z")),
        text: text.as_bytes().to_vec(),
    }
}

fn step(name: &str, lines: Vec<Result<TimedLine, StepReadError>>) -> StepLog {
    let lines: StepLines = Box::pin(futures_util::stream::iter(lines));
    StepLog {
        name: name.into(),
        lines,
        incomplete: None,
    }
}

fn two_steps() -> Vec<StepLog> {
    vec![
        step(
            "clone",
            vec![
                Ok(line("==> clone: init container started")),
                Ok(line("cloned")),
            ],
        ),
        step(
            "build",
            vec![
                Ok(line("==> build: container started")),
                Ok(TimedLine {
                    time: None,
                    text: b"\xffmake".to_vec(),
                }),
                Err(StepReadError::Lost("the pod is gone".into())),
                Ok(line("never read")),
            ],
        ),
    ]
}

async fn lines_of(archive: &dyn BuildArchive, number: u64, step: &str) -> Vec<TimedLine> {
    let lines = archive.step_log(build(number), step).await.unwrap();
    let lines = lines.expect("an archived step");
    lines.map(|line| line.unwrap()).collect().await
}

#[tokio::test]
async fn a_build_is_archived_first_then_whole_once_and_read_back() {
    for (name, store, _dir) in stores() {
        let archive = Archive::from_store(store.clone(), "kubeci");
        let archive: &dyn BuildArchive = &archive;
        let running = record(7, &BuildState::Running);
        archive.put_first(&running).await.unwrap();
        let first = archive.record(build(7)).await.unwrap().expect("{name}");
        assert!(!first.complete, "{name}");
        assert_eq!(archive.highest(JOB).await.unwrap(), Some(7), "{name}");

        let ended = record(7, &BuildState::Succeeded);
        for _ in 0..2 {
            let written = archive.put_complete(ended.clone(), two_steps()).await;
            let written = written.unwrap();
            assert!(written.complete);
            let read = archive.record(build(7)).await.unwrap().unwrap();
            assert_eq!(
                read, written,
                "{name}: the record read back is the one written"
            );
        }
        let read = archive.record(build(7)).await.unwrap().unwrap();
        let steps: Vec<_> = read
            .log
            .iter()
            .map(|s| (s.name.as_str(), s.lines, s.incomplete.as_deref()))
            .collect();
        assert_eq!(
            steps,
            [("clone", 2, None), ("build", 2, Some("the pod is gone"))],
            "{name}: a lost step is kept as read, and said so"
        );
        assert_eq!(
            lines_of(archive, 7, "build").await,
            [
                line("==> build: container started"),
                TimedLine {
                    time: None,
                    text: b"\xffmake".to_vec()
                }
            ],
            "{name}"
        );
        let page = archive.page(JOB, None, 50).await.unwrap();
        assert_eq!(
            page,
            std::slice::from_ref(&read.build),
            "{name}: one entry, the final one"
        );

        // A first record written late (a second leader) does not undo the final one.
        archive.put_first(&running).await.unwrap();
        let still = archive.record(build(7)).await.unwrap().unwrap();
        assert!(still.complete, "{name}");
        let entry = archive.page(JOB, None, 50).await.unwrap();
        assert_eq!(entry.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn a_failure_that_may_pass_commits_nothing_and_is_retryable() {
    for (name, store, _dir) in stores() {
        let archive = Archive::from_store(store.clone(), "kubeci");
        let archive: &dyn BuildArchive = &archive;
        archive
            .put_first(&record(3, &BuildState::Running))
            .await
            .unwrap();
        let steps = vec![step(
            "build",
            vec![
                Ok(line("a")),
                Err(StepReadError::Retry("the database is busy".into())),
            ],
        )];
        let error = archive
            .put_complete(record(3, &BuildState::Succeeded), steps)
            .await
            .unwrap_err();
        assert_eq!(error.kind, ArchiveErrorKind::Unavailable, "{name}: {error}");
        assert!(error.is_retryable());
        assert!(error.message.contains("the database is busy"), "{error}");
        let read = archive.record(build(3)).await.unwrap().unwrap();
        assert!(!read.complete, "{name}: still the first record");
        assert!(archive.step_log(build(3), "build").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn an_object_that_is_not_this_builds_is_an_error_on_that_build_only() {
    let dir = tempfile::tempdir().unwrap();
    let url: kubeci_archive::ArchiveUrl =
        format!("file://{}", dir.path().display()).parse().unwrap();
    let archive = Archive::open_with_env(&url, &[]).unwrap();
    let archive: &dyn BuildArchive = &archive;
    for number in [1, 2, 3] {
        let ended = record(number, &BuildState::Succeeded);
        archive.put_complete(ended, two_steps()).await.unwrap();
    }
    let builds = dir.path().join("v1/jobs/ci/web/builds");
    // Build 1's record cut short; build 2's record is build 3's; build 3's log cut short.
    let record_1 = builds.join("1/record.json");
    let bytes = std::fs::read(&record_1).unwrap();
    std::fs::write(&record_1, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(builds.join("3/record.json"), builds.join("2/record.json")).unwrap();
    let log_3 = builds.join("3/logs/build.log");
    let bytes = std::fs::read(&log_3).unwrap();
    std::fs::write(&log_3, &bytes[..bytes.len() - 3]).unwrap();

    let cut = archive.record(build(1)).await.unwrap_err();
    assert_eq!(cut.kind, ArchiveErrorKind::BadObject, "{cut}");
    assert!(
        cut.message.contains("v1/jobs/ci/web/builds/1/record.json"),
        "{cut}"
    );
    let foreign = archive.record(build(2)).await.unwrap_err();
    assert_eq!(foreign.kind, ArchiveErrorKind::BadObject, "{foreign}");
    assert!(foreign.message.contains("not of build 2"), "{foreign}");
    let mut log = archive.step_log(build(3), "build").await.unwrap().unwrap();
    let mut last = None;
    while let Some(line) = log.next().await {
        last = Some(line);
    }
    let error = last.unwrap().unwrap_err();
    assert_eq!(error.kind, ArchiveErrorKind::BadObject, "{error}");
    assert!(error.message.contains("cut short"), "{error}");
    // The listing and the other builds are untouched.
    assert_eq!(archive.page(JOB, None, 50).await.unwrap().len(), 3);
    assert!(archive.record(build(3)).await.unwrap().unwrap().complete);
}

#[tokio::test]
async fn a_long_log_is_served_whole_as_it_was_written() {
    let (_, store, _dir) = stores().remove(0);
    let archive = std::sync::Arc::new(Archive::from_store(store, "kubeci"));
    let text = |i: u64| format!("a line of a long build log, number {i}");
    let count = 150_000;
    let lines: Vec<Result<TimedLine, StepReadError>> = (0..count)
        .map(|i| {
            Ok(TimedLine {
                time: Some(
                    jiff::Timestamp::from_nanosecond(
                        1_795_428_000_000_000_000 + i128::from(i) * 1_000,
                    )
                    .unwrap(),
                ),
                text: text(i).into_bytes(),
            })
        })
        .collect();
    let written = archive
        .put_complete(
            record(9, &BuildState::Succeeded),
            vec![step("build", lines)],
        )
        .await
        .unwrap();
    for timestamps in [false, true] {
        let mut served = Vec::new();
        let mut log =
            kubeci_engine::archive::build_log(archive.clone(), written.clone(), timestamps);
        while let Some(chunk) = log.next().await {
            served.extend(chunk.unwrap());
        }
        let served = String::from_utf8(served).unwrap();
        assert_eq!(
            served.lines().count(),
            count as usize,
            "timestamps: {timestamps}"
        );
        let last = served.lines().last().unwrap();
        assert!(last.ends_with(&text(count - 1)), "{last}");
    }
}

#[tokio::test]
async fn a_name_that_cannot_be_a_key_names_nothing_archived() {
    let archive = Archive::in_memory();
    let archive: &dyn BuildArchive = &archive;
    let odd = kubeci_build::BuildRef {
        namespace: "ci",
        job: "a/b\u{b}",
        number: 1,
    };
    assert_eq!(archive.record(odd).await.unwrap(), None);
    let job = kubeci_build::JobRef {
        namespace: "æ",
        job: "web",
    };
    assert!(archive.page(job, None, 10).await.unwrap().is_empty());
    assert_eq!(archive.highest(job).await.unwrap(), None);
    assert!(archive.step_log(odd, "build").await.unwrap().is_none());
}
