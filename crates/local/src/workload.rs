//! The local engine as the leader's pass sees it ([`Workload`]): builds from SQLite, a
//! released build started as local processes, reports and cron runs recorded in SQLite.
//! The job files are re-read before a snapshot when `reload_every` has passed. The pass
//! itself is [`kubeci_engine::scheduler`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use kubeci_build::BuildRef;
use kubeci_engine::archive::Archived;
use kubeci_engine::report::{ReportRecord, ReportTarget};
use kubeci_engine::scheduler::{
    JobBuilds, JobKey, Scheduler, SchedulerSettings, Stop, Turn, Workload, WorkloadError,
};
use kubeci_engine::service::Service;

use crate::store::{BuildRow, Reads};
use crate::{LocalBackend, LocalBackendError};

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
            SchedulerSettings {
                archiving: self.common.archiving.when_on(),
                ..SchedulerSettings::default()
            },
            self.common.counters.clone(),
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
        tracing::info!(dir = %self.settings.jobs_dir.display(), "the job files changed");
    }

    async fn row(&self, build: BuildRef<'_>) -> Result<BuildRow, WorkloadError> {
        let (namespace, job, number) = owned(build);
        self.with_store(move |store| store.build(&namespace, &job, number))
            .await?
            .ok_or(WorkloadError::Gone)
    }
}

/// A build's names, owned (for the store's thread).
fn owned(build: BuildRef<'_>) -> (String, String, u64) {
    (
        build.namespace.to_owned(),
        build.job.to_owned(),
        build.number,
    )
}

impl Workload for LocalBackend {
    /// Every job, each pass: the local engine does not follow its changes.
    async fn snapshot(
        &self,
        _now: i64,
        reporting: bool,
        _only: Option<&BTreeSet<JobKey>>,
    ) -> Vec<JobBuilds> {
        self.reload_if_due();
        let rows = match self.with_store(|store| store.all_builds()).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the builds");
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
        Service(self).snapshot(groups, reporting, |_| BTreeSet::new())
    }

    async fn release_build(&self, build: BuildRef<'_>) -> Result<(), WorkloadError> {
        let row = self.row(build).await?;
        let me = self.me.upgrade().ok_or(WorkloadError::Gone)?;
        Ok(me.run(row).await?)
    }

    async fn stop_build(&self, build: BuildRef<'_>, why: Stop) -> Result<(), WorkloadError> {
        let by = match why {
            Stop::Cancel { by } => by,
            Stop::Fail { reason, message } => format!("kubeci ({reason}: {message})"),
        };
        Ok(self
            .stop(build.namespace, build.job, build.number, &by)
            .await?)
    }

    async fn delete_build(&self, build: BuildRef<'_>) -> Result<(), WorkloadError> {
        let (namespace, job, number) = owned(build);
        Ok(self
            .with_store(move |store| store.delete_build(&namespace, &job, number))
            .await?)
    }

    async fn archive_build(
        &self,
        build: BuildRef<'_>,
        stage: Archived,
    ) -> Result<(), WorkloadError> {
        self.archive_build_now(build, stage).await
    }

    async fn record_reported(
        &self,
        target: &ReportTarget,
        record: &ReportRecord,
    ) -> Result<(), WorkloadError> {
        let (target, record) = (target.clone(), record.clone());
        // Read and written under one lock: no other record of the build falls between.
        self.with_store(move |store| {
            let (namespace, job, number) = (&target.namespace, &target.job, target.number);
            let row = store
                .build(namespace, job, number)?
                .ok_or(WorkloadError::Gone)?;
            let text = ReportRecord::parse(Some(&row.reported))
                .union(&record)
                .format();
            Ok(store.record_reported(namespace, job, number, &text)?)
        })
        .await
    }
}
