//! Running builds: a build's pod through `kubeci_pod_runner`, its log lines into the store and
//! to live followers, stopping and cancelling, and following a build not started yet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kubeci_engine::api::{Backend, LogOptions, LogStream};
use kubeci_engine::BuildState;
use kubeci_pod_runner::{LocalEnv, LogEvent, Outcome};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{BuildRow, Reads};
use crate::{final_state, now, BuildKey, LocalBackend, LocalBackendError, Running};

impl LocalBackend {
    pub(crate) async fn run(self: &Arc<Self>, row: BuildRow) -> Result<(), LocalBackendError> {
        let key = (row.namespace.clone(), row.job.clone(), row.number);
        let (live, _) = watch::channel(0);
        let cancel = CancellationToken::new();
        self.running.lock().expect("lock").insert(
            key.clone(),
            Running {
                cancel: cancel.clone(),
                cancelled_by: None,
                live: live.clone(),
            },
        );
        let (namespace, name, number) = key.clone();
        self.with_store(move |store| {
            store.set_state(&namespace, &name, number, &BuildState::Running, now())
        })
        .await?;
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let state = engine.execute(&row, live, cancel).await;
            let cancelled_by = engine
                .running
                .lock()
                .expect("lock")
                .get(&key)
                .and_then(|r| r.cancelled_by.clone());
            let state = match state {
                Ok(outcome) => final_state(&outcome, cancelled_by),
                Err(message) => BuildState::Error {
                    reason: "LocalEngine".into(),
                    message,
                },
            };
            let (namespace, name, number) = key.clone();
            let recorded = engine
                .with_store(move |store| store.set_state(&namespace, &name, number, &state, now()))
                .await;
            if let Err(e) = recorded {
                tracing::warn!(
                    namespace = key.0,
                    job = key.1,
                    build = key.2,
                    error = %e,
                    "cannot record the end of the build"
                );
            }
            // Followers of the log see it end once the end is recorded.
            engine.running.lock().expect("lock").remove(&key);
            engine.changed.notify_one();
        });
        Ok(())
    }

    pub(crate) async fn execute(
        self: &Arc<Self>,
        row: &BuildRow,
        live: watch::Sender<u64>,
        cancel: CancellationToken,
    ) -> Result<Outcome, String> {
        let job: k8s_openapi::api::batch::v1::Job = serde_json::from_str(&row.manifest)
            .map_err(|e| format!("the stored Job cannot be read: {e}"))?;
        let build_dir = build_dir(&self.settings.data_dir, row)?;
        // Gone before the build starts: a build of that number run before leaves nothing.
        crate::remove_dir_all(build_dir.clone()).await;
        let mut host_env = LocalEnv::host_env_from_process();
        if self.settings.build_user.is_some() {
            let config = build_git_config(&build_dir, &host_env)?;
            host_env.retain(|(name, _)| name != "GIT_CONFIG_GLOBAL");
            host_env.push(("GIT_CONFIG_GLOBAL".into(), config.display().to_string()));
        }
        let env = LocalEnv {
            build_dir: build_dir.clone(),
            secrets_dir: self.settings.secrets_dir.clone(),
            kubeci_exe: self.settings.kubeci_exe.clone(),
            host_env,
            objects: Default::default(),
            run_as: self.settings.build_user.clone(),
            sidecars: false,
        };
        let (writes, queued) = tokio::sync::mpsc::unbounded_channel();
        let key = (row.namespace.clone(), row.job.clone(), row.number);
        let writer = tokio::spawn(Arc::clone(self).write_build_records(key.clone(), queued, live));
        let sink = Arc::new(BuildSink {
            writes: std::sync::Mutex::new(Some((0, writes))),
            kept: std::sync::Mutex::new(Kept::default()),
            limit: self.settings.log_limit,
        });
        let result = kubeci_pod_runner::run_job(&job, &env, sink.clone(), cancel).await;
        // Every line stored before the build's end is: followers read to the end.
        sink.close();
        if let Err(e) = writer.await {
            if let Ok(panic) = e.try_into_panic() {
                std::panic::resume_unwind(panic);
            }
        }
        // What it leaves behind, before its end is recorded: its end's reports read it.
        self.collect_outputs(&key, &job, &build_dir).await;
        crate::remove_dir_all(build_dir).await;
        result.map(|r| r.outcome).map_err(|e| e.to_string())
    }

    /// Stops build `number`: a queued one ends at once, a running one is killed.
    pub(crate) async fn stop(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> Result<(), LocalBackendError> {
        let key = (namespace.to_owned(), name.to_owned(), number);
        if let Some(running) = self.running.lock().expect("lock").get_mut(&key) {
            running.cancelled_by = Some(by.to_owned());
            running.cancel.cancel();
            return Ok(());
        }
        let (namespace, name, by) = (namespace.to_owned(), name.to_owned(), by.to_owned());
        self.with_store(move |store| {
            let aborted = BuildState::Aborted { by: Some(by) };
            store.set_state(&namespace, &name, number, &aborted, now())
        })
        .await?;
        self.changed.notify_one();
        Ok(())
    }

    /// A followed log of a build that has not started: it waits, checking every 200 ms,
    /// until the build runs or ends, then follows it.
    pub(crate) fn log_once_started(&self, key: BuildKey, options: LogOptions) -> LogStream {
        let me = self.me.clone();
        let waited = futures_util::stream::once(async move {
            let (namespace, name, number) = key.clone();
            loop {
                let Some(engine) = me.upgrade() else {
                    return futures_util::StreamExt::boxed(futures_util::stream::empty());
                };
                let started = engine.running.lock().expect("lock").contains_key(&key);
                let (ns, job) = (namespace.clone(), name.clone());
                let ended = engine
                    .with_store(move |store| store.build(&ns, &job, number))
                    .await
                    .ok()
                    .flatten()
                    .is_none_or(|row| row.state.is_finished());
                if started || ended {
                    return match Box::pin(engine.log(&namespace, &name, number, options)).await {
                        Ok(stream) => stream,
                        Err(e) => {
                            futures_util::StreamExt::boxed(futures_util::stream::once(async move {
                                Err(e.to_string())
                            }))
                        }
                    };
                }
                drop(engine);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Box::pin(futures_util::StreamExt::flatten(waited))
    }
}

/// The git configuration of a build run as another user than kubeci's: git refuses a
/// repository another user owns (`safe.directory`), and the local repositories a job names
/// are kubeci's user's. Made in the build's directory (its user's, once it runs), with
/// kubeci's own `GIT_CONFIG_GLOBAL` included when `host_env` names one.
fn build_git_config(
    build_dir: &std::path::Path,
    host_env: &[(String, String)],
) -> Result<PathBuf, String> {
    let mut config = String::from("[safe]\n\tdirectory = *\n");
    let global = host_env
        .iter()
        .find(|(name, _)| name == "GIT_CONFIG_GLOBAL");
    if let Some((_, path)) = global.filter(|(_, path)| !path.contains(['\n', '\r'])) {
        let quoted = path.replace('\\', "\\\\").replace('"', "\\\"");
        config.push_str(&format!("[include]\n\tpath = \"{quoted}\"\n"));
    }
    // git reads it from the checkout: the path must not be relative.
    let file = std::path::absolute(build_dir.join("gitconfig"))
        .map_err(|e| format!("cannot find the build's directory: {e}"))?;
    std::fs::create_dir_all(build_dir)
        .and_then(|()| std::fs::write(&file, config))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(file)
}

/// How many bytes of log lines are read from the store at a time (a line more at most).
pub(crate) const LOG_BATCH_BYTES: usize = 256 * 1024;

/// `root` joined with `parts`, each of which must be one plain path component (names are
/// validated before they get here; this keeps a directory that is created and later
/// removed inside `root` whatever a name holds).
/// Where build `row` runs: its volumes, home directory and kept log.
fn build_dir(data_dir: &std::path::Path, row: &BuildRow) -> Result<PathBuf, String> {
    let number = row.number.to_string();
    path_inside(&data_dir.join("work"), &[&row.namespace, &row.job, &number])
}

/// Where build `row`'s checkout lies as its steps see it, absolute (as test tools name
/// files): the pod runner keeps each volume in the build's `volumes/<name>`, and the
/// checkout is in the `workspace` volume, mounted at `paths::WORKSPACE`.
pub(crate) fn checkout_dir(data_dir: &std::path::Path, row: &BuildRow) -> Option<String> {
    use kubeci_render::paths::{CHECKOUT, WORKSPACE};
    let in_workspace = CHECKOUT.strip_prefix(WORKSPACE)?.trim_start_matches('/');
    let dir = build_dir(data_dir, row).ok()?.join("volumes/workspace");
    let dir = std::path::absolute(dir.join(in_workspace)).ok()?;
    Some(dir.display().to_string())
}

pub(crate) fn path_inside(root: &std::path::Path, parts: &[&str]) -> Result<PathBuf, String> {
    let mut path = root.to_owned();
    for part in parts {
        let mut components = std::path::Path::new(part).components();
        match (components.next(), components.next()) {
            (Some(std::path::Component::Normal(c)), None) if c == std::ffi::OsStr::new(part) => {
                path.push(part)
            }
            _ => {
                return Err(format!(
                    "`{}` cannot name a directory under {}",
                    part.escape_debug(),
                    root.display()
                ))
            }
        }
    }
    Ok(path)
}

/// What a running build's pod tells ([`BuildSink`]) to be written in the store, in order.
pub(crate) enum BuildRecord {
    Line(crate::store::LogLine),
    /// The commit its clone step checked out.
    CheckedOut(String),
}

/// Where a running build's log lines go, and what its containers report (the commit the
/// clone step checked out): numbered and queued for [`LocalBackend::write_build_records`],
/// which stores them off the async workers (the pod runner calls a sink inline).
pub(crate) struct BuildSink {
    /// The next line's number and the queue; `None` once the build has ended.
    writes: std::sync::Mutex<Option<(u64, UnboundedSender<BuildRecord>)>>,
    kept: std::sync::Mutex<Kept>,
    /// The most bytes of the build's own lines kept ([`crate::Settings::log_limit`]).
    limit: u64,
}

/// How much of a build's output is kept.
#[derive(Default)]
struct Kept {
    bytes: u64,
    /// The limit was reached: later lines are dropped.
    cut: bool,
}

/// The line that ends what is kept of a build's output at `limit` bytes.
pub(crate) fn log_cut_notice(limit: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    let size = match limit {
        l if l >= MIB && l % MIB == 0 => format!("{} MiB", l / MIB),
        l if l >= 1024 && l % 1024 == 0 => format!("{} KiB", l / 1024),
        l => format!("{l} bytes"),
    };
    format!("==> log cut at {size}: the build went on; its later output is not kept")
}

impl BuildSink {
    /// What is kept of `line` of the build's output: itself, the notice that the limit is
    /// reached, or nothing past it.
    fn keep(&self, line: String) -> Option<String> {
        let mut kept = self.kept.lock().expect("the log budget lock");
        if kept.cut {
            return None;
        }
        let size = line.len() as u64 + 1;
        if kept.bytes + size > self.limit {
            kept.cut = true;
            return Some(log_cut_notice(self.limit));
        }
        kept.bytes += size;
        Some(line)
    }
}

impl BuildSink {
    /// Queues `record`, a line numbered as it is queued (under the queue's lock: lines
    /// are stored in the order of their numbers, which followers read up to).
    fn queue(&self, record: impl FnOnce(u64) -> Option<BuildRecord>) {
        let mut writes = self.writes.lock().expect("the log queue lock");
        let Some((seq, queue)) = writes.as_mut() else {
            return;
        };
        if let Some(record) = record(*seq) {
            if matches!(record, BuildRecord::Line(_)) {
                *seq += 1;
            }
            let _ = queue.send(record);
        }
    }

    /// Ends the queue: what is queued is still written, nothing more is taken.
    fn close(&self) {
        self.writes.lock().expect("the log queue lock").take();
    }
}

impl kubeci_pod_runner::LogSink for BuildSink {
    fn event(&self, event: LogEvent) {
        // kubeci's own step lines are always kept: a few per container.
        let line = match event {
            LogEvent::Step { text, .. } => format!("==> {text}"),
            LogEvent::Line { text, .. } => match self.keep(text) {
                Some(line) => line,
                None => return,
            },
        };
        let written_at = i64::try_from(jiff::Timestamp::now().as_nanosecond()).ok();
        self.queue(|seq| {
            Some(BuildRecord::Line(crate::store::LogLine {
                seq,
                written_at,
                text: line.into_bytes(),
            }))
        });
    }

    fn container(&self, change: kubeci_pod_runner::ContainerChange) {
        let kubeci_pod_runner::ContainerChange::Exited {
            container,
            init: true,
            message: Some(message),
            ..
        } = change
        else {
            return;
        };
        let commit = (container == "clone")
            .then(|| kubeci_build::clone_result::commit(&message))
            .flatten();
        if let Some(commit) = commit {
            let commit = commit.to_owned();
            self.queue(|_| Some(BuildRecord::CheckedOut(commit)));
        }
    }
}

impl LocalBackend {
    /// Writes what build `key`'s sink queued, as much as is queued at a time, on the
    /// blocking pool; tells followers (`live`) how many lines are stored after each
    /// batch. Ends when the sink is closed and all is written.
    async fn write_build_records(
        self: Arc<Self>,
        key: BuildKey,
        mut queued: UnboundedReceiver<BuildRecord>,
        live: watch::Sender<u64>,
    ) {
        let mut batch = Vec::new();
        while queued.recv_many(&mut batch, 1024).await > 0 {
            let records = std::mem::take(&mut batch);
            let (namespace, name, number) = key.clone();
            let stored = self
                .with_store(move |store| {
                    let mut stored = None;
                    for record in records {
                        let written = match &record {
                            BuildRecord::Line(line) => {
                                store.append_log(&namespace, &name, number, line)
                            }
                            BuildRecord::CheckedOut(commit) => {
                                store.record_checked_out(&namespace, &name, number, commit)
                            }
                        };
                        if let Err(e) = written {
                            tracing::warn!(namespace, job = name, build = number, error = %e, "cannot store the build's log or commit");
                        }
                        if let BuildRecord::Line(line) = record {
                            stored = Some(line.seq + 1);
                        }
                    }
                    stored
                })
                .await;
            if let Some(stored) = stored {
                live.send_replace(stored);
            }
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::path_inside;

    #[test]
    fn paths_built_from_names_stay_inside_their_root() {
        let root = std::path::Path::new("/data/work");
        assert_eq!(
            path_inside(root, &["team", "job", "7"]).unwrap(),
            std::path::Path::new("/data/work/team/job/7")
        );
        for hostile in ["../../escape", "..", "/etc", "a/b", "", "."] {
            assert!(path_inside(root, &[hostile, "job"]).is_err(), "{hostile}");
        }
    }
}
