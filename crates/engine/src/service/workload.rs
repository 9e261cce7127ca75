//! Every [`BuildStore`] answers the leader's pass's [`Commands`] through [`Service`]: the
//! log tail and the test results of a final report, the cron jobs and a cron run. What differs between engines
//! in the pass is each engine's own [`crate::scheduler::Workload`].

use kubeci_results::TestResults;

use super::{BuildStore, Service};
use crate::report::ReportTarget;
use crate::scheduler::{Commands, CronJob, WorkloadError};

impl<S: BuildStore> Commands for S {
    async fn log_tail(&self, target: &ReportTarget, max_bytes: usize) -> Option<String> {
        Service(self).log_tail(target, max_bytes).await
    }

    async fn test_results(&self, target: &ReportTarget) -> Option<TestResults> {
        Service(self).test_results(target).await
    }

    async fn known_flaky(&self, target: &ReportTarget, results: &TestResults) -> Vec<String> {
        let commit = target.commit.as_deref();
        Service(self)
            .known_flaky_ids(
                &target.namespace,
                &target.job,
                target.number,
                commit,
                results,
            )
            .await
    }

    fn cron_jobs(&self) -> Vec<CronJob> {
        Service(self).cron_jobs()
    }

    async fn archive_retention(&self, jobs: Option<Vec<(String, String)>>, now: i64) {
        Service(self).archive_retention(jobs, now).await
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
