//! The leader's pass, written once for both backends. Each pass takes a snapshot of every
//! job's builds from a [`Workload`] (the narrow part of a backend: its builds, and what it
//! can do to one), decides with the pure functions of this crate — the job's policy
//! ([`JobPolicy::of`]), [`plan::plan`] (release, fail, cancel, delete), the report owed
//! next ([`reports`]), the cron run due — and acts through the workload. Reports go
//! through one queue per reporter with retries and backoff, each sent in its own task so
//! a slow receiver never holds a pass, and a failing one neither holds nor repeats the
//! others' reports. Superseded builds are cancelled through the same trait
//! ([`cancel_superseded`]).
//!
//! The Kubernetes engine's workload is the cluster (its caches and the API), the local
//! engine's its SQLite store and running processes.

mod archiving;
mod attempt;
mod focus;
mod in_flight;
mod reports;
#[cfg(test)]
mod tests;
mod workload;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubeci_build::BuildRef;
use kubeci_spec::cron::CronSchedule;
use kubeci_spec::LoadedJob;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::archive::ArchiveStatus;
use crate::build::BuildSummary;
use crate::decide::{self, Subject};
use crate::metrics::Counters;
use crate::plan::{self, Action, JobPolicy};
use crate::report::{self, ReportRecord, ReportTarget, Reporter};
use crate::schedule;
use archiving::ArchivePass;
use attempt::ReportAttempt;
use focus::Focus;
pub use focus::WHOLE_PASS_EVERY;
pub use in_flight::InFlight;
use reports::{BuildKey, ReportQueue, Step};
pub use workload::{ChangeLog, Changes, Commands, JobKey, Workload};

/// A build as a pass sees it.
#[derive(Debug, Clone)]
pub struct ScheduledBuild {
    /// Its summary; `fully_reported` is the scheduler's to decide.
    pub summary: BuildSummary,
    /// What was recorded on it as reported, per reporter.
    pub reported: ReportRecord,
    /// What a report about it says; `None` when nothing is reported (no reporter), so a
    /// pass over many builds builds no report for any.
    pub target: Option<ReportTarget>,
}

/// A job's builds as a pass sees them.
#[derive(Debug, Clone)]
pub struct JobBuilds {
    pub namespace: String,
    pub job: String,
    /// Its declaration, when one is known (valid or not).
    pub loaded: Option<Arc<LoadedJob>>,
    /// A ConfigMap still declares it (valid or not).
    pub declared: bool,
    /// Newest first, or in any order: the plan does not depend on it.
    pub builds: Vec<ScheduledBuild>,
    /// Builds this pass must not delete (the Kubernetes engine still settles their
    /// request in the job's ledger).
    pub keep: BTreeSet<u64>,
}

/// A job with a cron trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronJob {
    pub namespace: String,
    pub job: String,
    /// Its `triggers.cron`, as written.
    pub schedule: String,
    /// The scheduled time of its last cron build.
    pub last_run: Option<i64>,
}

impl CronJob {
    /// The cron job `loaded` declares, if it is valid and has a cron trigger;
    /// `last_run(namespace, job)` reads its last run.
    pub fn declared_by(
        loaded: &LoadedJob,
        last_run: impl FnOnce(&str, &str) -> Option<i64>,
    ) -> Option<CronJob> {
        let job = loaded.job.as_ref()?;
        let schedule = job.triggers.as_ref()?.cron.clone()?;
        Some(CronJob {
            last_run: last_run(&loaded.namespace, &job.name),
            namespace: loaded.namespace.clone(),
            job: job.name.clone(),
            schedule,
        })
    }
}

/// What the cron build due at `due` requests, and its request key: one build per due
/// time, however often it is asked for.
pub fn cron_request(due: i64) -> (kubeci_build::BuildRequest, String) {
    let request = kubeci_build::BuildRequest {
        trigger: kubeci_build::Trigger::Cron,
        ..kubeci_build::BuildRequest::manual(0)
    };
    (request, format!("cron:{due}"))
}

/// Why a build is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It cannot start (Kubernetes' reason and message).
    Fail { reason: String, message: String },
    /// Someone, or kubeci, cancelled it.
    Cancel { by: String },
}

/// Why a workload could not act on a build.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The build is gone (deleted meanwhile): nothing left to do. Not worth retrying.
    #[error("the build is gone")]
    Gone,
    /// The backend's store refused or failed. Worth retrying: the next pass does.
    #[error("{0}")]
    Failed(#[source] crate::api::BackendError),
}

/// What the scheduler is told by the server's flags.
#[derive(Debug, Clone, Default)]
pub struct SchedulerSettings {
    /// Cancel the unfinished builds of a job whose ConfigMap was deleted.
    pub cancel_when_deleted: bool,
    /// After taking the lead, how long builds from before wait for their first report to
    /// a receiver that creates an object with it (a check run): the leader before may
    /// still have such a call under way (the longest a report can take). Zero when no
    /// other process can be reporting (the local engine: its data directory is locked).
    pub takeover_grace: Duration,
    /// Builds are archived (`--archive`): how archiving goes is recorded here after each
    /// pass. `None`: builds are not archived.
    pub archiving: Option<Arc<ArchiveStatus>>,
}

/// How much of a build's log a final report carries at most.
pub const LOG_TAIL_BYTES: usize = 16 * 1024;

/// What the scheduler may do now, asked before each pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Another replica leads, or this one is not ready.
    Wait,
    /// This replica leads. When it has just taken the lead: whether a leader before it
    /// may still have report calls under way
    /// ([`crate::leader::predecessor_may_be_reporting`]), so the takeover grace applies.
    Lead { predecessor_may_be_reporting: bool },
}

/// When this scheduler took the lead.
#[derive(Debug, Clone, Copy)]
struct Lead {
    /// Seconds since the epoch (builds created before may have been reported by
    /// another).
    since: i64,
    at: tokio::time::Instant,
    /// A leader before may still have report calls under way.
    after_a_reporting_leader: bool,
}

/// One reporter and its own report queue.
struct Channel {
    reporter: Arc<dyn Reporter>,
    queue: Arc<Mutex<ReportQueue>>,
}

impl Channel {
    fn queue(&self) -> std::sync::MutexGuard<'_, ReportQueue> {
        self.queue.lock().expect("the reports lock")
    }
}

/// The leader's pass over a workload, and its reporters' queues.
pub struct Scheduler<W> {
    workload: Arc<W>,
    /// Each reporter, reported to alone.
    channels: Vec<Channel>,
    settings: SchedulerSettings,
    counters: Arc<Counters>,
    /// Woken when a report attempt ends, so the next step follows at once.
    changed: Arc<Notify>,
    /// Set while it leads (by [`Scheduler::run`]); passes made without it treat every
    /// build as its own.
    lead: Mutex<Option<Lead>>,
    /// Its report calls under way.
    in_flight: Arc<InFlight>,
    /// When the archive's retention last went over every job.
    retention_swept: Mutex<Option<tokio::time::Instant>>,
    /// Which jobs the next pass looks at.
    focus: Mutex<Focus>,
}

/// The counter of the workload writes of a pass that failed.
pub const RECONCILE_ERRORS: &str = "kubeci_reconcile_errors_total";

impl<W: Workload + Commands> Scheduler<W> {
    /// A scheduler reporting to each of `reporter`'s members alone ([`report::each`]).
    /// Panics if two have one name, or one a name [`report::valid_reporter_name`] refuses:
    /// kubeci's reporters are named by its own code ([`report::Reporters::new`] checks).
    pub fn new(
        workload: Arc<W>,
        reporter: Option<Arc<dyn Reporter>>,
        settings: SchedulerSettings,
        counters: Arc<Counters>,
        changed: Arc<Notify>,
    ) -> Scheduler<W> {
        let reporters = reporter.as_ref().map(report::each).unwrap_or_default();
        if let Err(e) = report::Reporters::new(reporters.clone()) {
            panic!("kubeci's reporters: {e}");
        }
        let channels = reporters
            .into_iter()
            .map(|reporter| Channel {
                queue: Arc::new(Mutex::new(ReportQueue::new(reporter.reports_running()))),
                reporter,
            })
            .collect();
        Scheduler {
            workload,
            channels,
            settings,
            counters,
            changed,
            lead: Mutex::new(None),
            in_flight: Arc::default(),
            retention_swept: Mutex::new(None),
            focus: Mutex::default(),
        }
    }

    /// Its report calls under way: closed and settled by a leader that stops.
    pub fn in_flight(&self) -> Arc<InFlight> {
        Arc::clone(&self.in_flight)
    }

    /// Passes whenever something changed and at least every `every`, while `turn` says
    /// it leads (the Kubernetes engine: while this replica leads and its caches are
    /// synced).
    pub async fn run(self, every: Duration, turn: impl Fn() -> Turn + Send) {
        loop {
            if let Turn::Lead {
                predecessor_may_be_reporting,
            } = turn()
            {
                let now = jiff::Timestamp::now().as_second();
                self.lead
                    .lock()
                    .expect("the lead lock")
                    .get_or_insert(Lead {
                        since: now,
                        at: tokio::time::Instant::now(),
                        after_a_reporting_leader: predecessor_may_be_reporting,
                    });
                self.pass(now).await;
            } else {
                *self.lead.lock().expect("the lead lock") = None;
                self.focus.lock().expect("the focus lock").forget();
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One pass at time `now` (seconds since the epoch) over the builds of the jobs not at
    /// rest and of those that changed ([`focus`]), or of every job now and then.
    pub async fn pass(&self, now: i64) {
        let reporting = !self.channels.is_empty();
        let changes = self.workload.take_changes();
        let only = self.focus.lock().expect("the focus lock").jobs(
            changes,
            now,
            tokio::time::Instant::now(),
        );
        let jobs = self.workload.snapshot(now, reporting, only.as_ref()).await;
        for channel in &self.channels {
            channel.queue().begin_pass();
        }
        let mut archiving = ArchivePass::default();
        for group in jobs {
            let policy = JobPolicy {
                archiving: self.settings.archiving.is_some(),
                ..JobPolicy::of(
                    group.loaded.as_deref(),
                    group.declared,
                    self.settings.cancel_when_deleted,
                )
            };
            let mut summaries = Vec::with_capacity(group.builds.len());
            for mut build in group.builds {
                build.summary.fully_reported = self.fully_reported(&build);
                if reporting {
                    self.report((&group.namespace, &group.job, build.summary.number), &build);
                }
                summaries.push(build.summary);
            }
            let actions: Vec<Action> = plan::plan(&policy, &summaries, now)
                .into_iter()
                .filter(|action| !matches!(action, Action::Delete(n) if group.keep.contains(n)))
                .collect();
            let rest = focus::rest(&policy, &summaries, &group.keep, &actions, now);
            let key = (group.namespace.clone(), group.job.clone());
            self.focus.lock().expect("the focus lock").found(key, rest);
            for action in actions {
                let Action::Archive { stage, .. } = action else {
                    self.act(&group.namespace, &group.job, action).await.ok();
                    continue;
                };
                if archiving.store_away() {
                    continue;
                }
                let result = self.act(&group.namespace, &group.job, action).await;
                archiving.record((&group.namespace, &group.job), stage, result);
            }
        }
        if let Some(status) = &self.settings.archiving {
            let whole = archiving.end(status);
            self.archive_retention(whole, now).await;
        }
        for channel in &self.channels {
            channel.queue().end_pass(only.as_ref());
        }
        self.cron(now).await;
    }

    /// Whether `build` owes no report to any reporter that wants it (each was sent its
    /// final state, or none wants it).
    fn fully_reported(&self, build: &ScheduledBuild) -> bool {
        let Some(target) = &build.target else {
            return true;
        };
        let at = (
            target.namespace.as_str(),
            target.job.as_str(),
            target.number,
        );
        let mut known = build.reported.clone();
        let mut wanting = Vec::new();
        for channel in self.channels.iter().filter(|c| c.reporter.wants(target)) {
            let name = channel.reporter.name();
            let sent = channel.queue().known(at, &known.of(name));
            known = known.union(&ReportRecord::only(name, sent));
            wanting.push((name, channel.reporter.reports_running()));
        }
        report::fully_reported(&build.summary.state, &known, wanting)
    }

    #[tracing::instrument(
        name = "build_action",
        skip_all,
        fields(namespace = namespace, job = job, build = action.number(), action = action.name())
    )]
    async fn act(&self, namespace: &str, job: &str, action: Action) -> Result<(), WorkloadError> {
        let done = action.done();
        let (label, failed) = match action {
            Action::Archive { .. } => ("archive", "cannot archive the build"),
            _ => ("update", "cannot update the build"),
        };
        let at = |number| BuildRef {
            namespace,
            job,
            number,
        };
        let result = match action {
            Action::Fail {
                number,
                reason,
                message,
            } => {
                tracing::warn!(%reason, detail = %message, "the build cannot start: failing it");
                let why = Stop::Fail { reason, message };
                self.workload.stop_build(at(number), why).await
            }
            Action::Cancel { number, by } => {
                self.workload
                    .stop_build(at(number), Stop::Cancel { by })
                    .await
            }
            Action::Release(number) => self.workload.release_build(at(number)).await,
            Action::Delete(number) => self.workload.delete_build(at(number)).await,
            Action::Archive { number, stage } => {
                self.workload.archive_build(at(number), stage).await
            }
        };
        match &result {
            Ok(()) => tracing::info!("{done}"),
            Err(WorkloadError::Gone) => return Ok(()),
            Err(e) => {
                self.counters.increment(RECONCILE_ERRORS, &[label]);
                tracing::warn!(error = %e, "{failed}");
            }
        }
        result
    }

    /// Whether `target` was created before this scheduler took the lead, and whether the
    /// grace after taking it is still running.
    fn created_before_the_lead(&self, target: &ReportTarget) -> (bool, bool) {
        let Some(lead) = *self.lead.lock().expect("the lead lock") else {
            return (false, false);
        };
        let before = target.created_at.is_none_or(|t| t <= lead.since);
        let grace =
            lead.after_a_reporting_leader && lead.at.elapsed() < self.settings.takeover_grace;
        (before, grace)
    }

    /// Takes the report step `build` owes each reporter, if any, each in a task of its own.
    fn report(&self, at: (&str, &str, u64), build: &ScheduledBuild) {
        let Some(target) = &build.target else {
            return;
        };
        let (from_before, in_grace) = self.created_before_the_lead(target);
        for channel in &self.channels {
            let reporter = &channel.reporter;
            if !reporter.wants(target) {
                continue;
            }
            let recorded = build.reported.of(reporter.name());
            let creates = reporter.creates_on_first_report() && recorded.check_run.is_none();
            if from_before && in_grace && creates {
                continue;
            }
            let Some(in_flight) = self.in_flight.begin() else {
                return;
            };
            let (step, key, attempts) = {
                let mut queue = channel.queue();
                let now = tokio::time::Instant::now();
                let Some(step) = queue.take(at, &build.summary.state, &recorded, now) else {
                    continue;
                };
                let key: BuildKey = (at.0.to_owned(), at.1.to_owned(), at.2);
                let attempts = queue.attempts(&key);
                (step, key, attempts)
            };
            let attempt = ReportAttempt {
                key,
                target: target.clone(),
                build: build.summary.state.clone(),
                finished_at: build.summary.finished_at,
                from_before,
                attempts,
                workload: self.workload.clone(),
                reporter: reporter.clone(),
                reports: channel.queue.clone(),
                changed: self.changed.clone(),
                _in_flight: in_flight,
            };
            let span = tracing::info_span!(
                "report",
                namespace = at.0,
                job = at.1,
                build = at.2,
                state = tracing::field::Empty,
                reporter = reporter.name(),
            );
            if let Step::Send { state, .. } = &step {
                span.record("state", state.as_str());
            }
            tokio::spawn(attempt.run(step).instrument(span));
        }
    }

    /// Starts the cron builds that are due.
    async fn cron(&self, now: i64) {
        for cron in self.workload.cron_jobs() {
            let Ok(schedule) = CronSchedule::parse(&cron.schedule, &cron.job) else {
                continue;
            };
            let Some(due) = schedule::due_run(&schedule, cron.last_run, now) else {
                continue;
            };
            let (namespace, job) = (&cron.namespace, &cron.job);
            let span = tracing::info_span!("cron", namespace, job);
            async {
                match self.workload.start_cron(namespace, job, due).await {
                    Ok(true) => tracing::info!("cron started a build"),
                    Ok(false) => {}
                    Err(e) => {
                        self.counters.increment(RECONCILE_ERRORS, &["cron"]);
                        tracing::warn!(error = %e, "cron cannot start a build");
                    }
                }
            }
            .instrument(span)
            .await;
        }
    }
}

/// Cancels the unfinished builds that build `request.number` of `loaded` supersedes,
/// through `workload`; `builds` reads the job's builds, only when the request can
/// supersede any (a manual or cron build never does).
pub async fn cancel_superseded<W: Workload>(
    workload: &W,
    loaded: &LoadedJob,
    request: &kubeci_build::BuildRequest,
    builds: impl FnOnce() -> Vec<BuildSummary>,
) {
    let Some(job) = loaded.job.as_ref() else {
        return;
    };
    let Some(subject) = Subject::of(request, job) else {
        return;
    };
    for number in decide::superseded_builds(&subject, request.number, &builds()) {
        let by = format!("kubeci (superseded by build {})", request.number);
        let stopped = workload
            .stop_build(
                BuildRef {
                    namespace: &loaded.namespace,
                    job: &job.name,
                    number,
                },
                Stop::Cancel { by },
            )
            .await;
        if let Err(e) = stopped {
            tracing::warn!(
                namespace = %loaded.namespace,
                job = %job.name,
                build = number,
                superseded_by = request.number,
                error = %e,
                "cannot cancel a superseded build"
            );
        }
    }
}
