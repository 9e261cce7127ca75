//! The simulated kubelet: runs each pod's containers as its behaviour says (or for real,
//! locally), writes their statuses, logs and Events.

use super::*;
use crate::http::{event_for, Shared};
use crate::store::{container_names, now};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(super) struct Kubelet {
    pub(super) shared: Arc<Shared>,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) pod: Value,
    /// How a pod really run here is stopped when deleted.
    pub(super) stops: kubeci_pod_runner::Stops,
}

fn image(pod: &Value, field: &str, name: &str) -> String {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .map(|c| s(c, "/image"))
        .unwrap_or_default()
}

impl Kubelet {
    /// Changes the pod's status under the lock; false if the pod is gone.
    fn set_status(&self, change: impl FnOnce(&mut Value)) -> bool {
        let mut store = self.shared.store.lock().expect("lock");
        let Ok(current) = store.get(PODS, &self.namespace, &self.name) else {
            return false;
        };
        let mut pod = (*current).clone();
        if !pod["status"].is_object() {
            pod["status"] = json!({});
        }
        change(&mut pod["status"]);
        store
            .update(PODS, &self.namespace, &self.name, pod, true)
            .is_ok()
    }

    fn event(&self, reason: &str, message: &str, kind: &str) {
        let mut store = self.shared.store.lock().expect("lock");
        let _ = store.create(
            EVENTS,
            &self.namespace,
            event_for(&self.pod, reason, message, kind),
        );
    }

    fn statuses(&self, field: &str, state: impl Fn(&str) -> Value) -> Value {
        let spec_field = if field == "initContainerStatuses" {
            "initContainers"
        } else {
            "containers"
        };
        json!(container_names(&self.pod, spec_field)
            .iter()
            .map(|n| json!({"name": n, "image": image(&self.pod, spec_field, n), "imageID": "", "ready": false, "restartCount": 0, "started": false, "state": state(n)}))
            .collect::<Vec<_>>())
    }

    fn scheduled(&self) -> bool {
        self.set_status(|status| {
            status["conditions"] =
                json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]);
            status["hostIP"] = json!("10.0.0.1");
        })
    }

    fn init_completed(&self) -> Value {
        let finished = now();
        self.statuses("initContainerStatuses", |_| json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": finished, "finishedAt": finished}}))
    }

    /// Adds what each container wrote to its `terminationMessagePath` to its
    /// `state.terminated`, as the kubelet does, once the pod's statuses are written.
    fn with_termination_messages(&self, messages: Vec<(String, String)>) {
        if messages.is_empty() {
            return;
        }
        self.set_status(|status| {
            for field in ["initContainerStatuses", "containerStatuses"] {
                for entry in status[field].as_array_mut().into_iter().flatten() {
                    let name = entry["name"].as_str().unwrap_or_default().to_owned();
                    if let Some((_, message)) = messages.iter().find(|(c, _)| *c == name) {
                        entry["state"]["terminated"]["message"] = json!(message);
                    }
                }
            }
        });
    }

    fn running(&self) -> bool {
        let started = now();
        let init = self.init_completed();
        let containers = self.statuses(
            "containerStatuses",
            |_| json!({"running": {"startedAt": started}}),
        );
        self.set_status(|status| {
            status["phase"] = json!("Running");
            status["startTime"] = json!(started);
            status["podIP"] = json!("10.1.0.2");
            status["initContainerStatuses"] = init;
            status["containerStatuses"] = containers;
        })
    }

    fn terminated(&self, failed_container: Option<(&str, bool)>, exit_code: i32) {
        let finished = now();
        let main = container_names(&self.pod, "containers");
        let init_failed = failed_container.is_some_and(|(_, init)| init);
        let state = |code: i32| {
            let reason = if code == 0 { "Completed" } else { "Error" };
            json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": finished, "finishedAt": finished}})
        };
        let init = self.statuses("initContainerStatuses", |n| match failed_container {
            Some((c, true)) if c == n => state(exit_code),
            _ => state(0),
        });
        let containers = self.statuses("containerStatuses", |n| {
            if init_failed {
                json!({"waiting": {"reason": "PodInitializing"}})
            } else {
                match failed_container {
                    Some((c, false)) if c == n => state(exit_code),
                    _ => state(0),
                }
            }
        });
        {
            let mut store = self.shared.store.lock().expect("lock");
            for container in container_names(&self.pod, "initContainers")
                .iter()
                .chain(main.iter())
            {
                store.finish_log(&self.namespace, &self.name, container);
            }
        }
        self.set_status(|status| {
            status["phase"] = json!(if failed_container.is_some() {
                "Failed"
            } else {
                "Succeeded"
            });
            status["initContainerStatuses"] = init;
            status["containerStatuses"] = containers;
        });
    }

    fn waiting(&self, on_init: bool, reason: &str, message: &str) {
        let (field, other) = if on_init {
            ("initContainerStatuses", "containerStatuses")
        } else {
            ("containerStatuses", "initContainerStatuses")
        };
        let waiting = self.statuses(
            field,
            |_| json!({"waiting": {"reason": reason, "message": message}}),
        );
        let other_state = if on_init {
            self.statuses(other, |_| json!({"waiting": {"reason": "PodInitializing"}}))
        } else {
            self.init_completed()
        };
        self.set_status(|status| {
            status["phase"] = json!("Pending");
            status[field] = waiting;
            status[other] = other_state;
        });
    }

    pub(super) async fn run(self, behaviour: PodBehaviour) {
        let main = container_names(&self.pod, "containers")
            .first()
            .cloned()
            .unwrap_or_default();
        match behaviour {
            PodBehaviour::NeverSchedule | PodBehaviour::NoNodeMatches => {
                let message = if matches!(behaviour, PodBehaviour::NoNodeMatches) {
                    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. no new claims to deallocate, preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
                } else {
                    "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
                };
                self.set_status(|status| {
                    status["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": now()}]);
                });
                self.event("FailedScheduling", message, "Warning");
            }
            PodBehaviour::ImagePullError => {
                if !self.scheduled() {
                    return;
                }
                // The container whose image is missing waits; init containers before it
                // ran, as a kubelet pulls each image just before its container starts.
                let inits = container_names(&self.pod, "initContainers");
                let missing_init = inits
                    .iter()
                    .find(|c| image(&self.pod, "initContainers", c) == MISSING_IMAGE);
                let on_init = missing_init.is_some()
                    || (image(&self.pod, "containers", &main) != MISSING_IMAGE
                        && !inits.is_empty());
                let (field, container) = match missing_init {
                    Some(init) => ("initContainers", init.clone()),
                    None if on_init => ("initContainers", inits[0].clone()),
                    None => ("containers", main.clone()),
                };
                let image = image(&self.pod, field, &container);
                let message = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
                self.waiting(on_init, "ErrImagePull", &message);
                {
                    self.event(
                        "Failed",
                        &format!("Failed to pull image \"{image}\": {message}"),
                        "Warning",
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                self.waiting(
                    on_init,
                    "ImagePullBackOff",
                    &format!("Back-off pulling image \"{image}\""),
                );
            }
            PodBehaviour::MissingSecret { secret } => {
                if !self.scheduled() {
                    return;
                }
                let message = format!("secret \"{secret}\" not found");
                self.waiting(false, "CreateContainerConfigError", &message);
                self.event("Failed", &format!("Error: {message}"), "Warning");
            }
            PodBehaviour::Succeed { logs, duration } => {
                self.scripted(&main, logs, duration, 0).await
            }
            PodBehaviour::Fail {
                exit_code,
                logs,
                duration,
            } => self.scripted(&main, logs, duration, exit_code).await,
            PodBehaviour::RunLocally {
                kubeci_exe,
                secrets_dir,
                work_root,
                env,
            } => self.locally(kubeci_exe, secrets_dir, work_root, env).await,
        }
    }

    async fn scripted(&self, main: &str, logs: Vec<String>, duration: Duration, exit_code: i32) {
        if !self.scheduled() || !self.running() {
            return;
        }
        // The container has started: its log exists, even before its first line; the init
        // containers' (empty) logs are complete.
        {
            let mut store = self.shared.store.lock().expect("lock");
            for init in container_names(&self.pod, "initContainers") {
                let init = init.as_str();
                store.finish_log(&self.namespace, &self.name, init);
            }
            store
                .logs
                .entry((self.namespace.clone(), self.name.clone(), main.to_owned()))
                .or_default();
        }
        let pause = duration / (logs.len() as u32 + 1);
        for line in logs {
            tokio::time::sleep(pause).await;
            self.shared.store.lock().expect("lock").append_log(
                &self.namespace,
                &self.name,
                main,
                &line,
            );
        }
        tokio::time::sleep(pause).await;
        self.terminated(
            if exit_code == 0 {
                None
            } else {
                Some((main, false))
            },
            exit_code,
        );
    }

    /// The Job the local runner takes for this pod.
    fn local_job(
        &self,
        spec: k8s_openapi::api::core::v1::PodSpec,
    ) -> k8s_openapi::api::batch::v1::Job {
        use k8s_openapi::api::batch::v1::{Job, JobSpec};
        use k8s_openapi::api::core::v1::PodTemplateSpec;
        Job {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(spec),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    async fn locally(
        &self,
        kubeci_exe: PathBuf,
        secrets_dir: Option<PathBuf>,
        work_root: PathBuf,
        extra_env: Vec<(String, String)>,
    ) {
        use kubeci_pod_runner::Outcome;
        let Ok(spec) = serde_json::from_value(self.pod["spec"].clone()) else {
            self.terminated(Some(("", false)), 1);
            return;
        };
        let job = self.local_job(spec);
        if !self.scheduled() || !self.running() {
            return;
        }
        {
            let mut store = self.shared.store.lock().expect("lock");
            let names = container_names(&self.pod, "initContainers");
            for container in names
                .iter()
                .chain(&container_names(&self.pod, "containers"))
            {
                let key = (self.namespace.clone(), self.name.clone(), container.clone());
                store.logs.entry(key).or_default();
            }
        }
        let env = self.local_env(kubeci_exe, secrets_dir, work_root, extra_env);
        let sink = Arc::new(SimSink {
            shared: self.shared.clone(),
            namespace: self.namespace.clone(),
            pod: self.name.clone(),
            messages: Mutex::default(),
        });
        // Dropped (the pod's task aborted): every process killed.
        let _guard = self.stops.kill.clone().drop_guard();
        let result =
            kubeci_pod_runner::run_job_with(&job, &env, sink.clone(), self.stops.clone()).await;
        match result.map(|r| r.outcome) {
            Ok(Outcome::Succeeded) => self.terminated(None, 0),
            Ok(Outcome::Failed {
                container,
                init,
                exit_code,
            }) => self.terminated(Some((&container, init)), exit_code),
            Ok(Outcome::NotStarted { reason, message }) if reason == "FailedMount" => {
                self.waiting(true, "PodInitializing", "");
                self.event("FailedMount", &message, "Warning");
            }
            Ok(Outcome::NotStarted { reason, message }) => self.waiting(false, &reason, &message),
            // Stopped before its container started (deleted): killed, as the kubelet says.
            Ok(Outcome::Cancelled) if self.stops.terminate.is_cancelled() => {
                let main = container_names(&self.pod, "containers");
                let main = main.first().map_or("", String::as_str);
                self.terminated(Some((main, false)), 137);
            }
            Ok(Outcome::DeadlineExceeded { .. }) | Ok(Outcome::Cancelled) => {}
            Err(error) => {
                self.shared.store.lock().expect("lock").append_log(
                    &self.namespace,
                    &self.name,
                    "build",
                    &format!("local engine: {error}"),
                );
                self.terminated(Some(("build", false)), 1);
            }
        }
        let messages = std::mem::take(&mut *sink.messages.lock().expect("lock"));
        self.with_termination_messages(messages);
    }
}

impl Kubelet {
    /// The machine a pod run here runs on: its directory, the host's environment with
    /// `extra_env`, its tokens; its sidecars run.
    fn local_env(
        &self,
        kubeci_exe: PathBuf,
        secrets_dir: Option<PathBuf>,
        work_root: PathBuf,
        extra_env: Vec<(String, String)>,
    ) -> kubeci_pod_runner::LocalEnv {
        let mut host_env = kubeci_pod_runner::LocalEnv::host_env_from_process();
        host_env.extend(extra_env);
        kubeci_pod_runner::LocalEnv {
            build_dir: work_root.join(&self.namespace).join(&self.name),
            secrets_dir,
            kubeci_exe,
            host_env,
            objects: kubeci_pod_runner::PodObjects {
                tokens: self.tokens(),
                ..Default::default()
            },
            run_as: None,
            sidecars: true,
        }
    }

    /// A token for each audience the pod's projected volumes ask for, bound to the pod, as
    /// the kubelet gets them with a TokenRequest (from the fake's own [`Tokens`]).
    ///
    /// [`Tokens`]: crate::tokens::Tokens
    fn tokens(&self) -> std::collections::BTreeMap<String, String> {
        let volumes = self.pod.pointer("/spec/volumes").and_then(Value::as_array);
        let sources = (volumes.into_iter().flatten())
            .flat_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
            .flatten()
            .filter_map(|source| source.get("serviceAccountToken"));
        let account = s(&self.pod, "/spec/serviceAccountName");
        let account = if account.is_empty() {
            "default".to_owned()
        } else {
            account
        };
        let store = self.shared.store.lock().expect("lock");
        let mut tokens = self.shared.tokens.lock().expect("lock");
        let mut issued = std::collections::BTreeMap::new();
        for source in sources {
            let audience = source["audience"].as_str().unwrap_or_default().to_owned();
            let mut spec = json!({
                "expirationSeconds": source["expirationSeconds"].as_i64().unwrap_or(3600),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name,
                                   "uid": s(&self.pod, "/metadata/uid")},
            });
            if !audience.is_empty() {
                spec["audiences"] = json!([audience]);
            }
            let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
            if let Ok(answer) = tokens.request(&store, &self.namespace, &account, request) {
                let token = answer.pointer("/status/token").and_then(Value::as_str);
                issued.insert(audience, token.unwrap_or_default().to_owned());
            }
        }
        issued
    }
}

/// Where a simulated pod run by the local engine sends its log lines and container ends.
struct SimSink {
    shared: Arc<Shared>,
    namespace: String,
    pod: String,
    /// (container, termination message), kept until the pod's final status is written.
    messages: Mutex<Vec<(String, String)>>,
}

impl kubeci_pod_runner::LogSink for SimSink {
    fn event(&self, event: kubeci_pod_runner::LogEvent) {
        if let kubeci_pod_runner::LogEvent::Line { container, text } = event {
            self.shared.store.lock().expect("lock").append_log(
                &self.namespace,
                &self.pod,
                &container,
                &text,
            );
        }
    }

    fn container(&self, change: kubeci_pod_runner::ContainerChange) {
        if let kubeci_pod_runner::ContainerChange::Exited {
            container,
            message: Some(message),
            ..
        } = change
        {
            self.messages
                .lock()
                .expect("lock")
                .push((container, message));
        }
    }
}
