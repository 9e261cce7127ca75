//! The local backend: runs a rendered build Job's pod on this machine, as processes.
//!
//! The pod is the one `kubeci render` prints, so what passes here behaves the same in a
//! cluster. Init containers run in order, then the build container, each in its own
//! process group, with Kubernetes' semantics where a machine can have them:
//!
//! - environment: `value`s expanded with `$(VAR)` as the kubelet does, `secretKeyRef`s read
//!   from [`PodObjects`] or a secrets directory laid out like mounted Secrets
//!   (`<dir>/<secret>/<key>`), `configMapKeyRef`s and `fieldRef`s from [`PodObjects`]; a
//!   missing Secret, ConfigMap or key fails the build with Kubernetes' own words;
//! - volumes: `emptyDir`, `secret`, `configMap` and `projected` volumes (service-account
//!   tokens, ConfigMaps, Secrets, the downward API) become per-build directories. Mount
//!   paths cannot be mounted without root, so whole path values are mapped to those
//!   directories (see [`paths`]); scripts, URLs and other data are passed exactly as written;
//! - `activeDeadlineSeconds` and cancellation kill the whole process group; so does a
//!   container's end, as the container runtime would.
//!
//! Not reproduced: the container image (the build runs with this machine's tools), user
//! and security settings, resource limits.

pub mod paths;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};
use kubeci_render::expansion::expand;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

pub use paths::MountMap;

/// Where and how the pod runs on this machine.
#[derive(Debug, Clone)]
pub struct LocalEnv {
    /// This build's directory: volumes, home directory and the kept log.
    pub build_dir: PathBuf,
    /// Secrets laid out as mounted Secrets: `<dir>/<secret>/<key>`.
    pub secrets_dir: Option<PathBuf>,
    /// The program that stands for `kubeci` in container commands (the clone step).
    pub kubeci_exe: PathBuf,
    /// Variables of this machine every container gets (at least `PATH`).
    pub host_env: Vec<(String, String)>,
    /// The API objects the pod refers to, when whoever runs it read them from a cluster
    /// (the test node agent does; `kubeci run` leaves this empty).
    pub objects: PodObjects,
}

/// What a pod's environment and volumes refer to in the API, read beforehand by whoever
/// runs the pod, as a kubelet reads them. An object that is absent here does not exist.
#[derive(Debug, Clone, Default)]
pub struct PodObjects {
    /// Secrets by name: key → value.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// ConfigMaps by name: key → value (`data` and `binaryData`).
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Downward API values by field path (`metadata.name`, `spec.nodeName`, …); the
    /// pod's name and namespace are known without it.
    pub fields: BTreeMap<String, String>,
    /// Service-account tokens by audience (`""`: the API server's own).
    pub tokens: BTreeMap<String, String>,
}

/// A container's life, for whoever reports it (a node agent writes pod status from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerChange {
    /// Its process started, leading process group `pid`.
    Started {
        container: String,
        init: bool,
        pid: u32,
    },
    /// Its process ended.
    Exited {
        container: String,
        init: bool,
        exit_code: i32,
        /// What it wrote to its `terminationMessagePath` (at most 4096 bytes, as the
        /// kubelet keeps), if anything.
        message: Option<String>,
    },
    /// It could not be created: Kubernetes' reason and message.
    Waiting {
        container: String,
        init: bool,
        reason: String,
        message: String,
    },
}

impl LocalEnv {
    /// The variables of this machine a build needs to find its tools (and git's global
    /// configuration when `GIT_CONFIG_GLOBAL` names one: `HOME` is the build's own).
    pub fn host_env_from_process() -> Vec<(String, String)> {
        [
            "PATH",
            "LANG",
            "LC_ALL",
            "TZ",
            "USER",
            "LOGNAME",
            "GIT_CONFIG_GLOBAL",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect()
    }
}

/// What the log receives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// kubeci's own line about a step (a container starting, the outcome).
    Step { container: String, text: String },
    /// A line a container wrote to stdout or stderr.
    Line { container: String, text: String },
}

/// Receives the log as it happens.
pub trait LogSink: Send + Sync {
    fn event(&self, event: LogEvent);

    /// A container started, ended or could not be created; ignored unless wanted.
    fn container(&self, _change: ContainerChange) {}
}

impl<F: Fn(LogEvent) + Send + Sync> LogSink for F {
    fn event(&self, event: LogEvent) {
        self(event)
    }
}

/// How a pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// A container exited non-zero (signals count as 128 + the signal number).
    Failed {
        container: String,
        init: bool,
        exit_code: i32,
    },
    /// `activeDeadlineSeconds` passed; every process was killed.
    DeadlineExceeded {
        after: Duration,
    },
    /// Cancelled (Ctrl-C, a user); every process was killed.
    Cancelled,
    /// The pod could not start: Kubernetes' reason (`CreateContainerConfigError`,
    /// `FailedMount`) and message.
    NotStarted {
        reason: String,
        message: String,
    },
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Outcome::Succeeded)
    }

    /// One line for people, in Kubernetes' words where it has them.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Succeeded => "succeeded".into(),
            Outcome::Failed {
                container,
                init: true,
                exit_code,
            } => {
                format!("failed: init container {container} exited with code {exit_code}")
            }
            Outcome::Failed {
                container,
                exit_code,
                ..
            } => {
                format!("failed: container {container} exited with code {exit_code}")
            }
            Outcome::DeadlineExceeded { after } => {
                format!("failed (DeadlineExceeded): Job was active longer than specified deadline ({}s)", after.as_secs())
            }
            Outcome::Cancelled => "aborted: cancelled".into(),
            Outcome::NotStarted { reason, message } => format!("error ({reason}): {message}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PodResult {
    pub outcome: Outcome,
    pub duration: Duration,
    /// The whole log, kept in the build directory.
    pub log_file: PathBuf,
}

/// Why the local backend could not run a pod at all. Not worth retrying: the Job or the
/// machine must change.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the local engine cannot run this pod: {0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes every event to the sink and to the kept log file.
struct Log {
    sink: Arc<dyn LogSink>,
    file: Mutex<std::fs::File>,
}

impl Log {
    fn emit(&self, event: LogEvent) {
        use std::io::Write;
        let line = match &event {
            LogEvent::Step { text, .. } => format!("==> {text}\n"),
            LogEvent::Line { text, .. } => format!("{text}\n"),
        };
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
        self.sink.event(event);
    }

    fn step(&self, container: &str, text: String) {
        self.emit(LogEvent::Step {
            container: container.to_owned(),
            text,
        });
    }
}

/// Runs the pod of `job` here and returns how it ended.
pub async fn run_job(
    job: &Job,
    env: &LocalEnv,
    sink: Arc<dyn LogSink>,
    cancel: CancellationToken,
) -> Result<PodResult, LocalError> {
    let started = Instant::now();
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| LocalError::Unsupported("the Job has no spec".into()))?;
    let pod = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| LocalError::Unsupported("the Job has no pod template".into()))?;
    if pod.containers.len() != 1 {
        return Err(LocalError::Unsupported(format!(
            "{} containers; the local engine runs one",
            pod.containers.len()
        )));
    }
    std::fs::create_dir_all(&env.build_dir).map_err(io_error(&env.build_dir))?;
    let log_file = env.build_dir.join("log");
    let file = std::fs::File::create(&log_file).map_err(io_error(&log_file))?;
    let log = Log {
        sink,
        file: Mutex::new(file),
    };
    let namespace = job
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    // A node agent names the pod it runs; a pod of the local engine is named after its Job.
    let pod_name = env
        .objects
        .fields
        .get("metadata.name")
        .cloned()
        .unwrap_or_else(|| format!("{}-local", job.metadata.name.as_deref().unwrap_or("build")));
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));

    let outcome = match prepare_volumes(pod, env, &namespace, &pod_name)? {
        Err(message) => Outcome::NotStarted {
            reason: "FailedMount".into(),
            message,
        },
        Ok(volumes) => {
            let mut outcome = Outcome::Succeeded;
            let containers = pod
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c, true))
                .chain(pod.containers.iter().map(|c| (c, false)));
            for (container, init) in containers {
                let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
                let run = ContainerRun {
                    container,
                    init,
                    env,
                    volumes: &volumes,
                    namespace: &namespace,
                    pod_name: &pod_name,
                    log: &log,
                };
                outcome = run.run(remaining, deadline, &cancel).await?;
                if !outcome.succeeded() {
                    break;
                }
            }
            outcome
        }
    };
    log.step(
        "",
        format!(
            "result: {} in {:.2}s",
            outcome.describe(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(PodResult {
        outcome,
        duration: started.elapsed(),
        log_file,
    })
}

/// Each volume of the pod as a directory of this build; `Err` holds a mount failure in
/// the kubelet's words.
fn prepare_volumes(
    pod: &PodSpec,
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
) -> Result<Result<BTreeMap<String, PathBuf>, String>, LocalError> {
    let mut dirs = BTreeMap::new();
    for volume in pod.volumes.iter().flatten() {
        let dir = env.build_dir.join("volumes").join(&volume.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        if let Err(message) = fill_volume(volume, &dir, env, namespace, pod_name)? {
            return Ok(Err(message));
        }
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(Ok(dirs))
}

/// The data of Secret `name`: from [`PodObjects`], else the secrets directory.
fn secret_data(env: &LocalEnv, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    if let Some(data) = env.objects.secrets.get(name) {
        return Some(data.clone());
    }
    let dir = env.secrets_dir.as_ref()?.join(name);
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut data = BTreeMap::new();
    for entry in entries.flatten() {
        let key = entry.file_name().to_string_lossy().into_owned();
        if !key.starts_with('.') && entry.path().is_file() {
            data.insert(key, std::fs::read(entry.path()).ok()?);
        }
    }
    Some(data)
}

/// A file a volume holds: (path in the volume, content, mode).
type VolumeFile = (String, Vec<u8>, Option<i32>);

/// The files of one volume source, or the kubelet's complaint. `what` names the source in it (`secret`, `configmap`).
fn projected_files(
    what: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    optional: Option<bool>,
) -> Result<Vec<VolumeFile>, String> {
    let Some(data) = data else {
        return if optional == Some(true) {
            Ok(Vec::new())
        } else {
            Err(format!("{what} \"{name}\" not found"))
        };
    };
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, None)).collect()),
        // As the kubelet: a missing key fails the mount unless the source is optional.
        Some(items) => items
            .iter()
            .filter_map(|item| match data.get(&item.key) {
                Some(value) => Some(Ok((item.path.clone(), value.clone(), item.mode))),
                None if optional == Some(true) => None,
                None => Some(Err(format!(
                    "references non-existent {what} key: {}",
                    item.key
                ))),
            })
            .collect(),
    }
}

/// The value of a downward API field of the pod.
fn field_value(env: &LocalEnv, namespace: &str, pod_name: &str, path: &str) -> Option<String> {
    env.objects.fields.get(path).cloned().or(match path {
        "metadata.name" => Some(pod_name.to_owned()),
        "metadata.namespace" => Some(namespace.to_owned()),
        _ => None,
    })
}

fn fill_volume(
    volume: &Volume,
    dir: &Path,
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
) -> Result<Result<(), String>, LocalError> {
    let mut files: Vec<VolumeFile> = Vec::new();
    let mut default_mode = 0o644;
    let found = if volume.empty_dir.is_some() {
        Ok(())
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        default_mode = secret.default_mode.unwrap_or(0o644);
        projected_files(
            "secret",
            &name,
            secret_data(env, &name),
            secret.items.as_deref(),
            secret.optional,
        )
        .map(|f| files = f)
    } else if let Some(map) = &volume.config_map {
        default_mode = map.default_mode.unwrap_or(0o644);
        projected_files(
            "configmap",
            &map.name,
            env.objects.config_maps.get(&map.name).cloned(),
            map.items.as_deref(),
            map.optional,
        )
        .map(|f| files = f)
    } else if let Some(projected) = &volume.projected {
        default_mode = projected.default_mode.unwrap_or(0o644);
        let mut found = Ok(());
        for source in projected.sources.iter().flatten() {
            let more = if let Some(token) = &source.service_account_token {
                let audience = token.audience.clone().unwrap_or_default();
                match env.objects.tokens.get(&audience) {
                    Some(t) => Ok(vec![(token.path.clone(), t.clone().into_bytes(), None)]),
                    None => Err(format!(
                        "failed to fetch token: no token for audience {audience:?}"
                    )),
                }
            } else if let Some(map) = &source.config_map {
                projected_files(
                    "configmap",
                    &map.name,
                    env.objects.config_maps.get(&map.name).cloned(),
                    map.items.as_deref(),
                    map.optional,
                )
            } else if let Some(secret) = &source.secret {
                projected_files(
                    "secret",
                    &secret.name,
                    secret_data(env, &secret.name),
                    secret.items.as_deref(),
                    secret.optional,
                )
            } else if let Some(downward) = &source.downward_api {
                downward
                    .items
                    .iter()
                    .flatten()
                    .map(|item| {
                        let path = item.field_ref.as_ref().map(|f| f.field_path.as_str());
                        match path.and_then(|p| field_value(env, namespace, pod_name, p)) {
                            Some(value) => Ok((item.path.clone(), value.into_bytes(), item.mode)),
                            None => Err(format!("unsupported downward API item {}", item.path)),
                        }
                    })
                    .collect()
            } else {
                return Err(LocalError::Unsupported(format!(
                    "volume {}: a projected source other than a token, ConfigMap, Secret or downward API",
                    volume.name
                )));
            };
            match more {
                Ok(more) => files.extend(more),
                Err(e) => {
                    found = Err(e);
                    break;
                }
            }
        }
        found
    } else {
        return Err(LocalError::Unsupported(format!(
            "volume {} is not emptyDir, secret, configMap or projected",
            volume.name
        )));
    };
    if let Err(message) = found {
        return Ok(Err(format!(
            "MountVolume.SetUp failed for volume \"{}\" : {message}",
            volume.name
        )));
    }
    for (path, content, mode) in files {
        if Path::new(&path)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Ok(Err(format!(
                "MountVolume.SetUp failed for volume \"{}\" : invalid path {path:?}",
                volume.name
            )));
        }
        let to = dir.join(&path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::fs::write(&to, content).map_err(io_error(&to))?;
        use std::os::unix::fs::PermissionsExt;
        // The owner can always read: locally the build runs as the volume's owner.
        let mode = mode.unwrap_or(default_mode);
        let permissions = std::fs::Permissions::from_mode((mode as u32 & 0o777) | 0o400);
        std::fs::set_permissions(&to, permissions).map_err(io_error(&to))?;
    }
    Ok(Ok(()))
}

struct ContainerRun<'a> {
    container: &'a Container,
    init: bool,
    env: &'a LocalEnv,
    volumes: &'a BTreeMap<String, PathBuf>,
    namespace: &'a str,
    pod_name: &'a str,
    log: &'a Log,
}

/// Kubernetes' `terminationMessagePath` when a container names none.
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The kubelet keeps at most this much of a termination message.
const TERMINATION_MESSAGE_LIMIT: u64 = 4096;

fn read_termination_message(file: &Path) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .take(TERMINATION_MESSAGE_LIMIT)
        .read_to_end(&mut bytes)
        .ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

impl ContainerRun<'_> {
    /// The file standing for this container's `terminationMessagePath`, empty and
    /// writable, as the kubelet provides it.
    fn termination_message_file(&self) -> Result<PathBuf, LocalError> {
        let dir = self.env.build_dir.join("termination");
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let file = dir.join(&self.container.name);
        std::fs::write(&file, b"").map_err(io_error(&file))?;
        Ok(file)
    }

    /// The container's environment in Kubernetes' order, or the reason it cannot start.
    fn environment(&self, mounts: &MountMap) -> Result<Vec<(String, String)>, String> {
        let mut vars: Vec<(String, String)> = Vec::new();
        for var in self.container.env.iter().flatten() {
            let value = if let Some(value) = &var.value {
                let defined = |name: &str| {
                    vars.iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                mounts.map_value(&expand(value, defined))
            } else if let Some(from) = &var.value_from {
                let value = if let Some(selector) = &from.secret_key_ref {
                    self.key_value(
                        "Secret",
                        &selector.name,
                        &selector.key,
                        secret_data(self.env, &selector.name),
                        selector.optional,
                    )?
                } else if let Some(selector) = &from.config_map_key_ref {
                    let data = self.env.objects.config_maps.get(&selector.name).cloned();
                    self.key_value(
                        "ConfigMap",
                        &selector.name,
                        &selector.key,
                        data,
                        selector.optional,
                    )?
                } else if let Some(field) = &from.field_ref {
                    let value =
                        field_value(self.env, self.namespace, self.pod_name, &field.field_path);
                    Some(value.ok_or_else(|| {
                        format!(
                            "environment variable {}: unsupported fieldPath {}",
                            var.name, field.field_path
                        )
                    })?)
                } else {
                    return Err(format!("environment variable {}: only `value`, `secretKeyRef`, `configMapKeyRef` and `fieldRef` are supported locally", var.name));
                };
                match value {
                    Some(value) => value,
                    None => continue,
                }
            } else {
                String::new()
            };
            vars.push((var.name.clone(), value));
        }
        Ok(vars)
    }

    /// A Secret's or ConfigMap's value, failing as Kubernetes words it; `None` when an
    /// optional one is missing.
    fn key_value(
        &self,
        kind: &str,
        name: &str,
        key: &str,
        data: Option<BTreeMap<String, Vec<u8>>>,
        optional: Option<bool>,
    ) -> Result<Option<String>, String> {
        let Some(data) = data else {
            if optional == Some(true) {
                return Ok(None);
            }
            return Err(format!("{} \"{name}\" not found", kind.to_lowercase()));
        };
        match data.get(key) {
            Some(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            None if optional == Some(true) => Ok(None),
            None => Err(format!(
                "couldn't find key {key} in {kind} {}/{name}",
                self.namespace
            )),
        }
    }

    async fn run(
        &self,
        remaining: Option<Duration>,
        deadline: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<Outcome, LocalError> {
        let name = self.container.name.clone();
        let mut mounts = MountMap::default();
        for mount in self.container.volume_mounts.iter().flatten() {
            if mount.sub_path.is_some() || mount.sub_path_expr.is_some() {
                return Err(LocalError::Unsupported(format!(
                    "container {name}: subPath mounts"
                )));
            }
            let dir = self.volumes.get(&mount.name).ok_or_else(|| {
                LocalError::Unsupported(format!(
                    "container {name} mounts unknown volume {}",
                    mount.name
                ))
            })?;
            mounts.add(&mount.mount_path, dir);
        }
        let termination_message = self.termination_message_file()?;
        mounts.add(
            self.container
                .termination_message_path
                .as_deref()
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH),
            &termination_message,
        );
        let vars = match self.environment(&mounts) {
            Ok(vars) => vars,
            Err(message) => {
                self.log.sink.container(ContainerChange::Waiting {
                    container: name.clone(),
                    init: self.init,
                    reason: "CreateContainerConfigError".into(),
                    message: message.clone(),
                });
                return Ok(Outcome::NotStarted {
                    reason: "CreateContainerConfigError".into(),
                    message,
                });
            }
        };
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let argv: Vec<String> = self
            .container
            .command
            .iter()
            .flatten()
            .chain(self.container.args.iter().flatten())
            .map(|a| expand(a, lookup))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(LocalError::Unsupported(format!("container {name} has no command; the local engine cannot read an image's entrypoint")));
        };
        // kubeci's own clone step: its path flags are the only arguments known to be paths.
        let (program, args) = if program == "kubeci" {
            (
                self.env.kubeci_exe.display().to_string(),
                args.iter().map(|a| mounts.map_clone_arg(a)).collect(),
            )
        } else {
            (program.clone(), args.to_vec())
        };
        let args = &args;

        let home = self.env.build_dir.join("home");
        std::fs::create_dir_all(&home).map_err(io_error(&home))?;
        let mut command = Command::new(&program);
        command
            .args(args)
            .env_clear()
            .envs(self.env.host_env.iter().map(|(k, v)| (k, v)))
            .env("HOSTNAME", self.pod_name)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(tmp) = mounts.map_path("/tmp") {
            command.env("TMPDIR", tmp);
        }
        command.envs(vars.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.container.working_dir {
            let dir = PathBuf::from(mounts.map_value(dir));
            // The container runtime creates a missing working directory; so does this.
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            command.current_dir(dir);
        }
        let kind = if self.init {
            "init container"
        } else {
            "container"
        };
        self.log.step(
            &name,
            format!(
                "{name}: {kind} started ({})",
                describe_command(&program, args)
            ),
        );
        let mut child = command.spawn().map_err(|source| LocalError::Spawn {
            program: program.clone(),
            source,
        })?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        // Whatever ends this run — its end, a deadline, a cancel, or the caller dropping
        // it — ends every process the container started.
        let _group_guard = GroupGuard(group);
        if let Some(pid) = child.id() {
            self.log.sink.container(ContainerChange::Started {
                container: name.clone(),
                init: self.init,
                pid,
            });
        }
        let stdout = pump(child.stdout.take(), name.clone(), self.log);
        let stderr = pump(child.stderr.take(), name.clone(), self.log);
        let output = async { tokio::join!(stdout, stderr) };
        let wait = async {
            let status = child.wait().await;
            // The container ends with its main process: nothing it started outlives it.
            kill_group(group);
            status
        };
        let timer = async {
            match remaining {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        let ended = tokio::select! {
            (status, _) = async { tokio::join!(wait, output) } => Ended::Exited(status),
            () = timer => Ended::Deadline,
            () = cancel.cancelled() => Ended::Cancelled,
        };
        let outcome = match ended {
            Ended::Exited(status) => {
                let status = status.map_err(|source| LocalError::Spawn { program, source })?;
                let exit_code = status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + status.signal().unwrap_or(0)
                });
                self.log
                    .step(&name, format!("{name}: exited with code {exit_code}"));
                self.log.sink.container(ContainerChange::Exited {
                    container: name.clone(),
                    init: self.init,
                    exit_code,
                    message: read_termination_message(&termination_message),
                });
                if exit_code == 0 {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed {
                        container: name,
                        init: self.init,
                        exit_code,
                    }
                }
            }
            Ended::Deadline => {
                kill_group(group);
                Outcome::DeadlineExceeded {
                    after: deadline.unwrap_or_default(),
                }
            }
            Ended::Cancelled => {
                kill_group(group);
                Outcome::Cancelled
            }
        };
        Ok(outcome)
    }
}

enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    Deadline,
    Cancelled,
}

/// Kills a process group when dropped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(group: Option<i32>) {
    if let Some(pgid) = group {
        // ESRCH (already gone) is the normal case.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The program and its first arguments, each on one line and short, for the step line.
fn describe_command(program: &str, args: &[String]) -> String {
    let mut shown = vec![program.to_owned()];
    for arg in args.iter().take(3) {
        if arg.contains('\n') || arg.len() > 60 {
            shown.push("…".into());
            break;
        }
        shown.push(arg.clone());
    }
    if args.len() > 3 && shown.last().is_some_and(|s| s != "…") {
        shown.push("…".into());
    }
    shown.join(" ")
}

async fn pump(stream: Option<impl AsyncRead + Unpin>, container: String, log: &Log) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                log.emit(LogEvent::Line {
                    container: container.clone(),
                    text,
                });
            }
        }
    }
}
