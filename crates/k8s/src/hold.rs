//! kubeci's hold on build pods: each carries the finalizer `kubeci.io/archive` (from its
//! Job's template), so Kubernetes keeps it — ended, or deleted by retention's garbage
//! collector, a cancel or an administrator — until kubeci has archived its build whole
//! and removed the finalizer.
//!
//! A build is archived by the leader's plan (`Workload::archive_build`, in `controller`),
//! which releases the build's pods once its complete record is written. What the plan
//! cannot see is settled here, on each pass over the held pods
//! ([`kubeci_engine::pod_hold`] decides): a pod whose build is marked archived whole but
//! is still held (a replica killed between the two) is released; a pod whose Job is gone
//! (deleted by hand mid-run) is archived from its build's first record and released; past
//! the give-up age a pod is released all the same, and its Job says why; without an
//! archive a pod is released once it ended. Each pod is settled in a task of its own, a
//! few at a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use kubeci_build::outputs::COLLECT_STEP;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_build::{keys, BuildRef};
use kubeci_engine::archive::{Archived, ArchivedState, StepLog, StepReadError};
use kubeci_engine::build::BuildState;
use kubeci_engine::pod_hold::{pod_hold, PodHold};
use kubeci_engine::scheduler::RECONCILE_ERRORS;

use crate::steplog::{lost_step, read_step};
use crate::{label, now, Cluster, ClusterError};

/// The steps of a build pod, in order: their containers' names and the logs' names.
pub const STEPS: [&str; 2] = ["clone", "build"];

/// The steps of `pod`: [`STEPS`], then its collector's when it has one (a job that
/// declares test reports or artifacts: the collector's lines come after the build's end).
pub fn steps_of(pod: &BuildPod) -> Vec<&'static str> {
    let collects = (pod.status.as_ref())
        .and_then(|s| s.init_container_statuses.as_ref())
        .is_some_and(|statuses| statuses.iter().any(|s| s.name == COLLECT_STEP));
    let mut steps = STEPS.to_vec();
    if collects {
        steps.push(COLLECT_STEP);
    }
    steps
}

/// Why kubeci released a build's pod before archiving its logs (the give-up age passed):
/// an annotation on its Job, which its archived record then gives as why its log is not
/// whole.
pub const GAVE_UP: &str = "kubeci.io/archive-gave-up";

/// How many held pods are settled at once.
const AT_ONCE: usize = 4;

/// The pods being settled now (namespace, name), and the bound on how many.
pub(crate) struct Holds {
    settling: std::sync::Mutex<BTreeSet<(String, String)>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            settling: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        }
    }
}

/// The build a pod belongs to, from its labels: (namespace, job, number).
fn build_of(pod: &BuildPod) -> Option<(String, String, u64)> {
    let job = label(pod, keys::JOB)?;
    let number = label(pod, keys::BUILD)?.parse().ok()?;
    Some((pod.namespace()?, job.to_owned(), number))
}

/// Each step of a build whose pod is `pod` (if it has one), read for the archive; `job`
/// says whether it ever ran and why kubeci gave up its pod, if it did.
pub fn pod_steps(
    client: &kube::Client,
    namespace: &str,
    pod: Option<&BuildPod>,
    job: &BuildJob,
) -> Vec<StepLog> {
    let steps = pod.map_or_else(|| STEPS.to_vec(), steps_of);
    let pod = pod.map(|p| p.name_any());
    let annotations = job.metadata.annotations.as_ref();
    let gave_up = annotations.and_then(|a| a.get(GAVE_UP)).cloned();
    let ran = job.status.as_ref().is_some_and(|s| {
        s.start_time.is_some()
            && (s.active.unwrap_or(0) + s.failed.unwrap_or(0) + s.succeeded.unwrap_or(0)) > 0
    });
    match (pod, gave_up) {
        (Some(pod), gave_up) => {
            let pods = Api::namespaced(client.clone(), namespace);
            let read = |step| read_step(Api::clone(&pods), pod.clone(), step);
            match gave_up {
                // Released: the pod may have gone since (a lost step says both why).
                Some(why) => steps
                    .iter()
                    .map(|step| gave_up_on(read(step), &why))
                    .collect(),
                None => steps.iter().map(|step| read(step)).collect(),
            }
        }
        (None, Some(why)) => STEPS
            .iter()
            .map(|step| lost_step(step, why.clone()))
            .collect(),
        (None, None) if ran => STEPS
            .iter()
            .map(|step| lost_step(step, "its pod was gone before its log could be read".into()))
            .collect(),
        (None, None) => Vec::new(),
    }
}

/// What [`release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// kubeci's finalizer is off (or was already).
    Released,
    /// The pod is gone.
    Gone,
    /// The pod changed since it was read (another finalizer came or went): nothing was
    /// changed; try again with the pod as it is now (the cache shows it soon).
    Changed,
}

/// Removes kubeci's finalizer from `pod` (as it was read), and only it: a JSON patch that
/// first tests that the pod is the same one and that the finalizer is still where it was
/// read, so a finalizer another controller added or removed meanwhile is not lost — the
/// patch is refused and nothing changes ([`Released::Changed`]).
pub async fn release(pods: &Api<BuildPod>, pod: &BuildPod) -> Result<Released, ClusterError> {
    let name = pod.name_any();
    let finalizers = pod.metadata.finalizers.as_deref().unwrap_or_default();
    let Some(at) = finalizers.iter().position(|f| f == keys::ARCHIVE_FINALIZER) else {
        return Ok(Released::Released);
    };
    let operations = serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": pod.metadata.uid},
        {"op": "test", "path": format!("/metadata/finalizers/{at}"), "value": keys::ARCHIVE_FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{at}")},
    ]);
    let patch = Patch::<()>::Json(serde_json::from_value(operations).expect("a JSON patch"));
    match pods.patch(&name, &PatchParams::default(), &patch).await {
        Ok(_) => Ok(Released::Released),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Released::Gone),
        // A test failed: the API server answers 422 and changes nothing.
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(Released::Changed),
        Err(source) => Err(ClusterError::Pod {
            what: "release",
            namespace: pod.namespace().unwrap_or_default(),
            name,
            source,
        }),
    }
}

/// The leader settles the held pods every `resync` (they are in its caches: no request
/// unless one is due).
pub(crate) async fn run(cluster: Arc<Cluster>) {
    let mut ticks = tokio::time::interval(cluster.settings.resync);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if kubeci_engine::api::Backend::ready(&*cluster) && cluster.is_leader() {
            cluster.settle_held_pods();
        }
    }
}

/// `step`, whose loss (if it is lost) is said to follow from kubeci giving its pod up.
fn gave_up_on(step: StepLog, gave_up: &str) -> StepLog {
    use futures_util::StreamExt;
    let gave_up = gave_up.to_owned();
    let lines = step.lines.map(move |line| match line {
        Err(StepReadError::Lost(why)) => Err(StepReadError::Lost(format!("{gave_up} ({why})"))),
        other => other,
    });
    StepLog {
        lines: Box::pin(lines),
        ..step
    }
}

impl Cluster {
    /// Every held pod in the caches.
    fn held_pods(&self) -> Vec<Arc<BuildPod>> {
        self.scopes
            .iter()
            .flat_map(|scope| scope.pods.marked())
            .filter(|pod| kubeci_engine::pod_hold::is_held(pod))
            .collect()
    }

    /// Settles each held pod that is due, each in a task of its own, a few at a time; a
    /// pod already being settled is left to it.
    pub(crate) fn settle_held_pods(self: &Arc<Self>) {
        let now = now();
        let give_up_after = crate::cache::seconds(self.settings.archive_give_up_after);
        for pod in self.held_pods() {
            let Some(hold) = pod_hold(&pod, now, give_up_after) else {
                continue;
            };
            if hold == PodHold::Wait {
                continue;
            }
            let key = (pod.namespace().unwrap_or_default(), pod.name_any());
            if !self
                .holds
                .settling
                .lock()
                .expect("the holds lock")
                .insert(key.clone())
            {
                continue;
            }
            let (cluster, slots) = (self.clone(), self.holds.slots.clone());
            tokio::spawn(async move {
                if let Ok(_slot) = slots.acquire_owned().await {
                    if let Err(e) = cluster.settle(&pod, hold).await {
                        cluster
                            .common
                            .counters
                            .increment(RECONCILE_ERRORS, &["archive"]);
                        tracing::warn!(pod = pod.name_any(), error = %e, "a held pod stays held for now");
                    }
                }
                cluster
                    .holds
                    .settling
                    .lock()
                    .expect("the holds lock")
                    .remove(&key);
            });
        }
    }

    /// Releases `pod` if its build is archived whole, there is no archive, or kubeci gives
    /// up (saying why on its Job); archives it first if its Job is gone. A build whose Job
    /// is there and not archived whole is left to the plan.
    async fn settle(&self, pod: &BuildPod, hold: PodHold) -> Result<(), String> {
        let namespace = pod.namespace().unwrap_or_default();
        let Some((_, job, number)) = build_of(pod) else {
            return self.release_held(pod).await;
        };
        let build = BuildRef {
            namespace: &namespace,
            job: &job,
            number,
        };
        if self.common.archiving.archive.is_none() {
            return self.release_held(pod).await;
        }
        let name = kubeci_build::build_name(&job, number);
        let jobs = Api::<BuildJob>::namespaced(self.client.clone(), &namespace);
        let current = match self.cached_job(&namespace, &name) {
            Some(cached) => Some((*cached).clone()),
            None => jobs.get_opt(&name).await.map_err(|e| e.to_string())?,
        };
        let archived_whole = current.as_ref().is_some_and(|job| {
            let annotations = job.metadata.annotations.as_ref();
            let archived = annotations.and_then(|a| a.get(keys::ARCHIVED));
            Archived::parse(archived.map(String::as_str)) == Archived::Complete
        });
        if archived_whole {
            return self.release_held(pod).await;
        }
        if let PodHold::GiveUp { why, .. } = &hold {
            tracing::warn!(%build, pod = pod.name_any(), why, "gave up archiving a build's pod: released");
            if current.is_some() {
                let patch = serde_json::json!({"metadata": {"annotations": {GAVE_UP: why}}});
                let marked = jobs
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                marked.map_err(|e| e.to_string())?;
            }
            return self.release_held(pod).await;
        }
        if current.is_some() {
            // Not archived whole yet: the plan archives it, then releases the pod.
            return Ok(());
        }
        self.archive_orphan(build, pod).await?;
        self.release_held(pod).await
    }

    /// Archives the build of `pod` whose Job is gone (deleted by hand before its build was
    /// archived): its first record, completed with the pod's logs and its end as the pod
    /// shows it (`JobDeleted` unless it succeeded).
    async fn archive_orphan(&self, build: BuildRef<'_>, pod: &BuildPod) -> Result<(), String> {
        let archive = self.common.archiving.archive.clone().ok_or("no archive")?;
        let Some(mut record) = archive.record(build).await.map_err(|e| e.to_string())? else {
            tracing::warn!(%build, "its Job is gone and it was never archived: its pod is released without its log");
            return Ok(());
        };
        if record.complete {
            return Ok(());
        }
        // Its end as its pod shows it: succeeded, or cut short with its Job.
        let succeeded = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
        record.build.state = ArchivedState::of(&if succeeded {
            BuildState::Succeeded
        } else {
            BuildState::Error {
                reason: "JobDeleted".into(),
                message: "its Job was deleted before its build was archived; the log is what its pod wrote".into(),
            }
        });
        let now = now();
        let ended = pod_hold(pod, now, i64::MAX).and_then(|h| match h {
            PodHold::Archive { since } => Some(since),
            _ => None,
        });
        let at = |s: i64| jiff::Timestamp::from_second(s).ok();
        record.build.finished_at = record.build.finished_at.or(ended.and_then(at));
        record.archived_at = at(now).unwrap_or(record.archived_at);
        let no_job = BuildJob::default();
        let steps = pod_steps(&self.client, build.namespace, Some(pod), &no_job);
        let pages = &self.common.archiving.pages;
        pages.forget(build.job_ref());
        let written = archive.put_complete(record, steps).await;
        pages.forget(build.job_ref());
        written.map_err(|e| e.to_string())?;
        tracing::info!(%build, "archived a build whose Job was deleted before it ended");
        Ok(())
    }

    /// Releases `pod`; one that changed meanwhile is released on a later pass.
    pub(crate) async fn release_held(&self, pod: &BuildPod) -> Result<(), String> {
        let pods: Api<BuildPod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        match release(&pods, pod).await {
            Ok(Released::Released | Released::Gone) => Ok(()),
            Ok(Released::Changed) => {
                tracing::debug!(
                    pod = pod.name_any(),
                    "the pod changed; released on a later pass"
                );
                Ok(())
            }
            Err(e) => {
                self.common
                    .counters
                    .increment(RECONCILE_ERRORS, &["release"]);
                Err(e.to_string())
            }
        }
    }
}
