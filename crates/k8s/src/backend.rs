//! [`Backend`] for [`Cluster`]: what the server asks of the Kubernetes engine.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::ResourceExt;
use kubeci_build::{keys, BuildRequest};
use kubeci_engine::api::{
    ApproveError, Backend, BuildView, CancelError, JobView, LatestStates, LogError, LogOptions,
    LogStream, TriggerError, TriggerRequest, Triggered,
};
use kubeci_engine::approval::Approval;
use kubeci_engine::ledger::Ledger;
use kubeci_engine::observe;
use kubeci_spec::LoadedJob;

use crate::{ledger, logs, now, Cluster, ClusterError};

impl Backend for Cluster {
    async fn stop(&self) {
        self.give_up_leadership().await;
    }

    fn ready(&self) -> bool {
        self.synced.iter().all(|f| f.load(Ordering::SeqCst))
    }

    fn namespaces(&self) -> Vec<String> {
        self.index.read().expect("the index lock").namespaces()
    }

    fn kind(&self) -> kubeci_engine::api::EngineKind {
        kubeci_engine::api::EngineKind::Kubernetes
    }

    fn jobs(&self) -> Vec<JobView> {
        let index = self.index.read().expect("the index lock");
        index.all().map(JobView::of).collect()
    }

    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>> {
        let declared = self
            .index
            .read()
            .expect("the index lock")
            .find_any(namespace, name)
            .is_some();
        let records = self.build_records(namespace, name);
        if !declared && records.is_empty() {
            return None;
        }
        Some(
            records
                .iter()
                .map(|r| self.view(&r.job, &r.pods, &r.summary))
                .collect(),
        )
    }

    async fn build(&self, namespace: &str, name: &str, number: u64) -> Option<BuildView> {
        let record = self.find_build(namespace, name, number).await?;
        Some(self.view(&record.job, &record.pods, &record.summary))
    }

    fn declared_jobs(&self) -> Vec<Arc<kubeci_spec::LoadedJob>> {
        self.declarations()
    }

    fn latest_states(&self) -> LatestStates {
        self.newest_states()
    }

    async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
        let key = request.key.unwrap_or_else(|| self.unique_key());
        self.start_build(&request.namespace, &request.name, request.build, key, None)
            .await
    }

    async fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> Result<BuildView, CancelError> {
        let not_found = || CancelError::not_found(namespace, name, number);
        let record = self
            .find_build(namespace, name, number)
            .await
            .ok_or_else(not_found)?;
        CancelError::cancellable(namespace, name, number, &record.summary.state)?;
        let stopped = self
            .stop_job(
                namespace,
                &record.job.name_any(),
                serde_json::json!({ keys::CANCELLED_BY: by }),
            )
            .await
            .map_err(|e| match e {
                e if e.is_not_found() => not_found(),
                e => CancelError::Backend(e.into()),
            })?;
        self.changed.notify_one();
        let summary = observe::summarize::<kubeci_build::record::BuildPod>(
            &stopped,
            &[],
            now(),
            self.pending_deadline(),
            self.reporter.is_some(),
        )
        .unwrap_or_else(|| record.summary.clone());
        Ok(self.view(&stopped, &record.pods, &summary))
    }

    async fn approve(
        &self,
        namespace: &str,
        name: &str,
        approval: Approval,
    ) -> Result<(), ApproveError> {
        let declared = (self.index.read().expect("the index lock")).is_declared(namespace, name);
        if !declared {
            return Err(ApproveError::not_found(namespace, name));
        }
        ledger::approve(&self.client, namespace, name, &approval)
            .await
            .map_err(|source| ClusterError::Ledger {
                namespace: namespace.to_owned(),
                job: name.to_owned(),
                source,
            })
            .map_err(|e| ApproveError::Backend(e.into()))
    }

    fn approvals(&self, namespace: &str, name: &str) -> Vec<Approval> {
        self.cached_ledger(namespace, name)
            .map(|lease| Ledger::read(lease.annotations()).approvals)
            .unwrap_or_default()
    }

    fn request(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRequest> {
        self.build_records(namespace, name)
            .into_iter()
            .find(|r| r.summary.number == number)
            .map(|r| kubeci_build::recorded_request(number, r.job.annotations()))
    }

    fn declaration(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.index
            .read()
            .expect("the index lock")
            .find_declared(namespace, name)
            .cloned()
    }

    fn metrics(&self) -> Vec<kubeci_engine::metrics::Family> {
        let builds: Vec<kubeci_engine::metrics::BuildFact> = self
            .build_groups()
            .into_iter()
            .flat_map(|((namespace, job), records)| {
                records
                    .into_iter()
                    .map(move |r| kubeci_engine::metrics::BuildFact {
                        namespace: namespace.clone(),
                        job: job.clone(),
                        state: r.summary.state.phase(),
                        seconds: r
                            .job
                            .status
                            .as_ref()
                            .and_then(|s| s.start_time.as_ref())
                            .map(|t| t.0.as_second())
                            .zip(r.summary.finished_at)
                            .map(|(start, end)| (end - start).max(0) as f64),
                    })
            })
            .collect();
        let mut families = kubeci_engine::metrics::build_families(&builds);
        families.push(kubeci_engine::metrics::reconcile_errors(&self.counters));
        families
    }

    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<kubeci_spec::Job>)> {
        self.index
            .read()
            .expect("the index lock")
            .specs(repositories)
    }

    async fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        options: LogOptions,
    ) -> Result<LogStream, LogError> {
        let record = self
            .find_build(namespace, name, number)
            .await
            .ok_or_else(|| {
                LogError::NotFound(format!("no build {number} of job {namespace}/{name}"))
            })?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match record.pods.first() {
            Some(pod) if options.follow => {
                Ok(self
                    .logs
                    .follow(pods, namespace, &pod.name_any(), options.timestamps))
            }
            Some(pod) => Ok(logs::stream(pods, pod.name_any(), options)),
            None if options.follow && !record.summary.state.is_finished() => {
                // Queued, or its pod not created yet: follow from when it has one.
                Ok(self.log_once_it_has_a_pod(namespace, name, number, options.timestamps))
            }
            None => Err(LogError::NotFound(format!(
                "build {number} of job {namespace}/{name} has no pod ({})",
                record.summary.state
            ))),
        }
    }
}
