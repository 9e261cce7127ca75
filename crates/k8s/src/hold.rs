//! kubeci's hold on build pods: each carries the finalizer `kubeci.io/archive` (from its
//! Job's template), so Kubernetes keeps it — ended, or deleted by retention, the garbage
//! collector or an administrator — until kubeci has archived its logs and removed the
//! finalizer. The leader looks at the held pods on each pass
//! ([`kubeci_engine::pod_hold`] decides); each one to settle is archived and released
//! in a task of its own, a few at a time. A store that is down leaves the pods held (and
//! builds go on) until it is back or the give-up age has passed.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use kubeci_archive::Archive;
use kubeci_build::record::BuildPod;
use kubeci_build::{keys, BuildRef};
use kubeci_engine::pod_hold::{pod_hold, PodHold};
use kubeci_engine::scheduler::RECONCILE_ERRORS;

use crate::steplog::read_step;
use crate::{label, now, Cluster, ClusterError};

/// The steps of a build pod, in order: their containers' names and the logs' names.
pub const STEPS: [&str; 2] = ["clone", "build"];

/// How many held pods are archived at once.
const AT_ONCE: usize = 4;

/// The pods being settled now (namespace, name), and the bound on how many.
pub(crate) struct Holds {
    settling: std::sync::Mutex<BTreeSet<(String, String)>>,
    /// The pods (uids) whose logs this replica archived and has still to release: a
    /// release refused because the pod changed does not archive them again.
    archived: std::sync::Mutex<BTreeSet<String>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            settling: Default::default(),
            archived: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        }
    }
}

/// What archiving one pod's logs found: why a step's log is not whole, step by step.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodLogs {
    pub gaps: Vec<(String, String)>,
}

/// The build a pod belongs to, from its labels.
fn build_of(pod: &BuildPod) -> Option<(String, String, u64)> {
    let job = label(pod, keys::JOB)?;
    let number = label(pod, keys::BUILD)?.parse().ok()?;
    Some((pod.namespace()?, job.to_owned(), number))
}

/// Archives each step's log of `pod` (read with its times), replacing any earlier copy;
/// a log that could not be read whole is archived with what was read, and said so.
pub async fn archive_pod_logs(
    client: &kube::Client,
    archive: &Archive,
    build: BuildRef<'_>,
    pod: &str,
) -> Result<PodLogs, kubeci_archive::ArchiveError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), build.namespace);
    let mut found = PodLogs::default();
    for step in STEPS {
        let (lines, gap) = read_step(pods.clone(), pod.to_owned(), step);
        archive.put_log(build, step, lines).await?;
        if let Some(why) = gap.why() {
            found.gaps.push((step.to_owned(), why));
        }
    }
    Ok(found)
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

impl Cluster {
    /// Every held pod in the caches.
    fn held_pods(&self) -> Vec<Arc<BuildPod>> {
        self.scopes
            .iter()
            .flat_map(|scope| scope.pods.state())
            .filter(|pod| kubeci_engine::pod_hold::is_held(pod))
            .collect()
    }

    /// Settles each held pod that is due (archived and released, or given up), each in
    /// a task of its own, a few at a time; a pod already being settled is left to it.
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
                    cluster.settle(&pod, hold).await;
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

    /// Archives `pod`'s logs (when there is an archive) and releases it; or, given up,
    /// releases it and says why. A failure leaves it held for a later pass.
    async fn settle(&self, pod: &BuildPod, hold: PodHold) {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let archived = |holds: &Holds| {
            holds
                .archived
                .lock()
                .expect("the holds lock")
                .contains(&uid)
        };
        match (&hold, &self.settings.archive, build_of(pod)) {
            (PodHold::Archive { .. }, Some(_), _) if archived(&self.holds) => {}
            (PodHold::Archive { .. }, Some(archive), Some((ns, job, number))) => {
                let build = BuildRef {
                    namespace: &ns,
                    job: &job,
                    number,
                };
                match archive_pod_logs(&self.client, archive, build, &name).await {
                    Ok(logs) => {
                        for (step, why) in &logs.gaps {
                            tracing::warn!(
                                namespace,
                                pod = name,
                                step,
                                why,
                                "archived a step's log with what could be read"
                            );
                        }
                        self.holds
                            .archived
                            .lock()
                            .expect("the holds lock")
                            .insert(uid.clone());
                    }
                    Err(e) => {
                        self.common
                            .counters
                            .increment(RECONCILE_ERRORS, &["archive"]);
                        tracing::warn!(namespace, pod = name, error = %e, "cannot archive the pod's logs yet; it stays held");
                        return;
                    }
                }
            }
            (PodHold::GiveUp { why, .. }, Some(_), _) => {
                tracing::warn!(namespace, pod = name, why, "gave up archiving a pod's logs");
            }
            _ => {}
        }
        let pods: Api<BuildPod> = Api::namespaced(self.client.clone(), &namespace);
        match release(&pods, pod).await {
            Ok(Released::Released | Released::Gone) => {
                self.holds
                    .archived
                    .lock()
                    .expect("the holds lock")
                    .remove(&uid);
            }
            Ok(Released::Changed) => {
                tracing::debug!(
                    namespace,
                    pod = name,
                    "the pod changed; released on a later pass"
                )
            }
            Err(e) => {
                self.common
                    .counters
                    .increment(RECONCILE_ERRORS, &["release"]);
                tracing::warn!(namespace, pod = name, error = %e, "cannot release the pod");
            }
        }
    }
}
