//! A pod's status as the node agent writes it: container states, conditions, phase, the
//! writes themselves (patched, retried).

use super::*;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{Api, Patch, PatchParams};
use kubeci_pod_runner::ContainerChange;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pod's status as the kubelet would write it, kept between writes.
pub(super) struct PodStatus {
    state: Mutex<StatusState>,
}

pub(super) struct StatusState {
    phase: String,
    reason: Option<(String, String)>,
    started: String,
    init: Vec<(String, Value)>,
    main: Vec<(String, Value)>,
    /// The init containers that are native sidecars: started is initialized for them.
    sidecars: Vec<String>,
}

impl StatusState {
    fn slot(&mut self, container: &str, init: bool) -> Option<&mut Value> {
        let list = if init { &mut self.init } else { &mut self.main };
        list.iter_mut()
            .find(|(n, _)| n == container)
            .map(|(_, v)| v)
    }

    pub(super) fn set_waiting(&mut self, container: &str, init: bool, reason: &str, message: &str) {
        if let Some(state) = self.slot(container, init) {
            *state = json!({"waiting": {"reason": reason, "message": message}});
        }
    }

    pub(super) fn apply(&mut self, change: &ContainerChange) {
        match change {
            ContainerChange::Started {
                container, init, ..
            } => {
                if !init {
                    self.phase = "Running".into();
                }
                if let Some(state) = self.slot(container, *init) {
                    *state = json!({"running": {"startedAt": now()}});
                }
            }
            ContainerChange::Exited {
                container,
                init,
                exit_code,
                message,
            } => {
                if let Some(state) = self.slot(container, *init) {
                    let started = state
                        .pointer("/running/startedAt")
                        .cloned()
                        .unwrap_or_else(|| json!(now()));
                    let reason = if *exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    };
                    let mut terminated = json!({"exitCode": exit_code, "reason": reason,
                                                "startedAt": started, "finishedAt": now()});
                    if let Some(message) = message {
                        terminated["message"] = json!(message);
                    }
                    *state = json!({ "terminated": terminated });
                }
            }
            ContainerChange::Waiting {
                container,
                init,
                reason,
                message,
            } => self.set_waiting(container, *init, reason, message),
        }
    }

    fn to_json(&self) -> Value {
        let statuses = |list: &[(String, Value)]| -> Vec<Value> {
            list.iter()
                .map(|(name, state)| {
                    let running = state.get("running").is_some();
                    json!({"name": name, "state": state, "ready": running, "started": running,
                           "restartCount": 0, "image": "", "imageID": ""})
                })
                .collect()
        };
        let initialized = self.init.iter().all(|(name, s)| {
            s.pointer("/terminated/exitCode") == Some(&json!(0))
                || (self.sidecars.contains(name) && s.get("waiting").is_none())
        });
        let ready = self.main.iter().all(|(_, s)| s.get("running").is_some());
        let terminal = self.phase == "Succeeded" || self.phase == "Failed";
        let condition = |kind: &str, ok: bool, reason: Option<&str>| {
            let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastTransitionTime": self.started});
            if let Some(reason) = reason {
                c["reason"] = json!(reason);
            }
            c
        };
        let not_ready = if terminal {
            Some("PodCompleted")
        } else {
            Some("ContainersNotReady")
        };
        let mut status = json!({
            "phase": self.phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.started,
            "conditions": [
                condition("PodReadyToStartContainers", !terminal, None),
                condition("Initialized", initialized, (!initialized).then_some("ContainersNotInitialized")),
                condition("ContainersReady", ready && !terminal, (!ready || terminal).then_some(not_ready.unwrap_or_default())),
                condition("Ready", ready && !terminal, (!ready || terminal).then_some(not_ready.unwrap_or_default())),
            ],
            "containerStatuses": statuses(&self.main),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = json!(statuses(&self.init));
        }
        if let Some((reason, message)) = &self.reason {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        status
    }
}

impl PodStatus {
    pub(super) fn new(spec: &PodSpec) -> PodStatus {
        let init: Vec<(String, Value)> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.name.clone(),
                    json!({"waiting": {"reason": "PodInitializing"}}),
                )
            })
            .collect();
        let main_reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let main = spec
            .containers
            .iter()
            .map(|c| (c.name.clone(), json!({"waiting": {"reason": main_reason}})))
            .collect();
        let sidecars = (spec.init_containers.iter().flatten())
            .filter(|c| kubeci_pod_runner::sidecars::is_sidecar(c))
            .map(|c| c.name.clone())
            .collect();
        PodStatus {
            state: Mutex::new(StatusState {
                phase: "Pending".into(),
                reason: None,
                started: now(),
                init,
                main,
                sidecars,
            }),
        }
    }

    pub(super) fn names(&self) -> Vec<String> {
        let state = self.state.lock().expect("lock");
        state
            .init
            .iter()
            .chain(state.main.iter())
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub(super) fn change(&self, f: impl FnOnce(&mut StatusState)) {
        f(&mut self.state.lock().expect("lock"));
    }

    pub(super) fn finish(&self, phase: &str, reason: Option<(&str, &str)>) {
        self.change(|s| {
            s.phase = phase.to_owned();
            s.reason = reason.map(|(r, m)| (r.to_owned(), m.to_owned()));
        });
    }

    fn json(&self) -> Value {
        self.state.lock().expect("lock").to_json()
    }
}

/// Writes a pod's status: the newest state each time, one write at a time.
#[derive(Clone)]
pub(super) struct StatusWriter {
    pods: Api<Pod>,
    name: String,
    status: Arc<PodStatus>,
    lock: Arc<tokio::sync::Mutex<()>>,
    poke: Arc<tokio::sync::Notify>,
}

impl StatusWriter {
    pub(super) fn start(pods: Api<Pod>, name: String, status: Arc<PodStatus>) -> StatusWriter {
        let writer = StatusWriter {
            pods,
            name,
            status,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            poke: Arc::new(tokio::sync::Notify::new()),
        };
        let background = writer.clone();
        tokio::spawn(async move {
            loop {
                background.poke.notified().await;
                if !background.write_now().await {
                    return;
                }
            }
        });
        writer
    }

    pub(super) fn poke(&self) {
        self.poke.notify_one();
    }

    /// Writes the newest status, retrying until the API server takes it (as the kubelet's
    /// status manager does, through outages); false once the pod is gone.
    pub(super) async fn write_now(&self) -> bool {
        let _one_at_a_time = self.lock.lock().await;
        let mut pause = Duration::from_millis(100);
        loop {
            let patch = json!({"status": self.status.json()});
            match self
                .pods
                .patch_status(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
            {
                Ok(_) => return true,
                Err(kube::Error::Api(e)) if e.code == 404 => return false,
                Err(e) => {
                    tracing::warn!(pod = %self.name, error = %e, "node agent: cannot write a pod's status");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
