//! What a build leaves besides its log: its files streamed in and out whole or not at all,
//! within their limit, under the build (and deleted with it); its test results and
//! outputs; and its record and index entry saying what it left.

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use kubeci_archive::{Archive, ArchiveError, PART_SIZE};
use kubeci_build::BuildRequest;
use kubeci_engine::api::BuildFacts;
use kubeci_engine::archive::{ArchivedBuild, BuildArchive, FileChunks, FileKind, StepReadError};
use kubeci_engine::report::ReportRecord;
use kubeci_engine::BuildState;
use kubeci_results::{ArtifactFile, BuildOutputs, Outcome, RefusedFile, ResultsBuilder, TestCase};

use crate::common::{archive_over, build, stores, JOB};

/// `size` bytes of a pattern that shows a piece out of place, in pieces of `piece`.
fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn pieces(bytes: &[u8], piece: usize) -> Vec<Result<Bytes, std::io::Error>> {
    bytes
        .chunks(piece)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

async fn read_back(archive: &Archive, number: u64, path: &str) -> Option<Vec<u8>> {
    let (size, mut bytes) = archive.file(build(number), path).await.unwrap()?;
    let mut whole = Vec::new();
    while let Some(piece) = bytes.next().await {
        whole.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(size, whole.len() as u64);
    Some(whole)
}

#[tokio::test]
async fn a_file_larger_than_a_part_is_streamed_in_parts_and_read_back_whole() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let bytes = pattern(2 * PART_SIZE + 12_345);
        let given = stream::iter(pieces(&bytes, 64 * 1024));
        let written = archive
            .put_file(build(3), "dist/app v1.tar.gz", given, u64::MAX)
            .await
            .unwrap();
        assert_eq!(written, bytes.len() as u64, "{name}");
        let seen = store.take();
        assert!(seen.largest_part <= PART_SIZE, "{name}: {seen:?}");
        assert_eq!(
            read_back(&archive, 3, "dist/app v1.tar.gz")
                .await
                .as_deref(),
            Some(&bytes[..]),
            "{name}"
        );
        assert_eq!(read_back(&archive, 3, "dist/other").await, None, "{name}");
        assert_eq!(read_back(&archive, 4, "dist/app v1.tar.gz").await, None);
    }
}

#[tokio::test]
async fn a_file_past_its_limit_or_whose_source_fails_leaves_nothing() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let bytes = pattern(PART_SIZE + 10);
        let given = stream::iter(pieces(&bytes, 1024 * 1024));
        let error = archive
            .put_file(build(3), "big.bin", given, PART_SIZE as u64)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ArchiveError::FileOverLimit { .. }),
            "{name}: {error:?}"
        );
        assert!(!error.is_retryable(), "{name}: {error}");
        assert!(error.to_string().contains("big.bin"), "{error}");
        assert_eq!(read_back(&archive, 3, "big.bin").await, None, "{name}");

        let mut failing = pieces(&bytes[..1000], 100);
        failing.push(Err(std::io::Error::other("the pod went away")));
        let error = archive
            .put_file(build(3), "cut.bin", stream::iter(failing), u64::MAX)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("the pod went away"), "{error}");
        assert_eq!(read_back(&archive, 3, "cut.bin").await, None, "{name}");
    }
}

#[tokio::test]
async fn a_file_is_kept_under_its_build_whatever_its_name() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        for path in ["reports/ünïcode 100%.txt", "a/b/c/[x]#1?.log"] {
            let given = stream::iter(pieces(path.as_bytes(), 3));
            archive
                .put_file(build(5), path, given, u64::MAX)
                .await
                .unwrap();
            assert_eq!(
                read_back(&archive, 5, path).await.as_deref(),
                Some(path.as_bytes()),
                "{name}: {path}"
            );
        }
        for path in ["../6/record.json", "/etc/passwd", "a/./b", ""] {
            let given = stream::iter(pieces(b"x", 1));
            let error = archive
                .put_file(build(5), path, given, u64::MAX)
                .await
                .unwrap_err();
            assert!(
                matches!(error, ArchiveError::Name { .. }),
                "{name}: {path:?}: {error:?}"
            );
        }
        let keys = store.keys("").await;
        assert!(
            keys.iter()
                .all(|k| k.starts_with("kubeci/v1/jobs/ci/web/builds/5/artifacts/")),
            "{name}: {keys:#?}"
        );
    }
}

fn results() -> kubeci_results::TestResults {
    let mut builder = ResultsBuilder::new();
    for (n, outcome) in [Outcome::Passed, Outcome::Failed, Outcome::Skipped]
        .into_iter()
        .enumerate()
    {
        builder.case(TestCase {
            classname: "tests.test_app".into(),
            name: format!("test_{n}"),
            outcome,
            message: (outcome == Outcome::Failed).then(|| "assert 1 == 2".into()),
            ..TestCase::default()
        });
    }
    builder.finish()
}

fn outputs(tests: &kubeci_results::TestResults) -> BuildOutputs {
    BuildOutputs {
        tests: Some(kubeci_results::summarize(tests)),
        artifacts: vec![ArtifactFile {
            path: "dist/app.tar.gz".into(),
            size: 3,
        }],
        refused: vec![RefusedFile {
            path: "dist/link".into(),
            why: "a link out of the workspace".into(),
        }],
        ..BuildOutputs::new()
    }
}

fn ended(number: u64) -> ArchivedBuild {
    let state = BuildState::Failed {
        reason: "Error".into(),
        message: "exit 1".into(),
    };
    let facts = BuildFacts {
        namespace: "ci",
        job: "web",
        number,
        name: format!("web-{number}"),
        state: &state,
        trigger: Some("manual".into()),
        requested_by: None,
        commit: None,
        pull_request: None,
        spec_hash: None,
        chart_version: None,
        reported: Vec::new(),
        pod: None,
        created_at: Some(1_795_428_000),
        started_at: Some(1_795_428_001),
        finished_at: Some(1_795_428_060),
        git_url: None,
        check_name: None,
    };
    let request = BuildRequest::manual(number);
    ArchivedBuild::of(&facts, &ReportRecord::default(), request, 1_795_428_061)
}

#[tokio::test]
async fn what_a_build_left_is_in_its_record_and_index_entry_and_goes_with_it() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let tests = results();
        let outputs = outputs(&tests);
        let bytes: FileChunks = Box::pin(stream::iter([Ok::<_, StepReadError>(
            Bytes::from_static(b"tgz"),
        )]));
        BuildArchive::put_file(&archive, build(9), "dist/app.tar.gz", bytes, 10)
            .await
            .unwrap();
        BuildArchive::put_outputs(&archive, build(9), Some(&tests), &outputs)
            .await
            .unwrap();
        let seen = store.take();
        let written: Vec<&str> = seen.puts.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            written.last().unwrap().ends_with("/builds/9/outputs.json"),
            "outputs.json is written last, once the rest is: {written:?}"
        );

        assert_eq!(
            BuildArchive::tests(&archive, build(9)).await.unwrap(),
            Some(tests.clone())
        );
        let back = BuildArchive::outputs(&archive, build(9)).await.unwrap();
        assert_eq!(back, Some(outputs.clone()), "{name}");
        assert_eq!(
            BuildArchive::outputs(&archive, build(8)).await.unwrap(),
            None
        );

        let record = archive.put_complete(ended(9), Vec::new()).await.unwrap();
        assert_eq!(record.build.tests, outputs.tests, "{name}");
        assert_eq!(record.build.artifacts, 1, "{name}");
        let page = BuildArchive::page(&archive, JOB, None, 10).await.unwrap();
        let failed = page[0].tests.as_ref().map(|t| t.failed().to_vec());
        assert_eq!(
            failed,
            Some(vec!["tests.test_app::test_1".to_owned()]),
            "{name}"
        );

        archive.delete_build(build(9)).await.unwrap();
        assert_eq!(
            read_back(&archive, 9, "dist/app.tar.gz").await,
            None,
            "{name}"
        );
        assert_eq!(BuildArchive::tests(&archive, build(9)).await.unwrap(), None);
        assert!(store
            .keys("kubeci/v1/jobs/ci/web/builds/9/")
            .await
            .is_empty());
    }
}

/// A build pod's test reports are kept raw beside its artifacts, and a build's files of
/// each kind are listed back with their sizes — names with characters stores avoid
/// included, a kind's files only, one build's only.
#[tokio::test]
async fn reports_are_kept_as_sent_and_each_kind_is_listed_back_with_its_sizes() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let put = |number: u64, path: &'static str, bytes: &'static [u8], report: bool| {
            let archive = &archive;
            async move {
                let given = stream::iter(pieces(bytes, 4));
                if report {
                    let kind = FileKind::Report;
                    archive
                        .put_staged(build(number), kind, path, given, 100)
                        .await
                        .unwrap();
                    let staged = archive.list_staged(build(number), 10).await.unwrap();
                    let this = staged.iter().find(|s| s.path == path && s.kind == kind);
                    archive
                        .take_staged(build(number), this.unwrap())
                        .await
                        .unwrap();
                } else {
                    archive
                        .put_file(build(number), path, given, 100)
                        .await
                        .unwrap();
                }
            }
        };
        put(3, "app/junit-unit.xml", b"<testsuite/>", true).await;
        put(3, "odd #[name]%41.xml", b"<x/>", true).await;
        put(3, "dist/app.tar.gz", b"tarball", false).await;
        put(4, "other.xml", b"<y/>", true).await;
        let reports = archive.list_files(build(3), "reports", 100).await.unwrap();
        assert_eq!(
            reports,
            [
                ("app/junit-unit.xml".to_owned(), 12),
                ("odd #[name]%41.xml".to_owned(), 4)
            ],
            "{name}"
        );
        let artifacts = archive
            .list_files(build(3), "artifacts", 100)
            .await
            .unwrap();
        assert_eq!(artifacts, [("dist/app.tar.gz".to_owned(), 7)], "{name}");
        assert_eq!(
            archive
                .list_files(build(3), "reports", 1)
                .await
                .unwrap()
                .len(),
            1,
            "{name}: at most as many as asked"
        );
        let (size, mut bytes) = archive
            .report(build(3), "odd #[name]%41.xml")
            .await
            .unwrap()
            .unwrap();
        let mut read = Vec::new();
        while let Some(piece) = bytes.next().await {
            read.extend_from_slice(&piece.unwrap());
        }
        assert_eq!((size, read.as_slice()), (4, &b"<x/>"[..]), "{name}");
        assert!(archive
            .report(build(3), "dist/app.tar.gz")
            .await
            .unwrap()
            .is_none());
        assert!(archive
            .report(build(3), "../artifacts/dist/app.tar.gz")
            .await
            .is_err());
    }
}
