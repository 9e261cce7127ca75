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
        self.phase().is_finished()
    }

    /// Holds a concurrency slot.
    pub fn is_active(&self) -> bool {
        matches!(self, BuildState::Pending { .. } | BuildState::Running)
    }

    /// Where it is in its life, without the why.
    pub fn phase(&self) -> Phase {
        match self {
            BuildState::Queued => Phase::Queued,
            BuildState::Pending { .. } => Phase::Pending,
            BuildState::Running => Phase::Running,
            BuildState::Succeeded => Phase::Succeeded,
            BuildState::Failed { .. } => Phase::Failed,
            BuildState::Error { .. } => Phase::Error,
            BuildState::Aborted { .. } => Phase::Aborted,
        }
    }

    pub fn name(&self) -> &'static str {
        self.phase().as_str()
    }
}

/// A build's state without its reason and message: what the API, the pages and the
/// metrics show (`queued`, `pending`, … on the wire).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Queued,
    Pending,
    Running,
    Succeeded,
    Failed,
    Error,
    Aborted,
}

impl Phase {
    /// Every phase, in the order of a build's life.
    pub const ALL: [Phase; 7] = [
        Phase::Queued,
        Phase::Pending,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Error,
        Phase::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Succeeded => "succeeded",
            Phase::Failed => "failed",
            Phase::Error => "error",
            Phase::Aborted => "aborted",
        }
    }

    /// The phase named by [`Phase::as_str`].
    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// Succeeded, failed, error or aborted: it will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Error | Phase::Aborted
        )
    }

    /// Failed, error or aborted: it did not succeed and will not.
    pub fn is_unsuccessful(self) -> bool {
        matches!(self, Phase::Failed | Phase::Error | Phase::Aborted)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// How far it is archived (the Kubernetes engine's `kubeci.io/archived` annotation,
    /// the local engine's `archived` column).
    pub archived: crate::archive::Archived,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_written_on_the_wire_as_its_word_and_read_back_from_it() {
        for phase in Phase::ALL {
            assert_eq!(
                serde_json::to_value(phase).unwrap(),
                serde_json::json!(phase.as_str())
            );
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("Running"), None);
        let unfinished: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| !p.is_finished())
            .collect();
        assert_eq!(
            unfinished,
            [Phase::Queued, Phase::Pending, Phase::Running],
            "what may still be cancelled, followed or superseded"
        );
    }
}
