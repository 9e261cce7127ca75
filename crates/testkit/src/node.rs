//! A node agent: the kubelet of kubeci's test clusters, for a machine without a container
//! runtime.
//!
//! It registers a Node (Ready, `InternalIP` 127.0.0.1, its kubelet port), renews the
//! node's Lease, and runs every pod the real scheduler binds to it: init containers in
//! order (native sidecars — `restartPolicy: Always` — started and left running), then the
//! container, as process groups through `kubeci-pod-runner` (which stops the sidecars with
//! SIGTERM once the container ended, within the pod's grace period, and takes the pod's
//! phase from its containers alone, as the kubelet does), with `secretKeyRef`,
//! `configMapKeyRef` and `fieldRef` values and `secret`, `configMap`, `emptyDir` and
//! projected service-account-token volumes read from the API as the kubelet reads them. It
//! writes pod status as the kubelet does (phase, conditions, container states with exit
//! codes and times), including the waiting reasons kubeci depends on
//! (`CreateContainerConfigError`, `ErrImagePull`/`ImagePullBackOff` for images matching
//! an "unpullable" pattern), serves `/containerLogs/{ns}/{pod}/{container}` over HTTPS for
//! `pods/log`, and stops a deleted pod's processes within its grace period.
//!
//! Images are never pulled: commands run with this machine's tools, as with the local
//! engine. Not reproduced: restarts (`restartPolicy` other than `Never` runs once), probes,
//! `envFrom`, resource limits, and an image pulled just before its container starts (an
//! unpullable image anywhere in the pod stops the pod before its first container).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kubeci_pod_runner::{ContainerChange, LogEvent};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod logs;
mod objects;
mod pods;
mod status;

use logs::serve_logs;
use status::{PodStatus, StatusWriter};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_name: String,
    /// The kubelet port on 127.0.0.1 the API server reaches for logs (HTTPS).
    pub port: u16,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The program that stands for `kubeci` in container commands (the clone step).
    pub kubeci_exe: PathBuf,
    /// Each pod's directories are made under it.
    pub work_dir: PathBuf,
    /// Images no registry serves here: `*` matches any run of characters.
    pub unpullable: Vec<String>,
    /// Variables every container gets besides the host's `PATH` and locale.
    pub env: Vec<(String, String)>,
    /// The version the Node reports as its kubelet's.
    pub kubelet_version: String,
    /// Where a test may leave `<namespace>.gitconfig`: the pods of that namespace get it as
    /// `GIT_CONFIG_GLOBAL` (its `insteadOf` rules stand for the network, e.g. GitHub's
    /// URL → a repository on this machine).
    pub git_config_dir: Option<PathBuf>,
}

/// Why the agent cannot run. Not worth retrying: the options or the machine must change.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read the TLS certificate or key: {0}")]
    Tls(String),
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register Node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// Whether `image` matches `pattern`, where `*` stands for any run of characters.
pub fn image_matches(pattern: &str, image: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == image;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !image.starts_with(first) || image.len() < first.len() + last.len() || !image.ends_with(last)
    {
        return false;
    }
    let mut rest = &image[first.len()..image.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// One container's log as the agent keeps it: lines with the time they were written.
#[derive(Default)]
struct ContainerLog {
    lines: Vec<(jiff::Timestamp, String)>,
    started: bool,
    done: bool,
    /// Why it has not started, for `pods/log` while it waits.
    waiting: Option<String>,
}

type LogKey = (String, String, String);

#[derive(Clone, Default)]
struct Logs {
    logs: Arc<Mutex<HashMap<LogKey, ContainerLog>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Logs {
    fn change(&self, key: &LogKey, f: impl FnOnce(&mut ContainerLog)) {
        f(self
            .logs
            .lock()
            .expect("lock")
            .entry(key.clone())
            .or_default());
        self.changed.send_modify(|n| *n += 1);
    }

    fn forget_pod(&self, namespace: &str, pod: &str) {
        self.logs
            .lock()
            .expect("lock")
            .retain(|(ns, p, _), _| !(ns == namespace && p == pod));
    }
}

/// A running pod: how to stop it.
struct PodRun {
    uid: String,
    cancel: CancellationToken,
    /// The process group of the container now running.
    group: Mutex<Option<u32>>,
    ended: watch::Sender<bool>,
    stopping: Mutex<bool>,
}

struct Agent {
    client: kube::Client,
    options: NodeOptions,
    logs: Logs,
    runs: Mutex<HashMap<(String, String), Arc<PodRun>>>,
}

/// Runs the agent until `stop` is cancelled.
pub async fn run(
    client: kube::Client,
    options: NodeOptions,
    stop: CancellationToken,
) -> Result<(), NodeError> {
    let tls = tls_config(&options)?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port)))
        .await
        .map_err(|source| NodeError::Listen {
            port: options.port,
            source,
        })?;
    let agent = Arc::new(Agent {
        client,
        options,
        logs: Logs::default(),
        runs: Mutex::new(HashMap::new()),
    });
    agent.register().await?;
    let server = tokio::spawn(serve_logs(listener, tls, agent.logs.clone()));
    let heartbeat = tokio::spawn(agent.clone().heartbeat());
    tokio::select! {
        () = agent.clone().watch_pods() => {}
        () = stop.cancelled() => {}
    }
    server.abort();
    heartbeat.abort();
    let runs: Vec<Arc<PodRun>> = agent.runs.lock().expect("lock").values().cloned().collect();
    for run in runs {
        run.cancel.cancel();
        let mut ended = run.ended.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), ended.wait_for(|e| *e)).await;
    }
    Ok(())
}

fn tls_config(options: &NodeOptions) -> Result<tokio_rustls::TlsAcceptor, NodeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&options.tls_cert)
        .and_then(|i| i.collect())
        .map_err(|e| NodeError::Tls(format!("{}: {e}", options.tls_cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&options.tls_key)
        .map_err(|e| NodeError::Tls(format!("{}: {e}", options.tls_key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| NodeError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Agent {
    fn node_status(&self) -> Value {
        let now = now();
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let resources =
            json!({"cpu": "16", "memory": "64Gi", "pods": "1000", "ephemeral-storage": "100Gi"});
        json!({"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status (kubeci node agent)"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.options.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.options.port}},
            "nodeInfo": {
                "machineID": "kubeci-node-agent", "systemUUID": "kubeci-node-agent", "bootID": std::process::id().to_string(),
                "kernelVersion": "", "osImage": "kubeci node agent", "containerRuntimeVersion": "kubeci-pod-runner://0",
                "kubeletVersion": self.options.kubelet_version, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }})
    }

    async fn register(&self) -> Result<(), NodeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let name = &self.options.node_name;
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "kubeci-node-agent"}}});
        let node: Node = serde_json::from_value(node).expect("a Node");
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                return Err(NodeError::Register {
                    node: name.clone(),
                    source,
                })
            }
        }
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Strategic(self.node_status()),
            )
            .await
            .map_err(|source| NodeError::Register {
                node: name.clone(),
                source,
            })?;
        Ok(())
    }

    /// Renews the node's Lease every 10 s and its status every minute.
    async fn heartbeat(self: Arc<Self>) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(self.client.clone());
        let name = self.options.node_name.clone();
        let mut beats = 0u64;
        loop {
            let renew = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                .to_string();
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew}});
            let result = leases
                .patch(
                    &name,
                    &PatchParams::apply("kubeci-node-agent").force(),
                    &Patch::Apply(&lease),
                )
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "node agent: cannot renew the node Lease");
            }
            if beats % 6 == 5 {
                if let Err(e) = nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Strategic(self.node_status()),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "node agent: cannot update the Node's status");
                }
            }
            beats += 1;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }

    async fn watch_pods(self: Arc<Self>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.options.node_name));
        let mut events = std::pin::pin!(watcher(pods, config));
        let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    self.clone().on_pod(pod, &mut seen);
                }
                Ok(watcher::Event::Delete(pod)) => self.on_deleted(&pod),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "node agent: watching pods");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn on_pod(self: Arc<Self>, pod: Pod, seen: &mut BTreeSet<(String, String, String)>) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed";
        let key = (namespace.clone(), name.clone());
        let run = self.runs.lock().expect("lock").get(&key).cloned();
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
            match run {
                Some(run) if run.uid == uid => {
                    let mut stopping = run.stopping.lock().expect("lock");
                    if !*stopping {
                        *stopping = true;
                        tokio::spawn(self.clone().stop(key, uid, run.clone(), grace));
                    }
                }
                _ => {
                    tokio::spawn(self.clone().finish_deletion(namespace, name, uid));
                }
            }
            return;
        }
        if terminal || run.is_some() || !seen.insert((namespace.clone(), name.clone(), uid.clone()))
        {
            return;
        }
        let run = Arc::new(PodRun {
            uid,
            cancel: CancellationToken::new(),
            group: Mutex::new(None),
            ended: watch::channel(false).0,
            stopping: Mutex::new(false),
        });
        self.runs
            .lock()
            .expect("lock")
            .insert(key.clone(), run.clone());
        tokio::spawn(async move {
            self.run_pod(pod, run.clone()).await;
            run.ended.send_replace(true);
        });
    }

    fn on_deleted(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(run) = self
            .runs
            .lock()
            .expect("lock")
            .remove(&(namespace.clone(), name.clone()))
        {
            run.cancel.cancel();
        }
        self.logs.forget_pod(&namespace, &name);
    }

    /// Stops a deleted pod: SIGTERM to its running container's main process, SIGKILL to
    /// the whole group after the grace period, then removes the pod from the API (grace period 0), as the kubelet does.
    async fn stop(
        self: Arc<Self>,
        key: (String, String),
        uid: String,
        run: Arc<PodRun>,
        grace: i64,
    ) {
        let group = *run.group.lock().expect("lock");
        if let Some(pgid) = group.and_then(|g| i32::try_from(g).ok()) {
            // As a container runtime does: SIGTERM to the container's main process only;
            // what it started is killed with the group when the grace period ends.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let mut ended = run.ended.subscribe();
        let grace = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        if tokio::time::timeout(grace, ended.wait_for(|e| *e))
            .await
            .is_err()
        {
            run.cancel.cancel();
            let _ = ended.wait_for(|e| *e).await;
        }
        self.finish_deletion(key.0, key.1, uid).await;
    }

    async fn finish_deletion(self: Arc<Self>, namespace: String, name: String, uid: String) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..20 {
            match pods.delete(&name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => {
                    tracing::warn!(namespace, pod = name, attempt, error = %e, "node agent: cannot delete a pod");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": namespace,
                               "uid": pod.metadata.uid, "resourceVersion": pod.metadata.resource_version},
            "reason": reason, "message": message, "type": kind,
            "source": {"component": "kubelet", "host": self.options.node_name},
            "reportingComponent": "kubelet", "reportingInstance": self.options.node_name,
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1});
        let event: Event = serde_json::from_value(event).expect("an Event");
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            tracing::warn!(namespace, pod = name, reason, error = %e, "node agent: cannot record an event");
        }
    }
}

/// Receives a pod's log lines and container changes from the local engine.
struct PodSink {
    namespace: String,
    pod: String,
    logs: Logs,
    status: Arc<PodStatus>,
    writer: StatusWriter,
    run: Arc<PodRun>,
}

impl kubeci_pod_runner::LogSink for PodSink {
    fn event(&self, event: LogEvent) {
        if let LogEvent::Line { container, text } = event {
            let key = (self.namespace.clone(), self.pod.clone(), container);
            self.logs
                .change(&key, |l| l.lines.push((jiff::Timestamp::now(), text)));
        }
    }

    fn container(&self, change: ContainerChange) {
        let key = |c: &str| (self.namespace.clone(), self.pod.clone(), c.to_owned());
        match &change {
            ContainerChange::Started { container, pid, .. } => {
                *self.run.group.lock().expect("lock") = Some(*pid);
                self.logs.change(&key(container), |l| {
                    l.started = true;
                    l.waiting = None;
                });
            }
            ContainerChange::Exited { container, .. } => {
                *self.run.group.lock().expect("lock") = None;
                self.logs.change(&key(container), |l| l.done = true);
            }
            ContainerChange::Waiting {
                container, reason, ..
            } => self
                .logs
                .change(&key(container), |l| l.waiting = Some(reason.clone())),
        }
        self.status.change(|s| s.apply(&change));
        self.writer.poke();
    }
}

#[cfg(test)]
mod tests;
