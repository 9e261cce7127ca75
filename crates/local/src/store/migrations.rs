//! The store's schema as numbered migrations (`rusqlite_migration`, counted in SQLite's
//! `user_version`). Migration 1 is the schema of the first kubeci with a local engine;
//! each later one is what a later kubeci added. A migration, once released, is never
//! edited: a change to the schema is a new migration at the end.

use std::path::Path;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, SchemaVersion, M};

use crate::LocalBackendError;

/// One migration, and how to tell that a database from before the schema was numbered
/// already holds its work.
struct Step {
    up: &'static str,
    /// A query answering 1 when the database holds this migration's work.
    present: &'static str,
}

const STEPS: &[Step] = &[
    // The first local engine (`serve --local`). Its tables were made one statement at a
    // time, so a first open cut short may have left some: `IF NOT EXISTS` makes the rest.
    Step {
        up: "
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
",
        present: "SELECT COUNT(*) = 4 FROM sqlite_master WHERE type = 'table'
                  AND name IN ('counters', 'requests', 'builds', 'log_lines')",
    },
    // The commit a branch build's clone step checked out.
    Step {
        up: "ALTER TABLE builds ADD COLUMN checked_out TEXT;",
        present: "SELECT COUNT(*) = 1 FROM pragma_table_info('builds') WHERE name = 'checked_out'",
    },
    // When each log line was written (`?timestamps=true`).
    Step {
        up: "ALTER TABLE log_lines ADD COLUMN written_at INTEGER;",
        present:
            "SELECT COUNT(*) = 1 FROM pragma_table_info('log_lines') WHERE name = 'written_at'",
    },
    // Admins' approvals of a pull request head for one job.
    Step {
        up: "
CREATE TABLE approvals (
    namespace TEXT NOT NULL, job TEXT NOT NULL, pull_request INTEGER NOT NULL,
    head TEXT NOT NULL, approved_by TEXT NOT NULL, at INTEGER NOT NULL,
    PRIMARY KEY (namespace, job, pull_request, head));
",
        present:
            "SELECT COUNT(*) = 1 FROM sqlite_master WHERE type = 'table' AND name = 'approvals'",
    },
    // The repository each build was made from and the name its job reported under when
    // it was created: where its reports go should its job turn invalid. A build from
    // before takes the repository from its rendered Job's annotation.
    Step {
        up: r#"
ALTER TABLE builds ADD COLUMN git_url TEXT;
ALTER TABLE builds ADD COLUMN check_name TEXT;
UPDATE builds SET git_url = json_extract(manifest, '$.metadata.annotations."kubeci.io/git-url"')
  WHERE json_valid(manifest);
"#,
        present: "SELECT COUNT(*) = 1 FROM pragma_table_info('builds') WHERE name = 'check_name'",
    },
    // How far each build is archived (`--archive`): `first` once its first record is in
    // the archive (a build archived whole leaves the store).
    Step {
        up: "ALTER TABLE builds ADD COLUMN archived TEXT NOT NULL DEFAULT '';",
        present: "SELECT COUNT(*) = 1 FROM pragma_table_info('builds') WHERE name = 'archived'",
    },
];

/// The schema versions this kubeci knows: version N is the database after migration N.
pub(super) fn latest() -> usize {
    STEPS.len()
}

fn migrations() -> Migrations<'static> {
    Migrations::new(STEPS.iter().map(|step| M::up(step.up)).collect())
}

/// Brings the database at `path` to the latest schema, in one transaction per run of
/// migrations. A database from a newer kubeci (a version above [`latest`]) is refused
/// untouched: this kubeci would misread, or lose, what that one added.
///
/// A database written by a kubeci from before the schema was numbered has `user_version`
/// 0 and some of the schema already. Its version is read from what it holds: the number
/// of migrations, from the first, whose work is all there (the tables of migration 1,
/// then each added column or table). Those kubecis added the same columns and tables in
/// the same order, so that work is always a run from the first migration; the version is
/// recorded and the migrations after it run, keeping every row. A database with no
/// tables of kubeci's is version 0 and gets every migration.
pub(super) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), LocalBackendError> {
    let migrations = migrations();
    let failed = |source| LocalBackendError::Migration {
        path: path.display().to_string(),
        source,
    };
    match migrations.current_version(connection).map_err(failed)? {
        SchemaVersion::Outside(found) => {
            return Err(LocalBackendError::NewerDatabase {
                path: path.display().to_string(),
                found: found.get(),
                known: latest(),
            });
        }
        SchemaVersion::NoneSet => {
            let tx = connection
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(LocalBackendError::Database)?;
            let version = unnumbered_version(&tx).map_err(LocalBackendError::Database)?;
            tx.pragma_update(None, "user_version", version)
                .map_err(LocalBackendError::Database)?;
            tx.commit().map_err(LocalBackendError::Database)?;
        }
        SchemaVersion::Inside(_) => {}
    }
    migrations.to_latest(connection).map_err(failed)
}

/// The version of a database from before the schema was numbered (see [`migrate`]).
fn unnumbered_version(connection: &Connection) -> rusqlite::Result<usize> {
    let mut version = 0;
    for step in STEPS {
        if !connection.query_row(step.present, [], |r| r.get::<_, bool>(0))? {
            break;
        }
        version += 1;
    }
    Ok(version)
}

#[cfg(test)]
mod tests;
