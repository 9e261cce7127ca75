//! Builds as the engine sees them, and their states.

use std::fmt;

/// The life of a build: queued → pending → running → succeeded | failed | error | aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildState {
    /// Waiting for a concurrency slot (its Job exists, suspended).
    Queued,
    /// Released, its pod not running yet (scheduling, pulling, cloning); `message` says why
    /// it waits when Kubernetes said so.
    Pending {
        message: Option<String>,
    },
    Running,
    Succeeded,
    /// The build script failed (or ran out of time).
    Failed {
        reason: String,
        message: String,
    },
    /// The build could not run: the pod never started, or the clone step failed.
    Error {
        reason: String,
        message: String,
    },
    /// Cancelled, by whom when known.
    Aborted {
        by: Option<String>,
    },
}

impl BuildState {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            BuildState::Succeeded
                | BuildState::Failed { .. }
                | BuildState::Error { .. }
                | BuildState::Aborted { .. }
        )
    }

    /// Holds a concurrency slot.
    pub fn is_active(&self) -> bool {
        matches!(self, BuildState::Pending { .. } | BuildState::Running)
    }

    pub fn name(&self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Pending { .. } => "pending",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed { .. } => "failed",
            BuildState::Error { .. } => "error",
            BuildState::Aborted { .. } => "aborted",
        }
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildState::Pending { message: Some(m) } => write!(f, "pending: {m}"),
            BuildState::Failed { reason, message } | BuildState::Error { reason, message } => {
                write!(f, "{} ({reason}): {message}", self.name())
            }
            BuildState::Aborted { by: Some(by) } => write!(f, "aborted by {by}"),
            other => f.write_str(other.name()),
        }
    }
}

/// What the engine needs to know of one build to decide about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSummary {
    pub number: u64,
    pub state: BuildState,
    /// The pull request it tests, if any.
    pub pull_request: Option<u64>,
    /// The branch it builds (push, manual and cron builds).
    pub branch: Option<String>,
    /// Its final state has been reported wherever it must be (GitHub).
    pub fully_reported: bool,
    /// When it finished (seconds since the Unix epoch).
    pub finished_at: Option<i64>,
    /// Kubernetes is done with its Job (finished, or stopped by kubeci). A build whose
    /// state is final but not settled (its pod cannot start) must still be stopped.
    pub settled: bool,
}
