//! The commands of a [`crate::api::Backend`], written once for both engines, over the narrow
//! [`BuildStore`] each implements — as the leader's pass ([`crate::scheduler`]) is written
//! once over [`crate::scheduler::Workload`]; every store is that `Workload` too. What the commands decide lives here: a trigger's "no such job"
//! and "invalid job" answers, a build's view and its log URL (the job's `log_url`, else
//! the server's template), cancelling (no such build, already finished, stop), the builds
//! a new one supersedes, metrics, and the address of a build's reports
//! ([`Service::report_target`], by `kubeci_spec::checkname::report_name`). What differs
//! between the engines stays behind the store: the Kubernetes engine numbers a build in
//! its job's ledger Lease (compare-and-swap) and creates a Job, reads builds from watch
//! caches and logs from pods; the local engine numbers and keeps builds in SQLite and runs
//! them as processes. Every [`Engine`] (a store that also says whether it is ready and
//! which it is) is a `Backend`.

mod archive;
mod backend;
mod collect;
mod naming;
mod outputs;
mod read;
pub mod uploads;
mod workload;

pub use backend::Engine;
pub use collect::MAX_REPORTED_REFUSALS;

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use kubeci_build::{BuildRef, BuildRequest, JobRef};
use kubeci_results::TestResults;
use kubeci_spec::{Catalogue, Job, LoadedJob};

use crate::api::{
    ApproveError, BackendError, BuildFacts, BuildView, CancelError, JobView, LatestStates,
    LogError, LogOptions, LogStream, TriggerError, TriggerRequest, Triggered,
};
use crate::approval::Approval;
use crate::archive::{Archiving, StepLog};
use crate::metrics::{self, Counters, Family};
use crate::report::{ReportRecord, ReportTarget};
use crate::scheduler::{self, CronJob, JobBuilds, ScheduledBuild, Workload, WorkloadError};
use crate::BuildSummary;

/// A build to create: what [`Service::trigger`] asks of a store once the job is known to
/// be valid.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    /// The job, valid.
    pub loaded: &'a Arc<LoadedJob>,
    /// What to build; its number is the store's to assign.
    pub request: BuildRequest,
    /// The request's identity (see [`TriggerRequest::key`]); `None`: always a new build.
    pub key: Option<String>,
    /// The name the job reports under now, recorded on the build
    /// (`kubeci_build::keys::CHECK_NAME`): its reports' name should the job turn invalid.
    pub check_name: Option<String>,
    /// A cron build's due time, recorded as the job's last cron run with it.
    pub cron_run: Option<i64>,
    /// The highest number the archive holds for the job: the new build's number is above
    /// it, so numbers never repeat even once only the archive remembers them.
    pub floor: Option<u64>,
}

/// The build a store created, or the one the request's key had created before.
#[derive(Debug, Clone)]
pub struct Created<B> {
    pub build: B,
    /// False when the request's key had started it before.
    pub created: bool,
}

/// What every engine holds the same way, for the commands.
pub struct Common<J> {
    /// The jobs declared, shared with whatever keeps them current (watches, a file scan).
    pub jobs: Arc<RwLock<J>>,
    /// The server's `--log-url-template`.
    pub log_url_template: Option<String>,
    /// Where kubeci serves its pages: reports link to a build's page there.
    pub base_url: String,
    /// The failed writes of the leader's passes.
    pub counters: Arc<Counters>,
    /// Where builds are kept after their pods (`--archive`), if anywhere.
    pub archiving: Archiving,
    /// The build pods' uploads this kubeci writes at once.
    pub uploads: uploads::UploadSlots,
}

/// What an engine keeps, as the commands need it: its jobs, its builds' facts, and the
/// few acts that differ between engines (create, stop, approve, stream a log).
pub trait BuildStore: Workload {
    /// The jobs declared (`kubeci_k8s::JobIndex`, `kubeci_jobfiles::JobSet`).
    type Jobs: Catalogue;
    /// One build as the engine keeps it.
    type Build: Send + Sync;

    /// The scheduled time of job `job`'s last cron build, if it had one.
    fn last_cron_run(&self, namespace: &str, job: &str) -> Option<i64>;
    /// What the engine holds as every engine does.
    fn common(&self) -> &Common<Self::Jobs>;
    /// The jobs declared now (held only while the caller reads them: never across an await).
    fn catalogue(&self) -> impl Deref<Target = Self::Jobs> + '_ {
        self.common().jobs.read().expect("the jobs lock")
    }

    /// What the engine knows of `build`.
    fn facts<'a>(&self, build: &'a Self::Build) -> BuildFacts<'a>;
    fn summary(&self, build: &Self::Build) -> BuildSummary;
    /// What is recorded on `build` as reported.
    fn reported_of(&self, build: &Self::Build) -> ReportRecord;
    /// The request `build` was started with: what a rebuild repeats.
    fn request_of(&self, build: &Self::Build) -> BuildRequest;
    /// Where `build`'s checkout lies as its steps see it (absolute): test tools may name
    /// files under it (`ReportTarget::checkout_dir`).
    fn checkout_dir(&self, build: &Self::Build) -> Option<String>;

    /// The builds of a job, newest first.
    fn builds_of(&self, namespace: &str, job: &str) -> Result<Vec<Self::Build>, BackendError>;
    /// The newest `limit` builds of each of `jobs` (namespace, job), newest first: one
    /// answer per job, in the order asked (an engine may read them all at once).
    fn recent_builds_of(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> Vec<Result<Vec<Self::Build>, BackendError>> {
        let recent = |(namespace, job): &(String, String)| {
            let mut builds = self.builds_of(namespace, job)?;
            builds.truncate(limit);
            Ok(builds)
        };
        jobs.iter().map(recent).collect()
    }
    /// Every build of every job as the metrics count it (read at every scrape: only what
    /// they need, not each build's facts).
    fn measured(&self) -> Vec<metrics::BuildFact>;
    /// Build `number` of a job as the engine knows it now.
    fn build_now(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<Self::Build>, BackendError> {
        let builds = self.builds_of(namespace, job)?;
        Ok(builds
            .into_iter()
            .find(|b| self.summary(b).number == number))
    }
    /// Build `number` of a job; an engine whose view lags behind its store (a watch cache)
    /// also asks the store, so a build another replica just started is found at once.
    fn find_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> impl Future<Output = Result<Option<Self::Build>, BackendError>> + Send {
        std::future::ready(self.build_now(namespace, job, number))
    }
    /// The state of every job's newest build.
    fn newest_states(&self) -> LatestStates;

    /// Numbers and creates a build (once per key), wakes the leader's pass.
    fn create(
        &self,
        new: NewBuild<'_>,
    ) -> impl Future<Output = Result<Created<Self::Build>, TriggerError>> + Send;
    /// Stops `build`, recording `by` as who cancelled it; the build as stopped.
    fn cancel_build(
        &self,
        build: &Self::Build,
        by: &str,
    ) -> impl Future<Output = Result<Self::Build, WorkloadError>> + Send;
    /// Records an admin's approval with the job's records.
    fn record_approval(
        &self,
        job: JobRef<'_>,
        approval: Approval,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// The approvals recorded for a job, newest first.
    fn approvals_of(&self, job: JobRef<'_>) -> Vec<Approval>;
    /// Each step of `build`'s log (clone, build) with its lines' times, read as the
    /// archive takes them (in bounded memory), and how complete each is: what
    /// [`Service::archive`] archives of a build that ended.
    fn step_logs(
        &self,
        build: &Self::Build,
    ) -> impl Future<Output = Result<Vec<StepLog>, BackendError>> + Send {
        let _ = build;
        std::future::ready(Err(
            "this engine cannot read its logs for the archive".into()
        ))
    }
    /// Who presents `token` as a build pod's collector (the Kubernetes engine asks its
    /// cluster: a TokenReview); an engine that collects builds' files itself takes none.
    fn review_collector<'a>(
        &'a self,
        token: &'a str,
    ) -> impl Future<
        Output = Result<crate::collector::CollectorIdentity, crate::collector::CollectRefusal>,
    > + Send
           + 'a {
        let _ = token;
        std::future::ready(Err(crate::collector::CollectRefusal::not_taken()))
    }
    /// The pod `who` names and its Job (the one its controller reference names), as the
    /// engine holds them now.
    fn collector_objects(
        &self,
        who: &crate::collector::CollectorIdentity,
    ) -> (
        Option<Arc<kubeci_build::record::BuildPod>>,
        Option<Arc<kubeci_build::record::BuildJob>>,
    ) {
        let _ = who;
        (None, None)
    }
    /// A build's log (see [`crate::api::Backend::log`]).
    fn log_of(
        &self,
        build: BuildRef<'_>,
        how: LogOptions,
    ) -> impl Future<Output = Result<LogStream, LogError>> + Send;
}

/// The commands over a store: what a backend's [`crate::api::Backend`] methods call.
pub struct Service<'a, S>(pub &'a S);

impl<S: BuildStore> Service<'_, S> {
    pub fn jobs(&self) -> Vec<JobView> {
        let jobs = self.0.catalogue();
        jobs.all().iter().map(|j| JobView::of(j)).collect()
    }

    pub fn namespaces(&self) -> Vec<String> {
        self.0.catalogue().namespaces()
    }

    pub fn declared_jobs(&self) -> Vec<Arc<LoadedJob>> {
        self.0.catalogue().all()
    }

    pub fn declaration(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.0.catalogue().find_declared(namespace, name)
    }

    pub fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)> {
        self.0.catalogue().specs(repositories)
    }

    /// How the API shows `build`: its log URL from its job's `log_url` while the job is
    /// valid, else from the server's template.
    pub fn view(&self, build: &S::Build) -> BuildView {
        let facts = self.0.facts(build);
        let template = self.log_template(facts.namespace, facts.job);
        BuildView::of(facts, template.as_deref())
    }

    /// The log URL template of job `name`'s builds: its own while it is valid, else the
    /// server's.
    pub(super) fn log_template(&self, namespace: &str, name: &str) -> Option<String> {
        self.log_template_in(&self.0.catalogue(), namespace, name)
    }

    /// [`Service::log_template`], in `jobs` as the caller holds them.
    fn log_template_in(&self, jobs: &S::Jobs, namespace: &str, name: &str) -> Option<String> {
        let declared = jobs.find(namespace, name);
        let declared = declared.and_then(|l| l.job.as_ref()?.log_url.clone());
        declared.or_else(|| self.0.common().log_url_template.clone())
    }

    /// `builds` of job `name` as the API shows them, with its log URL `template`.
    fn views_with(&self, template: Option<&str>, builds: &[S::Build]) -> Vec<BuildView> {
        let view = |b| BuildView::of(self.0.facts(b), template);
        builds.iter().map(view).collect()
    }

    /// The builds of a job, newest first; `None` for a job neither declared nor built.
    pub fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>> {
        let builds = self.0.builds_of(namespace, name).ok()?;
        self.shown(namespace, name, &builds)?;
        let template = self.log_template(namespace, name);
        Some(self.views_with(template.as_deref(), &builds))
    }

    /// Whether a job with `builds` is shown: declared, or with builds.
    pub(super) fn shown(&self, namespace: &str, name: &str, builds: &[S::Build]) -> Option<()> {
        let declared = self.0.catalogue().is_declared(namespace, name);
        (declared || !builds.is_empty()).then_some(())
    }

    /// Starts a build of a valid job: no such job, or an invalid one, is said so.
    pub async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
        self.start(request, None).await
    }

    /// [`Service::trigger`], for a cron build due at `cron_run` when given.
    async fn start(
        &self,
        request: TriggerRequest,
        cron_run: Option<i64>,
    ) -> Result<Triggered, TriggerError> {
        let TriggerRequest {
            namespace,
            name,
            build,
            key,
        } = request;
        let (loaded, check_name) = {
            let jobs = self.0.catalogue();
            match jobs.find(&namespace, &name) {
                Some(loaded) => (loaded, jobs.check_name(&namespace, &name)),
                None => {
                    return Err(match jobs.find_declared(&namespace, &name) {
                        Some(invalid) => TriggerError::Invalid {
                            errors: JobView::of(&invalid).errors.join("; "),
                            namespace,
                            name,
                        },
                        None => TriggerError::NotFound { namespace, name },
                    })
                }
            }
        };
        let floor = self.archived_highest(&namespace, &name).await;
        let new = NewBuild {
            loaded: &loaded,
            request: build,
            key,
            check_name,
            cron_run,
            floor,
        };
        let Created { build, created } = match self.0.create(new).await {
            // The build the key started before is archived: that build.
            Err(TriggerError::Gone { number }) => {
                return match self.build(&namespace, &name, number).await {
                    Ok(Some(build)) => Ok(Triggered {
                        build,
                        created: false,
                    }),
                    _ => Err(TriggerError::Gone { number }),
                };
            }
            created => created?,
        };
        if created {
            self.cancel_superseded(&loaded, &self.0.request_of(&build))
                .await;
        }
        Ok(Triggered {
            build: self.view(&build),
            created,
        })
    }

    /// Every job with builds as the leader's pass sees it (see [`Service::job_builds`]),
    /// from its builds by (namespace, job); `keep` says which builds of a job the pass
    /// must not delete.
    pub fn snapshot(
        &self,
        groups: std::collections::BTreeMap<(String, String), Vec<S::Build>>,
        reporting: bool,
        keep: impl Fn(&(String, String)) -> std::collections::BTreeSet<u64>,
    ) -> Vec<JobBuilds> {
        groups
            .into_iter()
            .map(|(key, builds)| {
                let keep = keep(&key);
                self.job_builds(key, builds, reporting, keep)
            })
            .collect()
    }

    /// Job `namespace/job` with `builds` as the leader's pass sees it: its declaration
    /// (valid, else as declared: the policy reads why it is invalid), its builds with what
    /// is recorded as reported and, when `reporting`, where their reports go; `keep`, the
    /// builds the pass must not delete.
    pub fn job_builds(
        &self,
        (namespace, job): (String, String),
        builds: Vec<S::Build>,
        reporting: bool,
        keep: std::collections::BTreeSet<u64>,
    ) -> JobBuilds {
        // What names the reports is read once for all the job's builds.
        let naming = reporting.then(|| self.naming(&namespace, &job));
        let builds = builds
            .iter()
            .map(|build| ScheduledBuild {
                summary: self.0.summary(build),
                reported: match reporting {
                    true => self.0.reported_of(build),
                    false => ReportRecord::default(),
                },
                target: naming.as_ref().map(|n| self.report_target(build, n)),
            })
            .collect();
        let loaded = self.declaration(&namespace, &job);
        JobBuilds {
            namespace,
            job,
            declared: loaded.is_some(),
            loaded,
            builds,
            keep,
        }
    }

    /// The valid jobs with a cron trigger, with their last runs.
    pub fn cron_jobs(&self) -> Vec<CronJob> {
        let declared: Vec<Arc<LoadedJob>> = self.0.catalogue().all();
        declared
            .iter()
            .filter_map(|loaded| {
                CronJob::declared_by(loaded, |namespace, job| {
                    self.0.last_cron_run(namespace, job)
                })
            })
            .collect()
    }

    /// Starts the cron build of `job` due at `due` (once per due time) and records the
    /// run; whether it started one now.
    pub async fn start_cron(
        &self,
        namespace: &str,
        job: &str,
        due: i64,
    ) -> Result<bool, WorkloadError> {
        let (build, key) = scheduler::cron_request(due);
        let request = TriggerRequest {
            namespace: namespace.to_owned(),
            name: job.to_owned(),
            build,
            key: Some(key),
        };
        self.start(request, Some(due))
            .await
            .map(|triggered| triggered.created)
            .map_err(|e| WorkloadError::Failed(e.into()))
    }

    /// Cancels the unfinished builds that build `request` of `loaded` supersedes.
    pub async fn cancel_superseded(&self, loaded: &LoadedJob, request: &BuildRequest) {
        let builds = || {
            let name = loaded.job.as_ref().map_or("", |j| j.name.as_str());
            let builds = self.0.builds_of(&loaded.namespace, name);
            let builds = builds.unwrap_or_default();
            builds.iter().map(|b| self.0.summary(b)).collect()
        };
        scheduler::cancel_superseded(self.0, loaded, request, builds).await;
    }

    /// Cancels a build that has not finished; `by` is recorded as who cancelled it.
    pub async fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> Result<BuildView, CancelError> {
        let not_found = || CancelError::not_found(namespace, name, number);
        let found = self.0.find_build(namespace, name, number).await;
        let Some(build) = found.map_err(CancelError::Backend)? else {
            // Archived: it ended.
            return match self.build(namespace, name, number).await {
                Ok(Some(archived)) => Err(CancelError::Finished {
                    namespace: namespace.into(),
                    name: name.into(),
                    number,
                    state: archived.state,
                }),
                Ok(None) => Err(not_found()),
                Err(e) => Err(CancelError::Backend(e.into())),
            };
        };
        let state = &self.0.summary(&build).state;
        CancelError::cancellable(namespace, name, number, state)?;
        let stopped = self.0.cancel_build(&build, by).await.map_err(|e| match e {
            WorkloadError::Gone => not_found(),
            WorkloadError::Failed(e) => CancelError::Backend(e),
        })?;
        Ok(self.view(&stopped))
    }

    pub async fn approve(
        &self,
        namespace: &str,
        name: &str,
        approval: Approval,
    ) -> Result<(), ApproveError> {
        if !self.0.catalogue().is_declared(namespace, name) {
            return Err(ApproveError::not_found(namespace, name));
        }
        self.0
            .record_approval(
                JobRef {
                    namespace,
                    job: name,
                },
                approval,
            )
            .await
            .map_err(ApproveError::Backend)
    }

    pub fn approvals(&self, namespace: &str, name: &str) -> Vec<Approval> {
        self.0.approvals_of(JobRef {
            namespace,
            job: name,
        })
    }

    /// The state of every job's newest build: the live ones', else (for a job whose
    /// builds all left the engine) its newest archived one's.
    pub fn latest_states(&self) -> LatestStates {
        let live = self.0.newest_states();
        let archiving = &self.0.common().archiving;
        match archiving.archive {
            Some(_) => live.with_fallback(archiving.newest.states()),
            None => live,
        }
    }

    /// Builds by job and state, their durations, and the passes' failed writes.
    pub fn metrics(&self) -> Vec<Family> {
        let builds = self.0.measured();
        let mut families = metrics::build_families(&builds);
        families.push(metrics::reconcile_errors(&self.0.common().counters));
        let archiving = &self.0.common().archiving;
        if archiving.archive.is_some() {
            families.push(metrics::archive_pending(archiving.status.pending()));
            let uploads = self.0.common().uploads.writing();
            families.push(metrics::collector_uploads(uploads));
        }
        families
    }

    /// The last `max_bytes` of a build's log, for its final report.
    pub async fn log_tail(&self, target: &ReportTarget, max_bytes: usize) -> Option<String> {
        let options = LogOptions::default();
        let (namespace, job) = (&target.namespace, &target.job);
        let stream = self
            .log(namespace, job, target.number, options)
            .await
            .ok()?;
        crate::api::log_tail(stream, max_bytes).await
    }

    /// A build's test results, for its final report: its `tests.json` in the archive;
    /// `None` when it left none, or the archive cannot be read now (the report goes
    /// without them).
    pub async fn test_results(&self, target: &ReportTarget) -> Option<TestResults> {
        let archive = self.0.common().archiving.archive.clone()?;
        let build = kubeci_build::BuildRef {
            namespace: &target.namespace,
            job: &target.job,
            number: target.number,
        };
        match archive.tests(build).await {
            Ok(tests) => tests,
            Err(error) => {
                tracing::warn!(namespace = build.namespace, job = build.job, build = build.number, %error, "the build's test results cannot be read for its report");
                None
            }
        }
    }
}
