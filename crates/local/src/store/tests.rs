//! Tests of `store`.
use super::*;

fn new<'a>(
    key: Option<&'a str>,
    request: &'a kubeci_build::BuildRequest,
    manifest: &'a dyn Fn(u64) -> Result<String, String>,
    now: i64,
) -> NewBuild<'a> {
    NewBuild {
        namespace: "ci",
        job: "demo",
        request,
        key,
        manifest,
        spec_hash: "hash",
        chart_version: None,
        git_url: None,
        check_name: None,
        now,
        floor: None,
    }
}

#[test]
fn numbers_are_given_once_per_request_key_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let request = kubeci_build::BuildRequest::manual(0);
    let manifest = |n: u64| Ok(format!("{{\"build\": {n}}}"));
    let mut store = Store::open(&dir.path().join("kubeci.db")).unwrap();
    let mut allocate = |key, now| store.allocate(&new(key, &request, &manifest, now)).unwrap();
    assert_eq!(allocate(Some("a"), 100), (1, true));
    assert_eq!(allocate(Some("a"), 200), (1, false), "a retry");
    assert_eq!(allocate(None, 200), (2, true));
    let stored = store.build("ci", "demo", 2).unwrap().unwrap();
    assert_eq!(
        (stored.request.number, stored.manifest.as_str()),
        (2, "{\"build\": 2}")
    );
    store.delete_build("ci", "demo", 2).unwrap();
    let mut allocate = |key, now| store.allocate(&new(key, &request, &manifest, now)).unwrap();
    assert_eq!(
        allocate(None, 500),
        (3, true),
        "a deleted build's number is never reused"
    );
    assert_eq!(
        allocate(Some("a"), 100 + KEY_RETENTION + 1),
        (4, true),
        "keys are forgotten after KEY_RETENTION"
    );
}

#[test]
fn a_restart_marks_running_builds_interrupted_and_keeps_their_logs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    let request = kubeci_build::BuildRequest::manual(0);
    let manifest = |n: u64| Ok(format!("{{\"build\": {n}}}"));
    let mut store = Store::open(&path).unwrap();
    store
        .allocate(&new(None, &request, &manifest, 100))
        .unwrap();
    store
        .set_state("ci", "demo", 1, &BuildState::Running, 300)
        .unwrap();
    let line = |seq: u64, text: &str| LogLine {
        seq,
        written_at: Some(1_795_000_000_000_000_000 + seq as i64),
        text: text.as_bytes().to_vec(),
    };
    store
        .append_log("ci", "demo", 1, &line(0, "line one"))
        .unwrap();
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.mark_interrupted(400).unwrap(), 1);
    let interrupted = store.build("ci", "demo", 1).unwrap().unwrap();
    assert_eq!(
        interrupted.state,
        BuildState::Error {
            reason: "Interrupted".into(),
            message: "kubeci stopped while this build ran".into()
        }
    );
    assert_eq!(
        (interrupted.started_at, interrupted.finished_at),
        (Some(300), Some(400))
    );
    assert_eq!(
        store.log("ci", "demo", 1, 0, 10).unwrap(),
        [line(0, "line one")]
    );
    store
        .append_log("ci", "demo", 1, &line(1, "line two"))
        .unwrap();
    store
        .append_log("ci", "demo", 1, &line(2, "line three"))
        .unwrap();
    assert_eq!(
        store.log("ci", "demo", 1, 1, 1).unwrap(),
        [line(1, "line two")],
        "read in batches"
    );
}

#[test]
fn a_database_from_before_line_times_keeps_its_logs_and_records_times_from_now_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    let old = Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE log_lines (namespace TEXT NOT NULL, job TEXT NOT NULL, number INTEGER NOT NULL,
            seq INTEGER NOT NULL, line BLOB NOT NULL, PRIMARY KEY (namespace, job, number, seq));
         INSERT INTO log_lines VALUES ('ci', 'demo', 1, 0, x'6f6c64');",
    )
    .unwrap();
    drop(old);
    let store = Store::open(&path).unwrap();
    let new_line = LogLine {
        seq: 1,
        written_at: Some(7),
        text: b"new".to_vec(),
    };
    store.append_log("ci", "demo", 1, &new_line).unwrap();
    assert_eq!(
        store.log("ci", "demo", 1, 0, 10).unwrap(),
        [
            LogLine {
                seq: 0,
                written_at: None,
                text: b"old".to_vec()
            },
            new_line
        ]
    );
}

#[test]
fn a_log_is_read_in_batches_of_bytes_and_an_overlong_stored_line_is_read_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kubeci.db")).unwrap();
    let line = |seq: u64, text: Vec<u8>| LogLine {
        seq,
        written_at: None,
        text,
    };
    // As a kubeci from before lines were cut stored them: 1 MB each.
    for seq in 0..3 {
        store
            .append_log("ci", "demo", 1, &line(seq, vec![b'x'; 1024 * 1024]))
            .unwrap();
    }
    for seq in 3..100 {
        store
            .append_log("ci", "demo", 1, &line(seq, vec![b'y'; 999]))
            .unwrap();
    }
    let cut = [
        vec![b'x'; LINE_LIMIT],
        " … [line cut at 65536 bytes]".into(),
    ]
    .concat();
    assert_eq!(
        store.log("ci", "demo", 1, 0, 1).unwrap(),
        [line(0, cut.clone())],
        "at least one line, cut"
    );
    let batch = store.log("ci", "demo", 1, 2, 10_000).unwrap();
    assert_eq!(
        batch.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [2],
        "a cut line fills a batch of 10,000 bytes"
    );
    let batch = store.log("ci", "demo", 1, 3, 10_000).unwrap();
    assert_eq!(
        batch.len(),
        10,
        "10 lines of 1,000 bytes with their newlines"
    );
    assert!(batch.iter().all(|l| l.text == [b'y'; 999]));
}

#[test]
fn the_database_and_its_journal_are_readable_by_their_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&path).unwrap();
    for file in ["kubeci.db", "kubeci.db-wal", "kubeci.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

#[test]
fn every_state_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let request = kubeci_build::BuildRequest::manual(0);
    let manifest = |n: u64| Ok(format!("{{\"build\": {n}}}"));
    let mut store = Store::open(&dir.path().join("kubeci.db")).unwrap();
    store
        .allocate(&new(None, &request, &manifest, 100))
        .unwrap();
    for state in [
        BuildState::Succeeded,
        BuildState::Failed {
            reason: "Error".into(),
            message: "exit 1".into(),
        },
        BuildState::Aborted {
            by: Some("alice".into()),
        },
        BuildState::Pending { message: None },
    ] {
        store.set_state("ci", "demo", 1, &state, 600).unwrap();
        assert_eq!(store.build("ci", "demo", 1).unwrap().unwrap().state, state);
    }
}

#[test]
fn readers_read_the_last_commit_beside_a_write_under_way_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    let request = kubeci_build::BuildRequest::manual(0);
    let manifest = |n: u64| Ok(format!("{{\"build\": {n}}}"));
    let mut store = Store::open(&path).unwrap();
    store
        .allocate(&new(None, &request, &manifest, 100))
        .unwrap();
    let readers = Readers::new(&path);

    // A write under way: a transaction holding the writer's lock, not yet committed.
    let writing = store.connection.transaction().unwrap();
    writing
        .execute("UPDATE builds SET state = 'running' WHERE number = 1", [])
        .unwrap();
    let seen = readers.read(|r| r.build("ci", "demo", 1)).unwrap().unwrap();
    assert_eq!(seen.state, BuildState::Queued, "the last commit, at once");
    writing.commit().unwrap();
    let seen = readers.read(|r| r.build("ci", "demo", 1)).unwrap().unwrap();
    assert_eq!(seen.state, BuildState::Running, "then the new one");
    let measured = readers.read(|r| r.measured()).unwrap();
    assert_eq!(measured.len(), 1);
    assert_eq!(measured[0].state, kubeci_engine::Phase::Running);

    let refused = readers.read(|r| {
        r.connection()
            .execute("DELETE FROM builds", [])
            .map_err(database)
    });
    assert!(refused.is_err(), "a reader wrote");
    assert_eq!(readers.read(|r| r.builds("ci", "demo")).unwrap().len(), 1);
}

#[test]
fn numbers_go_above_the_archives_highest_in_a_fresh_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("kubeci.db")).unwrap();
    let request = kubeci_build::BuildRequest::manual(0);
    let manifest = |n: u64| Ok(format!("{{\"build\": {n}}}"));
    let above = |floor| NewBuild {
        floor,
        ..new(None, &request, &manifest, 100)
    };
    assert_eq!(store.allocate(&above(Some(40))).unwrap(), (41, true));
    assert_eq!(store.allocate(&above(Some(3))).unwrap(), (42, true));
    assert_eq!(store.allocate(&above(None)).unwrap(), (43, true));
}
