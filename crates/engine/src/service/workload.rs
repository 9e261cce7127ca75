//! Every [`BuildStore`] is the scheduler's [`Workload`]: what differs between engines in
//! the leader's pass is a [`StoreWorkload`]; the log tail of a final report, the cron jobs
//! and a cron run are [`Service`]'s.

use std::future::Future;

use super::{BuildStore, Service};
use crate::report::{ReportRecord, ReportTarget};
use crate::scheduler::{CronJob, JobBuilds, Stop, Workload, WorkloadError};

/// What the leader's pass does to an engine's builds, as only that engine can (see
/// [`Workload`], whose methods of the same names these are).
pub trait StoreWorkload: Send + Sync + 'static {
    fn snapshot(&self, now: i64, reporting: bool) -> impl Future<Output = Vec<JobBuilds>> + Send;
    fn release_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    fn stop_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        why: Stop,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    fn delete_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    fn record_reported(
        &self,
        target: &ReportTarget,
        reported: &ReportRecord,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send;
    /// The scheduled time of job `job`'s last cron build, if it had one.
    fn last_cron_run(&self, namespace: &str, job: &str) -> Option<i64>;
}

impl<S: BuildStore> Workload for S {
    fn snapshot(&self, now: i64, reporting: bool) -> impl Future<Output = Vec<JobBuilds>> + Send {
        StoreWorkload::snapshot(self, now, reporting)
    }

    fn release_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send {
        StoreWorkload::release_build(self, namespace, job, number)
    }

    fn stop_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        why: Stop,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send {
        StoreWorkload::stop_build(self, namespace, job, number, why)
    }

    fn delete_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send {
        StoreWorkload::delete_build(self, namespace, job, number)
    }

    fn record_reported(
        &self,
        target: &ReportTarget,
        reported: &ReportRecord,
    ) -> impl Future<Output = Result<(), WorkloadError>> + Send {
        StoreWorkload::record_reported(self, target, reported)
    }

    async fn log_tail(&self, target: &ReportTarget, max_bytes: usize) -> Option<String> {
        Service(self).log_tail(target, max_bytes).await
    }

    fn cron_jobs(&self) -> Vec<CronJob> {
        Service(self).cron_jobs()
    }

    async fn start_cron(
        &self,
        namespace: &str,
        job: &str,
        due: i64,
    ) -> Result<bool, WorkloadError> {
        Service(self).start_cron(namespace, job, due).await
    }
}
