//! What a pass does about the archive: how many builds it left to archive and why (a
//! store that failed several times in a row is not called again until the next pass), and
//! the archive's retention — over every job now and then, and over each job a build of
//! which was just archived whole.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Commands, Scheduler, Workload, WorkloadError};
use crate::archive::{ArchiveStatus, Archived};

/// How often the archive's retention goes over every job (besides each job whose build
/// was just archived whole, on that pass).
const RETENTION_SWEEP: Duration = Duration::from_secs(600);

/// After this many failures to archive in a row, a pass leaves the rest of its archiving
/// to the next one: a store that is away costs each pass a few calls, not one per build.
const ARCHIVE_FAILURES_PER_PASS: u32 = 3;

/// What one pass did about the archive.
#[derive(Default)]
pub(super) struct ArchivePass {
    /// Builds left to archive.
    pending: u64,
    /// The last failure.
    error: Option<String>,
    failed_in_a_row: u32,
    /// The jobs a build of which was archived whole.
    whole: BTreeSet<(String, String)>,
}

impl ArchivePass {
    /// Whether the store failed too often in a row this pass to be called again: the
    /// build is then left for a later pass, not holding this one.
    pub(super) fn store_away(&mut self) -> bool {
        let away = self.failed_in_a_row >= ARCHIVE_FAILURES_PER_PASS;
        if away {
            self.pending += 1;
        }
        away
    }

    /// Records how archiving a build of `job` as far as `stage` went.
    pub(super) fn record(
        &mut self,
        (namespace, job): (&str, &str),
        stage: Archived,
        result: Result<(), WorkloadError>,
    ) {
        match result {
            Err(e) => {
                self.pending += 1;
                self.failed_in_a_row += 1;
                self.error = Some(e.to_string());
            }
            Ok(()) => {
                self.failed_in_a_row = 0;
                if stage == Archived::Complete {
                    self.whole.insert((namespace.to_owned(), job.to_owned()));
                }
            }
        }
    }

    /// Records the pass in `status`; the jobs a build of which was archived whole.
    pub(super) fn end(self, status: &ArchiveStatus) -> BTreeSet<(String, String)> {
        status.set(self.pending, self.error);
        self.whole
    }
}

impl<W: Workload + Commands> Scheduler<W> {
    /// The archive's retention: over every job once every [`RETENTION_SWEEP`], else over
    /// the jobs a build of which was just archived whole.
    pub(super) async fn archive_retention(
        &self,
        archived_whole: BTreeSet<(String, String)>,
        now: i64,
    ) {
        let sweep = {
            let mut swept = self.retention_swept.lock().expect("the retention lock");
            let due = swept.is_none_or(|at| at.elapsed() >= RETENTION_SWEEP);
            if due {
                *swept = Some(tokio::time::Instant::now());
            }
            due
        };
        let jobs = match sweep {
            true => None,
            false if archived_whole.is_empty() => return,
            false => Some(archived_whole.into_iter().collect()),
        };
        self.workload.archive_retention(jobs, now).await;
    }
}
