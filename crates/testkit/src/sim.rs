//! The simulated Job controller and kubelet.
//!
//! The Job controller creates one pod per Job that is neither suspended nor finished,
//! and writes the Job's status and conditions as Kubernetes does (`SuccessCriteriaMet` +
//! `Complete`; `FailureTarget` + `Failed` with `BackoffLimitExceeded`; on
//! `DeadlineExceeded`, `FailureTarget` and its pods deleted, then `Failed` once they ended,
//! as Kubernetes ≥ 1.31 does; `Suspended`, whose pods it deletes). The kubelet moves each pod
//! through Pending, Running and Succeeded/Failed as its [`PodBehaviour`] says — a script,
//! or a real run through the local engine.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::http::Shared;
use crate::store::{container_names, now, ChangeKind, Store};

mod job;
mod kubelet;
use job::{
    condition, ended, ended_or_going, fail_once_ended, failure_target, has_condition, job_pod,
    resume, tally,
};
use kubelet::Kubelet;

const PODS: usize = 3;
const EVENTS: usize = 5;
const JOBS: usize = 6;

/// The finalizer Kubernetes' Job controller puts on each pod it creates and removes once
/// it has counted the pod's end.
pub const JOB_TRACKING: &str = "batch.kubernetes.io/job-tracking";

/// What a simulated pod does.
#[derive(Debug, Clone)]
pub enum PodBehaviour {
    /// Runs for `duration`, writing `logs` to its main container, and exits 0.
    Succeed {
        logs: Vec<String>,
        duration: Duration,
    },
    /// Runs like `Succeed`, then exits with `exit_code`.
    Fail {
        exit_code: i32,
        logs: Vec<String>,
        duration: Duration,
    },
    /// Stays Pending: no node fits (`Unschedulable`).
    NeverSchedule,
    /// Stays Pending: its `nodeSelector` matches no node (the simulated node has only
    /// [`NODE_LABELS`]), in the real scheduler's words.
    NoNodeMatches,
    /// Stays Pending: its first container's image cannot be pulled.
    ImagePullError,
    /// Stays Pending: the build container refers to a Secret that does not exist.
    MissingSecret { secret: String },
    /// Really runs the pod with the local engine: the clone step and the script.
    RunLocally {
        kubeci_exe: PathBuf,
        secrets_dir: Option<PathBuf>,
        /// Per-pod build directories are made under it.
        work_root: PathBuf,
        /// Variables every container gets besides the host's `PATH` and locale (e.g.
        /// `GIT_CONFIG_GLOBAL`, to map a repository URL to a local one).
        env: Vec<(String, String)>,
    },
}

/// The labels of the one simulated node; a pod whose `nodeSelector` asks for others is
/// never scheduled, as with the real scheduler.
pub const NODE_LABELS: [(&str, &str); 3] = [
    ("kubernetes.io/hostname", "fake-node"),
    ("kubernetes.io/os", "linux"),
    ("kubernetes.io/arch", "amd64"),
];

fn fits_the_node(pod: &Value) -> bool {
    pod["spec"]["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| NODE_LABELS.iter().any(|(k, v)| k == key && value == v))
}

/// An image no registry serves: [`PodBehaviour::like_a_kubelet`] cannot pull it, and
/// neither can a real cluster.
pub const MISSING_IMAGE: &str = "registry.invalid/kubeci/missing:1";

impl PodBehaviour {
    /// What a kubelet does with `pod` in a namespace without Secrets: a pod that refers to
    /// a Secret (volume, `secretKeyRef`, `envFrom`) cannot start, nor one whose image is
    /// [`MISSING_IMAGE`]; others do `otherwise`.
    pub fn like_a_kubelet(pod: &Value, otherwise: &PodBehaviour) -> PodBehaviour {
        let spec = &pod["spec"];
        let containers: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .flat_map(|key| spec[*key].as_array().into_iter().flatten())
            .collect();
        let from_volumes = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["secret"]["secretName"].as_str());
        let from_env = containers.iter().flat_map(|c| {
            let env = c["env"].as_array().into_iter().flatten();
            let env_from = c["envFrom"].as_array().into_iter().flatten();
            env.filter_map(|e| e["valueFrom"]["secretKeyRef"]["name"].as_str())
                .chain(env_from.filter_map(|e| e["secretRef"]["name"].as_str()))
        });
        if let Some(secret) = from_volumes.chain(from_env).next() {
            return PodBehaviour::MissingSecret {
                secret: secret.to_owned(),
            };
        }
        if containers.iter().any(|c| c["image"] == MISSING_IMAGE) {
            return PodBehaviour::ImagePullError;
        }
        otherwise.clone()
    }

    /// Succeeds at once without output: the default.
    pub fn succeed() -> PodBehaviour {
        PodBehaviour::Succeed {
            logs: Vec::new(),
            duration: Duration::ZERO,
        }
    }
}

pub type BehaviourFn = Arc<dyn Fn(&Value) -> PodBehaviour + Send + Sync>;

pub struct Simulation {
    behaviour: Arc<Mutex<BehaviourFn>>,
    stop: CancellationToken,
}

impl Simulation {
    pub fn start(shared: Arc<Shared>) -> Simulation {
        let behaviour: Arc<Mutex<BehaviourFn>> =
            Arc::new(Mutex::new(Arc::new(|_: &Value| PodBehaviour::succeed())));
        let stop = CancellationToken::new();
        let mut changes = shared.store.lock().expect("lock").subscribe();
        let controller = Controller {
            shared,
            behaviour: behaviour.clone(),
            pods: Arc::new(Mutex::new(HashMap::new())),
        };
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    received = changes.recv() => match received {
                        Ok(change) => controller.on_change(change.key.0, &change.key.1, &change.key.2, change.kind, &change.object),
                        Err(RecvError::Lagged(_)) => controller.resync(),
                        Err(RecvError::Closed) => return,
                    },
                    () = stopped.cancelled() => return,
                }
            }
        });
        Simulation { behaviour, stop }
    }

    pub fn set_behaviour(&self, behaviour: BehaviourFn) {
        *self.behaviour.lock().expect("lock") = behaviour;
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Controller {
    shared: Arc<Shared>,
    behaviour: Arc<Mutex<BehaviourFn>>,
    /// Running kubelet tasks by (namespace, pod name).
    pods: Arc<Mutex<HashMap<(String, String), PodRun>>>,
}

/// A pod the kubelet runs: how to end its task at once, and — for a pod really run here —
/// how to stop it as a deleted pod is stopped.
struct PodRun {
    abort: CancellationToken,
    /// For [`PodBehaviour::RunLocally`]: SIGTERM, then a kill past the grace period.
    graceful: Option<(kubeci_pod_runner::Stops, Duration)>,
}

fn s(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Deletes pods (their containers stop), as the Job controller does for a suspended or
/// failed Job.
fn delete_pods(store: &mut Store, namespace: &str, pods: &[impl AsRef<Value>]) {
    for pod in pods {
        let _ = store.delete(
            PODS,
            namespace,
            &s(pod.as_ref(), "/metadata/name"),
            Some("Background"),
            None,
        );
    }
}

fn owned_by(pod: &Value, uid: &str) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

impl Controller {
    fn on_change(
        &self,
        resource: usize,
        namespace: &str,
        name: &str,
        kind: ChangeKind,
        object: &Value,
    ) {
        match (resource, kind) {
            (JOBS, ChangeKind::Added | ChangeKind::Modified) => self.reconcile_job(namespace, name),
            (PODS, ChangeKind::Added) => self.start_pod(object),
            (PODS, ChangeKind::Deleted) => {
                if let Some(run) = self
                    .pods
                    .lock()
                    .expect("lock")
                    .remove(&(namespace.to_owned(), name.to_owned()))
                {
                    run.abort.cancel();
                }
                self.reconcile_owner(object);
            }
            (PODS, ChangeKind::Modified) => {
                let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
                if deleting {
                    self.stop_deleted(namespace, name);
                }
                if terminal(object) || deleting {
                    self.untrack(namespace, name);
                    self.reconcile_owner(object);
                }
            }
            _ => {}
        }
    }

    /// A pod marked for deletion (it has finalizers): the kubelet stops its containers —
    /// one really run here as Kubernetes does (SIGTERM to the running container, then its
    /// sidecars, killed past the pod's grace period; its run writes its end), any other at
    /// once — writes its end (`Failed` unless it had ended) and keeps its logs while it
    /// exists.
    fn stop_deleted(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut pods = self.pods.lock().expect("lock");
        if let Some((stops, grace)) = pods.get(&key).and_then(|run| run.graceful.clone()) {
            drop(pods);
            if !stops.terminate.is_cancelled() {
                stops.terminate.cancel();
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    stops.kill.cancel();
                });
            }
            return;
        }
        let Some(run) = pods.remove(&key) else {
            return;
        };
        drop(pods);
        run.abort.cancel();
        let mut store = self.shared.store.lock().expect("lock");
        let Ok(pod) = store.get(PODS, namespace, name) else {
            return;
        };
        for container in container_names(&pod, "initContainers")
            .iter()
            .chain(container_names(&pod, "containers").iter())
        {
            store.finish_log(namespace, name, container);
        }
        if terminal(&pod) {
            return;
        }
        let mut killed = (*pod).clone();
        let finished = now();
        for field in ["initContainerStatuses", "containerStatuses"] {
            for entry in killed["status"][field].as_array_mut().into_iter().flatten() {
                if let Some(started) = entry.pointer("/state/running/startedAt").cloned() {
                    entry["state"] = json!({"terminated": {"exitCode": 137, "reason": "Error",
                        "startedAt": started, "finishedAt": finished}});
                }
            }
        }
        killed["status"]["phase"] = json!("Failed");
        let _ = store.update(PODS, namespace, name, killed, true);
    }

    /// The Job controller's own finalizer goes once it has counted the pod (ended or
    /// being deleted), as Kubernetes' does; any other finalizer stays.
    fn untrack(&self, namespace: &str, name: &str) {
        let mut store = self.shared.store.lock().expect("lock");
        let Ok(pod) = store.get(PODS, namespace, name) else {
            return;
        };
        let Some(finalizers) = pod
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
        else {
            return;
        };
        if !finalizers.iter().any(|f| f == JOB_TRACKING) {
            return;
        }
        let kept: Vec<Value> = finalizers
            .iter()
            .filter(|f| *f != JOB_TRACKING)
            .cloned()
            .collect();
        let mut untracked = (*pod).clone();
        untracked["metadata"]["finalizers"] = json!(kept);
        let _ = store.update(PODS, namespace, name, untracked, false);
    }

    fn resync(&self) {
        let jobs: Vec<(String, String)> = {
            let store = self.shared.store.lock().expect("lock");
            store
                .current(JOBS, None)
                .iter()
                .map(|j| (s(j, "/metadata/namespace"), s(j, "/metadata/name")))
                .collect()
        };
        for (ns, name) in jobs {
            self.reconcile_job(&ns, &name);
        }
    }

    fn reconcile_owner(&self, pod: &Value) {
        let owner = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["kind"] == "Job"))
            .map(|r| s(r, "/name"));
        if let Some(job) = owner {
            self.reconcile_job(&s(pod, "/metadata/namespace"), &job);
        }
    }

    fn reconcile_job(&self, namespace: &str, name: &str) {
        let mut store = self.shared.store.lock().expect("lock");
        let Ok(job) = store.get(JOBS, namespace, name) else {
            return;
        };
        if ended_or_going(&job) {
            return;
        }
        let uid = s(&job, "/metadata/uid");
        let pods: Vec<Arc<Value>> = store
            .current(PODS, Some(namespace))
            .into_iter()
            .filter(|p| owned_by(p, &uid))
            .collect();
        if let Some(target) = failure_target(&job) {
            return fail_once_ended(&mut store, &job, &target, &pods);
        }
        let (active, succeeded, failed) = tally(&pods);
        let backoff_limit = job
            .pointer("/spec/backoffLimit")
            .and_then(Value::as_u64)
            .unwrap_or(6) as usize;
        let mut status = job.get("status").cloned().unwrap_or_else(|| json!({}));
        let mut conditions: Vec<Value> = status
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
        if suspended {
            delete_pods(&mut store, namespace, &active);
            if !has_condition(&job, "Suspended") {
                conditions.retain(|c| c["type"] != "Suspended");
                conditions.push(condition("Suspended", "JobSuspended", "Job suspended"));
            }
            status["active"] = json!(0);
        } else if succeeded > 0 {
            conditions.retain(|c| c["type"] != "Suspended");
            conditions.extend(ended(
                "Complete",
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            status["succeeded"] = json!(succeeded);
            status["active"] = json!(0);
            status["completionTime"] = json!(now());
        } else if failed > backoff_limit {
            delete_pods(&mut store, namespace, &active);
            conditions.extend(ended(
                "Failed",
                "FailureTarget",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
            status["failed"] = json!(failed);
            status["active"] = json!(0);
        } else {
            if has_condition(&job, "Suspended") {
                resume(&mut conditions, &mut status);
            }
            if active.is_empty() {
                let pod = job_pod(&job, name, &uid);
                let _ = store.create(PODS, namespace, pod);
            }
            if status.get("startTime").is_none() {
                status["startTime"] = json!(self.start(&job, namespace, name, &uid));
            }
            status["active"] = json!(1);
            if failed > 0 {
                status["failed"] = json!(failed);
            }
        }
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        let mut updated = (*job).clone();
        updated["status"] = status;
        let _ = store.update(JOBS, namespace, name, updated, true);
    }

    /// The start of a Job's run, now: its `activeDeadlineSeconds` are counted from it.
    fn start(&self, job: &Value, namespace: &str, name: &str, uid: &str) -> String {
        let start = now();
        if let Some(seconds) = job
            .pointer("/spec/activeDeadlineSeconds")
            .and_then(Value::as_u64)
        {
            self.deadline(namespace, name, uid, &start, Duration::from_secs(seconds));
        }
        start
    }

    /// Fails the Job if it is still active `after` its start.
    fn deadline(&self, namespace: &str, name: &str, uid: &str, start: &str, after: Duration) {
        let this = self.clone();
        let (namespace, name, uid, start) = (
            namespace.to_owned(),
            name.to_owned(),
            uid.to_owned(),
            start.to_owned(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut store = this.shared.store.lock().expect("lock");
            let Ok(job) = store.get(JOBS, &namespace, &name) else {
                return;
            };
            if s(&job, "/metadata/uid") != uid
                || s(&job, "/status/startTime") != start
                || has_condition(&job, "Complete")
                || has_condition(&job, "Failed")
            {
                return;
            }
            let pods: Vec<Arc<Value>> = store
                .current(PODS, Some(&namespace))
                .into_iter()
                .filter(|p| owned_by(p, &uid) && !terminal(p))
                .collect();
            delete_pods(&mut store, &namespace, &pods);
            let mut updated = (*job).clone();
            let mut conditions: Vec<Value> = job
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // `Failed` follows once its pods have ended (`reconcile_job`), as Kubernetes'
            // Job controller (≥ 1.31) adds a Job's terminal condition.
            conditions.push(condition(
                "FailureTarget",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
            updated["status"]["conditions"] = json!(conditions);
            updated["status"]["active"] = json!(0);
            updated["status"]["failed"] = json!(1);
            let _ = store.update(JOBS, &namespace, &name, updated, true);
        });
    }

    fn start_pod(&self, pod: &Value) {
        let key = (s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
        let token = CancellationToken::new();
        let behaviour = if fits_the_node(pod) {
            (self.behaviour.lock().expect("lock"))(pod)
        } else {
            PodBehaviour::NoNodeMatches
        };
        let stops = kubeci_pod_runner::Stops::default();
        let grace = pod
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30);
        let graceful = matches!(behaviour, PodBehaviour::RunLocally { .. })
            .then(|| (stops.clone(), Duration::from_secs(grace)));
        self.pods.lock().expect("lock").insert(
            key.clone(),
            PodRun {
                abort: token.clone(),
                graceful,
            },
        );
        let kubelet = Kubelet {
            shared: self.shared.clone(),
            namespace: key.0,
            name: key.1,
            pod: pod.clone(),
            stops,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = kubelet.run(behaviour) => {}
                () = token.cancelled() => {}
            }
        });
    }
}
