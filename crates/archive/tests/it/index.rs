//! Each job's index: idempotent, safe under racing writers, paged without listings, and
//! what retention and deletion leave.

use std::sync::Arc;

use futures_util::stream;
use kubeci_archive::{Archive, ArchiveError, IndexEntry, LogLine, Retention};

use crate::common::{archive_over, at, build, entry, stores, Recording, JOB};

fn numbers(page: &[IndexEntry<String>]) -> Vec<u64> {
    page.iter().map(|e| e.number).collect()
}

async fn page(archive: &Archive, before: Option<u64>, limit: usize) -> Vec<IndexEntry<String>> {
    archive.page(JOB, before, limit).await.unwrap()
}

#[tokio::test]
async fn adding_the_same_build_twice_leaves_one_entry_the_later_one() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive
            .add_to_index(JOB, &[entry(7, "running")])
            .await
            .unwrap();
        archive
            .add_to_index(JOB, &[entry(7, "failed"), entry(8, "running")])
            .await
            .unwrap();
        archive
            .add_to_index(JOB, &[entry(7, "failed")])
            .await
            .unwrap();
        let listed = page(&archive, None, 50).await;
        assert_eq!(numbers(&listed), [8, 7], "{name}");
        assert_eq!(listed[1].summary, "failed", "{name}");
        assert_eq!(archive.highest(JOB).await.unwrap(), Some(8), "{name}");
    }
}

#[tokio::test]
async fn a_page_of_10000_builds_reads_the_head_and_a_chunk_or_two_and_lists_nothing() {
    let store = Recording::over(Arc::new(object_store::memory::InMemory::new()));
    let archive = archive_over(&store);
    let all: Vec<_> = (1..=10_000).map(|n| entry(n, "succeeded")).collect();
    for batch in all.chunks(1_000) {
        archive.add_to_index(JOB, batch).await.unwrap();
    }
    store.take();
    let first = page(&archive, None, 50).await;
    assert_eq!(numbers(&first), (9951..=10_000).rev().collect::<Vec<_>>());
    let seen = store.take();
    assert_eq!(seen.lists, 0);
    assert_eq!(
        seen.gets
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        [
            "kubeci/v1/jobs/ci/web/head.json",
            "kubeci/v1/jobs/ci/web/index/100.json",
            "kubeci/v1/jobs/ci/web/index/99.json"
        ]
    );
    let second = page(&archive, Some(9951), 50).await;
    assert_eq!(numbers(&second), (9901..=9950).rev().collect::<Vec<_>>());
    assert_eq!(store.take().gets.len(), 2, "the head and chunk 99");
    let last = page(&archive, Some(30), 50).await;
    assert_eq!(numbers(&last), (1..=29).rev().collect::<Vec<_>>());
    assert!(page(&archive, Some(1), 50).await.is_empty());
}

#[tokio::test]
async fn racing_writers_on_a_store_with_conditional_writes_lose_no_entries() {
    // Two replicas (two `Archive`s, so no lock in common) over one store; each read
    // yields, so both read each object before either writes it back: first a job with no
    // index yet (both create its objects), then one whose objects both update.
    let mut racing = Recording::new(Arc::new(object_store::memory::InMemory::new()));
    racing.yield_on_read = true;
    let store = Arc::new(racing);
    let (one, two) = (archive_over(&store), archive_over(&store));
    for (existing, added, raced, listed) in [
        (vec![], [1, 2], "head.json", vec![2, 1]),
        (
            vec![entry(0, "first"), entry(5, "first")],
            [3, 4],
            "index/0.json",
            vec![5, 4, 3, 2, 1, 0],
        ),
    ] {
        one.add_to_index(JOB, &existing).await.unwrap();
        store.take();
        let (from_one, from_two) = ([entry(added[0], "one")], [entry(added[1], "two")]);
        let (a, b) = tokio::join!(
            one.add_to_index(JOB, &from_one),
            two.add_to_index(JOB, &from_two),
        );
        a.unwrap();
        b.unwrap();
        let seen = store.take();
        assert_eq!(
            seen.most_updating
                .get(&format!("kubeci/v1/jobs/ci/web/{raced}")),
            Some(&2),
            "the writers did race on {raced}"
        );
        assert_eq!(numbers(&page(&two, None, 50).await), listed);
    }
    assert_eq!(one.highest(JOB).await.unwrap(), Some(5));
}

#[tokio::test]
async fn without_conditional_writes_one_process_updates_a_job_one_writer_at_a_time() {
    let mut plain = Recording::new(Arc::new(object_store::memory::InMemory::new()));
    plain.yield_on_read = true;
    plain.refuse_conditional = true;
    let store = Arc::new(plain);
    let archive = archive_over(&store);
    let adds = (1..=5).map(|n| {
        let entry = entry(n, "succeeded");
        let archive = &archive;
        async move { archive.add_to_index(JOB, &[entry]).await }
    });
    for added in futures_util::future::join_all(adds).await {
        added.unwrap();
    }
    let seen = store.take();
    assert!(
        seen.most_updating.values().all(|n| *n == 1),
        "one writer between a read and its write: {:?}",
        seen.most_updating
    );
    assert_eq!(numbers(&page(&archive, None, 50).await), [5, 4, 3, 2, 1]);
}

async fn archive_build(archive: &Archive, number: u64) {
    let line = LogLine::new(at("2026-12-01T10:01:00Z"), "ok");
    let log = stream::iter([Ok::<_, std::convert::Infallible>(line)]);
    archive.put_log(build(number), "build", log).await.unwrap();
    archive.put_record(build(number), &number).await.unwrap();
    archive
        .add_to_index(JOB, &[entry(number, "succeeded")])
        .await
        .unwrap();
}

#[tokio::test]
async fn retention_deletes_the_old_builds_files_and_entries_and_numbers_stay_taken() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        // One build per index chunk: 100, 200, … 1000.
        for number in (1..=10).map(|n| n * 100) {
            archive_build(&archive, number).await;
        }
        let keep_three = Retention {
            max_count: Some(3),
            ..Retention::default()
        };
        let now = at("2026-12-02T00:00:00Z");
        assert_eq!(
            archive
                .apply_retention(JOB, &keep_three, now, 4)
                .await
                .unwrap(),
            [100, 200, 300, 400],
            "{name}: a batch, oldest first"
        );
        assert_eq!(
            archive
                .apply_retention(JOB, &keep_three, now, 4)
                .await
                .unwrap(),
            [500, 600, 700],
            "{name}"
        );
        assert!(archive
            .apply_retention(JOB, &keep_three, now, 4)
            .await
            .unwrap()
            .is_empty());
        let keys = store.keys("kubeci/v1/jobs/ci/web/builds").await;
        assert_eq!(
            keys.len(),
            6,
            "{name}: a record and a log for each of the newest three: {keys:?}"
        );
        assert!(keys
            .iter()
            .all(|k| ["/800/", "/900/", "/1000/"].iter().any(|n| k.contains(n))));
        assert_eq!(
            archive.record::<u64>(build(400)).await.unwrap(),
            None,
            "{name}"
        );
        assert!(
            archive.log(build(400), "build", 0).await.unwrap().is_none(),
            "{name}"
        );
        store.take();
        assert_eq!(
            numbers(&page(&archive, None, 50).await),
            [1000, 900, 800],
            "{name}"
        );
        assert_eq!(
            store.take().gets.len(),
            4,
            "{name}: the head and the chunks of the builds kept, not the emptied ones below"
        );

        let keep_none = Retention {
            max_age: Some(std::time::Duration::from_secs(60)),
            ..Retention::default()
        };
        archive
            .apply_retention(JOB, &keep_none, now, 100)
            .await
            .unwrap();
        assert!(page(&archive, None, 50).await.is_empty(), "{name}");
        assert_eq!(
            archive.highest(JOB).await.unwrap(),
            Some(1000),
            "{name}: with every build gone, 1000 is still the highest number given"
        );
        archive
            .add_to_index(JOB, &[entry(1001, "running")])
            .await
            .unwrap();
        assert_eq!(numbers(&page(&archive, None, 50).await), [1001], "{name}");
    }
}

#[tokio::test]
async fn deleting_a_build_twice_is_no_error_and_leaves_nothing_of_it() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive_build(&archive, 1).await;
        archive_build(&archive, 2).await;
        archive.delete_build(build(2)).await.unwrap();
        archive.delete_build(build(2)).await.unwrap();
        assert_eq!(numbers(&page(&archive, None, 50).await), [1], "{name}");
        assert_eq!(
            archive.record::<u64>(build(2)).await.unwrap(),
            None,
            "{name}"
        );
        assert!(
            store
                .keys("kubeci/v1/jobs/ci/web/builds/2")
                .await
                .is_empty(),
            "{name}"
        );
        assert_eq!(archive.highest(JOB).await.unwrap(), Some(2), "{name}");
    }
}

#[tokio::test]
async fn a_foreign_index_chunk_is_an_error_naming_it() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive
            .add_to_index(JOB, &[entry(1, "succeeded")])
            .await
            .unwrap();
        store
            .put_raw("kubeci/v1/jobs/ci/web/index/0.json", b"[1, 2, 3]")
            .await;
        let error = archive.page::<String>(JOB, None, 50).await.unwrap_err();
        assert!(
            matches!(&error, ArchiveError::Decode { key, .. } if key == "kubeci/v1/jobs/ci/web/index/0.json"),
            "{name}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_job_numbered_far_ahead_is_paged_and_kept_in_reads_bounded_by_its_objects() {
    // Whoever may write a job's ledger Lease or create a Job labelled as its build (a
    // tenant in its own namespace) can number a build far ahead: 1 and then 10,000,001
    // here, u64::MAX as well. Reading each chunk of the gap was one read per hundred
    // numbers skipped (100,000 here; without end near u64::MAX), in every page of the
    // job — its API, its page, the jobs page — and in the leader's retention.
    let far = 10_000_001;
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        for number in [1, 2, far] {
            archive_build(&archive, number).await;
        }
        store.take();
        assert_eq!(
            numbers(&page(&archive, None, 50).await),
            [far, 2, 1],
            "{name}"
        );
        let seen = store.take();
        assert!(
            seen.gets.len() <= 12 && seen.lists == 1,
            "{name}: the head, a few chunks and one listing, not a read per chunk of the gap: {} reads, {} listings",
            seen.gets.len(),
            seen.lists
        );
        assert_eq!(numbers(&page(&archive, Some(far), 1).await), [2], "{name}");
        store.take();
        let keep_one = Retention {
            max_count: Some(1),
            ..Retention::default()
        };
        let now = at("2026-12-02T00:00:00Z");
        let deleted = archive.apply_retention(JOB, &keep_one, now, 100).await;
        assert_eq!(deleted.unwrap(), [1, 2], "{name}");
        assert!(store.take().gets.len() <= 20, "{name}");
        assert_eq!(numbers(&page(&archive, None, 50).await), [far], "{name}");
    }
    let store = Recording::over(Arc::new(object_store::memory::InMemory::new()));
    let archive = archive_over(&store);
    archive
        .add_to_index(JOB, &[entry(1, "succeeded"), entry(u64::MAX, "running")])
        .await
        .unwrap();
    assert_eq!(numbers(&page(&archive, None, 50).await), [u64::MAX, 1]);
}
