//! The pod runner: runs a rendered build Job's pod on this machine, as processes. (Not a
//! backend: `kubeci run`, the local backend, the node agent and the fake kubelet use it.)
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
//!   container's end, as the container runtime would; a graceful stop ([`Stops`]) sends
//!   SIGTERM to the running container's first process, then stops the sidecars;
//! - native sidecars (restartable init containers) run beside the containers after them
//!   and are stopped once those ended — or are left out ([`LocalEnv::sidecars`];
//!   [`sidecars`]).
//!
//! Not reproduced: the container image (the build runs with this machine's tools), the
//! pod's user and security settings, resource limits. A runner running as root may run the
//! pod's processes as another user ([`LocalEnv::run_as`]), who then owns the build's
//! directory — its volumes, the copies of its Secrets — and nothing else of the runner's.

mod container;
pub mod paths;
pub mod sidecars;
mod user;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use container::ContainerRun;
use k8s_openapi::api::batch::v1::Job;
use tokio_util::sync::CancellationToken;
use volumes::prepare_volumes;

pub use paths::MountMap;
pub use user::RunAs;
pub use volumes::missing_secrets;

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
    /// The user the pod's processes run as, when not the runner's own (the runner must be
    /// root): the build's directory is handed to that user before any process starts.
    pub run_as: Option<RunAs>,
    /// Whether native sidecars run (a node agent, the fake kubelet) or are left out with
    /// the volumes only they mount (the local engine and `kubeci run`, which collect a
    /// build's files themselves): see [`sidecars`].
    pub sidecars: bool,
}

/// How a pod's run is stopped before its end.
#[derive(Debug, Clone, Default)]
pub struct Stops {
    /// As Kubernetes stops a deleted pod: SIGTERM to the running container's first process
    /// (no container starts after it), then the sidecars are stopped once it ended.
    pub terminate: CancellationToken,
    /// Every process killed at once.
    pub kill: CancellationToken,
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

/// The Job's spec and pod, which the local engine can run: one container (after any init
/// containers).
fn pod_template(
    job: &Job,
) -> Result<
    (
        &k8s_openapi::api::batch::v1::JobSpec,
        &k8s_openapi::api::core::v1::PodSpec,
    ),
    LocalError,
> {
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
    Ok((spec, pod))
}

/// A node agent names the pod it runs; a pod of the local engine is named after its Job.
fn pod_name(job: &Job, env: &LocalEnv) -> String {
    env.objects
        .fields
        .get("metadata.name")
        .cloned()
        .unwrap_or_else(|| format!("{}-local", job.metadata.name.as_deref().unwrap_or("build")))
}

/// What each container finds made for it before any process of the pod runs (as the
/// kubelet makes it): its home directory and its empty termination message file. Made up
/// front, so the runner writes nothing in the build's directory once the pod's processes
/// could have changed it.
fn prepare_container_files(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    env: &LocalEnv,
) -> Result<(), LocalError> {
    let home = env.build_dir.join("home");
    std::fs::create_dir_all(&home).map_err(io_error(&home))?;
    let dir = env.build_dir.join("termination");
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let containers = pod.init_containers.iter().flatten().chain(&pod.containers);
    for container in containers {
        let file = dir.join(&container.name);
        std::fs::write(&file, b"").map_err(io_error(&file))?;
    }
    Ok(())
}

/// Runs the pod of `job` here and returns how it ended; `cancel` kills it.
pub async fn run_job(
    job: &Job,
    env: &LocalEnv,
    sink: Arc<dyn LogSink>,
    cancel: CancellationToken,
) -> Result<PodResult, LocalError> {
    let stops = Stops {
        terminate: CancellationToken::new(),
        kill: cancel,
    };
    run_job_with(job, env, sink, stops).await
}

/// Runs the pod of `job` here until it ends or `stops` stops it; how it ended.
pub async fn run_job_with(
    job: &Job,
    env: &LocalEnv,
    sink: Arc<dyn LogSink>,
    stops: Stops,
) -> Result<PodResult, LocalError> {
    let started = Instant::now();
    let (spec, pod) = pod_template(job)?;
    let without;
    let pod = if env.sidecars {
        pod
    } else {
        without = sidecars::without_sidecars(pod);
        &without
    };
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
    let pod_name = pod_name(job, env);
    let deadline = spec
        .active_deadline_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));

    let outcome = match prepare_volumes(pod, env, &namespace, &pod_name)? {
        Err(message) => Outcome::NotStarted {
            reason: "FailedMount".into(),
            message,
        },
        Ok(volumes) => {
            prepare_container_files(pod, env)?;
            if let Some(user) = &env.run_as {
                user::hand_over(&env.build_dir, user, &[log_file.as_path()])?;
            }
            let mut outcome = Outcome::Succeeded;
            let mut sidecars = sidecars::Sidecars::new(pod, &stops.kill);
            let containers = pod
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c, true))
                .chain(pod.containers.iter().map(|c| (c, false)));
            for (container, init) in containers {
                if stops.terminate.is_cancelled() {
                    outcome = Outcome::Cancelled;
                    break;
                }
                let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
                let run = ContainerRun {
                    container,
                    init,
                    sidecar: init && sidecars::is_sidecar(container),
                    env,
                    volumes: &volumes,
                    namespace: &namespace,
                    pod_name: &pod_name,
                    log: &log,
                };
                if run.sidecar {
                    // The containers after it start once it has (its startup probe).
                    let probe = run;
                    let stops = sidecars.stops.clone();
                    sidecars.start(Box::pin(async move { run.run(None, None, &stops).await }));
                    if !sidecars.alongside(probe.started()).await {
                        let name = &container.name;
                        log.step(name, format!("{name}: its startup probe never passed"));
                    }
                    continue;
                }
                outcome = sidecars
                    .alongside(run.run(remaining, deadline, &stops))
                    .await?;
                if !outcome.succeeded() {
                    break;
                }
            }
            sidecars.stop().await;
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
