//! What a backend offers the server: the jobs, their builds, and manual builds. The views
//! are the JSON of the REST API.
//!
//! - [`view`] — `JobView`, `BuildView`, `BuildFacts`, the log-URL template, times
//! - [`errors`] — why a command failed (`TriggerError`, `CancelError`, …)
//! - [`log`] — `LogOptions`, timestamped lines, `LogStream`, `log_tail`
//! - [`states`] — `NewestState`, `LatestStates`
//! - [`results`] — a build's tests (`BuildTests`), a test's history (`TestHistory`)
//! - this file — the [`Backend`] trait, a trigger's request and answer, the engine's kind
//!
//! Every item stays readable as `kubeci_engine::api::X`.

pub mod errors;
pub mod log;
pub mod results;
pub mod states;
pub mod view;

use std::future::Future;

use kubeci_build::BuildRequest;

pub use crate::archive::ArchiveError;
pub use errors::{ApproveError, BackendError, CancelError, LogError, TriggerError};
pub use log::{log_tail, split_stamp, stamp_line, LogOptions, LogStream};
pub use results::{BuildTests, TestHistory, TestInBuild, HISTORY_BUILDS};
pub use states::{LatestStates, NewestState, StatesByJob};
pub use view::{human_duration, log_url, timestamp, triggers, BuildFacts, BuildView, JobView};

/// What a collector's `done` says it did not send, and why: read (its request's body) only
/// once its token is known, so no one unknown is waited for.
pub type RefusedList = std::pin::Pin<
    Box<
        dyn Future<
                Output = Result<Vec<kubeci_results::RefusedFile>, crate::collector::CollectRefusal>,
            > + Send,
    >,
>;

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

/// Which of a job's builds a page holds: up to `limit`, newest first, numbered below
/// `before` (all when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub before: Option<u64>,
    pub limit: usize,
}

/// A page of a job's builds, live and archived, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildsPage {
    pub builds: Vec<BuildView>,
    /// Builds numbered below the last one exist: there is a next page.
    pub more: bool,
    /// Why archived builds may be missing from it (the archive could not be read now).
    pub archive_error: Option<String>,
}

impl BuildsPage {
    /// The page of `limit` out of `builds` (newest first, already below the page's
    /// `before`; one more than `limit` says there is a next page).
    pub fn of(mut builds: Vec<BuildView>, limit: usize, archive_error: Option<String>) -> Self {
        let more = builds.len() > limit;
        builds.truncate(limit);
        BuildsPage {
            builds,
            more,
            archive_error,
        }
    }
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
    /// The builds of a job the engine holds live (its Jobs, its database's rows), newest
    /// first; `None` if there is no such job. Archived builds are not among them: a
    /// job's page of builds is [`Backend::builds_page`].
    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>>;
    /// A page of a job's builds, live and archived, newest first; `None` if there is no
    /// such job (declared, or with builds). The default pages [`Backend::builds`].
    fn builds_page(
        &self,
        namespace: &str,
        name: &str,
        page: PageRequest,
    ) -> impl Future<Output = Option<BuildsPage>> + Send {
        let builds = self.builds(namespace, name).map(|builds| {
            let below = builds
                .into_iter()
                .filter(|b| page.before.is_none_or(|before| b.number < before));
            BuildsPage::of(below.collect(), page.limit, None)
        });
        std::future::ready(builds)
    }
    /// Build `number` of a job: live, else archived; an archived record that cannot be
    /// read is an error for that build. The default looks in [`Backend::builds`]; an
    /// engine whose view of builds lags behind the store (a watch cache) also asks the
    /// store, so a build another replica just started is found at once.
    fn build(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> impl Future<Output = Result<Option<BuildView>, ArchiveError>> + Send {
        let found = self
            .builds(namespace, name)
            .and_then(|builds| builds.into_iter().find(|b| b.number == number));
        std::future::ready(Ok(found))
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
    /// The newest `limit` builds (live and archived) of each of `jobs` (namespace,
    /// name), newest first: the recent builds the jobs page shows for the jobs on it.
    fn recent_builds(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> impl Future<Output = std::collections::HashMap<(String, String), Vec<BuildView>>> + Send
    {
        let recent = jobs
            .iter()
            .filter_map(|(namespace, name)| {
                let mut builds = self.builds(namespace, name)?;
                builds.truncate(limit);
                Some(((namespace.clone(), name.clone()), builds))
            })
            .collect();
        std::future::ready(recent)
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
    /// The request build `number` of a job was started with (live, else archived): what
    /// a rebuild repeats.
    fn request(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> impl Future<Output = Option<BuildRequest>> + Send;
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
    /// Why archiving is behind, when builds wait to be archived: what the pages say.
    fn archive_behind(&self) -> Option<String> {
        None
    }
    /// The engine's metrics (builds by job and state, queue length, errors).
    fn metrics(&self) -> Vec<crate::metrics::Family> {
        Vec::new()
    }
    /// Called once when kubeci stops: give up what other replicas should take over now
    /// (the Kubernetes engine gives its leader Lease back).
    fn stop(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// What build `number` of a job left (issue 30): its artifacts and test counts;
    /// `None` when it left nothing, or the engine keeps no archive.
    fn outputs(
        &self,
        _namespace: &str,
        _name: &str,
        _number: u64,
    ) -> impl Future<Output = Result<Option<kubeci_results::BuildOutputs>, ArchiveError>> + Send
    {
        std::future::ready(Ok(None))
    }
    /// Build `number`'s test results, and its failures known flaky; `None` when it has
    /// none.
    fn tests(
        &self,
        _namespace: &str,
        _name: &str,
        _number: u64,
    ) -> impl Future<Output = Result<Option<BuildTests>, ArchiveError>> + Send {
        std::future::ready(Ok(None))
    }
    /// Test `id`'s history over a job's archived builds numbered below `before` (all when
    /// `None`), newest first.
    fn test_history(
        &self,
        _namespace: &str,
        _name: &str,
        id: &str,
        _before: Option<u64>,
    ) -> impl Future<Output = Result<TestHistory, ArchiveError>> + Send {
        std::future::ready(Ok(TestHistory {
            id: id.to_owned(),
            builds: Vec::new(),
            flaky: None,
            flaky_because: None,
        }))
    }
    /// One file build `number` left at `path` (one its outputs list): its size and bytes.
    fn artifact(
        &self,
        _namespace: &str,
        _name: &str,
        _number: u64,
        _path: &str,
    ) -> impl Future<Output = Result<Option<(u64, crate::archive::ArchivedFile)>, ArchiveError>> + Send
    {
        std::future::ready(Ok(None))
    }
    /// A build pod's collector hands over one file of its build (issue 30): `token` is
    /// its pod's; the bytes written, or why not (see [`crate::collector`]).
    fn put_output(
        &self,
        _token: &str,
        _kind: crate::archive::FileKind,
        _path: &str,
        _bytes: crate::archive::FileChunks,
    ) -> impl Future<Output = Result<u64, crate::collector::CollectRefusal>> + Send {
        std::future::ready(Err(crate::collector::CollectRefusal::not_taken()))
    }
    /// A build pod's collector has handed over all its files (`refused`: those it did
    /// not, and why, read only once its token is known): what its build left, committed.
    fn outputs_done(
        &self,
        _token: &str,
        _refused: RefusedList,
    ) -> impl Future<Output = Result<kubeci_results::BuildOutputs, crate::collector::CollectRefusal>>
           + Send {
        std::future::ready(Err(crate::collector::CollectRefusal::not_taken()))
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
