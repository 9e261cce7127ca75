//! What a backend offers the server: the jobs, their builds, and manual builds. The views
//! are the JSON of the REST API.

use std::future::Future;

use serde::Serialize;

use crate::build::BuildState;

/// A job as the API shows it, valid or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub namespace: String,
    /// The job's name, when it could be read.
    pub name: Option<String>,
    /// `ConfigMap namespace/name`.
    pub configmap: Option<String>,
    pub valid: bool,
    /// Error messages, `file:line:column: message`.
    pub errors: Vec<String>,
    pub git_url: Option<String>,
    pub branch: Option<String>,
    pub chart_version: Option<String>,
    pub spec_hash: String,
}

/// A build as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildView {
    pub number: u64,
    /// The Kubernetes Job (or local build) that runs it.
    pub name: String,
    pub state: &'static str,
    /// Why it is in that state, when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub trigger: Option<String>,
    pub commit: Option<String>,
    pub spec_hash: Option<String>,
}

impl BuildView {
    pub fn describe(state: &BuildState) -> (&'static str, Option<String>) {
        let message = match state {
            BuildState::Pending { message } => message.clone(),
            BuildState::Failed { message, .. } | BuildState::Error { message, .. } => {
                Some(message.clone())
            }
            BuildState::Aborted { by } => by.as_ref().map(|b| format!("cancelled by {b}")),
            _ => None,
        };
        (state.name(), message)
    }
}

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
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(String),
}

/// A backend as the server uses it.
pub trait Backend: Send + Sync + 'static {
    /// Whether the backend has its first complete view (its caches are synced).
    fn ready(&self) -> bool;
    fn jobs(&self) -> Vec<JobView>;
    /// The builds of a job, newest first; `None` if there is no such job.
    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>>;
    /// Starts a build of a job.
    fn trigger(
        &self,
        namespace: &str,
        name: &str,
        requested_by: Option<String>,
    ) -> impl Future<Output = Result<BuildView, TriggerError>> + Send;
}
