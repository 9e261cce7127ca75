//! The Kubernetes engine as the leader's pass sees it ([`Workload`]): builds from the watch
//! caches, acts as API writes on their Jobs, reports recorded on the Jobs' annotations
//! with optimistic concurrency, cron runs in the jobs' ledgers. Before each snapshot it
//! heals: the requests whose creator died before creating their Job are built, and those
//! whose Job exists are settled in the ledger. The pass itself is
//! [`kubeci_engine::scheduler`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use kubeci_build::keys;
use kubeci_build::record::BuildJob;
use kubeci_build::BuildRef;
use kubeci_engine::api::Backend;
use kubeci_engine::archive::Archived;
use kubeci_engine::ledger::Ledger;
use kubeci_engine::observe;
use kubeci_engine::report::{ReportRecord, ReportTarget};
use kubeci_engine::scheduler::{
    Changes, JobBuilds, JobKey, Scheduler, SchedulerSettings, Stop, Turn, Workload, WorkloadError,
    RECONCILE_ERRORS,
};
use kubeci_engine::service::Service;
use kubeci_spec::Catalogue;

use crate::{label, ledger, Cluster, ClusterError};

/// The leader's loop: a pass whenever something changed, and at least every `resync`,
/// while this replica leads and its caches are synced.
pub(crate) async fn run(cluster: Arc<Cluster>) {
    let scheduler = Scheduler::new(
        cluster.clone(),
        cluster.reporter.clone(),
        SchedulerSettings {
            cancel_when_deleted: cluster.settings.cancel_when_deleted,
            takeover_grace: cluster.settings.takeover_grace,
            archiving: cluster.common.archiving.when_on(),
        },
        cluster.common.counters.clone(),
        cluster.changed.clone(),
    );
    let _ = cluster.reports_in_flight.set(scheduler.in_flight());
    let leading = cluster.clone();
    scheduler
        .run(cluster.settings.resync, move || {
            if Backend::ready(&*leading) && leading.is_leader() {
                Turn::Lead {
                    predecessor_may_be_reporting: leading
                        .predecessor_may_be_reporting
                        .load(std::sync::atomic::Ordering::SeqCst),
                }
            } else {
                Turn::Wait
            }
        })
        .await;
}

/// A failed API call as the scheduler sees it: the build gone, or a failure to retry.
pub(crate) fn failed(error: ClusterError) -> WorkloadError {
    if error.is_not_found() {
        WorkloadError::Gone
    } else {
        WorkloadError::Failed(error.into())
    }
}

/// Change `what` of `build`'s Job failed with `source`.
fn write_failed(
    what: &'static str,
    build: BuildRef<'_>,
) -> impl FnOnce(kube::Error) -> WorkloadError {
    let (namespace, name) = (build.namespace.to_owned(), build.name());
    move |source| {
        failed(ClusterError::WriteJob {
            what,
            namespace,
            name,
            source,
        })
    }
}

impl Cluster {
    /// Why queued `build` may not start now, with tenancy: its pod as it
    /// was rendered when it was queued (its ServiceAccount, its Secrets, its repository),
    /// checked against what its Namespace allows now — whatever the job's declaration says
    /// by then, or if it is gone.
    async fn refusal_of_queued(
        &self,
        build: BuildRef<'_>,
    ) -> Result<Option<String>, WorkloadError> {
        let namespace = build.namespace;
        let rules = self
            .index
            .read()
            .expect("the index lock")
            .namespace_rules(namespace);
        let Some(rules) = rules else {
            return Ok(None);
        };
        let name = build.name();
        let queued =
            Api::<k8s_openapi::api::batch::v1::Job>::namespaced(self.client.clone(), namespace)
                .get(&name)
                .await
                .map_err(|source| {
                    failed(ClusterError::ReadJob {
                        namespace: namespace.to_owned(),
                        name: name.clone(),
                        source,
                    })
                })?;
        let uses = kubeci_render::pod_uses(&queued);
        Ok(kubeci_spec::tenancy::pod_refusal(
            namespace,
            &uses,
            rules.as_ref(),
        ))
    }
}

impl Workload for Cluster {
    async fn snapshot(
        &self,
        now: i64,
        reporting: bool,
        only: Option<&BTreeSet<JobKey>>,
    ) -> Vec<JobBuilds> {
        let jobs = self.jobs_with_builds(only);
        let pending = heal_and_settle(self, only, now).await;
        let service = Service(self);
        let mut snapshot = Vec::new();
        // One job at a time: its builds are read back from the packed caches, summed up,
        // and dropped before the next job's are read.
        for (namespace, job) in jobs {
            let records = self.cached_records(&namespace, &job);
            if records.is_empty() {
                continue;
            }
            let key = (namespace, job);
            // The requests still pending in a ledger keep their numbers' builds.
            let keep = pending.get(&key).cloned().unwrap_or_default();
            snapshot.push(service.job_builds(key, records, reporting, keep));
        }
        snapshot
    }

    fn take_changes(&self) -> Changes {
        self.changes.take()
    }

    async fn release_build(&self, build: BuildRef<'_>) -> Result<(), WorkloadError> {
        if let Some(refusal) = self.refusal_of_queued(build).await? {
            let by = kubeci_engine::plan::refused_by(&refusal);
            let stop = Stop::Cancel { by };
            return Workload::stop_build(self, build, stop).await;
        }
        let patch = serde_json::json!({"spec": {"suspend": false}});
        Api::<BuildJob>::namespaced(self.client.clone(), build.namespace)
            .patch(&build.name(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(drop)
            .map_err(write_failed("release", build))
    }

    async fn stop_build(&self, build: BuildRef<'_>, why: Stop) -> Result<(), WorkloadError> {
        let annotations = match why {
            Stop::Fail { reason, message } => {
                serde_json::json!({ keys::ERROR: observe::error_annotation(&reason, &message) })
            }
            Stop::Cancel { by } => serde_json::json!({ keys::CANCELLED_BY: by }),
        };
        self.stop_job(build.namespace, &build.name(), annotations)
            .await
            .map(drop)
            .map_err(failed)
    }

    /// Archives the build (written once for both engines, `Service::archive`), marks its
    /// Job with how far it is archived (`kubeci.io/archived`) and, once it is archived
    /// whole, releases its pods (a release that fails is done by a later pass over the
    /// held pods).
    async fn archive_build(
        &self,
        build: BuildRef<'_>,
        stage: Archived,
    ) -> Result<(), WorkloadError> {
        Service(self).archive(build, stage).await?;
        let patch =
            serde_json::json!({"metadata": {"annotations": {keys::ARCHIVED: stage.as_str()}}});
        Api::<BuildJob>::namespaced(self.client.clone(), build.namespace)
            .patch(
                &build.name(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(write_failed("mark as archived", build))?;
        if stage == Archived::Complete {
            let pods = self
                .build_records(build.namespace, build.job)
                .into_iter()
                .find(|r| r.summary.number == build.number)
                .map(|r| r.pods)
                .unwrap_or_default();
            for pod in pods.iter().filter(|p| kubeci_engine::pod_hold::is_held(p)) {
                if let Err(e) = self.release_held(pod).await {
                    tracing::warn!(%build, error = %e, "cannot release the build's pod yet");
                }
            }
        }
        Ok(())
    }

    async fn delete_build(&self, build: BuildRef<'_>) -> Result<(), WorkloadError> {
        Api::<BuildJob>::namespaced(self.client.clone(), build.namespace)
            .delete(&build.name(), &DeleteParams::background())
            .await
            .map(drop)
            .map_err(write_failed("delete", build))
    }

    /// A merge patch of the `kubeci.io/reported` annotation on the union, reporter by
    /// reporter, of what the Job shows and `record`, conditional on the Job's resourceVersion: tried on the cached
    /// Job first, then on a fresh read after each conflict.
    async fn record_reported(
        &self,
        target: &ReportTarget,
        record: &ReportRecord,
    ) -> Result<(), WorkloadError> {
        let jobs = Api::<BuildJob>::namespaced(self.client.clone(), &target.namespace);
        let mut job = self
            .cached_job(&target.namespace, &target.build_name)
            .map(|job| (*job).clone());
        loop {
            let current = match job.take() {
                Some(cached) => cached,
                None => jobs
                    .get_opt(&target.build_name)
                    .await
                    .map_err(|source| {
                        failed(ClusterError::ReadJob {
                            namespace: target.namespace.clone(),
                            name: target.build_name.clone(),
                            source,
                        })
                    })?
                    .ok_or(WorkloadError::Gone)?,
            };
            let shown = ReportRecord::parse(
                current
                    .annotations()
                    .get(keys::REPORTED)
                    .map(String::as_str),
            );
            if shown.includes(record) {
                return Ok(());
            }
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": current.resource_version(),
                "annotations": {keys::REPORTED: shown.union(record).format()},
            }});
            match jobs
                .patch(
                    &target.build_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => {
                    let build = BuildRef {
                        namespace: &target.namespace,
                        job: &target.job,
                        number: target.number,
                    };
                    return Err(write_failed("record the reports of", build)(e));
                }
            }
        }
    }
}

/// Builds the requests whose creator died before creating their Job and marks those
/// whose Job exists as done; the numbers still pending, by (namespace, job).
async fn heal_and_settle(
    cluster: &Cluster,
    only: Option<&BTreeSet<JobKey>>,
    now: i64,
) -> BTreeMap<(String, String), BTreeSet<u64>> {
    let mut still_pending = BTreeMap::new();
    for lease in cluster.cached_ledgers(only) {
        let namespace = lease.namespace().unwrap_or_default();
        let Some(job) = label(&*lease, keys::JOB).map(str::to_owned) else {
            continue;
        };
        let cached = Ledger::read(lease.annotations());
        if cached.entries.iter().all(|e| e.pending.is_none()) {
            continue;
        }
        let present: Vec<u64> = (cluster.cached_records(&namespace, &job).iter())
            .map(|r| r.summary.number)
            .collect();
        let healed = heal(cluster, &namespace, &job, &cached, &present, now).await;
        let exists = |n: u64| present.contains(&n) || healed.contains(&n);
        let pending = settle(cluster, &namespace, &job, &cached, exists, now).await;
        if !pending.is_empty() {
            // Its requests are looked at again next pass, builds or not.
            cluster.changes.job(&namespace, &job);
        }
        still_pending.insert((namespace, job), pending);
    }
    still_pending
}

/// Creates the Jobs of the requests of `job` recorded in its ledger (`cached`) whose Job
/// was never created (`present`: the builds that exist); the numbers it created.
async fn heal(
    cluster: &Cluster,
    namespace: &str,
    job: &str,
    cached: &Ledger,
    present: &[u64],
    now: i64,
) -> Vec<u64> {
    let mut healed = Vec::new();
    for entry in cached.to_heal(|n| present.contains(&n), now) {
        let (Some(loaded), _) = cluster.lookup(namespace, job) else {
            continue;
        };
        let check_name = cluster
            .index
            .read()
            .expect("the index lock")
            .check_name(namespace, job);
        let request = entry.pending.clone().expect("a pending entry");
        tracing::info!(
            namespace,
            job,
            build = entry.number,
            key = %entry.key,
            "starting a build whose request was recorded but whose Job was never created"
        );
        let created = cluster.create_build(&loaded, &request, &entry.key, check_name.as_deref());
        match created.await {
            Ok(_) => healed.push(entry.number),
            Err(e) => {
                cluster
                    .common
                    .counters
                    .increment(RECONCILE_ERRORS, &["heal"]);
                tracing::warn!(namespace, job, build = entry.number, error = %e, "cannot start the build")
            }
        }
    }
    healed
}

/// Marks the requests of `job` whose build `exists` as done in its ledger, and gives up
/// those that could not be built for too long; the numbers still pending (as `cached`
/// says, when the ledger cannot be written).
async fn settle(
    cluster: &Cluster,
    namespace: &str,
    job: &str,
    cached: &Ledger,
    exists: impl Fn(u64) -> bool,
    now: i64,
) -> BTreeSet<u64> {
    let pending_in = |ledger: &Ledger| -> BTreeSet<u64> {
        ledger
            .entries
            .iter()
            .filter(|e| e.pending.is_some())
            .map(|e| e.number)
            .collect()
    };
    let lease = cluster
        .cached_ledger(namespace, job)
        .map(|lease| (*lease).clone());
    let settled = ledger::update(&cluster.client, namespace, job, lease, |ledger| {
        let (abandoned, changed) = ledger.settle(&exists, now);
        ((abandoned, pending_in(ledger)), changed)
    })
    .await;
    match settled {
        Ok((abandoned, pending)) => {
            for entry in abandoned {
                tracing::warn!(
                    namespace,
                    job,
                    build = entry.number,
                    key = %entry.key,
                    after_s = kubeci_engine::ledger::HEAL_WINDOW,
                    "gave up a build request: its job could not be built for too long"
                );
            }
            pending
        }
        Err(e) => {
            cluster
                .common
                .counters
                .increment(RECONCILE_ERRORS, &["ledger"]);
            tracing::warn!(namespace, job, error = %e, "cannot update the job's ledger");
            pending_in(cached)
        }
    }
}
