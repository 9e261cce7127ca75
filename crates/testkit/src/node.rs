//! A node agent: the kubelet of kubeci's test clusters, for a machine without a container
//! runtime.
//!
//! It registers a Node (Ready, `InternalIP` 127.0.0.1, its kubelet port), renews the
//! node's Lease, and runs every pod the real scheduler binds to it: init containers in
//! order, then the container, as process groups through `kubeci-local`, with `secretKeyRef`,
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, Pod, PodSpec, PodTemplateSpec, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kubeci_local::{ContainerChange, LocalEnv, LogEvent, Outcome, PodObjects};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
                "kernelVersion": "", "osImage": "kubeci node agent", "containerRuntimeVersion": "kubeci-local://0",
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
                log::warn!("node agent: cannot renew the node Lease: {e}");
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
                    log::warn!("node agent: cannot update the Node's status: {e}");
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
                    log::warn!("node agent: watching pods: {e}");
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
                    log::warn!(
                        "node agent: cannot delete pod {namespace}/{name} (attempt {attempt}): {e}"
                    );
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
            log::warn!("node agent: cannot record event {reason} on {namespace}/{name}: {e}");
        }
    }

    /// Reads what the pod refers to, as the kubelet does before starting it.
    async fn objects(&self, pod: &Pod, spec: &PodSpec) -> Result<PodObjects, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut secrets = BTreeSet::new();
        let mut config_maps = BTreeSet::new();
        let mut audiences: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        for container in containers {
            for var in container.env.iter().flatten() {
                if let Some(from) = &var.value_from {
                    if let Some(s) = &from.secret_key_ref {
                        secrets.insert(s.name.clone());
                    }
                    if let Some(c) = &from.config_map_key_ref {
                        config_maps.insert(c.name.clone());
                    }
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(s) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.insert(s);
            }
            if let Some(c) = &volume.config_map {
                config_maps.insert(c.name.clone());
            }
            for source in volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
            {
                if let Some(s) = &source.secret {
                    secrets.insert(s.name.clone());
                }
                if let Some(c) = &source.config_map {
                    config_maps.insert(c.name.clone());
                }
                if let Some(t) = &source.service_account_token {
                    audiences.insert(t.audience.clone().unwrap_or_default(), t.expiration_seconds);
                }
            }
        }
        let mut objects = PodObjects::default();
        let secret_api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        for secret in secrets {
            let found = secret_api
                .get_opt(&secret)
                .await
                .map_err(|e| format!("secret {secret:?}: {e}"))?;
            if let Some(found) = found {
                let mut data: BTreeMap<String, Vec<u8>> = found
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in found.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                objects.secrets.insert(secret, data);
            }
        }
        let map_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        for map in config_maps {
            let found = map_api
                .get_opt(&map)
                .await
                .map_err(|e| format!("configmap {map:?}: {e}"))?;
            if let Some(found) = found {
                let mut data: BTreeMap<String, Vec<u8>> = found
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in found.binary_data.unwrap_or_default() {
                    data.insert(k, v.0);
                }
                objects.config_maps.insert(map, data);
            }
        }
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        for (audience, expiration) in audiences {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience.clone()]
                    },
                    expiration_seconds: expiration,
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(name.clone()),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            };
            let token = accounts
                .create_token_request(&account, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("failed to fetch token: {e}"))?;
            let token = token.status.map(|s| s.token).unwrap_or_default();
            objects.tokens.insert(audience, token);
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let fields = [
            ("metadata.name", name.clone()),
            ("metadata.namespace", namespace.clone()),
            ("metadata.uid", pod.metadata.uid.clone().unwrap_or_default()),
            ("spec.nodeName", self.options.node_name.clone()),
            ("spec.serviceAccountName", account),
            ("status.hostIP", "127.0.0.1".into()),
            ("status.podIP", "127.0.0.1".into()),
        ];
        objects.fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (k, v) in labels {
            objects.fields.insert(format!("metadata.labels['{k}']"), v);
        }
        for (k, v) in annotations {
            objects
                .fields
                .insert(format!("metadata.annotations['{k}']"), v);
        }
        Ok(objects)
    }

    async fn run_pod(self: Arc<Self>, pod: Pod, run: Arc<PodRun>) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(spec) = pod.spec.clone() else { return };
        let status = Arc::new(PodStatus::new(&spec));
        let writer = StatusWriter::start(
            Api::namespaced(self.client.clone(), &namespace),
            name.clone(),
            status.clone(),
        );
        for container in status.names() {
            self.logs
                .change(&(namespace.clone(), name.clone(), container), |_| {});
        }
        writer.write_now().await;

        let containers: Vec<(String, String, bool)> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default(), true))
            .chain(
                spec.containers
                    .iter()
                    .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default(), false)),
            )
            .collect();
        if let Some((container, image, init)) = containers.iter().find(|(_, image, _)| {
            self.options
                .unpullable
                .iter()
                .any(|p| image_matches(p, image))
        }) {
            let message = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
            self.waiting(
                &status,
                &namespace,
                &name,
                container,
                *init,
                "ErrImagePull",
                &message,
            );
            writer.write_now().await;
            self.event(
                &pod,
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image}\": {message}"),
            )
            .await;
            self.event(&pod, "Warning", "Failed", "Error: ErrImagePull")
                .await;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = run.cancel.cancelled() => return,
            }
            let message = format!("Back-off pulling image \"{image}\"");
            self.waiting(
                &status,
                &namespace,
                &name,
                container,
                *init,
                "ImagePullBackOff",
                &message,
            );
            writer.write_now().await;
            self.event(&pod, "Normal", "BackOff", &message).await;
            run.cancel.cancelled().await;
            return;
        }

        let objects = match self.objects(&pod, &spec).await {
            Ok(objects) => objects,
            Err(message) => {
                self.event(&pod, "Warning", "FailedMount", &message).await;
                run.cancel.cancelled().await;
                return;
            }
        };
        let job = Job {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                active_deadline_seconds: spec.active_deadline_seconds,
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(spec.clone()),
                },
                ..Default::default()
            }),
            status: None,
        };
        let env = LocalEnv {
            build_dir: self.options.work_dir.join(&namespace).join(&name),
            secrets_dir: None,
            kubeci_exe: self.options.kubeci_exe.clone(),
            host_env: LocalEnv::host_env_from_process()
                .into_iter()
                .chain(self.options.env.iter().cloned())
                .chain(self.git_config(&namespace))
                .collect(),
            objects,
        };
        let sink: Arc<dyn kubeci_local::LogSink> = Arc::new(PodSink {
            namespace: namespace.clone(),
            pod: name.clone(),
            logs: self.logs.clone(),
            status: status.clone(),
            writer: writer.clone(),
            run: run.clone(),
        });
        let result = kubeci_local::run_job(&job, &env, sink, run.cancel.clone()).await;
        let _ = std::fs::remove_dir_all(&env.build_dir);
        match result.map(|r| r.outcome) {
            Ok(Outcome::Succeeded) => status.finish("Succeeded", None),
            Ok(Outcome::Failed { .. }) => status.finish("Failed", None),
            Ok(Outcome::DeadlineExceeded { .. }) => status.finish(
                "Failed",
                Some((
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )),
            ),
            Ok(Outcome::NotStarted { reason, message }) => {
                if reason == "FailedMount" {
                    self.event(&pod, "Warning", "FailedMount", &message).await;
                } else {
                    self.event(&pod, "Warning", "Failed", &format!("Error: {message}"))
                        .await;
                }
                writer.write_now().await;
                run.cancel.cancelled().await;
                return;
            }
            Ok(Outcome::Cancelled) => status.finish("Failed", None),
            Err(error) => {
                self.event(&pod, "Warning", "Failed", &format!("Error: {error}"))
                    .await;
                status.finish("Failed", Some(("Error", &error.to_string())));
            }
        }
        for container in status.names() {
            self.logs
                .change(&(namespace.clone(), name.clone(), container), |l| {
                    l.done = true
                });
        }
        writer.write_now().await;
    }

    /// `GIT_CONFIG_GLOBAL` for the pods of `namespace`, if a test left a file for it.
    fn git_config(&self, namespace: &str) -> Option<(String, String)> {
        let file = self
            .options
            .git_config_dir
            .as_ref()?
            .join(format!("{namespace}.gitconfig"));
        file.is_file()
            .then(|| ("GIT_CONFIG_GLOBAL".to_owned(), file.display().to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn waiting(
        &self,
        status: &PodStatus,
        namespace: &str,
        pod: &str,
        container: &str,
        init: bool,
        reason: &str,
        message: &str,
    ) {
        status.change(|s| s.set_waiting(container, init, reason, message));
        self.logs.change(
            &(namespace.to_owned(), pod.to_owned(), container.to_owned()),
            |l| l.waiting = Some(reason.to_owned()),
        );
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

impl kubeci_local::LogSink for PodSink {
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

/// A pod's status as the kubelet would write it, kept between writes.
struct PodStatus {
    state: Mutex<StatusState>,
}

struct StatusState {
    phase: String,
    reason: Option<(String, String)>,
    started: String,
    init: Vec<(String, Value)>,
    main: Vec<(String, Value)>,
}

impl StatusState {
    fn slot(&mut self, container: &str, init: bool) -> Option<&mut Value> {
        let list = if init { &mut self.init } else { &mut self.main };
        list.iter_mut()
            .find(|(n, _)| n == container)
            .map(|(_, v)| v)
    }

    fn set_waiting(&mut self, container: &str, init: bool, reason: &str, message: &str) {
        if let Some(state) = self.slot(container, init) {
            *state = json!({"waiting": {"reason": reason, "message": message}});
        }
    }

    fn apply(&mut self, change: &ContainerChange) {
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
        let initialized = self
            .init
            .iter()
            .all(|(_, s)| s.pointer("/terminated/exitCode") == Some(&json!(0)));
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
    fn new(spec: &PodSpec) -> PodStatus {
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
        PodStatus {
            state: Mutex::new(StatusState {
                phase: "Pending".into(),
                reason: None,
                started: now(),
                init,
                main,
            }),
        }
    }

    fn names(&self) -> Vec<String> {
        let state = self.state.lock().expect("lock");
        state
            .init
            .iter()
            .chain(state.main.iter())
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn change(&self, f: impl FnOnce(&mut StatusState)) {
        f(&mut self.state.lock().expect("lock"));
    }

    fn finish(&self, phase: &str, reason: Option<(&str, &str)>) {
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
struct StatusWriter {
    pods: Api<Pod>,
    name: String,
    status: Arc<PodStatus>,
    lock: Arc<tokio::sync::Mutex<()>>,
    poke: Arc<tokio::sync::Notify>,
}

impl StatusWriter {
    fn start(pods: Api<Pod>, name: String, status: Arc<PodStatus>) -> StatusWriter {
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

    fn poke(&self) {
        self.poke.notify_one();
    }

    /// Writes the newest status, retrying until the API server takes it (as the kubelet's
    /// status manager does, through outages); false once the pod is gone.
    async fn write_now(&self) -> bool {
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
                    log::warn!(
                        "node agent: cannot write the status of pod {}: {e}",
                        self.name
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// What `pods/log` asks the kubelet for.
#[derive(Debug, Default, PartialEq)]
struct LogQuery {
    follow: bool,
    timestamps: bool,
    previous: bool,
    tail_lines: Option<usize>,
    since_seconds: Option<i64>,
    since_time: Option<jiff::Timestamp>,
    limit_bytes: Option<usize>,
}

fn parse_log_query(query: &str) -> Result<LogQuery, String> {
    let mut q = LogQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let number = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("{key}: not a number: {v}"))
        };
        match key.as_ref() {
            "follow" => q.follow = crate::http::query_bool(&value),
            "timestamps" => q.timestamps = crate::http::query_bool(&value),
            "previous" => q.previous = crate::http::query_bool(&value),
            "tailLines" => q.tail_lines = Some(usize::try_from(number(&value)?).unwrap_or(0)),
            "sinceSeconds" => q.since_seconds = Some(number(&value)?),
            "sinceTime" => {
                q.since_time = Some(
                    value
                        .parse()
                        .map_err(|_| format!("sinceTime: not a time: {value}"))?,
                )
            }
            "limitBytes" => q.limit_bytes = Some(usize::try_from(number(&value)?).unwrap_or(0)),
            _ => {}
        }
    }
    Ok(q)
}

fn format_line(query: &LogQuery, at: jiff::Timestamp, text: &str) -> String {
    if query.timestamps {
        format!("{} {text}\n", at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    } else {
        format!("{text}\n")
    }
}

async fn serve_logs(listener: tokio::net::TcpListener, tls: tokio_rustls::TlsAcceptor, logs: Logs) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (tls, logs) = (tls.clone(), logs.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: Request<hyper::body::Incoming>| {
                    let logs = logs.clone();
                    async move { Ok::<_, std::convert::Infallible>(container_logs(&logs, &request)) }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("a response")
}

fn container_logs(logs: &Logs, request: &Request<hyper::body::Incoming>) -> Response<Body> {
    let path: Vec<&str> = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let ["containerLogs", namespace, pod, container] = path.as_slice() else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("{} not found", request.uri().path()),
        );
    };
    let query = match parse_log_query(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let key = (
        (*namespace).to_owned(),
        (*pod).to_owned(),
        (*container).to_owned(),
    );
    {
        let all = logs.logs.lock().expect("lock");
        let Some(log) = all.get(&key) else {
            return plain(
                StatusCode::NOT_FOUND,
                format!("container {container:?} in pod {pod:?} not found on this node"),
            );
        };
        if query.previous {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            );
        }
        if !log.started {
            let reason = log
                .waiting
                .clone()
                .unwrap_or_else(|| "PodInitializing".into());
            return plain(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is waiting to start: {reason}"),
            );
        }
    }
    let since = match (query.since_time, query.since_seconds) {
        (Some(t), _) => Some(t),
        (None, Some(s)) => jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(s))
            .ok(),
        (None, None) => None,
    };
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(64);
    let logs = logs.clone();
    tokio::spawn(async move {
        let mut changed = logs.changed.subscribe();
        let mut budget = query.limit_bytes.unwrap_or(usize::MAX);
        let mut next = {
            let all = logs.logs.lock().expect("lock");
            let lines = all
                .get(&key)
                .map(|l| l.lines.as_slice())
                .unwrap_or_default();
            let first = lines
                .iter()
                .position(|(at, _)| since.is_none_or(|s| *at >= s))
                .unwrap_or(lines.len());
            match query.tail_lines {
                Some(n) => first.max(lines.len().saturating_sub(n)),
                None => first,
            }
        };
        loop {
            let (chunk, done) = {
                let all = logs.logs.lock().expect("lock");
                let Some(log) = all.get(&key) else { return };
                let mut chunk = String::new();
                for (at, text) in &log.lines[next.min(log.lines.len())..] {
                    chunk.push_str(&format_line(&query, *at, text));
                }
                next = log.lines.len();
                (chunk, log.done)
            };
            if !chunk.is_empty() {
                let mut chunk = chunk;
                if chunk.len() >= budget {
                    let mut cut = budget;
                    while !chunk.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    chunk.truncate(cut);
                    let _ = sender.send(Ok(chunk)).await;
                    return;
                }
                budget -= chunk.len();
                if sender.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if done || !query.follow {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
        .expect("a response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_patterns_match_as_globs() {
        assert!(image_matches(
            "registry.invalid/*",
            "registry.invalid/kubeci/missing:1"
        ));
        assert!(image_matches(
            "*missing*",
            "registry.invalid/kubeci/missing:1"
        ));
        assert!(image_matches("bash:5", "bash:5"));
        assert!(!image_matches("bash:5", "bash:5.2"));
        assert!(!image_matches(
            "registry.invalid/*",
            "docker.io/library/bash:5"
        ));
        assert!(!image_matches("a*b*c", "acb"));
    }

    #[test]
    fn log_queries_read_booleans_as_kubernetes_does() {
        let q = parse_log_query("follow=True&timestamps=1&tailLines=3&limitBytes=10").unwrap();
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                timestamps: true,
                tail_lines: Some(3),
                limit_bytes: Some(10),
                ..LogQuery::default()
            }
        );
        assert!(!parse_log_query("follow=false").unwrap().follow);
        assert!(parse_log_query("tailLines=x").is_err());
    }
}
