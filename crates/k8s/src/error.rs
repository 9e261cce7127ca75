//! What fails in the Kubernetes engine: each variant names the API call that failed and
//! carries kube's error. The engine's own error types (`TriggerError`, `CancelError`,
//! `WorkloadError`) carry these as their source.

/// A Kubernetes API call of the engine that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Creating a build's Job.
    #[error("cannot create Job {namespace}/{name}: {source}")]
    CreateJob {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a build's Job.
    #[error("cannot read Job {namespace}/{name}: {source}")]
    ReadJob {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Changing a build's Job (`what`: releasing, stopping, deleting, recording a report).
    #[error("cannot {what} Job {namespace}/{name}: {source}")]
    WriteJob {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Changing a build's pod (`what`: releasing it).
    #[error("cannot {what} pod {namespace}/{name}: {source}")]
    Pod {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Reading or writing a job's ledger Lease (build numbers, request keys, cron runs).
    #[error("cannot update the ledger of job {namespace}/{job}: {source}")]
    Ledger {
        namespace: String,
        job: String,
        /// Shared by the requests whose changes were written together.
        #[source]
        source: std::sync::Arc<kube::Error>,
    },
}

impl ClusterError {
    /// The API error underneath.
    pub fn kube(&self) -> &kube::Error {
        match self {
            ClusterError::CreateJob { source, .. }
            | ClusterError::ReadJob { source, .. }
            | ClusterError::WriteJob { source, .. }
            | ClusterError::Pod { source, .. } => source,
            ClusterError::Ledger { source, .. } => source,
        }
    }

    /// Whether the object is gone (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self.kube(), kube::Error::Api(status) if status.code == 404)
    }

    /// Worth trying again: the API server could not be reached, timed out, was
    /// overloaded (429) or failed (5xx); a refusal (4xx) is not.
    pub fn is_retryable(&self) -> bool {
        match self.kube() {
            kube::Error::Api(status) => status.code == 429 || status.code >= 500,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn refusals_are_final_overload_and_failures_are_retried() {
        let write = |code| ClusterError::WriteJob {
            what: "release",
            namespace: "ci".into(),
            name: "demo-1".into(),
            source: api(code),
        };
        assert!(!write(403).is_retryable());
        assert!(!write(422).is_retryable());
        assert!(write(429).is_retryable());
        assert!(write(503).is_retryable());
        assert!(write(404).is_not_found());
        assert!(
            write(403)
                .to_string()
                .starts_with("cannot release Job ci/demo-1: "),
            "{}",
            write(403)
        );
    }
}
