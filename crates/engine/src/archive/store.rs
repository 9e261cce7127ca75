//! The archive as the engine uses it: [`BuildArchive`] (object-safe, so an engine holds
//! `Arc<dyn BuildArchive>`), its errors, the lines it takes and gives, and what an engine
//! holds of it ([`Archiving`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_core::Stream;
use kubeci_build::{BuildRef, JobRef};
use kubeci_results::{BuildOutputs, TestResults};

use super::{ArchivedBuild, ArchivedSummary, TimedLine};
use crate::api::StatesByJob;
use crate::build::Phase;

/// One call to the archive.
pub type ArchiveCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, ArchiveError>> + Send + 'a>>;

/// A step's lines as an engine gives them to be archived, in order, read as they are
/// taken (in bounded memory).
pub type StepLines = Pin<Box<dyn Stream<Item = Result<TimedLine, StepReadError>> + Send>>;

/// A step's lines read back from the archive, in order; an error ends them.
pub type ArchivedLines = Pin<Box<dyn Stream<Item = Result<TimedLine, ArchiveError>> + Send>>;

/// A file's bytes as an engine gives them to be archived, in order, read as they are
/// taken (in bounded memory).
pub type FileChunks = Pin<Box<dyn Stream<Item = Result<Bytes, StepReadError>> + Send>>;

/// One of a build's files read back from the archive, in order; an error ends it.
pub type ArchivedFile = Pin<Box<dyn Stream<Item = Result<Bytes, ArchiveError>> + Send>>;

/// A kind of file a build leaves: an artifact (served for download), or a test report as
/// its build pod handed it over (read again for the build's test results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Artifact,
    Report,
}

impl FileKind {
    /// The kind's directory in a build's archive, and its name in kubeci's URLs.
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Artifact => "artifacts",
            FileKind::Report => "reports",
        }
    }
}

/// A file a build pod's collector sent, kept apart (staged) until its build's `done`
/// takes it: the newest upload of its kind and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    /// The upload's own name: each upload of a file is kept under a new one.
    pub upload: String,
    pub kind: FileKind,
    /// Relative to the build's `workdir`.
    pub path: String,
    pub size: u64,
}

/// The claim a `done` holds on committing its build's files: since when (seconds since
/// the epoch), and who holds it (a name no other claim has), so it is renewed or given up
/// only while it is still its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitClaim {
    pub since: i64,
    pub holder: String,
}

/// One step of a build's log, to be archived.
pub struct StepLog {
    /// The step's container: `clone`, `build`.
    pub name: String,
    /// Its lines, the line that begins it (`==> build: container started`) first: the
    /// steps' lines one after the other are the build's log as `Backend::log` shows it.
    pub lines: StepLines,
    /// Why `lines` are known not to be the whole step, when they are not (its pod was
    /// gone before its log could be read).
    pub incomplete: Option<String>,
}

/// Why an engine could not read on in a step's lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepReadError {
    /// A failure that may pass (the database busy, the cluster's API unreachable):
    /// nothing is archived now, and the build is archived again on a later pass.
    #[error("{0}")]
    Retry(String),
    /// The rest of the step cannot be read, ever (its pod is gone): it is archived with
    /// the lines read so far, and its record says why it is not whole.
    #[error("{0}")]
    Lost(String),
}

/// What kind of failure an [`ArchiveError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveErrorKind {
    /// The store is unreachable, slow or busy, or another writer raced this one: the same
    /// call may succeed later.
    Unavailable,
    /// An object of one build is not what kubeci writes there (cut short, another tool's,
    /// a newer kubeci's): an error for that build only.
    BadObject,
    /// Refused for good as it is (a name that cannot be a key, no permission).
    Refused,
}

/// Why a call to the archive failed; its message names the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ArchiveError {
    pub kind: ArchiveErrorKind,
    pub message: String,
}

impl ArchiveError {
    pub fn new(kind: ArchiveErrorKind, message: impl Into<String>) -> ArchiveError {
        ArchiveError {
            kind,
            message: message.into(),
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind == ArchiveErrorKind::Unavailable
    }
}

/// How long a job's archived builds are kept: by age, by count, or both (a build goes
/// when either says so); neither keeps every build. A build that has not ended is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveRetention {
    /// Builds that ended longer ago than this many seconds are deleted.
    pub max_age: Option<u64>,
    /// Only the newest this many builds are kept.
    pub max_count: Option<u64>,
}

impl ArchiveRetention {
    /// Whether it keeps every build.
    pub fn keeps_all(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none()
    }
}

/// Where the engine keeps builds after their pods: written through by the leader's pass
/// (a build's first record when it starts, the complete one when it ended), read by the
/// commands (a job's builds, a build, its log). Implemented by `kubeci-archive` over
/// object storage. Every call is idempotent: writing a build again leaves one copy.
pub trait BuildArchive: Send + Sync + 'static {
    /// Writes a build's first record (`record.complete` is false) and its entry in its
    /// job's index, which takes its number (never given again).
    fn put_first<'a>(&'a self, record: &'a ArchivedBuild) -> ArchiveCall<'a, ()>;
    /// Writes a build that ended: each step's log from its lines (a step whose lines fail
    /// with [`StepReadError::Lost`] is kept as read, and said incomplete; with
    /// [`StepReadError::Retry`] nothing is committed and the error is
    /// [`ArchiveErrorKind::Unavailable`]), then its record (complete, its `log` filled in:
    /// the commit point), then its index entry. Returns the record written.
    fn put_complete<'a>(
        &'a self,
        record: ArchivedBuild,
        steps: Vec<StepLog>,
    ) -> ArchiveCall<'a, ArchivedBuild>;
    /// A build's record; `None` when it is not archived. A record that is not what kubeci
    /// writes at its key is [`ArchiveErrorKind::BadObject`].
    fn record<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, Option<ArchivedBuild>>;
    /// Up to `limit` of a job's archived builds numbered below `before` (all when
    /// `None`), newest first, from its index (no record is read).
    fn page<'a>(
        &'a self,
        job: JobRef<'a>,
        before: Option<u64>,
        limit: usize,
    ) -> ArchiveCall<'a, Vec<ArchivedSummary>>;
    /// The highest build number ever archived for a job (retention never lowers it).
    fn highest<'a>(&'a self, job: JobRef<'a>) -> ArchiveCall<'a, Option<u64>>;
    /// One step's archived lines, read in bounded pieces; `None` when the step has no log.
    fn step_log<'a>(
        &'a self,
        build: BuildRef<'a>,
        step: &'a str,
    ) -> ArchiveCall<'a, Option<ArchivedLines>>;
    /// Writes one of a build's files (an artifact) at `path`, relative to its `workdir`,
    /// from its bytes; more than `limit` bytes is refused and nothing is written. The
    /// bytes written.
    fn put_file<'a>(
        &'a self,
        build: BuildRef<'a>,
        path: &'a str,
        bytes: FileChunks,
        limit: u64,
    ) -> ArchiveCall<'a, u64>;
    /// Writes one file a build pod's collector sends, as `kind` at `path`, from its
    /// bytes, under an upload of its own (staged): none of the build's files until its
    /// `done` takes it ([`BuildArchive::take_staged`]). More than `limit` bytes is refused
    /// and nothing is written. The bytes written.
    fn put_staged<'a>(
        &'a self,
        build: BuildRef<'a>,
        kind: FileKind,
        path: &'a str,
        bytes: FileChunks,
        limit: u64,
    ) -> ArchiveCall<'a, u64>;
    /// The files staged for a build (the newest upload of each kind and path), at most
    /// `at_most` uploads looked at.
    fn list_staged<'a>(
        &'a self,
        build: BuildRef<'a>,
        at_most: usize,
    ) -> ArchiveCall<'a, Vec<StagedFile>>;
    /// Makes a staged file one of its build's files (replacing one at its path).
    fn take_staged<'a>(
        &'a self,
        build: BuildRef<'a>,
        staged: &'a StagedFile,
    ) -> ArchiveCall<'a, ()>;
    /// Deletes what is left staged for a build.
    fn clear_staged<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, ()>;
    /// Claims the right to commit a build's files for `lease_seconds` from `now` (seconds
    /// since the epoch): `None` while another claim holds it.
    fn claim_commit<'a>(
        &'a self,
        build: BuildRef<'a>,
        lease_seconds: i64,
        now: i64,
    ) -> ArchiveCall<'a, Option<CommitClaim>>;
    /// Renews `claim` from `now` while it is still this one's: `None` once another `done`
    /// took it over.
    fn renew_commit<'a>(
        &'a self,
        build: BuildRef<'a>,
        claim: &'a CommitClaim,
        now: i64,
    ) -> ArchiveCall<'a, Option<CommitClaim>>;
    /// Gives `claim` up, if it is still this one's (a `done` that failed): the next
    /// `done` claims it at once.
    fn release_commit<'a>(
        &'a self,
        build: BuildRef<'a>,
        claim: &'a CommitClaim,
    ) -> ArchiveCall<'a, ()>;
    /// One of a build's test reports as its pod sent it; `None` when there is none.
    fn report<'a>(
        &'a self,
        build: BuildRef<'a>,
        path: &'a str,
    ) -> ArchiveCall<'a, Option<(u64, ArchivedFile)>>;
    /// A build's files of one kind as the archive holds them (written, whether or not its
    /// outputs list them): each path and size, sorted by path, at most `at_most`.
    fn list_files<'a>(
        &'a self,
        build: BuildRef<'a>,
        kind: FileKind,
        at_most: usize,
    ) -> ArchiveCall<'a, Vec<(String, u64)>>;
    /// Writes what a build left: its test results, then its outputs (the commit point:
    /// written once its files are, and only once: `false` when they were already there,
    /// and nothing is written).
    fn put_outputs<'a>(
        &'a self,
        build: BuildRef<'a>,
        tests: Option<&'a TestResults>,
        outputs: &'a BuildOutputs,
    ) -> ArchiveCall<'a, bool>;
    /// What a build left; `None` when it left nothing (or not yet).
    fn outputs<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, Option<BuildOutputs>>;
    /// A build's test results; `None` when it has none.
    fn tests<'a>(&'a self, build: BuildRef<'a>) -> ArchiveCall<'a, Option<TestResults>>;
    /// One of a build's files: its size and its bytes; `None` when it left none at `path`.
    fn file<'a>(
        &'a self,
        build: BuildRef<'a>,
        path: &'a str,
    ) -> ArchiveCall<'a, Option<(u64, ArchivedFile)>>;
    /// Deletes at most `batch` of a job's archived builds that `retention` no longer
    /// keeps at `now` (seconds since the epoch), oldest first; the numbers deleted.
    fn apply_retention<'a>(
        &'a self,
        job: JobRef<'a>,
        retention: ArchiveRetention,
        now: i64,
        batch: usize,
    ) -> ArchiveCall<'a, Vec<u64>>;
}

/// How archiving goes, for the metrics and the pages.
#[derive(Debug, Default)]
pub struct ArchiveStatus {
    /// Builds the last pass found still to archive (after its attempts).
    pending: AtomicU64,
    /// The last failure to archive, while one is pending.
    last_error: Mutex<Option<String>>,
}

impl ArchiveStatus {
    /// Records what a pass left: `pending` builds still to archive, and the last error.
    pub fn set(&self, pending: u64, last_error: Option<String>) {
        self.pending.store(pending, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = last_error;
    }

    /// Builds still to archive (`kubeci_archive_pending`).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Why archiving is behind, when it is and a call failed.
    pub fn behind(&self) -> Option<String> {
        let error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        (self.pending() > 0).then(|| error.clone()).flatten()
    }
}

/// The newest archived build of each job seen so far (as it was archived, or read back),
/// by (namespace, job): its number and phase — what the jobs page's state filter reads of
/// a job whose builds all left the engine, without reading the archive per job.
#[derive(Debug, Default)]
pub struct NewestArchived {
    builds: Mutex<HashMap<(String, String), (u64, Phase)>>,
}

impl NewestArchived {
    /// Notes build `number` of a job, in `phase`, if it is the newest seen.
    pub fn note(&self, namespace: &str, job: &str, number: u64, phase: Phase) {
        let mut builds = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        let newest = builds
            .entry((namespace.to_owned(), job.to_owned()))
            .or_insert((number, phase));
        if number >= newest.0 {
            *newest = (number, phase);
        }
    }

    /// Whether a job's newest archived build is known.
    pub fn knows(&self, namespace: &str, job: &str) -> bool {
        let builds = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        builds.contains_key(&(namespace.to_owned(), job.to_owned()))
    }

    /// The phase of each job's newest archived build, by namespace and job.
    pub fn states(&self) -> StatesByJob {
        let builds = self.builds.lock().unwrap_or_else(|e| e.into_inner());
        let mut states = StatesByJob::new();
        for ((namespace, job), (_, phase)) in builds.iter() {
            states
                .entry(namespace.clone())
                .or_default()
                .insert(job.clone(), (*phase).into());
        }
        states
    }
}

/// What an engine holds of its archive.
#[derive(Clone, Default)]
pub struct Archiving {
    /// The archive (`--archive URL`); `None`: builds are not archived.
    pub archive: Option<Arc<dyn BuildArchive>>,
    /// The server's default retention of archived builds, for jobs that set none.
    pub retention: ArchiveRetention,
    pub status: Arc<ArchiveStatus>,
    pub newest: Arc<NewestArchived>,
    /// Each job's newest archived builds as read in the last few seconds.
    pub pages: Arc<super::NewestPages>,
}

impl Archiving {
    /// Its status when builds are archived (what `SchedulerSettings::archiving` takes),
    /// `None` when they are not.
    pub fn when_on(&self) -> Option<Arc<ArchiveStatus>> {
        self.archive.as_ref().map(|_| self.status.clone())
    }
}

impl std::fmt::Debug for Archiving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiving")
            .field("archive", &self.archive.is_some())
            .field("retention", &self.retention)
            .finish()
    }
}
