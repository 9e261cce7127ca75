//! What a backend offers the server: the jobs, their builds, and manual builds. The views
//! are the JSON of the REST API.
//!
//! - [`view`] — `JobView`, `BuildView`, `BuildFacts`, the log-URL template, times
//! - [`errors`] — why a command failed (`TriggerError`, `CancelError`, …)
//! - [`log`] — `LogOptions`, timestamped lines, `LogStream`, `log_tail`
//! - [`states`] — `NewestState`, `LatestStates`
//! - this file — the [`Backend`] trait, a trigger's request and answer, the engine's kind
//!
//! Every item stays readable as `kubeci_engine::api::X`.

pub mod errors;
pub mod log;
pub mod states;
pub mod view;

use std::future::Future;

use kubeci_build::BuildRequest;

pub use errors::{ApproveError, BackendError, CancelError, LogError, TriggerError};
pub use log::{log_tail, split_stamp, stamp_line, LogOptions, LogStream};
pub use states::{LatestStates, NewestState, StatesByJob};
pub use view::{human_duration, log_url, timestamp, triggers, BuildFacts, BuildView, JobView};

/// A build to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    pub namespace: String,
    pub name: String,
    /// What to build; its `number` is assigned by the backend.
    pub build: BuildRequest,
    /// The request's identity: a request with a key seen before starts nothing new and
    /// answers with the build the first one started (a retried API call, a redelivered
    /// webhook, a cron time). `None`: always a new build.
    pub key: Option<String>,
}

/// The build a trigger started, or had already started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggered {
    pub build: BuildView,
    /// False when the request's key had started it before.
    pub created: bool,
}

/// Which engine runs the builds: the pages name its own tools in their hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Kubernetes,
    Local,
}

pub use crate::webhooks::{BodyCheck, Delivery, DeliveryAnswer, NoWebhooks, Webhooks};

/// A backend as the server uses it.
pub trait Backend: Send + Sync + 'static {
    /// Whether the backend has its first complete view (its caches are synced).
    fn ready(&self) -> bool;
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// Why this engine cannot build `job`, if it cannot: said on the job's page before
    /// anyone presses "Build now".
    fn cannot_build(&self, _job: &kubeci_spec::LoadedJob) -> Option<String> {
        None
    }
    fn jobs(&self) -> Vec<JobView>;
    /// The namespaces that have jobs, sorted: the pages' namespace filter.
    fn namespaces(&self) -> Vec<String> {
        let found: std::collections::BTreeSet<String> =
            self.jobs().into_iter().map(|j| j.namespace).collect();
        found.into_iter().collect()
    }
    /// The builds of a job, newest first; `None` if there is no such job.
    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>>;
    /// Build `number` of a job. The default looks in [`Backend::builds`]; an engine whose
    /// view of builds lags behind the store (a watch cache) also asks the store, so a
    /// build another replica just started is found at once.
    fn build(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> impl Future<Output = Option<BuildView>> + Send {
        let found = self
            .builds(namespace, name)
            .and_then(|builds| builds.into_iter().find(|b| b.number == number));
        std::future::ready(found)
    }
    /// Every job as declared, valid or not (one per ConfigMap or job file), shared: what
    /// the jobs page filters before it builds views of the jobs it shows.
    fn declared_jobs(&self) -> Vec<std::sync::Arc<kubeci_spec::LoadedJob>>;
    /// The state of the newest build of every job that has one: the jobs page's state
    /// filter, without building a view of every build.
    fn latest_states(&self) -> LatestStates {
        let mut states = StatesByJob::new();
        for job in self.jobs() {
            let Some(name) = job.name else { continue };
            if let Some(newest) = self
                .builds(&job.namespace, &name)
                .and_then(|b| b.into_iter().next())
            {
                states
                    .entry(job.namespace)
                    .or_default()
                    .insert(name, newest.state.into());
            }
        }
        LatestStates::new(vec![std::sync::Arc::new(states)], 0)
    }
    /// The newest `limit` builds of each of `jobs` (namespace, name), newest first: the
    /// recent builds the jobs page shows for the jobs on it.
    fn recent_builds(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> std::collections::HashMap<(String, String), Vec<BuildView>> {
        jobs.iter()
            .filter_map(|(namespace, name)| {
                let mut builds = self.builds(namespace, name)?;
                builds.truncate(limit);
                Some(((namespace.clone(), name.clone()), builds))
            })
            .collect()
    }
    /// Starts a build of a job.
    fn trigger(
        &self,
        request: TriggerRequest,
    ) -> impl Future<Output = Result<Triggered, TriggerError>> + Send;
    /// Cancels a build that has not finished; `by` is recorded as who cancelled it.
    fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> impl Future<Output = Result<BuildView, CancelError>> + Send;
    /// Records an admin's approval of one pull request head for job `name`, kept with the
    /// job's records so that it survives restarts and hand-overs.
    fn approve(
        &self,
        namespace: &str,
        name: &str,
        approval: crate::approval::Approval,
    ) -> impl Future<Output = Result<(), ApproveError>> + Send;
    /// The approvals recorded for job `name`, newest first.
    fn approvals(&self, namespace: &str, name: &str) -> Vec<crate::approval::Approval>;
    /// The request build `number` of a job was started with: what a rebuild repeats.
    fn request(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRequest>;
    /// The valid jobs declared now, with the namespace their builds run in; only those
    /// whose `git.url` names one of `repositories` (`GitUrl::repository_key`) when given
    /// (the GitHub webhook's matching).
    fn specs(
        &self,
        repositories: Option<&[String]>,
    ) -> Vec<(String, std::sync::Arc<kubeci_spec::Job>)>;
    /// Job `name` of `namespace` as declared (valid or not), with its `job.yaml` as written.
    fn declaration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<std::sync::Arc<kubeci_spec::LoadedJob>>;
    /// The engine's metrics (builds by job and state, queue length, errors).
    fn metrics(&self) -> Vec<crate::metrics::Family> {
        Vec::new()
    }
    /// Called once when kubeci stops: give up what other replicas should take over now
    /// (the Kubernetes engine gives its leader Lease back).
    fn stop(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// A build's log, its steps (clone, build) each begun by a line `==> {container}:
    /// (init )container started`.
    fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        options: LogOptions,
    ) -> impl Future<Output = Result<LogStream, LogError>> + Send;
}
