//! The store's reads, for the writer's connection and for connections that only read.
//!
//! A reader is its own SQLite connection: in WAL mode it reads the last committed state
//! beside the writer, never waiting for it. The engine's bounded reads (a job's builds, one
//! build, a batch of log lines) run inline on a reader, as cheap as a map look-up; what
//! writes, or reads without bound, goes to the writer off the async workers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kubeci_engine::approval::Approval;
use kubeci_engine::metrics::BuildFact;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{approvals_of, database, row, BuildRow, LogLine, COLUMNS, LINE_LIMIT};
use crate::LocalBackendError;

/// What can be read from the store, on any of its connections.
pub trait Reads {
    fn connection(&self) -> &Connection;

    /// A job's builds, newest first.
    fn builds(&self, namespace: &str, job: &str) -> Result<Vec<BuildRow>, LocalBackendError> {
        rows(
            self.connection(),
            &format!("SELECT {COLUMNS} FROM builds WHERE namespace = ?1 AND job = ?2 ORDER BY number DESC"),
            params![namespace, job],
        )
    }

    /// Every build not finished, or finished and not fully reported, of every job.
    fn all_builds(&self) -> Result<Vec<BuildRow>, LocalBackendError> {
        rows(
            self.connection(),
            &format!("SELECT {COLUMNS} FROM builds ORDER BY namespace, job, number"),
            [],
        )
    }

    /// The newest build of each job, without its manifest (`manifest` is empty).
    fn latest_builds(&self) -> Result<Vec<BuildRow>, LocalBackendError> {
        let columns = COLUMNS.replace("manifest", "'' AS manifest");
        rows(
            self.connection(),
            &format!(
                "SELECT {columns} FROM builds JOIN
                   (SELECT namespace, job, MAX(number) AS number FROM builds GROUP BY namespace, job)
                 USING (namespace, job, number)"
            ),
            [],
        )
    }

    /// The newest `limit` builds of job `job` (without their manifests), newest first.
    fn recent_builds(
        &self,
        namespace: &str,
        job: &str,
        limit: usize,
    ) -> Result<Vec<BuildRow>, LocalBackendError> {
        let columns = COLUMNS.replace("manifest", "'' AS manifest");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        rows(
            self.connection(),
            &format!("SELECT {columns} FROM builds WHERE namespace = ?1 AND job = ?2 ORDER BY number DESC LIMIT ?3"),
            params![namespace, job, limit],
        )
    }

    fn build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<BuildRow>, LocalBackendError> {
        self.connection()
            .query_row(
                &format!("SELECT {COLUMNS} FROM builds WHERE namespace = ?1 AND job = ?2 AND number = ?3"),
                params![namespace, job, number as i64],
                row,
            )
            .optional()
            .map_err(database)
    }

    /// A build's log lines from line `from` on, as many as fit in `max_bytes` (at least
    /// one). A log is read in such batches, so a long one is never held whole; a line
    /// longer than [`LINE_LIMIT`] (kept by a kubeci from before lines were cut) is read
    /// cut.
    fn log(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<LogLine>, LocalBackendError> {
        let mut statement = self
            .connection()
            .prepare_cached("SELECT seq, written_at, substr(line, 1, ?5) FROM log_lines WHERE namespace = ?1 AND job = ?2 AND number = ?3 AND seq >= ?4 ORDER BY seq")
            .map_err(database)?;
        let read = i64::try_from(LINE_LIMIT + 1).unwrap_or(i64::MAX);
        let mut rows = statement
            .query(params![namespace, job, number as i64, from as i64, read])
            .map_err(database)?;
        let (mut lines, mut bytes) = (Vec::new(), 0);
        while bytes < max_bytes {
            let Some(row) = rows.next().map_err(database)? else {
                break;
            };
            let text: Vec<u8> = row.get(2).map_err(database)?;
            let line = LogLine {
                seq: row.get::<_, i64>(0).map_err(database)? as u64,
                written_at: row.get(1).map_err(database)?,
                text: kubeci_render::log_line::cut(&text, LINE_LIMIT),
            };
            bytes += line.text.len() + 1;
            lines.push(line);
        }
        Ok(lines)
    }

    /// Where each step of a build's log begins: the number of its first line (the line
    /// `==> NAME: (init )container started`) and its name, in order, and how many lines
    /// the log has.
    fn steps(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<(Vec<(u64, String)>, u64), LocalBackendError> {
        let mut statement = self
            .connection()
            .prepare_cached("SELECT seq, substr(line, 1, 1024) FROM log_lines WHERE namespace = ?1 AND job = ?2 AND number = ?3 AND substr(line, 1, 4) = CAST('==> ' AS BLOB) AND line LIKE '%container started%' ORDER BY seq")
            .map_err(database)?;
        let starts = statement
            .query_map(params![namespace, job, number as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(database)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(database)?;
        let starts = (starts.into_iter())
            .filter_map(|(seq, line)| {
                Some((seq, kubeci_engine::archive::step_of(&line)?.to_owned()))
            })
            .collect();
        let lines: i64 = self
            .connection()
            .query_row(
                "SELECT COALESCE(MAX(seq) + 1, 0) FROM log_lines WHERE namespace = ?1 AND job = ?2 AND number = ?3",
                params![namespace, job, number as i64],
                |r| r.get(0),
            )
            .map_err(database)?;
        Ok((starts, lines as u64))
    }

    /// The approvals recorded for a job, newest first.
    fn approvals(&self, namespace: &str, job: &str) -> Result<Vec<Approval>, LocalBackendError> {
        approvals_of(self.connection(), namespace, job)
    }

    fn last_cron_run(&self, namespace: &str, job: &str) -> Result<Option<i64>, LocalBackendError> {
        self.connection()
            .query_row(
                "SELECT last_cron_run FROM counters WHERE namespace = ?1 AND job = ?2",
                params![namespace, job],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(database)
    }

    /// Every build as the metrics count it: its job, phase and how long it ran (five
    /// columns, not whole rows: read at every scrape).
    fn measured(&self) -> Result<Vec<BuildFact>, LocalBackendError> {
        let mut statement = self
            .connection()
            .prepare_cached("SELECT namespace, job, state, started_at, finished_at FROM builds")
            .map_err(database)?;
        let facts = statement
            .query_map([], |r| {
                let state: String = r.get(2)?;
                let started: Option<i64> = r.get(3)?;
                let finished: Option<i64> = r.get(4)?;
                Ok(BuildFact {
                    namespace: r.get(0)?,
                    job: r.get(1)?,
                    state: super::state_of(&state, None, None, None).phase(),
                    seconds: started
                        .zip(finished)
                        .map(|(start, end)| (end - start).max(0) as f64),
                })
            })
            .map_err(database)?;
        facts.collect::<Result<_, _>>().map_err(database)
    }
}

/// The rows `sql` selects with `params`.
fn rows(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<BuildRow>, LocalBackendError> {
    let mut statement = connection.prepare_cached(sql).map_err(database)?;
    let rows = statement.query_map(params, row).map_err(database)?;
    rows.collect::<Result<_, _>>().map_err(database)
}

impl Reads for super::Store {
    fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// A connection that only reads.
pub struct Reader {
    connection: Connection,
}

impl Reads for Reader {
    fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// The reading side of one database: one connection, opened at the first read and kept.
/// One, not one per thread: SQLite's own locks make connections used at once from two
/// threads wait on each other far more often than reads wait here, one after another.
pub struct Readers {
    path: PathBuf,
    reader: Mutex<Option<Reader>>,
}

impl Readers {
    /// The readers of database `path` (opened and migrated by [`super::Store::open`]).
    pub fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_owned(),
            reader: Mutex::default(),
        }
    }

    /// Runs `read` on the reader (opened first if it is not yet).
    pub fn read<T>(
        &self,
        read: impl FnOnce(&Reader) -> Result<T, LocalBackendError>,
    ) -> Result<T, LocalBackendError> {
        let mut reader = self.reader.lock().expect("the reader's lock");
        let reader = match &mut *reader {
            Some(reader) => reader,
            empty => empty.insert(self.open()?),
        };
        read(reader)
    }

    fn open(&self) -> Result<Reader, LocalBackendError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags).map_err(database)?;
        connection
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(database)?;
        Ok(Reader { connection })
    }
}
