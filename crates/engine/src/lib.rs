//! The engine's decisions, backend-agnostic and pure: a build's state from its Job and
//! pod, which queued builds to release, which builds a new push supersedes, what to
//! delete, which build number is next, which commit status is still owed, and when a
//! cron job is due. The Kubernetes and local backends do the I/O around them; the leader's
//! pass that applies these decisions ([`scheduler`]) is written once, over the narrow
//! [`scheduler::Workload`] each backend implements.

pub mod api;
pub mod approval;
pub mod archive;
pub mod build;
pub mod collector;
pub mod decide;
pub mod leader;
pub mod ledger;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod pod_hold;
pub mod report;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod webhooks;

pub use build::{BuildState, BuildSummary, Phase};

#[cfg(test)]
pub(crate) mod tests {
    /// Shallow-merges `patch` into `target`, one level deep per key.
    pub fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
        if let (Some(t), serde_json::Value::Object(p)) = (target.as_object_mut(), patch) {
            for (k, v) in p {
                match (t.get_mut(&k), v) {
                    (
                        Some(existing @ serde_json::Value::Object(_)),
                        serde_json::Value::Object(inner),
                    ) => {
                        let existing = existing.as_object_mut().expect("an object");
                        existing.extend(inner);
                    }
                    (_, v) => {
                        t.insert(k, v);
                    }
                }
            }
        }
    }
}
