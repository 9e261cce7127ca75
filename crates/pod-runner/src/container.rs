//! One container of a pod run as a local process group: its command, environment, working
//! directory, deadline, logs and termination message.

use super::*;
use crate::volumes::{field_value, secret_data};
use k8s_openapi::api::core::v1::Container;
use kubeci_render::expansion::expand;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

#[derive(Clone, Copy)]
pub(crate) struct ContainerRun<'a> {
    pub(crate) container: &'a Container,
    pub(crate) init: bool,
    /// A native sidecar (a restartable init container): it runs beside the containers
    /// after it, and is stopped once they ended.
    pub(crate) sidecar: bool,
    pub(crate) env: &'a LocalEnv,
    pub(crate) volumes: &'a BTreeMap<String, PathBuf>,
    pub(crate) namespace: &'a str,
    pub(crate) pod_name: &'a str,
    pub(crate) log: &'a Log,
}

/// Kubernetes' `terminationMessagePath` when a container names none.
const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The kubelet keeps at most this much of a termination message.
const TERMINATION_MESSAGE_LIMIT: u64 = 4096;

/// The message a container left in `file`: read without following a link or waiting on a
/// pipe the container may have put in its place, and only from a plain file.
fn read_termination_message(file: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = Vec::new();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(file)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    file.take(TERMINATION_MESSAGE_LIMIT)
        .read_to_end(&mut bytes)
        .ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

impl ContainerRun<'_> {
    /// The file standing for this container's `terminationMessagePath`, made empty before
    /// the pod's first process started.
    fn termination_message_file(&self) -> PathBuf {
        self.env
            .build_dir
            .join("termination")
            .join(&self.container.name)
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

    pub(crate) async fn run(
        &self,
        remaining: Option<Duration>,
        deadline: Option<Duration>,
        stops: &Stops,
    ) -> Result<Outcome, LocalError> {
        let name = self.container.name.clone();
        let (mounts, termination_message) = self.mounts()?;
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
        let (program, args) = self.argv(&vars, &mounts)?;
        let mut command = self.command(&program, &args, &vars, &mounts).await?;
        let kind = match (self.sidecar, self.init) {
            (true, _) => "sidecar container",
            (false, true) => "init container",
            (false, false) => "container",
        };
        self.log.step(
            &name,
            format!(
                "{name}: {kind} started ({})",
                describe_command(&program, &args)
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
        let ended = self.wait(&mut child, group, remaining, stops).await;
        match ended {
            Ended::Exited(status) => {
                let status = status.map_err(|source| LocalError::Spawn { program, source })?;
                Ok(self.exited(status, &termination_message))
            }
            Ended::Deadline => {
                kill_group(group);
                Ok(Outcome::DeadlineExceeded {
                    after: deadline.unwrap_or_default(),
                })
            }
            Ended::Cancelled => {
                kill_group(group);
                if self.sidecar {
                    // Killed at the end of its grace period: its end, as the kubelet shows it.
                    self.log.sink.container(ContainerChange::Exited {
                        container: name,
                        init: self.init,
                        exit_code: 137,
                        message: None,
                    });
                }
                Ok(Outcome::Cancelled)
            }
        }
    }

    /// Waits for the process to end with its output read to the end, for its deadline, or
    /// for a kill, whichever comes first; asked to terminate, it sends SIGTERM to the
    /// container's first process (as a container runtime does) and waits on.
    async fn wait(
        &self,
        child: &mut tokio::process::Child,
        group: Option<i32>,
        remaining: Option<Duration>,
        stops: &Stops,
    ) -> Ended {
        let name = &self.container.name;
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
        let ended = async { tokio::join!(wait, output) };
        tokio::pin!(ended, timer);
        let mut terminated = false;
        loop {
            tokio::select! {
                (status, _) = &mut ended => return Ended::Exited(status),
                () = &mut timer => return Ended::Deadline,
                () = stops.kill.cancelled() => return Ended::Cancelled,
                () = stops.terminate.cancelled(), if !terminated => {
                    terminated = true;
                    terminate(group);
                }
            }
        }
    }

    /// Where each mount path of the container is on this machine, and the file that stands
    /// for its termination message.
    fn mounts(&self) -> Result<(MountMap, PathBuf), LocalError> {
        let name = &self.container.name;
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
        let termination_message = self.termination_message_file();
        mounts.add(
            self.container
                .termination_message_path
                .as_deref()
                .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH),
            &termination_message,
        );
        Ok((mounts, termination_message))
    }

    /// Whether the container has started as its startup probe says (an `exec` probe; a
    /// container without one has started once it runs), asked as the kubelet asks it:
    /// after `initialDelaySeconds`, then every `periodSeconds` (10), at most
    /// `failureThreshold` (3) times, each run within `timeoutSeconds` (1).
    pub(crate) async fn started(&self) -> bool {
        let Some(probe) = &self.container.startup_probe else {
            return true;
        };
        let Some(exec) = probe.exec.as_ref().and_then(|e| e.command.clone()) else {
            return true;
        };
        let seconds = |value: Option<i32>, default: u64| {
            Duration::from_secs(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let period = seconds(probe.period_seconds, 10).max(Duration::from_secs(1));
        let timeout = seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1));
        tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
        let Ok((mounts, _)) = self.mounts() else {
            return false;
        };
        let Ok(vars) = self.environment(&mounts) else {
            return false;
        };
        for attempt in 1..=probe.failure_threshold.unwrap_or(3).max(1) {
            if attempt > 1 {
                tokio::time::sleep(period).await;
            }
            let Ok((program, args)) = self.argv_of(exec.iter(), &vars, &mounts) else {
                return false;
            };
            let Ok(mut command) = self.command(&program, &args, &vars, &mounts).await else {
                return false;
            };
            command.stdout(Stdio::null()).stderr(Stdio::null());
            let Ok(mut child) = command.spawn() else {
                continue;
            };
            let _group = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
            if let Ok(Ok(status)) = tokio::time::timeout(timeout, child.wait()).await {
                if status.success() {
                    return true;
                }
            }
        }
        false
    }

    /// The program and its arguments, `$(VAR)` expanded as the kubelet does; kubeci's own
    /// clone step runs this machine's `kubeci`, its path flags mapped to the mounts.
    fn argv(
        &self,
        vars: &[(String, String)],
        mounts: &MountMap,
    ) -> Result<(String, Vec<String>), LocalError> {
        let raw =
            (self.container.command.iter().flatten()).chain(self.container.args.iter().flatten());
        self.argv_of(raw, vars, mounts)
    }

    /// `raw` as [`ContainerRun::argv`] makes it.
    fn argv_of<'r>(
        &self,
        raw: impl Iterator<Item = &'r String>,
        vars: &[(String, String)],
        mounts: &MountMap,
    ) -> Result<(String, Vec<String>), LocalError> {
        let lookup = |name: &str| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let argv: Vec<String> = raw.map(|a| expand(a, lookup)).collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(LocalError::Unsupported(format!(
                "container {} has no command; the local engine cannot read an image's entrypoint",
                self.container.name
            )));
        };
        // kubeci's own steps (clone, collect): their path flags are the only arguments known
        // to be paths.
        Ok(if program == "kubeci" {
            (
                self.env.kubeci_exe.display().to_string(),
                args.iter().map(|a| mounts.map_kubeci_arg(a)).collect(),
            )
        } else {
            (program.clone(), args.to_vec())
        })
    }

    /// The process: a clean environment (the host's allowed variables, the container's),
    /// its own home and process group, its working directory created if missing; as
    /// [`LocalEnv::run_as`] when set.
    async fn command(
        &self,
        program: &str,
        args: &[String],
        vars: &[(String, String)],
        mounts: &MountMap,
    ) -> Result<Command, LocalError> {
        let home = self.env.build_dir.join("home");
        let mut command = Command::new(program);
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
        if let Some(user) = &self.env.run_as {
            command
                .uid(user.uid)
                .gid(user.gid)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        command.envs(vars.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.container.working_dir {
            let dir = PathBuf::from(mounts.map_value(dir));
            // The container runtime creates a missing working directory; so does this, as
            // the pod's user when it has one (the path may cross the checkout's links).
            match &self.env.run_as {
                Some(user) => crate::user::make_dir_as(&dir, user).await?,
                None => std::fs::create_dir_all(&dir).map_err(io_error(&dir))?,
            }
            command.current_dir(dir);
        }
        Ok(command)
    }

    /// The outcome of a container whose main process ended with `status`.
    fn exited(&self, status: std::process::ExitStatus, termination_message: &Path) -> Outcome {
        let name = self.container.name.clone();
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
            message: read_termination_message(termination_message),
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

/// SIGTERM to a container's first process only: what it started is killed with the group
/// when the container ends or its grace period does.
fn terminate(group: Option<i32>) {
    if let Some(pid) = group {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
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

/// Reads a container's stdout or stderr into log lines, each cut at
/// [`LINE_LIMIT`](kubeci_render::log_line::LINE_LIMIT) bytes: a process printing without a
/// newline holds at most that much here.
async fn pump(stream: Option<impl AsyncRead + Unpin>, container: String, log: &Log) {
    use kubeci_render::log_line::{LineSplitter, LINE_LIMIT};
    let Some(mut stream) = stream else { return };
    let mut splitter = LineSplitter::new(LINE_LIMIT);
    let mut buffer = vec![0u8; 16 * 1024];
    let emit = |line: Vec<u8>| {
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\r')
            .to_owned();
        log.emit(LogEvent::Line {
            container: container.clone(),
            text,
        });
    };
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.push(&buffer[..n], &mut |line| emit(line)),
        }
    }
    if let Some(line) = splitter.finish() {
        emit(line);
    }
}
