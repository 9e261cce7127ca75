//! The local engine as the leader's pass sees it ([`Workload`]): builds from SQLite, a
//! released build started as local processes, reports and cron runs recorded in SQLite.
//! The job files are re-read before a snapshot when `reload_every` has passed. The pass
//! itself is [`kubeci_engine::scheduler`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use kubeci_engine::api::{Backend, LogOptions, TriggerRequest};
use kubeci_engine::report::{ReportRecord, ReportTarget};
use kubeci_engine::scheduler::{
    self, CronJob, JobBuilds, ScheduledBuild, Scheduler, SchedulerSettings, Stop, Turn, Workload,
    WorkloadError,
};
use kubeci_spec::LoadedJob;

use crate::store::BuildRow;
use crate::{summary, LocalBackend, LocalBackendError};

impl From<LocalBackendError> for WorkloadError {
    fn from(error: LocalBackendError) -> WorkloadError {
        WorkloadError::Failed(error.into())
    }
}

impl LocalBackend {
    /// The leader's loop (the local engine always leads): a pass on every change and at
    /// least every second.
    pub(crate) async fn schedule(self: Arc<Self>) {
        let scheduler = Scheduler::new(
            self.clone(),
            self.reporter.clone(),
            SchedulerSettings::default(),
            self.counters.clone(),
            self.changed.clone(),
        );
        scheduler
            .run(std::time::Duration::from_secs(1), || Turn::Lead {
                // Its data directory is locked: no other process reports its builds.
                predecessor_may_be_reporting: false,
            })
            .await;
    }

    /// Re-reads the job files when `reload_every` has passed since the last time.
    fn reload_if_due(&self) {
        {
            let mut last = self.last_reload.lock().expect("the reload lock");
            if last.elapsed() < self.settings.reload_every {
                return;
            }
            *last = Instant::now();
        }
        // Looked at and read without the jobs' lock: pages go on reading the jobs as they
        // were until the new ones are in.
        let scan = kubeci_jobfiles::scan(&self.settings.jobs_dir);
        if self.jobs.read().expect("the jobs lock").is_current(&scan) {
            return;
        }
        let jobs = kubeci_jobfiles::JobSet::read(scan, &self.settings.load);
        *self.jobs.write().expect("the jobs lock") = jobs;
        log::info!("the jobs in {} changed", self.settings.jobs_dir.display());
    }

    /// The name `job`'s builds are reported under, among the valid jobs of its repository.
    fn check_name(&self, namespace: &str, job: &kubeci_spec::Job) -> Option<String> {
        let repository = kubeci_spec::checkname::repository_of(job)?;
        let specs = self.specs(Some(std::slice::from_ref(&repository)));
        let jobs: Vec<(&str, &kubeci_spec::Job)> =
            specs.iter().map(|(n, j)| (n.as_str(), &**j)).collect();
        kubeci_spec::checkname::check_name_among(namespace, &job.name, &jobs)
    }

    fn report_target(&self, row: &BuildRow, loaded: Option<&LoadedJob>) -> ReportTarget {
        let job = loaded.and_then(|l| l.job.as_ref());
        ReportTarget {
            namespace: row.namespace.clone(),
            job: row.job.clone(),
            number: row.number,
            build_name: kubeci_build::build_name(&row.job, row.number),
            trigger: Some(row.request.trigger.as_str().to_owned()),
            git_url: job.map(|j| j.git.url.clone()),
            commit: row.commit(),
            pull_request: row.request.pull_request.as_ref().map(|p| p.number),
            url: kubeci_render::build_url(
                &self.settings.render,
                &row.namespace,
                &row.job,
                row.number,
            ),
            context: job.and_then(|j| self.check_name(&row.namespace, j)),
            created_at: Some(row.created_at),
        }
    }

    fn row(&self, namespace: &str, job: &str, number: u64) -> Result<BuildRow, WorkloadError> {
        self.store()
            .build(namespace, job, number)?
            .ok_or(WorkloadError::Gone)
    }
}

impl Workload for LocalBackend {
    async fn snapshot(&self, _now: i64, reporting: bool) -> Vec<JobBuilds> {
        self.reload_if_due();
        let rows = match self.store().all_builds() {
            Ok(rows) => rows,
            Err(e) => {
                log::warn!("{e}");
                return Vec::new();
            }
        };
        let mut groups: BTreeMap<(String, String), Vec<BuildRow>> = BTreeMap::new();
        for row in rows {
            groups
                .entry((row.namespace.clone(), row.job.clone()))
                .or_default()
                .push(row);
        }
        groups
            .into_iter()
            .map(|((namespace, job), rows)| {
                let declaration = self.declaration(&namespace, &job);
                let valid = self.job(&namespace, &job);
                let loaded = valid.clone().or(declaration.clone());
                let builds = rows
                    .iter()
                    .map(|row| ScheduledBuild {
                        summary: summary(row, false),
                        reported: ReportRecord::parse(Some(&row.reported)),
                        target: reporting.then(|| self.report_target(row, valid.as_deref())),
                    })
                    .collect();
                JobBuilds {
                    namespace,
                    job,
                    loaded,
                    declared: declaration.is_some(),
                    builds,
                    keep: BTreeSet::new(),
                }
            })
            .collect()
    }

    async fn release_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<(), WorkloadError> {
        let row = self.row(namespace, job, number)?;
        let me = self.me.upgrade().ok_or(WorkloadError::Gone)?;
        Ok(me.run(row)?)
    }

    async fn stop_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        why: Stop,
    ) -> Result<(), WorkloadError> {
        let by = match why {
            Stop::Cancel { by } => by,
            Stop::Fail { reason, message } => format!("kubeci ({reason}: {message})"),
        };
        Ok(self.stop(namespace, job, number, &by)?)
    }

    async fn delete_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<(), WorkloadError> {
        Ok(self.store().delete_build(namespace, job, number)?)
    }

    async fn record_reported(
        &self,
        target: &ReportTarget,
        record: &ReportRecord,
    ) -> Result<(), WorkloadError> {
        let store = self.store();
        let row = store
            .build(&target.namespace, &target.job, target.number)?
            .ok_or(WorkloadError::Gone)?;
        let text = ReportRecord::parse(Some(&row.reported))
            .union(record)
            .format();
        Ok(store.record_reported(&target.namespace, &target.job, target.number, &text)?)
    }

    async fn log_tail(&self, target: &ReportTarget, max_bytes: usize) -> Option<String> {
        let stream = Backend::log(
            self,
            &target.namespace,
            &target.job,
            target.number,
            LogOptions::default(),
        )
        .await
        .ok()?;
        kubeci_engine::api::log_tail(stream, max_bytes).await
    }

    fn cron_jobs(&self) -> Vec<CronJob> {
        let valid: Vec<Arc<LoadedJob>> = self.jobs.read().expect("the jobs lock").valid();
        valid
            .iter()
            .filter_map(|loaded| {
                CronJob::declared_by(loaded, |namespace, job| {
                    self.store().last_cron_run(namespace, job).ok().flatten()
                })
            })
            .collect()
    }

    async fn start_cron(
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
        let triggered = self
            .trigger(request)
            .await
            .map_err(|e| WorkloadError::Failed(e.into()))?;
        self.store().set_last_cron_run(namespace, job, due)?;
        Ok(triggered.created)
    }
}
