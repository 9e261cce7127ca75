//! Tests of the store's migrations, through `Store::open` as `serve --local` opens its
//! database: what older kubecis wrote keeps every row, a new database gets every
//! migration, and a newer kubeci's database is refused untouched.

use std::path::Path;

use rusqlite::Connection;

use super::latest;
use crate::store::{LogLine, Reads, Store};
use crate::LocalBackendError;

/// The schema the first kubeci with a local engine wrote, verbatim (written out here, not
/// taken from the migrations, so that an edit of a released migration fails these tests).
const FIRST_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (
    namespace TEXT NOT NULL, job TEXT NOT NULL,
    last_number INTEGER NOT NULL DEFAULT 0,
    last_cron_run INTEGER,
    PRIMARY KEY (namespace, job));
CREATE TABLE IF NOT EXISTS requests (
    namespace TEXT NOT NULL, job TEXT NOT NULL, key TEXT NOT NULL,
    number INTEGER NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (namespace, job, key));
CREATE TABLE IF NOT EXISTS builds (
    namespace TEXT NOT NULL, job TEXT NOT NULL, number INTEGER NOT NULL,
    state TEXT NOT NULL, reason TEXT, message TEXT, cancelled_by TEXT,
    request TEXT NOT NULL,
    manifest TEXT NOT NULL,
    spec_hash TEXT, chart_version TEXT,
    created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,
    reported TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, job, number));
CREATE TABLE IF NOT EXISTS log_lines (
    namespace TEXT NOT NULL, job TEXT NOT NULL, number INTEGER NOT NULL,
    seq INTEGER NOT NULL, line BLOB NOT NULL,
    PRIMARY KEY (namespace, job, number, seq));
";

/// What the next kubecis added to such a database as they opened it.
const ADDED_CHECKED_OUT: &str = "ALTER TABLE builds ADD COLUMN checked_out TEXT";
const ADDED_WRITTEN_AT: &str = "ALTER TABLE log_lines ADD COLUMN written_at INTEGER";

/// The schema the last kubeci before numbered migrations wrote to a new file, verbatim.
const LAST_UNNUMBERED_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS counters (
    namespace TEXT NOT NULL, job TEXT NOT NULL,
    last_number INTEGER NOT NULL DEFAULT 0,
    last_cron_run INTEGER,
    PRIMARY KEY (namespace, job));
CREATE TABLE IF NOT EXISTS requests (
    namespace TEXT NOT NULL, job TEXT NOT NULL, key TEXT NOT NULL,
    number INTEGER NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (namespace, job, key));
CREATE TABLE IF NOT EXISTS builds (
    namespace TEXT NOT NULL, job TEXT NOT NULL, number INTEGER NOT NULL,
    state TEXT NOT NULL, reason TEXT, message TEXT, cancelled_by TEXT,
    request TEXT NOT NULL,
    manifest TEXT NOT NULL,
    spec_hash TEXT, chart_version TEXT,
    created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,
    reported TEXT NOT NULL DEFAULT '',
    checked_out TEXT,
    PRIMARY KEY (namespace, job, number));
CREATE TABLE IF NOT EXISTS log_lines (
    namespace TEXT NOT NULL, job TEXT NOT NULL, number INTEGER NOT NULL,
    seq INTEGER NOT NULL, line BLOB NOT NULL,
    written_at INTEGER,
    PRIMARY KEY (namespace, job, number, seq));
CREATE TABLE IF NOT EXISTS approvals (
    namespace TEXT NOT NULL, job TEXT NOT NULL, pull_request INTEGER NOT NULL,
    head TEXT NOT NULL, approved_by TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (namespace, job, pull_request, head));
";

/// The rows of an old database, in the columns every kubeci had: two builds of `ci/demo`
/// (1 succeeded and reported, with a log line; 2 queued), its counter at 2 with a cron
/// run, and a request key.
const ROWS: &str = r#"
INSERT INTO counters (namespace, job, last_number, last_cron_run) VALUES ('ci', 'demo', 2, 1700000000);
INSERT INTO requests (namespace, job, key, number, at) VALUES ('ci', 'demo', 'push-abc', 1, 1700000100);
INSERT INTO builds (namespace, job, number, state, reason, message, cancelled_by, request, manifest,
    spec_hash, chart_version, created_at, started_at, finished_at, reported)
  VALUES ('ci', 'demo', 1, 'succeeded', NULL, NULL, NULL,
    '{"number":1,"trigger":"push","commit":"abc","git_ref":null,"branch":"main","pull_request":null,"requested_by":null}',
    '{"build": 1}', 'hash', NULL, 1700000100, 1700000110, 1700000200, 'pending,running,succeeded');
INSERT INTO builds (namespace, job, number, state, reason, message, cancelled_by, request, manifest,
    spec_hash, chart_version, created_at, started_at, finished_at, reported)
  VALUES ('ci', 'demo', 2, 'queued', NULL, NULL, NULL,
    '{"number":2,"trigger":"manual","commit":null,"git_ref":null,"branch":null,"pull_request":null,"requested_by":"alice"}',
    '{"build": 2}', 'hash', NULL, 1700000300, NULL, NULL, '');
INSERT INTO log_lines (namespace, job, number, seq, line) VALUES ('ci', 'demo', 1, 0, CAST('make test' AS BLOB));
"#;

/// Writes a database at `path` as an older kubeci left it: `statements` run one by one, as
/// those kubecis ran them, with `user_version` left at 0.
fn write_old_database(path: &Path, statements: &[&str]) {
    let connection = Connection::open(path).unwrap();
    for statement in statements {
        connection.execute_batch(statement).unwrap();
    }
}

/// Each table's columns, in order, and the schema version.
fn schema(path: &Path) -> (Vec<(String, Vec<String>)>, usize) {
    let connection = Connection::open(path).unwrap();
    let mut tables = connection
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = tables
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let columns = tables
        .into_iter()
        .map(|table| {
            let mut columns = connection
                .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .unwrap();
            let columns = columns
                .query_map([&table], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            (table, columns)
        })
        .collect();
    let version = connection
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (columns, version)
}

/// The schema a new database gets.
fn new_schema() -> (Vec<(String, Vec<String>)>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    Store::open(&path).unwrap();
    schema(&path)
}

#[test]
fn a_new_database_gets_every_migration() {
    let (tables, version) = new_schema();
    assert_eq!(version, latest());
    let columns_of = |name: &str| {
        tables
            .iter()
            .find(|(table, _)| table == name)
            .map(|(_, columns)| columns.clone())
            .unwrap_or_else(|| panic!("no table {name}"))
    };
    assert!(columns_of("builds").contains(&"checked_out".to_string()));
    assert!(columns_of("log_lines").contains(&"written_at".to_string()));
    assert!(columns_of("counters").contains(&"last_cron_run".to_string()));
    assert_eq!(
        columns_of("approvals"),
        [
            "namespace",
            "job",
            "pull_request",
            "head",
            "approved_by",
            "at"
        ]
    );
}

// Long on purpose: the schemas of every older kubeci as they wrote them, verbatim, each checked
// the same way after its migration.
#[test]
fn a_database_of_every_older_kubeci_keeps_its_rows_and_gains_the_new_columns() {
    let older: [(&str, &[&str]); 4] = [
        ("the first local engine", &[FIRST_SCHEMA, ROWS]),
        (
            "then the commit checked out",
            &[FIRST_SCHEMA, ROWS, ADDED_CHECKED_OUT],
        ),
        (
            "then the lines' times",
            &[FIRST_SCHEMA, ROWS, ADDED_CHECKED_OUT, ADDED_WRITTEN_AT],
        ),
        (
            "the last before numbered migrations, new",
            &[LAST_UNNUMBERED_SCHEMA, ROWS],
        ),
    ];
    for (kubeci, statements) in older {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeci.db");
        write_old_database(&path, statements);

        let mut store = Store::open(&path).unwrap_or_else(|e| panic!("{kubeci}: {e}"));
        let builds = store.builds("ci", "demo").unwrap();
        assert_eq!(
            builds
                .iter()
                .map(|b| (b.number, b.state.name(), b.reported.as_str()))
                .collect::<Vec<_>>(),
            [
                (2, "queued", ""),
                (1, "succeeded", "pending,running,succeeded")
            ],
            "{kubeci}"
        );
        assert_eq!(builds[1].commit().as_deref(), Some("abc"), "{kubeci}");
        assert_eq!(builds[0].request.requested_by.as_deref(), Some("alice"));
        assert_eq!(
            store.log("ci", "demo", 1, 0, 1024).unwrap(),
            [LogLine {
                seq: 0,
                written_at: None,
                text: b"make test".to_vec()
            }],
            "{kubeci}"
        );
        assert_eq!(
            store.last_cron_run("ci", "demo").unwrap(),
            Some(1_700_000_000),
            "{kubeci}"
        );

        // The new columns and table take what this kubeci writes.
        store.record_checked_out("ci", "demo", 2, "def").unwrap();
        assert_eq!(
            store.build("ci", "demo", 2).unwrap().unwrap().checked_out,
            Some("def".into()),
            "{kubeci}"
        );
        let timed = LogLine {
            seq: 1,
            written_at: Some(1_700_000_150_000_000_000),
            text: b"ok".to_vec(),
        };
        store.append_log("ci", "demo", 1, &timed).unwrap();
        assert_eq!(store.log("ci", "demo", 1, 1, 1024).unwrap(), [timed]);
        let approval = kubeci_engine::approval::Approval {
            pull_request: 7,
            head: "abc".into(),
            by: "admin".into(),
            at: 1_700_000_400,
        };
        store
            .approve("ci", "demo", approval.clone(), 1_700_000_400)
            .unwrap();
        assert_eq!(store.approvals("ci", "demo").unwrap(), [approval]);

        // The counter and the request key carry on: a retry gets build 1, a new request 3.
        let request = kubeci_build::BuildRequest::manual(0);
        let manifest = |n: u64| Ok(format!("{{\"build\": {n}}}"));
        let mut new = crate::store::NewBuild {
            namespace: "ci",
            job: "demo",
            request: &request,
            key: Some("push-abc"),
            manifest: &manifest,
            spec_hash: "hash",
            chart_version: None,
            git_url: None,
            check_name: None,
            now: 1_700_000_500,
            floor: None,
        };
        assert_eq!(store.allocate(&new).unwrap(), (1, false), "{kubeci}");
        new.key = None;
        assert_eq!(store.allocate(&new).unwrap(), (3, true), "{kubeci}");
        drop(store);

        assert_eq!(
            schema(&path),
            new_schema(),
            "{kubeci}: the schema is the new one"
        );
        Store::open(&path).unwrap_or_else(|e| panic!("{kubeci}, opened again: {e}"));
        assert_eq!(schema(&path), new_schema(), "{kubeci}, opened again");
    }
}

#[test]
fn a_database_of_a_newer_kubeci_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    Store::open(&path).unwrap();
    let newer = latest() + 1;
    {
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(&format!(
                "CREATE TABLE artifacts (name TEXT NOT NULL);
                 INSERT INTO artifacts VALUES ('report.xml');
                 PRAGMA user_version = {newer};"
            ))
            .unwrap();
    }
    let before = schema(&path);

    let error = Store::open(&path).err().expect("refused");
    assert!(
        matches!(error, LocalBackendError::NewerDatabase { found, known, .. }
            if found == newer && known == latest()),
        "{error:?}"
    );
    let message = error.to_string();
    for what in [
        path.display().to_string(),
        "written by a newer kubeci".into(),
        format!("schema version {newer}"),
        format!("knows versions up to {}", latest()),
        "another --data directory".into(),
    ] {
        assert!(message.contains(&what), "{message:?} says {what:?}");
    }
    assert_eq!(schema(&path), before, "left as it is");
    let kept: String = Connection::open(&path)
        .unwrap()
        .query_row("SELECT name FROM artifacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "report.xml");
}

#[test]
fn a_build_from_before_takes_its_repository_from_its_rendered_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeci.db");
    let manifest =
        r#"{"metadata": {"annotations": {"kubeci.io/git-url": "https://github.com/o/r.git"}}}"#;
    let row = format!(
        "INSERT INTO builds (namespace, job, number, state, request, manifest, created_at)
           VALUES ('ci', 'pr', 1, 'running', '{}', '{manifest}', 1700000100);",
        r#"{"number":1,"trigger":"pull-request","commit":"abc","git_ref":null,"branch":null,"pull_request":null,"requested_by":null}"#
    );
    write_old_database(&path, &[LAST_UNNUMBERED_SCHEMA, &row, ROWS]);
    let store = Store::open(&path).unwrap();
    let built = store.build("ci", "pr", 1).unwrap().unwrap();
    assert_eq!(
        (built.git_url.as_deref(), built.check_name),
        (Some("https://github.com/o/r.git"), None)
    );
    let other = store.build("ci", "demo", 1).unwrap().unwrap();
    assert_eq!(other.git_url, None, "a manifest without the annotation");
}
