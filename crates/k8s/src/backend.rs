//! [`Cluster`] as an [`Engine`] (so a `kubeci_engine::api::Backend`, whose commands are
//! `kubeci_engine::service`'s), over the cluster as a [`BuildStore`] — builds from the watch caches (a build missing from them
//! looked up in the API), created through the job's ledger Lease, stopped by suspending
//! their Job, approvals in the ledger, logs from the pods.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::ResourceExt;
use kubeci_build::{keys, BuildRef, BuildRequest, JobRef};
use kubeci_engine::api::{
    BackendError, BuildFacts, EngineKind, LatestStates, LogError, LogOptions, LogStream,
    TriggerError,
};
use kubeci_engine::approval::Approval;
use kubeci_engine::archive::StepLog;
use kubeci_engine::ledger::Ledger;
use kubeci_engine::metrics::BuildFact;
use kubeci_engine::report::ReportRecord;
use kubeci_engine::scheduler::WorkloadError;
use kubeci_engine::service::{BuildStore, Common, Created, Engine, NewBuild};
use kubeci_engine::{observe, BuildSummary};

use crate::{ledger, logs, now, BuildRecord, Cluster, ClusterError, JobIndex};

impl BuildStore for Cluster {
    type Jobs = JobIndex;
    type Build = BuildRecord;

    fn facts<'a>(&self, build: &'a BuildRecord) -> BuildFacts<'a> {
        Cluster::facts(self, build)
    }

    fn summary(&self, build: &BuildRecord) -> BuildSummary {
        build.summary.clone()
    }

    fn reported_of(&self, build: &BuildRecord) -> ReportRecord {
        ReportRecord::parse(
            build
                .job
                .annotations()
                .get(keys::REPORTED)
                .map(String::as_str),
        )
    }

    fn request_of(&self, build: &BuildRecord) -> BuildRequest {
        kubeci_build::recorded_request(build.summary.number, build.job.annotations())
    }

    /// Every build pod's checkout is at the same place.
    fn checkout_dir(&self, _: &BuildRecord) -> Option<String> {
        Some(kubeci_render::paths::CHECKOUT.to_owned())
    }

    async fn review_collector(
        &self,
        token: &str,
    ) -> Result<kubeci_engine::collector::CollectorIdentity, kubeci_engine::collector::CollectRefusal>
    {
        self.review_collector_token(token).await
    }

    fn collector_objects(
        &self,
        who: &kubeci_engine::collector::CollectorIdentity,
    ) -> (
        Option<Arc<kubeci_build::record::BuildPod>>,
        Option<Arc<kubeci_build::record::BuildJob>>,
    ) {
        Cluster::collector_objects(self, who)
    }

    fn builds_of(&self, namespace: &str, job: &str) -> Result<Vec<BuildRecord>, BackendError> {
        Ok(self.build_records(namespace, job))
    }

    fn measured(&self) -> Vec<BuildFact> {
        let mut facts = Vec::new();
        for (namespace, job) in self.jobs_with_builds(None) {
            for record in self.cached_records(&namespace, &job) {
                let started_at = (record.job.status.as_ref())
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.as_second());
                facts.push(BuildFact {
                    namespace: namespace.clone(),
                    job: job.clone(),
                    state: record.summary.state.phase(),
                    seconds: started_at
                        .zip(record.summary.finished_at)
                        .map(|(start, end)| (end - start).max(0) as f64),
                });
            }
        }
        facts
    }

    async fn find_build(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<BuildRecord>, BackendError> {
        Ok(self.cached_or_read(namespace, job, number).await)
    }

    fn newest_states(&self) -> LatestStates {
        let parts = self.scopes.iter().map(|s| s.newest.snapshot()).collect();
        LatestStates::new(parts, now())
    }

    async fn create(&self, new: NewBuild<'_>) -> Result<Created<BuildRecord>, TriggerError> {
        self.create_once(new).await
    }

    /// Suspends its Job (Kubernetes deletes its pod), recording who and when on it.
    async fn cancel_build(
        &self,
        build: &BuildRecord,
        by: &str,
    ) -> Result<BuildRecord, WorkloadError> {
        let namespace = build.job.namespace().unwrap_or_default();
        let annotations = serde_json::json!({ keys::CANCELLED_BY: by });
        let stopped = self
            .stop_job(&namespace, &build.job.name_any(), annotations)
            .await
            .map_err(crate::controller::failed)?;
        self.changed.notify_one();
        let summary = observe::summarize::<kubeci_build::record::BuildPod>(
            &stopped,
            &[],
            now(),
            self.pending_deadline(),
            self.reporter.is_some(),
        )
        .unwrap_or_else(|| build.summary.clone());
        Ok(BuildRecord {
            job: Arc::new(stopped),
            pods: build.pods.clone(),
            summary,
        })
    }

    async fn record_approval(
        &self,
        of: JobRef<'_>,
        approval: Approval,
    ) -> Result<(), BackendError> {
        let cache = self.ledger_cache(of.namespace, of.job);
        ledger::approve(
            &self.ledgers,
            &self.client,
            cache,
            of.namespace,
            of.job,
            &approval,
        )
        .await
        .map_err(|source| {
            ClusterError::Ledger {
                namespace: of.namespace.to_owned(),
                job: of.job.to_owned(),
                source,
            }
            .into()
        })
    }

    fn approvals_of(&self, of: JobRef<'_>) -> Vec<Approval> {
        self.cached_ledger(of.namespace, of.job)
            .map(|lease| Ledger::read(lease.annotations()).approvals)
            .unwrap_or_default()
    }

    /// Each step's log read from the build's pod with its lines' times; when the pod is
    /// gone, each step said lost (and why, when kubeci gave it up).
    async fn step_logs(&self, build: &BuildRecord) -> Result<Vec<StepLog>, BackendError> {
        let namespace = build.job.namespace().unwrap_or_default();
        Ok(crate::hold::pod_steps(
            &self.client,
            &namespace,
            build.pods.first().map(|p| &**p),
            &build.job,
        ))
    }

    async fn log_of(&self, build: BuildRef<'_>, how: LogOptions) -> Result<LogStream, LogError> {
        let record = self
            .cached_or_read(build.namespace, build.job, build.number)
            .await
            .ok_or_else(|| LogError::NotFound(format!("no {build}")))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), build.namespace);
        match record.pods.first() {
            Some(pod) if how.follow => {
                Ok(self
                    .logs
                    .follow(pods, build.namespace, &pod.name_any(), how.timestamps))
            }
            // Read once: every step, the collector's too (a followed log ends with the
            // build step's end).
            Some(pod) => Ok(logs::stream(
                pods,
                pod.name_any(),
                crate::hold::steps_of(pod),
                how,
            )),
            None if how.follow && !record.summary.state.is_finished() => {
                // Queued, or its pod not created yet: follow from when it has one.
                Ok(self.log_once_it_has_a_pod(build, how.timestamps))
            }
            None => Err(LogError::NotFound(format!(
                "{build} has no pod ({})",
                record.summary.state
            ))),
        }
    }

    fn last_cron_run(&self, namespace: &str, job: &str) -> Option<i64> {
        let lease = self.cached_ledger(namespace, job)?;
        Ledger::read(lease.annotations()).last_cron_run
    }

    /// Its jobs, settings and counters as every engine holds them.
    fn common(&self) -> &Common<JobIndex> {
        &self.common
    }
}

impl Engine for Cluster {
    fn ready(&self) -> bool {
        self.synced.iter().all(|f| f.load(Ordering::SeqCst))
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Kubernetes
    }

    async fn stop(&self) {
        self.give_up_leadership().await;
    }
}
