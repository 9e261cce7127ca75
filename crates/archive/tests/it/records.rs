//! Records: written whole, read back, and bad bytes named for the one build they concern.

use kubeci_archive::{Archive, ArchiveError, ArchiveUrl};
use serde::{Deserialize, Serialize};

use crate::common::{archive_over, build, stores};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    number: u64,
    state: String,
    reason: Option<String>,
}

fn record(number: u64, state: &str) -> Record {
    Record {
        number,
        state: state.to_owned(),
        reason: None,
    }
}

#[tokio::test]
async fn a_record_round_trips_and_an_absent_one_is_none() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        assert_eq!(
            archive.record::<Record>(build(7)).await.unwrap(),
            None,
            "{name}"
        );
        archive
            .put_record(build(7), &record(7, "running"))
            .await
            .unwrap();
        archive
            .put_record(build(7), &record(7, "succeeded"))
            .await
            .unwrap();
        assert_eq!(
            archive.record::<Record>(build(7)).await.unwrap(),
            Some(record(7, "succeeded")),
            "{name}: the later record replaces the first"
        );
        assert_eq!(
            store.keys("kubeci").await,
            ["kubeci/v1/jobs/ci/web/builds/7/record.json"],
            "{name}: one object, where the layout says"
        );
    }
}

#[tokio::test]
async fn a_cut_short_or_foreign_record_is_an_error_on_that_build_only() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive
            .put_record(build(1), &record(1, "succeeded"))
            .await
            .unwrap();
        let whole = serde_json::to_vec(&record(2, "failed")).unwrap();
        store
            .put_raw(
                "kubeci/v1/jobs/ci/web/builds/2/record.json",
                &whole[..whole.len() / 2],
            )
            .await;
        store
            .put_raw(
                "kubeci/v1/jobs/ci/web/builds/3/record.json",
                b"\x89PNG\r\n\x1a\n",
            )
            .await;
        for number in [2, 3] {
            let error = archive.record::<Record>(build(number)).await.unwrap_err();
            let key = format!("kubeci/v1/jobs/ci/web/builds/{number}/record.json");
            match &error {
                ArchiveError::Decode { key: named, .. } => assert_eq!(named, &key, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(
                error.to_string().contains("is not a build record"),
                "{error}"
            );
            assert!(!error.is_retryable(), "{name}: bad bytes stay bad");
        }
        assert_eq!(
            archive.record::<Record>(build(1)).await.unwrap(),
            Some(record(1, "succeeded")),
            "{name}: the other builds read as before"
        );
    }
}

#[tokio::test]
async fn a_record_or_chunk_larger_than_kubeci_writes_is_refused_unread() {
    // Valid JSON padded with a field readers ignore, just over the bound: before, each read
    // held the whole object (any size: a gigabyte another tool left there was a gigabyte
    // in kubeci per request for that build or that job's page).
    let padding = "x".repeat(kubeci_archive::MAX_JSON as usize);
    let padded = |json: &str| format!("{}, \"padding\": \"{padding}\"}}", &json[..json.len() - 1]);
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive
            .put_record(build(1), &record(1, "succeeded"))
            .await
            .unwrap();
        let record_key = "kubeci/v1/jobs/ci/web/builds/2/record.json";
        let json = serde_json::to_string(&record(2, "failed")).unwrap();
        store.put_raw(record_key, padded(&json).as_bytes()).await;
        let chunk_key = "kubeci/v1/jobs/ci/web/index/0.json";
        store
            .put_raw(
                "kubeci/v1/jobs/ci/web/head.json",
                br#"{"highest": 2, "lowest": 1}"#,
            )
            .await;
        store
            .put_raw(
                chunk_key,
                padded(r#"{"chunk": 0, "builds": []}"#).as_bytes(),
            )
            .await;
        let refused = [
            (
                record_key,
                archive.record::<Record>(build(2)).await.map(drop),
            ),
            (
                chunk_key,
                archive
                    .page::<Record>(crate::common::JOB, None, 50)
                    .await
                    .map(drop),
            ),
        ];
        for (key, read) in refused {
            match read {
                Err(error @ ArchiveError::TooLarge { .. }) => {
                    assert!(error.to_string().contains(key), "{name}: {error}");
                    assert!(!error.is_retryable(), "{name}");
                }
                other => panic!("{name}: {key}: {other:?}"),
            }
        }
        assert_eq!(
            archive.record::<Record>(build(1)).await.unwrap(),
            Some(record(1, "succeeded")),
            "{name}: the other builds read as before"
        );
    }
}

#[tokio::test]
async fn a_file_archive_is_made_where_its_url_points_in_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let url: ArchiveUrl = format!("file://{}", root.display()).parse().unwrap();
    let archive = Archive::open_with_env(&url, &[]).unwrap();
    archive
        .put_record(build(12), &record(12, "failed"))
        .await
        .unwrap();
    let on_disk = root.join("v1/jobs/ci/web/builds/12/record.json");
    let text = std::fs::read_to_string(&on_disk).unwrap();
    assert_eq!(
        serde_json::from_str::<Record>(&text).unwrap(),
        record(12, "failed"),
        "another tool reads the record as plain JSON at its documented path"
    );
    let reopened = Archive::open(&url).unwrap();
    assert_eq!(
        reopened.record::<Record>(build(12)).await.unwrap(),
        Some(record(12, "failed"))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&root).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the directory kubeci made is its user's alone: builds' logs are not everyone's"
    );
}

/// The engine runs archive calls on spawned tasks: every call's future is `Send`, and an
/// `Archive` is shared between tasks.
#[test]
fn an_archive_and_its_calls_can_cross_tasks() {
    fn send<T: Send>(_: &T) {}
    fn shared<T: Send + Sync>() {}
    shared::<Archive>();
    let archive = Archive::in_memory();
    let job = crate::common::JOB;
    send(&archive.put_record(build(1), &record(1, "running")));
    send(&archive.record::<Record>(build(1)));
    let lines = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        kubeci_archive::LogLine::untimed("x"),
    )]);
    send(&archive.put_log(build(1), "build", lines));
    send(&archive.log(build(1), "build", 0));
    send(&archive.add_to_index(job, &[crate::common::entry(1, "running")]));
    send(&archive.page::<String>(job, None, 50));
    send(&archive.highest(job));
    send(&archive.delete_build(build(1)));
    let retention = kubeci_archive::Retention::default();
    send(&archive.apply_retention(job, &retention, jiff::Timestamp::UNIX_EPOCH, 10));
}
