//! What the leader's pass asks of a backend: what only it can do to its builds
//! ([`Workload`]), and what it answers through the commands a user's requests also take
//! ([`Commands`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;

use kubeci_build::BuildRef;
use kubeci_results::TestResults;

use super::{CronJob, JobBuilds, Stop, WorkloadError};
use crate::archive::Archived;
use crate::report::{ReportRecord, ReportTarget};

/// A job: (namespace, name).
pub type JobKey = (String, String);

/// What changed in a workload since a pass last asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The builds, declaration or ledger of these jobs.
    Jobs(BTreeSet<JobKey>),
    /// Anything: a re-list, a declaration or a Namespace's rules (which may change any
    /// job's policy), or a workload that does not follow its changes.
    Everything,
}

impl Default for Changes {
    fn default() -> Changes {
        Changes::Jobs(BTreeSet::new())
    }
}

/// The changes a workload follows (from its watch events), until a pass takes them.
#[derive(Debug, Default)]
pub struct ChangeLog(Mutex<Changes>);

impl ChangeLog {
    /// Job `job` of `namespace` changed.
    pub fn job(&self, namespace: &str, job: &str) {
        if let Changes::Jobs(jobs) = &mut *self.0.lock().expect("the changes lock") {
            jobs.insert((namespace.to_owned(), job.to_owned()));
        }
    }

    /// Anything may have changed.
    pub fn everything(&self) {
        *self.0.lock().expect("the changes lock") = Changes::Everything;
    }

    /// What changed since the last call.
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.0.lock().expect("the changes lock"))
    }
}

/// What a backend can do to its builds, as only it can, when the leader's pass acts.
pub trait Workload: Send + Sync + 'static {
    /// The jobs that have builds, with their builds, as of now (with report targets when
    /// `reporting`): those of `only`, or every one when `None`. The Kubernetes engine
    /// also builds the requests of those jobs whose creator died here, before it answers.
    fn snapshot(
        &self,
        now: i64,
        reporting: bool,
        only: Option<&BTreeSet<JobKey>>,
    ) -> impl Future<Output = Vec<JobBuilds>> + Send;
    /// What changed since the last call, so a pass looks again only at the jobs that
    /// changed (and those with something left to do). The default, for a workload that
    /// does not follow its changes: everything, each pass.
    fn take_changes(&self) -> Changes {
        Changes::Everything
    }
    /// Lets a queued build start.
    fn release_build(
        &self,
        build: BuildRef<'_>,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    fn stop_build(
        &self,
        build: BuildRef<'_>,
        why: Stop,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    fn delete_build(
        &self,
        build: BuildRef<'_>,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    /// Archives `build` as far as `stage` (`crate::service::Service::archive`) and records
    /// on it that it is (its summary's `archived`). An engine that cannot archive says so.
    fn archive_build(
        &self,
        build: BuildRef<'_>,
        stage: Archived,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send {
        let _ = (build, stage);
        std::future::ready(Err(WorkloadError::Failed(
            "this engine does not archive builds".into(),
        )))
    }
    /// Adds `reported` to what is recorded as reported on the build. A union, reporter by
    /// reporter, never a replacement: a slow writer (a replica that lost the lead
    /// mid-write, another reporter's task) cannot take back a state another one recorded.
    fn record_reported(
        &self,
        target: &ReportTarget,
        reported: &ReportRecord,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
}

/// What the leader's pass asks of an engine through the commands a user's requests also
/// take (a cron run is a trigger, a report's log tail a log read): written once over every
/// engine's store (`crate::service`), and in memory for the scheduler's tests.
pub trait Commands: Send + Sync + 'static {
    /// The last lines of the build's log, at most `max_bytes` of them, if it has one.
    fn log_tail(
        &self,
        target: &ReportTarget,
        max_bytes: usize,
    ) -> impl Future<Output = Option<String>> + Send;
    /// The test results of the build, once it ended and if it left any (read from where
    /// they are kept: the archive's `tests.json`), for a final report. `None` when it left
    /// none or they cannot be read now: the report goes without them.
    fn test_results(
        &self,
        target: &ReportTarget,
    ) -> impl Future<Output = Option<TestResults>> + Send;
    /// The ids of the tests in `results` judged flaky from their history (a failed case
    /// whose id is here is reported as "known flaky"). The default: none.
    fn known_flaky(
        &self,
        target: &ReportTarget,
        results: &TestResults,
    ) -> impl Future<Output = Vec<String>> + Send {
        let _ = (target, results);
        std::future::ready(Vec::new())
    }
    /// The valid jobs with a cron trigger.
    fn cron_jobs(&self) -> Vec<CronJob>;
    /// Starts the cron build of `job` due at `due` (once per due time, whatever happens
    /// to this call) and records `due` as its last run; whether it started one now.
    fn start_cron(
        &self,
        namespace: &str,
        job: &str,
        due: i64,
    ) -> impl Future<Output = Result<bool, WorkloadError>> + Send;
    /// Applies the archive's retention, one bounded batch per job, to `jobs` (namespace,
    /// job), or to every declared job when `None`, at `now` (seconds since the epoch).
    fn archive_retention(
        &self,
        jobs: Option<Vec<(String, String)>>,
        now: i64,
    ) -> impl Future<Output = ()> + Send {
        let _ = (jobs, now);
        std::future::ready(())
    }
}
