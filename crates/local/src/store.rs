//! The embedded engine's history in SQLite (WAL): builds, their logs, job counters and
//! recent request keys. A committed transaction survives the process being killed.

use std::path::Path;

use kubeci_engine::approval::{self, Approval};
use kubeci_engine::archive::Archived;
use kubeci_engine::BuildState;
use kubeci_render::log_line::LINE_LIMIT;
use rusqlite::{params, Connection, OptionalExtension};

use crate::LocalBackendError;

mod migrations;
mod reads;

pub use reads::{Reader, Readers, Reads};

/// One line of a build's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its place in the log, from 0.
    pub seq: u64,
    /// When the build wrote it, in nanoseconds since the epoch (unknown for lines kept
    /// before kubeci recorded it).
    pub written_at: Option<i64>,
    pub text: Vec<u8>,
}

/// How long a request key is remembered: a retry within it gets the same build.
pub const KEY_RETENTION: i64 = kubeci_engine::ledger::KEY_RETENTION;

/// One build as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRow {
    pub namespace: String,
    pub job: String,
    pub number: u64,
    pub state: BuildState,
    pub request: kubeci_build::BuildRequest,
    /// The rendered Job it runs (so a queued build keeps the spec it was requested with).
    pub manifest: String,
    pub spec_hash: Option<String>,
    pub chart_version: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// What each reporter was sent (`engine::report::ReportRecord`, as `kubeci.io/reported`).
    pub reported: String,
    /// The commit the clone step checked out (what a branch build built).
    pub checked_out: Option<String>,
    /// The repository it was made from: where its reports go.
    pub git_url: Option<String>,
    /// The name its job reported under when it was created.
    pub check_name: Option<String>,
    /// How far it is archived.
    pub archived: Archived,
}

impl BuildRow {
    /// The commit requested, else the one the clone step checked out.
    pub fn commit(&self) -> Option<String> {
        self.request
            .commit
            .clone()
            .or_else(|| self.checked_out.clone())
    }
}

/// A new build's row.
pub struct NewBuild<'a> {
    pub namespace: &'a str,
    pub job: &'a str,
    pub request: &'a kubeci_build::BuildRequest,
    pub key: Option<&'a str>,
    /// Renders the Job of build `number`.
    pub manifest: &'a dyn Fn(u64) -> Result<String, String>,
    pub spec_hash: &'a str,
    pub chart_version: Option<&'a str>,
    /// The job's `git.url` and the name it reports under now, recorded on the build.
    pub git_url: Option<&'a str>,
    pub check_name: Option<&'a str>,
    pub now: i64,
    /// The highest number the archive holds for the job: the new number is above it.
    pub floor: Option<u64>,
}

fn state_columns(state: &BuildState) -> (&'static str, Option<&str>, Option<&str>, Option<&str>) {
    match state {
        BuildState::Pending { message } => ("pending", None, message.as_deref(), None),
        BuildState::Failed { reason, message } => ("failed", Some(reason), Some(message), None),
        BuildState::Error { reason, message } => ("error", Some(reason), Some(message), None),
        BuildState::Aborted { by } => ("aborted", None, None, by.as_deref()),
        other => (other.name(), None, None, None),
    }
}

fn state_of(
    name: &str,
    reason: Option<String>,
    message: Option<String>,
    by: Option<String>,
) -> BuildState {
    match name {
        "queued" => BuildState::Queued,
        "pending" => BuildState::Pending { message },
        "running" => BuildState::Running,
        "succeeded" => BuildState::Succeeded,
        "failed" => BuildState::Failed {
            reason: reason.unwrap_or_default(),
            message: message.unwrap_or_default(),
        },
        "aborted" => BuildState::Aborted { by },
        _ => BuildState::Error {
            reason: reason.unwrap_or_else(|| "Unknown".into()),
            message: message.unwrap_or_default(),
        },
    }
}

const COLUMNS: &str = "namespace, job, number, state, reason, message, cancelled_by, request, manifest, spec_hash, chart_version, created_at, started_at, finished_at, reported, checked_out, git_url, check_name, archived";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRow> {
    let request: String = r.get(7)?;
    Ok(BuildRow {
        namespace: r.get(0)?,
        job: r.get(1)?,
        number: r.get::<_, i64>(2)? as u64,
        state: state_of(&r.get::<_, String>(3)?, r.get(4)?, r.get(5)?, r.get(6)?),
        request: serde_json::from_str(&request).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e))
        })?,
        manifest: r.get(8)?,
        spec_hash: r.get(9)?,
        chart_version: r.get(10)?,
        created_at: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        reported: r.get(14)?,
        checked_out: r.get(15)?,
        git_url: r.get(16)?,
        check_name: r.get(17)?,
        archived: Archived::parse(r.get::<_, Option<String>>(18)?.as_deref()),
    })
}

/// The database.
pub struct Store {
    connection: Connection,
}

fn database(e: rusqlite::Error) -> LocalBackendError {
    LocalBackendError::Database(e)
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> LocalBackendError + '_ {
    move |source| LocalBackendError::DataDir {
        path: path.display().to_string(),
        source,
    }
}

/// Makes file `path` readable and writable by its owner alone.
fn restrict_to_owner(path: &Path) -> Result<(), LocalBackendError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(file_error(path))
}

impl Store {
    /// Opens (creating) `path`. The database and its `-wal` and `-shm` files are
    /// readable and writable by this user alone: made so, and tightened when an older
    /// kubeci or a umask left them open to others (they hold every build's log). Its
    /// schema is brought up to date by numbered migrations; a database from a newer
    /// kubeci is refused, left as it is.
    pub fn open(path: &Path) -> Result<Store, LocalBackendError> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(file_error(path))?;
        restrict_to_owner(path)?;
        let mut connection = Connection::open(path).map_err(database)?;
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
            .map_err(database)?;
        for suffix in ["-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = std::path::PathBuf::from(file);
            if file.exists() {
                restrict_to_owner(&file)?;
            }
        }
        migrations::migrate(&mut connection, path)?;
        Ok(Store { connection })
    }

    /// Records a build request: the build a key already started (and `false`), or a new
    /// build with the next number (and `true`). Numbers are never reused.
    pub fn allocate(&mut self, new: &NewBuild<'_>) -> Result<(u64, bool), LocalBackendError> {
        let tx = self.connection.transaction().map_err(database)?;
        tx.execute(
            "DELETE FROM requests WHERE at < ?1",
            params![new.now - KEY_RETENTION],
        )
        .map_err(database)?;
        if let Some(key) = new.key {
            let seen: Option<i64> = tx
                .query_row(
                    "SELECT number FROM requests WHERE namespace = ?1 AND job = ?2 AND key = ?3",
                    params![new.namespace, new.job, key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(database)?;
            if let Some(number) = seen {
                return Ok((number as u64, false));
            }
        }
        let floor = i64::try_from(new.floor.unwrap_or(0)).unwrap_or(i64::MAX - 1);
        tx.execute(
            "INSERT INTO counters (namespace, job, last_number) VALUES (?1, ?2, ?3 + 1)
             ON CONFLICT (namespace, job) DO UPDATE SET last_number = MAX(last_number, ?3) + 1",
            params![new.namespace, new.job, floor],
        )
        .map_err(database)?;
        let number: i64 = tx
            .query_row(
                "SELECT last_number FROM counters WHERE namespace = ?1 AND job = ?2",
                params![new.namespace, new.job],
                |r| r.get(0),
            )
            .map_err(database)?;
        let manifest = (new.manifest)(number as u64).map_err(LocalBackendError::Render)?;
        let mut request = new.request.clone();
        request.number = number as u64;
        tx.execute(
            &format!("INSERT INTO builds ({COLUMNS}) VALUES (?1, ?2, ?3, 'queued', NULL, NULL, NULL, ?4, ?5, ?6, ?7, ?8, NULL, NULL, '', NULL, ?9, ?10, '')"),
            params![
                new.namespace,
                new.job,
                number,
                serde_json::to_string(&request).expect("a request serializes"),
                manifest,
                new.spec_hash,
                new.chart_version,
                new.now,
                new.git_url,
                new.check_name
            ],
        )
        .map_err(database)?;
        if let Some(key) = new.key {
            tx.execute(
                "INSERT INTO requests (namespace, job, key, number, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new.namespace, new.job, key, number, new.now],
            )
            .map_err(database)?;
        }
        tx.commit().map_err(database)?;
        Ok((number as u64, true))
    }

    pub fn set_state(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        state: &BuildState,
        now: i64,
    ) -> Result<(), LocalBackendError> {
        let (name, reason, message, by) = state_columns(state);
        let started = matches!(state, BuildState::Pending { .. } | BuildState::Running);
        self.connection
            .execute(
                "UPDATE builds SET state = ?4, reason = ?5, message = ?6, cancelled_by = ?7,
                   started_at = CASE WHEN ?8 AND started_at IS NULL THEN ?9 ELSE started_at END,
                   finished_at = CASE WHEN ?10 THEN ?9 ELSE finished_at END
                 WHERE namespace = ?1 AND job = ?2 AND number = ?3",
                params![
                    namespace,
                    job,
                    number as i64,
                    name,
                    reason,
                    message,
                    by,
                    started,
                    now,
                    state.is_finished()
                ],
            )
            .map_err(database)?;
        Ok(())
    }

    /// Builds that were pending or running when kubeci stopped: nothing runs them any
    /// more, so they end as errors that say so. Returns how many.
    pub fn mark_interrupted(&self, now: i64) -> Result<usize, LocalBackendError> {
        self.connection
            .execute(
                "UPDATE builds SET state = 'error', reason = 'Interrupted',
                   message = 'kubeci stopped while this build ran', finished_at = ?1
                 WHERE state IN ('pending', 'running')",
                params![now],
            )
            .map_err(database)
    }

    pub fn record_checked_out(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        commit: &str,
    ) -> Result<(), LocalBackendError> {
        self.connection
            .execute(
                "UPDATE builds SET checked_out = ?4 WHERE namespace = ?1 AND job = ?2 AND number = ?3",
                params![namespace, job, number as i64, commit],
            )
            .map_err(database)?;
        Ok(())
    }

    pub fn record_reported(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        reported: &str,
    ) -> Result<(), LocalBackendError> {
        self.connection
            .execute(
                "UPDATE builds SET reported = ?4 WHERE namespace = ?1 AND job = ?2 AND number = ?3",
                params![namespace, job, number as i64, reported],
            )
            .map_err(database)?;
        Ok(())
    }

    pub fn delete_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<(), LocalBackendError> {
        for table in ["builds", "log_lines"] {
            self.connection
                .execute(
                    &format!(
                        "DELETE FROM {table} WHERE namespace = ?1 AND job = ?2 AND number = ?3"
                    ),
                    params![namespace, job, number as i64],
                )
                .map_err(database)?;
        }
        Ok(())
    }

    /// Records how far build `number` is archived.
    pub fn set_archived(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        archived: Archived,
    ) -> Result<(), LocalBackendError> {
        self.connection
            .execute(
                "UPDATE builds SET archived = ?4 WHERE namespace = ?1 AND job = ?2 AND number = ?3",
                params![namespace, job, number as i64, archived.as_str()],
            )
            .map_err(database)?;
        Ok(())
    }

    pub fn append_log(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        line: &LogLine,
    ) -> Result<(), LocalBackendError> {
        self.connection
            .execute(
                "INSERT OR REPLACE INTO log_lines (namespace, job, number, seq, line, written_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![namespace, job, number as i64, line.seq as i64, line.text, line.written_at],
            )
            .map_err(database)?;
        Ok(())
    }

    /// Records an admin's approval for a job, keeping the job's approvals within
    /// `kubeci_engine::approval`'s bounds.
    pub fn approve(
        &mut self,
        namespace: &str,
        job: &str,
        approval: Approval,
        now: i64,
    ) -> Result<(), LocalBackendError> {
        let tx = self.connection.transaction().map_err(database)?;
        let mut approvals = approvals_of(&tx, namespace, job)?;
        if approval::record(&mut approvals, approval, now) {
            tx.execute(
                "DELETE FROM approvals WHERE namespace = ?1 AND job = ?2",
                params![namespace, job],
            )
            .map_err(database)?;
            for a in &approvals {
                tx.execute(
                    "INSERT INTO approvals (namespace, job, pull_request, head, approved_by, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![namespace, job, a.pull_request as i64, a.head, a.by, a.at],
                )
                .map_err(database)?;
            }
        }
        tx.commit().map_err(database)
    }

    pub fn set_last_cron_run(
        &self,
        namespace: &str,
        job: &str,
        at: i64,
    ) -> Result<(), LocalBackendError> {
        self.connection
            .execute(
                "INSERT INTO counters (namespace, job, last_number, last_cron_run) VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (namespace, job) DO UPDATE SET last_cron_run = ?3",
                params![namespace, job, at],
            )
            .map_err(database)?;
        Ok(())
    }
}

fn approvals_of(
    connection: &Connection,
    namespace: &str,
    job: &str,
) -> Result<Vec<Approval>, LocalBackendError> {
    let mut statement = connection
        .prepare(
            "SELECT pull_request, head, approved_by, at FROM approvals
             WHERE namespace = ?1 AND job = ?2 ORDER BY at DESC",
        )
        .map_err(database)?;
    let rows = statement
        .query_map(params![namespace, job], |r| {
            Ok(Approval {
                pull_request: r.get::<_, i64>(0)? as u64,
                head: r.get(1)?,
                by: r.get(2)?,
                at: r.get(3)?,
            })
        })
        .map_err(database)?;
    rows.collect::<Result<_, _>>().map_err(database)
}

#[cfg(test)]
mod tests;
