//! [`LocalBackend`] as an [`Engine`] (so a `kubeci_engine::api::Backend`, whose commands
//! are `kubeci_engine::service`'s), over its SQLite store and running processes as a
//! [`BuildStore`]: builds numbered and kept in SQLite, stopped by killing their processes,
//! logs read back from the store as they are written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kubeci_build::{BuildRef, BuildRequest, JobRef};
use kubeci_engine::api::{
    BackendError, BuildFacts, EngineKind, LatestStates, LogError, LogOptions, LogStream,
    StatesByJob, TriggerError,
};
use kubeci_engine::approval::Approval;
use kubeci_engine::archive::StepLog;
use kubeci_engine::metrics::BuildFact;
use kubeci_engine::report;
use kubeci_engine::report::ReportRecord;
use kubeci_engine::scheduler::WorkloadError;
use kubeci_engine::service::{BuildStore, Common, Created, Engine, NewBuild};
use kubeci_engine::BuildSummary;
use kubeci_jobfiles::JobSet;
use kubeci_render::JobOrigin;
use kubeci_spec::LoadedJob;
use tokio::sync::watch;

use crate::running::LOG_BATCH_BYTES;
use crate::store::{self, BuildRow, LogLine, Reads};
use crate::{now, summary, LocalBackend};

impl Engine for LocalBackend {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Local
    }

    /// A job whose pod needs a Secret this machine does not have (`--secrets DIR`).
    fn cannot_build(&self, loaded: &LoadedJob) -> Option<String> {
        let job = loaded.job.as_ref()?;
        let request = kubeci_build::BuildRequest {
            number: 1,
            trigger: kubeci_build::Trigger::Manual,
            commit: None,
            git_ref: None,
            branch: None,
            pull_request: None,
            requested_by: None,
        };
        let rendered =
            kubeci_render::render(job, &JobOrigin::of(loaded), &request, &self.settings.render)
                .ok()?;
        let pod = rendered.spec?.template.spec?;
        let env = kubeci_pod_runner::LocalEnv {
            build_dir: self.settings.data_dir.join("work"),
            secrets_dir: self.settings.secrets_dir.clone(),
            kubeci_exe: self.settings.kubeci_exe.clone(),
            host_env: Vec::new(),
            objects: Default::default(),
            run_as: None,
            sidecars: false,
        };
        let missing = kubeci_pod_runner::missing_secrets(&pod, &env);
        let names: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
        let first = missing.first()?;
        Some(match &self.settings.secrets_dir {
            Some(dir) => format!(
                "its pod needs the Secret {} and {} has no such directory: add `{}/{first}/` with one file per key",
                names.join(", "),
                dir.display(),
                dir.display()
            ),
            None => format!(
                "its pod needs the Secret {}: start kubeci with `--secrets DIR`, a directory holding `{first}/` with one file per key",
                names.join(", ")
            ),
        })
    }
}

impl BuildStore for LocalBackend {
    type Jobs = JobSet;
    type Build = BuildRow;

    fn facts<'a>(&self, row: &'a BuildRow) -> BuildFacts<'a> {
        let name = kubeci_build::build_name(&row.job, row.number);
        BuildFacts {
            namespace: &row.namespace,
            job: &row.job,
            number: row.number,
            name: name.clone(),
            state: &row.state,
            trigger: Some(row.request.trigger.as_str().to_owned()),
            requested_by: row.request.requested_by.clone(),
            commit: row.commit(),
            pull_request: row.request.pull_request.as_ref().map(|p| p.number),
            spec_hash: row.spec_hash.clone(),
            chart_version: row.chart_version.clone(),
            reported: report::parse_reported(Some(&row.reported)),
            pod: Some(name),
            created_at: Some(row.created_at),
            started_at: row.started_at,
            finished_at: row.finished_at,
            git_url: row.git_url.clone(),
            check_name: row.check_name.clone(),
        }
    }

    fn summary(&self, row: &BuildRow) -> BuildSummary {
        summary(row, true)
    }

    fn reported_of(&self, row: &BuildRow) -> ReportRecord {
        ReportRecord::parse(Some(&row.reported))
    }

    fn request_of(&self, row: &BuildRow) -> BuildRequest {
        row.request.clone()
    }

    fn checkout_dir(&self, row: &BuildRow) -> Option<String> {
        crate::running::checkout_dir(&self.settings.data_dir, row)
    }

    fn builds_of(&self, namespace: &str, job: &str) -> Result<Vec<BuildRow>, BackendError> {
        Ok(self.read(|r| r.builds(namespace, job))?)
    }

    /// Read together, at one take of the reader.
    fn recent_builds_of(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> Vec<Result<Vec<BuildRow>, BackendError>> {
        let read = self.read(|r| {
            let recent =
                |(namespace, job): &(String, String)| r.recent_builds(namespace, job, limit);
            Ok(jobs.iter().map(recent).collect::<Vec<_>>())
        });
        match read {
            Ok(found) => found.into_iter().map(|f| f.map_err(Into::into)).collect(),
            Err(e) => jobs.iter().map(|_| Err(e.to_string().into())).collect(),
        }
    }

    fn measured(&self) -> Vec<BuildFact> {
        self.read(|r| r.measured()).unwrap_or_default()
    }

    fn build_now(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<BuildRow>, BackendError> {
        Ok(self.read(|r| r.build(namespace, job, number))?)
    }

    fn newest_states(&self) -> LatestStates {
        let mut states = StatesByJob::new();
        for row in self.read(|r| r.latest_builds()).unwrap_or_default() {
            states
                .entry(row.namespace)
                .or_default()
                .insert(row.job, row.state.phase().into());
        }
        LatestStates::new(vec![Arc::new(states)], now())
    }

    /// Numbers the build in SQLite (once per key) with the Job it will run rendered.
    async fn create(&self, new: NewBuild<'_>) -> Result<Created<BuildRow>, TriggerError> {
        let loaded = Arc::clone(new.loaded);
        let render_config = self.settings.render.clone();
        let (request, key, check_name, cron_run, floor) = (
            new.request,
            new.key,
            new.check_name,
            new.cron_run,
            new.floor,
        );
        // Rendered under the store's lock, once numbered: all of it off the async workers.
        let allocated = self.with_store(move |store| {
            let job = loaded.job.as_ref().expect("a found job is valid");
            let origin = JobOrigin::of(&loaded);
            let render = |number: u64| -> Result<String, String> {
                let request = BuildRequest {
                    number,
                    ..request.clone()
                };
                kubeci_render::render(job, &origin, &request, &render_config)
                    .map(|rendered| serde_json::to_string(&rendered).expect("a Job serializes"))
                    .map_err(|e| e.to_string())
            };
            let (namespace, name) = (origin.namespace.as_str(), job.name.as_str());
            let (number, created) = store.allocate(&store::NewBuild {
                namespace,
                job: name,
                request: &request,
                key: key.as_deref(),
                manifest: &render,
                spec_hash: &loaded.spec_hash,
                chart_version: loaded.chart_version.as_deref(),
                git_url: Some(&job.git.url),
                check_name: check_name.as_deref(),
                now: now(),
                floor,
            })?;
            if let Some(due) = cron_run {
                store.set_last_cron_run(namespace, name, due)?;
            }
            Ok((store.build(namespace, name, number)?, number, created))
        });
        let backend = |e: crate::LocalBackendError| TriggerError::Backend(e.into());
        let (row, number, created) = allocated.await.map_err(backend)?;
        let row = row.ok_or(TriggerError::Gone { number })?;
        if created {
            self.changed.notify_one();
        }
        Ok(Created {
            build: row,
            created,
        })
    }

    /// Kills its processes (a running build ends when they are gone: it is answered
    /// stopping), or marks it aborted.
    async fn cancel_build(&self, row: &BuildRow, by: &str) -> Result<BuildRow, WorkloadError> {
        let (namespace, name, number) = (row.namespace.clone(), row.job.clone(), row.number);
        self.stop(&namespace, &name, number, by).await?;
        self.with_store(move |store| store.build(&namespace, &name, number))
            .await?
            .ok_or(WorkloadError::Gone)
    }

    async fn record_approval(
        &self,
        of: JobRef<'_>,
        approval: Approval,
    ) -> Result<(), BackendError> {
        let (namespace, job) = (of.namespace.to_owned(), of.job.to_owned());
        Ok(self
            .with_store(move |store| store.approve(&namespace, &job, approval, now()))
            .await?)
    }

    fn approvals_of(&self, of: JobRef<'_>) -> Vec<Approval> {
        self.read(|r| r.approvals(of.namespace, of.job))
            .unwrap_or_default()
    }

    async fn step_logs(&self, row: &BuildRow) -> Result<Vec<StepLog>, BackendError> {
        self.step_logs_of(row)
    }

    async fn log_of(&self, build: BuildRef<'_>, how: LogOptions) -> Result<LogStream, LogError> {
        let key = (
            build.namespace.to_owned(),
            build.job.to_owned(),
            build.number,
        );
        // Subscribed before the stored lines are read: no line falls between the two.
        let live = if how.follow {
            self.running
                .lock()
                .expect("lock")
                .get(&key)
                .map(|r| r.live.subscribe())
        } else {
            None
        };
        let (namespace, job, number) = (&key.0, &key.1, key.2);
        let Some(row) = self
            .read(|r| r.build(namespace, job, number))
            .map_err(|e| LogError::Backend(e.into()))?
        else {
            return Err(LogError::NotFound(format!("no {build}")));
        };
        if how.follow && live.is_none() && !row.state.is_finished() {
            // Queued or about to start: follow from when it runs (or ends).
            return Ok(self.log_once_started(key, how));
        }
        let lines = self.lines(build, live);
        Ok(Box::pin(futures_util::StreamExt::map(lines, move |line| {
            line.map(|line| as_written(&line, how.timestamps))
        })))
    }

    fn last_cron_run(&self, namespace: &str, job: &str) -> Option<i64> {
        self.read(|r| r.last_cron_run(namespace, job))
            .ok()
            .flatten()
    }

    /// Its jobs, settings and counters as every engine holds them.
    fn common(&self) -> &Common<JobSet> {
        &self.common
    }
}

/// A log line as a reader gets it: with its time first when asked for and known, and its
/// newline.
fn as_written(line: &LogLine, timestamps: bool) -> Vec<u8> {
    let at = line
        .written_at
        .filter(|_| timestamps)
        .and_then(|at| jiff::Timestamp::from_nanosecond(i128::from(at)).ok());
    let mut text = match at {
        Some(at) => kubeci_engine::api::stamp_line(at, &line.text),
        None => line.text.clone(),
    };
    text.push(b'\n');
    text
}

impl LocalBackend {
    /// A build's log lines, read from the store in batches as the reader takes them; with
    /// `live` (how many lines a running build has stored), the lines it stores next, until
    /// it ends. No line is held for a follower but the batch it reads.
    fn lines(
        &self,
        build: BuildRef<'_>,
        live: Option<watch::Receiver<u64>>,
    ) -> impl futures_util::Stream<Item = Result<LogLine, String>> + Send + 'static {
        let me = self.me.clone();
        let (ns, job, number) = (
            build.namespace.to_owned(),
            build.job.to_owned(),
            build.number,
        );
        // Set, to how many lines were read, when the build left the store meanwhile
        // (archived whole): the rest is read from the archive.
        let handoff = Arc::new(std::sync::Mutex::new(None));
        let rest = self.archived_rest(build, handoff.clone());
        let batches = futures_util::stream::unfold(Some((0u64, live, 0u64)), move |state| {
            let (me, ns, job, handoff) = (me.clone(), ns.clone(), job.clone(), handoff.clone());
            async move {
                let (from, mut live, read) = state?;
                loop {
                    // Marked seen before reading: a line stored after the read wakes us.
                    if let Some(live) = live.as_mut() {
                        live.borrow_and_update();
                    }
                    let batch = me
                        .upgrade()?
                        .read(|r| r.log(&ns, &job, number, from, LOG_BATCH_BYTES));
                    match batch {
                        Ok(batch) if batch.is_empty() => {}
                        Ok(batch) => {
                            let next = batch.last().map_or(from, |line| line.seq + 1);
                            let read = read + batch.len() as u64;
                            return Some((Ok(batch), Some((next, live, read))));
                        }
                        Err(e) => return Some((Err(e.to_string()), None)),
                    }
                    match live.as_mut() {
                        None => {
                            let row = me.upgrade()?.read(|r| r.build(&ns, &job, number));
                            if let Ok(None) = row {
                                *handoff.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
                            }
                            return None;
                        }
                        // Ended (its end recorded): what it stored last is read once more.
                        Some(receiver) => {
                            if receiver.changed().await.is_err() {
                                live = None;
                            }
                        }
                    }
                }
            }
        });
        let lines = futures_util::StreamExt::flat_map(batches, |batch| {
            let lines: Vec<Result<LogLine, String>> = match batch {
                Ok(batch) => batch.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(lines)
        });
        futures_util::StreamExt::chain(lines, rest)
    }

    /// The lines of `build`'s log after the first `handoff` ones, from the archive, when
    /// `handoff` is set by the time they are read (the build left the store while its log
    /// was read: it was archived whole); else none.
    fn archived_rest(
        &self,
        build: BuildRef<'_>,
        handoff: Arc<std::sync::Mutex<Option<u64>>>,
    ) -> impl futures_util::Stream<Item = Result<LogLine, String>> + Send + 'static {
        let archive = self.common.archiving.archive.clone();
        let (namespace, job, number) = (
            build.namespace.to_owned(),
            build.job.to_owned(),
            build.number,
        );
        let rest = async move {
            let read = handoff.lock().unwrap_or_else(|e| e.into_inner()).take();
            let (Some(read), Some(archive)) = (read, archive) else {
                return futures_util::StreamExt::boxed(futures_util::stream::empty());
            };
            let build = BuildRef {
                namespace: &namespace,
                job: &job,
                number,
            };
            let record = match archive.record(build).await {
                Ok(Some(record)) => record,
                Ok(None) => return futures_util::StreamExt::boxed(futures_util::stream::empty()),
                Err(e) => {
                    let e = e.to_string();
                    return futures_util::StreamExt::boxed(futures_util::stream::once(
                        async move { Err(e) },
                    ));
                }
            };
            let lines = kubeci_engine::archive::lines_of(archive, record);
            let lines = futures_util::StreamExt::skip(lines, read as usize);
            let lines = futures_util::StreamExt::enumerate(lines);
            let lines = futures_util::StreamExt::map(lines, move |(i, line)| {
                line.map(|line| LogLine {
                    seq: read + i as u64,
                    written_at: line
                        .time
                        .and_then(|t| i64::try_from(t.as_nanosecond()).ok()),
                    text: line.text,
                })
                .map_err(|e| e.to_string())
            });
            futures_util::StreamExt::boxed(lines)
        };
        futures_util::StreamExt::flatten(futures_util::stream::once(rest))
    }
}
