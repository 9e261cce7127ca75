//! Why a command of a [`super::Backend`] failed.

use crate::build::{BuildState, Phase};

/// What failed inside a backend (the cluster's API, the local engine's database), with
/// its own error as the source.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a build could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No such job. Not worth retrying.
    #[error("no job {namespace}/{name}")]
    NotFound { namespace: String, name: String },
    /// The job's definition has errors. Not worth retrying until its ConfigMap changes.
    #[error("job {namespace}/{name} is invalid: {errors}")]
    Invalid {
        namespace: String,
        name: String,
        errors: String,
    },
    /// The request was made before and its build has since been deleted. Not worth
    /// retrying with the same key.
    #[error("the build this request started before ({number}) has been deleted")]
    Gone { number: u64 },
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(#[source] BackendError),
}

/// Why an approval could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// No such job. Not worth retrying.
    #[error("no job {namespace}/{name}")]
    NotFound { namespace: String, name: String },
    /// The cluster or the database failed. Worth retrying.
    #[error("cannot record the approval: {0}")]
    Backend(#[source] BackendError),
}

impl ApproveError {
    pub fn not_found(namespace: &str, name: &str) -> ApproveError {
        ApproveError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Why a build could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such build. Not worth retrying.
    #[error("no build {number} of job {namespace}/{name}")]
    NotFound {
        namespace: String,
        name: String,
        number: u64,
    },
    /// It already finished. Not worth retrying.
    #[error("build {number} of job {namespace}/{name} already finished ({state})")]
    Finished {
        namespace: String,
        name: String,
        number: u64,
        state: Phase,
    },
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(#[source] BackendError),
}

impl CancelError {
    pub fn not_found(namespace: &str, name: &str, number: u64) -> CancelError {
        CancelError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
            number,
        }
    }

    /// Whether build `number` of a job, in `state`, may be cancelled: not once it ended.
    pub fn cancellable(
        namespace: &str,
        name: &str,
        number: u64,
        state: &BuildState,
    ) -> Result<(), CancelError> {
        if state.is_finished() {
            return Err(CancelError::Finished {
                namespace: namespace.into(),
                name: name.into(),
                number,
                state: state.phase(),
            });
        }
        Ok(())
    }
}

/// Why a build's log cannot be streamed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such build, or it has no pod (yet, or any more). Not worth retrying now.
    #[error("{0}")]
    NotFound(String),
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(#[source] BackendError),
    /// The build is archived and its archive cannot be read (now, or ever: see its kind).
    #[error("{0}")]
    Archive(#[source] crate::archive::ArchiveError),
}
