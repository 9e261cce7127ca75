//! Builds kept after their pods (issue 29), as the engine sees them: the record archived
//! of a build ([`ArchivedBuild`]: what the API shows of it, and its log's steps; versioned
//! JSON, docs/archive.md), how far a build is archived ([`Archived`]), and the
//! [`BuildArchive`] the engine writes it to and reads it back from — implemented by
//! `kubeci-archive` over object storage, so this crate stays free of any store.
//!
//! The record is made from a build's facts ([`ArchivedBuild::of`]) and read back as the
//! same [`BuildView`] ([`ArchivedBuild::view`]): an archived build shows as it did live.

pub mod commit;
mod pages;
mod read;
mod store;
#[cfg(test)]
mod tests;

pub use pages::{NewestPages, ReadTicket};
pub use read::{build_log, lines_of};
pub use store::{
    ArchiveCall, ArchiveError, ArchiveErrorKind, ArchiveRetention, ArchiveStatus, ArchivedFile,
    ArchivedLines, Archiving, BuildArchive, CommitClaim, FileChunks, FileKind, NewestArchived,
    StagedFile, StepLines, StepLog, StepReadError,
};

use kubeci_build::{BuildRef, BuildRequest};
use kubeci_results::TestsInBuild;
use serde::{Deserialize, Serialize};

use crate::api::{BuildFacts, BuildView};
use crate::build::{BuildState, Phase};
use crate::report::ReportRecord;

/// The version of [`ArchivedBuild`]'s JSON this kubeci writes and reads. A reader meeting
/// a higher one says so (a newer kubeci wrote it) rather than misread it.
pub const RECORD_VERSION: u32 = 1;

/// How far a build is archived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Archived {
    /// Not at all.
    #[default]
    No,
    /// Its first record (written once it started), so that it is known should its pod
    /// vanish.
    First,
    /// Its final record and its whole log: it ended, and the archive has all of it.
    Complete,
}

impl Archived {
    /// As the Kubernetes engine's `kubeci.io/archived` annotation and the local engine's
    /// `archived` column write it: `first`, `complete`, or nothing.
    pub fn as_str(self) -> &'static str {
        match self {
            Archived::No => "",
            Archived::First => "first",
            Archived::Complete => "complete",
        }
    }

    /// What [`Archived::as_str`] wrote; anything else is [`Archived::No`] (the build is
    /// archived again: archiving is idempotent).
    pub fn parse(text: Option<&str>) -> Archived {
        match text.map(str::trim) {
            Some("first") => Archived::First,
            Some("complete") => Archived::Complete,
            _ => Archived::No,
        }
    }
}

/// A build's state in its record: its phase and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedState {
    pub phase: Phase,
    /// Kubernetes' or kubeci's reason, for a failed build or one that could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who cancelled an aborted build, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

impl ArchivedState {
    pub fn of(state: &BuildState) -> ArchivedState {
        let (reason, message, cancelled_by) = match state {
            BuildState::Pending { message } => (None, message.clone(), None),
            BuildState::Failed { reason, message } | BuildState::Error { reason, message } => {
                (Some(reason.clone()), Some(message.clone()), None)
            }
            BuildState::Aborted { by } => (None, None, by.clone()),
            _ => (None, None, None),
        };
        ArchivedState {
            phase: state.phase(),
            reason,
            message,
            cancelled_by,
        }
    }

    /// The state it records.
    pub fn state(&self) -> BuildState {
        let text = |t: &Option<String>| t.clone().unwrap_or_default();
        match self.phase {
            Phase::Queued => BuildState::Queued,
            Phase::Pending => BuildState::Pending {
                message: self.message.clone(),
            },
            Phase::Running => BuildState::Running,
            Phase::Succeeded => BuildState::Succeeded,
            Phase::Failed => BuildState::Failed {
                reason: text(&self.reason),
                message: text(&self.message),
            },
            Phase::Error => BuildState::Error {
                reason: text(&self.reason),
                message: text(&self.message),
            },
            Phase::Aborted => BuildState::Aborted {
                by: self.cancelled_by.clone(),
            },
        }
    }
}

/// What a listing shows of an archived build: the part of its record each job's index
/// keeps (`summary` in `index/CHUNK.json`), so a page of builds reads no record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedSummary {
    pub number: u64,
    /// Its Kubernetes Job's (or local build's) name.
    pub name: String,
    pub state: ArchivedState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_version: Option<String>,
    /// What each reporter was sent, as the `kubeci.io/reported` annotation writes it
    /// (`github-checks:pending,running,success,check-run=42;webhook:pending,success`).
    #[serde(default)]
    pub reported: String,
    /// Its pod's name, when it had one (`{pod}` in a log URL template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// When it was requested (queued), started and finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
    /// What the index keeps of its test results (their counts, the tests that failed
    /// and were flaky), when its job declares `test_reports` (issue 30): a test's
    /// history is read from the index alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsInBuild>,
    /// How many files it left for download.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub artifacts: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ArchivedSummary {
    /// How the API shows it: as it showed the build live ([`BuildView::of`]).
    pub fn view(&self, namespace: &str, job: &str, log_template: Option<&str>) -> BuildView {
        let state = self.state.state();
        let seconds = |t: &Option<jiff::Timestamp>| t.map(|t| t.as_second());
        let facts = BuildFacts {
            namespace,
            job,
            number: self.number,
            name: self.name.clone(),
            state: &state,
            trigger: self.trigger.clone(),
            requested_by: self.requested_by.clone(),
            commit: self.commit.clone(),
            pull_request: self.pull_request,
            spec_hash: self.spec_hash.clone(),
            chart_version: self.chart_version.clone(),
            reported: ReportRecord::parse(Some(&self.reported)).states(),
            pod: self.pod.clone(),
            created_at: seconds(&self.created_at),
            started_at: seconds(&self.started_at),
            finished_at: seconds(&self.finished_at),
            git_url: None,
            check_name: None,
        };
        BuildView {
            tests: self.tests.as_ref().map(|tests| *tests.counts()),
            ..BuildView::of(facts, log_template)
        }
    }

    /// When it started, else when it was requested: the index's `started`.
    pub fn began(&self) -> Option<jiff::Timestamp> {
        self.started_at.or(self.created_at)
    }
}

/// One step of an archived build's log (`logs/STEP.log`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedStep {
    /// `clone`, `build`: its container's name.
    pub name: String,
    /// How many lines, and the size of its object in the archive.
    pub lines: u64,
    pub bytes: u64,
    /// Why it is not the step's whole log (its pod was gone before all of it was read),
    /// when it is not; absent when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// A build's record in the archive (`record.json`): everything the API shows of it, the
/// request a rebuild repeats, what its reports were named by, and its log's steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedBuild {
    /// [`RECORD_VERSION`].
    pub version: u32,
    pub namespace: String,
    pub job: String,
    /// Its final record: it ended and its log (every step in `log`) is archived. False
    /// for its first record, written when it started.
    pub complete: bool,
    #[serde(flatten)]
    pub build: ArchivedSummary,
    /// The request it was started with: what a rebuild repeats.
    pub request: BuildRequest,
    /// The repository it was made from, as recorded on it, credentials hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// The name its job reported under when it was created, as recorded on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_name: Option<String>,
    /// When this record was written.
    pub archived_at: jiff::Timestamp,
    /// Its log's steps, in order (empty in a first record).
    #[serde(default)]
    pub log: Vec<ArchivedStep>,
}

impl ArchivedBuild {
    /// A build's first record from what the engine knows of it (`facts`), what is
    /// recorded as reported, and its request; `now` in seconds since the epoch.
    pub fn of(
        facts: &BuildFacts<'_>,
        reported: &ReportRecord,
        request: BuildRequest,
        now: i64,
    ) -> ArchivedBuild {
        let time = |s: Option<i64>| s.and_then(|s| jiff::Timestamp::from_second(s).ok());
        ArchivedBuild {
            version: RECORD_VERSION,
            namespace: facts.namespace.to_owned(),
            job: facts.job.to_owned(),
            complete: false,
            build: ArchivedSummary {
                number: facts.number,
                name: facts.name.clone(),
                state: ArchivedState::of(facts.state),
                trigger: facts.trigger.clone(),
                requested_by: facts.requested_by.clone(),
                commit: facts.commit.clone(),
                pull_request: facts.pull_request,
                spec_hash: facts.spec_hash.clone(),
                chart_version: facts.chart_version.clone(),
                reported: reported.format(),
                pod: facts.pod.clone(),
                created_at: time(facts.created_at),
                started_at: time(facts.started_at),
                finished_at: time(facts.finished_at),
                tests: None,
                artifacts: 0,
            },
            request,
            git_url: (facts.git_url.as_deref())
                .map(|url| kubeci_spec::redact::redact_url(url).into_owned()),
            check_name: facts.check_name.clone(),
            archived_at: time(Some(now)).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            log: Vec::new(),
        }
    }

    /// How the API shows it: as it showed the build live.
    pub fn view(&self, log_template: Option<&str>) -> BuildView {
        self.build.view(&self.namespace, &self.job, log_template)
    }

    /// How far it archives its build.
    pub fn archived(&self) -> Archived {
        match self.complete {
            true => Archived::Complete,
            false => Archived::First,
        }
    }

    pub fn build_ref(&self) -> BuildRef<'_> {
        BuildRef {
            namespace: &self.namespace,
            job: &self.job,
            number: self.build.number,
        }
    }

    /// Whether it can be the record of `build` (read from `build`'s key): of this
    /// version, and naming that build. Says what is wrong when not.
    pub fn check(&self, build: BuildRef<'_>) -> Result<(), String> {
        if self.version != RECORD_VERSION {
            return Err(format!(
                "it is a record of version {} (this kubeci reads version {RECORD_VERSION}; a newer kubeci wrote it)",
                self.version
            ));
        }
        if self.build_ref() != build {
            return Err(format!(
                "it is the record of {}, not of {build}",
                self.build_ref()
            ));
        }
        Ok(())
    }
}

/// One line of a log with its time when known: what the engines give the archive of each
/// step, and what it gives back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    pub time: Option<jiff::Timestamp>,
    /// The line's bytes, without its newline.
    pub text: Vec<u8>,
}

impl TimedLine {
    /// The line as a build's log shows it (`Backend::log`): with its time first when
    /// `timestamps` and known ([`crate::api::stamp_line`]), and its newline.
    pub fn written(&self, timestamps: bool) -> Vec<u8> {
        let mut text = match self.time.filter(|_| timestamps) {
            Some(at) => crate::api::stamp_line(at, &self.text),
            None => self.text.clone(),
        };
        text.push(b'\n');
        text
    }
}

/// The container whose step begins at `line` (`==> clone: init container started`,
/// `==> build: container started`, as both engines' logs write it; the local engine adds
/// the command: `… started (/bin/bash -c …)`), if it begins one.
pub fn step_of(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(b"==> ")?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (name, what) = rest.split_once(": ")?;
    let what = match what.split_once(" (") {
        Some((what, command)) if command.ends_with(')') => what,
        _ => what,
    };
    let named = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (named && matches!(what, "init container started" | "container started")).then_some(name)
}
