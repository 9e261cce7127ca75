//! [`Backend`] for [`LocalBackend`]: what the server asks of the local engine.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kubeci_engine::api::{
    ApproveError, Backend, BuildView, CancelError, EngineKind, JobView, LatestStates, LogError,
    LogOptions, LogStream, StatesByJob, TriggerError, TriggerRequest, Triggered,
};
use kubeci_engine::approval::Approval;
use kubeci_render::JobOrigin;
use kubeci_spec::LoadedJob;
use tokio::sync::watch;

use crate::running::LOG_BATCH_BYTES;
use crate::store::{LogLine, NewBuild};
use crate::{now, LocalBackend};

impl Backend for LocalBackend {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn namespaces(&self) -> Vec<String> {
        let jobs = self.jobs.read().expect("the jobs lock");
        let found: std::collections::BTreeSet<&str> =
            jobs.all().iter().map(|j| j.namespace.as_str()).collect();
        found.into_iter().map(str::to_owned).collect()
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

    fn jobs(&self) -> Vec<JobView> {
        self.jobs
            .read()
            .expect("the jobs lock")
            .all()
            .iter()
            .map(|j| JobView::of(j))
            .collect()
    }

    fn declared_jobs(&self) -> Vec<Arc<LoadedJob>> {
        self.jobs.read().expect("the jobs lock").all().to_vec()
    }

    fn latest_states(&self) -> LatestStates {
        let mut states = StatesByJob::new();
        for row in self.store().latest_builds().unwrap_or_default() {
            states
                .entry(row.namespace)
                .or_default()
                .insert(row.job, row.state.phase().into());
        }
        LatestStates::new(vec![Arc::new(states)], now())
    }

    fn recent_builds(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> std::collections::HashMap<(String, String), Vec<BuildView>> {
        let rows: Vec<((String, String), Vec<crate::store::BuildRow>)> = {
            let store = self.store();
            jobs.iter()
                .filter_map(|(namespace, name)| {
                    let rows = store.recent_builds(namespace, name, limit).ok()?;
                    Some(((namespace.clone(), name.clone()), rows))
                })
                .collect()
        };
        rows.into_iter()
            .map(|(key, rows)| (key, rows.iter().map(|r| self.view(r)).collect()))
            .collect()
    }

    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>> {
        let declared = self
            .jobs
            .read()
            .expect("the jobs lock")
            .find_any(namespace, name);
        let rows = self.store().builds(namespace, name).ok()?;
        if declared.is_none() && rows.is_empty() {
            return None;
        }
        Some(rows.iter().map(|r| self.view(r)).collect())
    }

    async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
        let TriggerRequest {
            namespace,
            name,
            build,
            key,
        } = request;
        let Some(loaded) = self.job(&namespace, &name) else {
            let invalid = self
                .jobs
                .read()
                .expect("the jobs lock")
                .find_any(&namespace, &name);
            return Err(match invalid {
                Some(invalid) => TriggerError::Invalid {
                    namespace,
                    name,
                    errors: JobView::of(&invalid).errors.join("; "),
                },
                None => TriggerError::NotFound { namespace, name },
            });
        };
        let job = loaded.job.as_ref().expect("a found job is valid");
        // The renderer is not `Sync`: it is dropped before the first await.
        let (number, created) = {
            let origin = JobOrigin::of(&loaded);
            let render = |number: u64| -> Result<String, String> {
                let request = kubeci_build::BuildRequest {
                    number,
                    ..build.clone()
                };
                kubeci_render::render(job, &origin, &request, &self.settings.render)
                    .map(|rendered| serde_json::to_string(&rendered).expect("a Job serializes"))
                    .map_err(|e| e.to_string())
            };
            let new = NewBuild {
                namespace: &namespace,
                job: &name,
                request: &build,
                key: key.as_deref(),
                manifest: &render,
                spec_hash: &loaded.spec_hash,
                chart_version: loaded.chart_version.as_deref(),
                now: now(),
            };
            self.store()
                .allocate(&new)
                .map_err(|e| TriggerError::Backend(e.into()))?
        };
        let row = self
            .store()
            .build(&namespace, &name, number)
            .map_err(|e| TriggerError::Backend(e.into()))?
            .ok_or(TriggerError::Gone { number })?;
        if created {
            self.cancel_superseded(&loaded, &row.request).await;
            self.changed.notify_one();
        }
        Ok(Triggered {
            build: self.view(&row),
            created,
        })
    }

    async fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> Result<BuildView, CancelError> {
        let not_found = || CancelError::not_found(namespace, name, number);
        let row = self
            .store()
            .build(namespace, name, number)
            .map_err(|e| CancelError::Backend(e.into()))?
            .ok_or_else(not_found)?;
        CancelError::cancellable(namespace, name, number, &row.state)?;
        self.stop(namespace, name, number, by)
            .map_err(|e| CancelError::Backend(e.into()))?;
        // A running build ends when its processes are gone; answer with it stopping.
        let row = self
            .store()
            .build(namespace, name, number)
            .map_err(|e| CancelError::Backend(e.into()))?
            .ok_or_else(not_found)?;
        Ok(self.view(&row))
    }

    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<kubeci_spec::Job>)> {
        self.jobs.read().expect("the jobs lock").specs(repositories)
    }

    async fn approve(
        &self,
        namespace: &str,
        name: &str,
        approval: Approval,
    ) -> Result<(), ApproveError> {
        if self.declaration(namespace, name).is_none() {
            return Err(ApproveError::not_found(namespace, name));
        }
        self.store()
            .approve(namespace, name, approval, now())
            .map_err(|e| ApproveError::Backend(e.into()))
    }

    fn approvals(&self, namespace: &str, name: &str) -> Vec<Approval> {
        self.store().approvals(namespace, name).unwrap_or_default()
    }

    fn request(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> Option<kubeci_build::BuildRequest> {
        let row = self.store().build(namespace, name, number).ok()??;
        Some(row.request)
    }

    fn declaration(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.jobs
            .read()
            .expect("the jobs lock")
            .find_any(namespace, name)
    }

    fn metrics(&self) -> Vec<kubeci_engine::metrics::Family> {
        let rows = self.store().all_builds().unwrap_or_default();
        let builds: Vec<kubeci_engine::metrics::BuildFact> = rows
            .into_iter()
            .map(|r| kubeci_engine::metrics::BuildFact {
                state: r.state.phase(),
                seconds: r
                    .started_at
                    .zip(r.finished_at)
                    .map(|(start, end)| (end - start).max(0) as f64),
                namespace: r.namespace,
                job: r.job,
            })
            .collect();
        let mut families = kubeci_engine::metrics::build_families(&builds);
        families.push(kubeci_engine::metrics::reconcile_errors(&self.counters));
        families
    }

    async fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        options: LogOptions,
    ) -> Result<LogStream, LogError> {
        let key = (namespace.to_owned(), name.to_owned(), number);
        // Subscribed before the stored lines are read: no line falls between the two.
        let live = if options.follow {
            self.running
                .lock()
                .expect("lock")
                .get(&key)
                .map(|r| r.live.subscribe())
        } else {
            None
        };
        let Some(row) = self
            .store()
            .build(namespace, name, number)
            .map_err(|e| LogError::Backend(e.into()))?
        else {
            return Err(LogError::NotFound(format!(
                "no build {number} of job {namespace}/{name}"
            )));
        };
        if options.follow && live.is_none() && !row.state.is_finished() {
            // Queued or about to start: follow from when it runs (or ends).
            return Ok(self.log_once_started(key, options));
        }
        let lines = self.lines(namespace, name, number, live);
        Ok(Box::pin(futures_util::StreamExt::map(lines, move |line| {
            line.map(|line| as_written(&line, options.timestamps))
        })))
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
        namespace: &str,
        name: &str,
        number: u64,
        live: Option<watch::Receiver<u64>>,
    ) -> impl futures_util::Stream<Item = Result<LogLine, String>> + Send + 'static {
        let me = self.me.clone();
        let (ns, job) = (namespace.to_owned(), name.to_owned());
        let batches = futures_util::stream::unfold(Some((0u64, live)), move |state| {
            let (me, ns, job) = (me.clone(), ns.clone(), job.clone());
            async move {
                let (from, mut live) = state?;
                loop {
                    // Marked seen before reading: a line stored after the read wakes us.
                    if let Some(live) = live.as_mut() {
                        live.borrow_and_update();
                    }
                    let batch = me
                        .upgrade()?
                        .store()
                        .log(&ns, &job, number, from, LOG_BATCH_BYTES);
                    match batch {
                        Ok(batch) if batch.is_empty() => {}
                        Ok(batch) => {
                            let next = batch.last().map_or(from, |line| line.seq + 1);
                            return Some((Ok(batch), Some((next, live))));
                        }
                        Err(e) => return Some((Err(e.to_string()), None)),
                    }
                    match live.as_mut() {
                        None => return None,
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
        futures_util::StreamExt::flat_map(batches, |batch| {
            let lines: Vec<Result<LogLine, String>> = match batch {
                Ok(batch) => batch.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(lines)
        })
    }
}
