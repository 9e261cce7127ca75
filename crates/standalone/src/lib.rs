//! The embedded engine (`kubeci serve --local`): the jobs of the ConfigMap files in a
//! directory (reloaded when they change), builds run on this machine by the local engine,
//! history and logs in SQLite in the data directory — the same `Backend` the server and
//! the GitHub webhooks use with the Kubernetes engine. A build that was running when
//! kubeci died ends as an error that says so; queued builds start when it comes back.
//!
//! - this file: [`Standalone`], its settings, and its pass (queue, retention, reports, cron)
//! - `running` — builds running through `kubeci_local`, their logs stored and broadcast
//! - `backend` — [`kubeci_engine::api::Backend`] for [`Standalone`]
//! - `jobs` — the job files, reloaded; `store` — SQLite

mod backend;
pub mod jobs;
mod running;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kubeci_engine::api::{log_url, Backend, BuildView, TriggerRequest};
use kubeci_engine::decide::{self, Subject};
use kubeci_engine::plan::{self, Action, JobPolicy};
use kubeci_engine::report::{self, CommitState, ReportTarget, Reporter};
use kubeci_engine::{BuildState, BuildSummary};
use kubeci_local::Outcome;
use kubeci_render::{RenderConfig, Trigger};
use kubeci_spec::{LoadOptions, LoadedJob};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::jobs::JobSet;
use crate::store::{BuildRow, Store};

/// What failed in the embedded engine.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// The database cannot be opened, read or written. Not worth retrying at once: the
    /// data directory needs attention (space, permissions).
    #[error("the database failed: {0}")]
    Database(#[source] rusqlite::Error),
    /// The data directory cannot be made.
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A job cannot be rendered into the Job the local engine runs.
    #[error("cannot render the build: {0}")]
    Render(String),
}

/// How the embedded engine is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The ConfigMap files (searched recursively).
    pub jobs_dir: PathBuf,
    /// The database and the builds' work directories.
    pub data_dir: PathBuf,
    /// Secrets, laid out like mounted Secrets: `DIR/<secret>/<key>`.
    pub secrets_dir: Option<PathBuf>,
    /// The `kubeci` binary that runs the clone step.
    pub kubeci_exe: PathBuf,
    pub render: RenderConfig,
    pub load: LoadOptions,
    pub log_url_template: Option<String>,
    /// How often the jobs directory is checked for changes.
    pub reload_every: Duration,
}

struct Running {
    cancel: CancellationToken,
    /// Who cancelled it, once someone did.
    cancelled_by: Option<String>,
    live: broadcast::Sender<(u64, Vec<u8>)>,
}

type BuildKey = (String, String, u64);

/// The embedded engine.
pub struct Standalone {
    settings: Settings,
    store: Mutex<Store>,
    jobs: RwLock<JobSet>,
    running: Mutex<HashMap<BuildKey, Running>>,
    reporter: Option<Arc<dyn Reporter>>,
    /// Reports in flight or waiting to be retried: (attempts, not before).
    reports: Mutex<HashMap<BuildKey, (u32, Instant)>>,
    changed: Notify,
    ready: AtomicBool,
    /// Itself, for log followers that outlive a call (waiting for a queued build).
    me: std::sync::Weak<Standalone>,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn summary(row: &BuildRow, fully_reported: bool) -> BuildSummary {
    BuildSummary {
        number: row.number,
        state: row.state.clone(),
        pull_request: row.request.pull_request.as_ref().map(|p| p.number),
        branch: row.request.branch.clone(),
        fully_reported,
        finished_at: row.finished_at,
        settled: true,
    }
}

/// The state a local run ended in.
fn final_state(outcome: &Outcome, cancelled_by: Option<String>) -> BuildState {
    match outcome {
        Outcome::Succeeded => BuildState::Succeeded,
        Outcome::Failed {
            init: true,
            exit_code,
            ..
        } => BuildState::Error {
            reason: "CloneFailed".into(),
            message: format!(
                "the clone step failed: {} (exit code {exit_code})",
                kubeci_engine::observe::clone_failure(*exit_code)
            ),
        },
        Outcome::Failed { exit_code, .. } => BuildState::Failed {
            reason: "Error".into(),
            message: format!("the build exited with code {exit_code}"),
        },
        Outcome::DeadlineExceeded { .. } => BuildState::Failed {
            reason: "DeadlineExceeded".into(),
            message: outcome.describe(),
        },
        Outcome::Cancelled => BuildState::Aborted { by: cancelled_by },
        Outcome::NotStarted { reason, message } => BuildState::Error {
            reason: reason.clone(),
            message: message.clone(),
        },
    }
}

impl Standalone {
    /// Opens the database (marking builds that were running as interrupted), reads the
    /// jobs and starts the scheduler.
    pub fn start(
        settings: Settings,
        reporter: Option<Arc<dyn Reporter>>,
    ) -> Result<Arc<Standalone>, StandaloneError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StandaloneError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        })?;
        let store = Store::open(&settings.data_dir.join("kubeci.db"))?;
        let interrupted = store.mark_interrupted(now())?;
        if interrupted > 0 {
            log::info!(
                "{interrupted} builds were running when kubeci stopped: marked as interrupted"
            );
        }
        let mut jobs = JobSet::default();
        jobs.reload(&settings.jobs_dir, &settings.load);
        let engine = Arc::new_cyclic(|me| Standalone {
            settings,
            store: Mutex::new(store),
            jobs: RwLock::new(jobs),
            running: Mutex::default(),
            reporter,
            reports: Mutex::default(),
            changed: Notify::new(),
            ready: AtomicBool::new(true),
            me: me.clone(),
        });
        tokio::spawn(Arc::clone(&engine).schedule());
        Ok(engine)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("the store lock")
    }

    fn job(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.jobs
            .read()
            .expect("the jobs lock")
            .find(namespace, name)
    }

    /// Passes on every change and every second: reload the jobs, start queued builds,
    /// apply retention, report states, start due cron runs.
    async fn schedule(self: Arc<Self>) {
        let mut last_reload = Instant::now();
        loop {
            if last_reload.elapsed() >= self.settings.reload_every {
                last_reload = Instant::now();
                let changed = self
                    .jobs
                    .write()
                    .expect("the jobs lock")
                    .reload(&self.settings.jobs_dir, &self.settings.load);
                if changed {
                    log::info!("the jobs in {} changed", self.settings.jobs_dir.display());
                }
            }
            if let Err(e) = self.pass().await {
                log::warn!("{e}");
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.changed.notified()).await;
        }
    }

    async fn pass(self: &Arc<Self>) -> Result<(), StandaloneError> {
        let rows = self.store().all_builds()?;
        let mut groups: BTreeMap<(String, String), Vec<BuildRow>> = BTreeMap::new();
        for row in rows {
            groups
                .entry((row.namespace.clone(), row.job.clone()))
                .or_default()
                .push(row);
        }
        let now = now();
        for ((namespace, name), rows) in &groups {
            let loaded = self.job(namespace, name);
            let job = loaded.as_ref().and_then(|l| l.job.as_ref());
            let retention = job.and_then(|j| j.retention.as_ref());
            let declared = loaded.is_some()
                || self
                    .jobs
                    .read()
                    .expect("the jobs lock")
                    .find_any(namespace, name)
                    .is_some();
            let policy = JobPolicy {
                declared,
                valid: loaded.is_some(),
                max_concurrency: job.and_then(|j| j.max_concurrency),
                keep: retention.and_then(|r| r.keep),
                ttl: retention
                    .and_then(|r| r.ttl.as_deref())
                    .and_then(|t| kubeci_spec::duration::parse_duration(t).ok()),
                cancel_when_deleted: false,
            };
            let summaries: Vec<BuildSummary> = rows
                .iter()
                .map(|row| summary(row, self.fully_reported(row, loaded.as_deref())))
                .collect();
            for action in plan::plan(&policy, &summaries, now) {
                match action {
                    Action::Release(number) => {
                        if let Some(row) = rows.iter().find(|r| r.number == number) {
                            self.run(row.clone())?;
                        }
                    }
                    Action::Delete(number) => self.store().delete_build(namespace, name, number)?,
                    Action::Cancel { number, by } => {
                        let _ = self.stop(namespace, name, number, &by);
                    }
                    Action::Fail { .. } => {}
                }
            }
            for row in rows {
                self.report(row, loaded.as_deref());
            }
        }
        self.cron(now).await;
        Ok(())
    }

    fn report_target(&self, row: &BuildRow, loaded: Option<&LoadedJob>) -> ReportTarget {
        let job = loaded.and_then(|l| l.job.as_ref());
        ReportTarget {
            namespace: row.namespace.clone(),
            job: row.job.clone(),
            number: row.number,
            build_name: kubeci_render::build_name(&row.job, row.number),
            trigger: Some(row.request.trigger.as_str().to_owned()),
            git_url: job.map(|j| j.git.url.clone()),
            commit: row
                .request
                .commit
                .clone()
                .or_else(|| row.checked_out.clone()),
            pull_request: row.request.pull_request.as_ref().map(|p| p.number),
            url: kubeci_render::build_url(
                &self.settings.render,
                &row.namespace,
                &row.job,
                row.number,
            ),
            context: job.and_then(|j| j.ghprb.as_ref()?.context.clone()),
        }
    }

    fn fully_reported(&self, row: &BuildRow, loaded: Option<&LoadedJob>) -> bool {
        match &self.reporter {
            Some(reporter) if reporter.wants(&self.report_target(row, loaded)) => {
                report::next_report(&row.state, &report::parse_reported(Some(&row.reported)))
                    .is_none()
            }
            _ => true,
        }
    }

    /// Reports the state `row` owes, if any, unless a report is in flight or waiting.
    fn report(self: &Arc<Self>, row: &BuildRow, loaded: Option<&LoadedJob>) {
        let Some(reporter) = self.reporter.clone() else {
            return;
        };
        let target = self.report_target(row, loaded);
        if !reporter.wants(&target) {
            return;
        }
        let mut reported = report::parse_reported(Some(&row.reported));
        let Some((state, description)) = report::next_report(&row.state, &reported) else {
            return;
        };
        let key = (row.namespace.clone(), row.job.clone(), row.number);
        {
            let mut reports = self.reports.lock().expect("lock");
            match reports.get(&key) {
                Some((_, not_before)) if *not_before > Instant::now() => return,
                _ => {}
            }
            let attempts = reports.get(&key).map_or(0, |(a, _)| *a);
            // In flight: nobody else reports it until this attempt ends.
            reports.insert(
                key.clone(),
                (attempts, Instant::now() + Duration::from_secs(3600)),
            );
        }
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let result = reporter.report(&target, state, &description).await;
            let mut reports = engine.reports.lock().expect("lock");
            match result {
                Ok(()) => {
                    reports.remove(&key);
                    drop(reports);
                    reported.push(state);
                    let text = report::format_reported(&reported);
                    if let Err(e) = engine.store().record_reported(&key.0, &key.1, key.2, &text) {
                        log::warn!(
                            "cannot record the report of {}/{} {}: {e}",
                            key.0,
                            key.1,
                            key.2
                        );
                    }
                    engine.changed.notify_one();
                }
                Err(e) => {
                    let attempts = reports.get(&key).map_or(0, |(a, _)| *a);
                    let backoff = report::retry_delay(attempts, &e);
                    let attempts = attempts + 1;
                    log::warn!(
                        "{}/{} build {}: reporting {state} failed ({e}); again in {}s",
                        key.0,
                        key.1,
                        key.2,
                        backoff.as_secs()
                    );
                    reports.insert(key, (attempts, Instant::now() + backoff));
                }
            }
        });
    }

    async fn cron(self: &Arc<Self>, now: i64) {
        let declared: Vec<Arc<LoadedJob>> = self.jobs.read().expect("the jobs lock").valid();
        for loaded in declared {
            let Some(job) = loaded.job.as_ref() else {
                continue;
            };
            let Some(text) = job.triggers.as_ref().and_then(|t| t.cron.as_deref()) else {
                continue;
            };
            let Ok(schedule) = kubeci_spec::cron::CronSchedule::parse(text, &job.name) else {
                continue;
            };
            let last = self
                .store()
                .last_cron_run(&loaded.namespace, &job.name)
                .ok()
                .flatten();
            let Some(due) = kubeci_engine::schedule::due_run(&schedule, last, now) else {
                continue;
            };
            let request = TriggerRequest {
                namespace: loaded.namespace.clone(),
                name: job.name.clone(),
                build: kubeci_render::BuildRequest {
                    trigger: Trigger::Cron,
                    ..kubeci_render::BuildRequest::manual(0)
                },
                key: Some(format!("cron:{due}")),
            };
            match self.trigger(request).await {
                Ok(_) => {
                    let _ = self
                        .store()
                        .set_last_cron_run(&loaded.namespace, &job.name, due);
                }
                Err(e) => log::warn!("the cron run of {}/{}: {e}", loaded.namespace, job.name),
            }
        }
    }

    /// Starts build `row` with the local engine.
    fn view(&self, row: &BuildRow) -> BuildView {
        let (state, message) = BuildView::describe(&row.state);
        let declared_url = self
            .job(&row.namespace, &row.job)
            .and_then(|l| l.job.as_ref()?.log_url.clone());
        let log_url = declared_url
            .or_else(|| self.settings.log_url_template.clone())
            .map(|template| {
                let time = |t: Option<i64>| {
                    t.and_then(|s| jiff::Timestamp::from_second(s).ok())
                        .map(|t| t.to_string())
                };
                let name = kubeci_render::build_name(&row.job, row.number);
                log_url(
                    &template,
                    &[
                        ("namespace", &row.namespace),
                        ("pod", &name),
                        ("job", &row.job),
                        ("build", &row.number.to_string()),
                        ("start", &time(Some(row.created_at)).unwrap_or_default()),
                        (
                            "end",
                            &time(row.finished_at).unwrap_or_else(|| "now".into()),
                        ),
                    ],
                )
            });
        BuildView {
            number: row.number,
            name: kubeci_render::build_name(&row.job, row.number),
            state,
            message,
            trigger: Some(row.request.trigger.as_str().to_owned()),
            requested_by: row.request.requested_by.clone(),
            commit: row
                .request
                .commit
                .clone()
                .or_else(|| row.checked_out.clone()),
            pull_request: row.request.pull_request.as_ref().map(|p| p.number),
            spec_hash: row.spec_hash.clone(),
            chart_version: row.chart_version.clone(),
            reported: report::parse_reported(Some(&row.reported))
                .into_iter()
                .map(CommitState::as_str)
                .collect(),
            log_url,
            created_at: kubeci_engine::api::timestamp(Some(row.created_at)),
            started_at: kubeci_engine::api::timestamp(row.started_at),
            finished_at: kubeci_engine::api::timestamp(row.finished_at),
        }
    }

    /// Cancels the older unfinished builds of the same pull request or branch.
    fn cancel_superseded(&self, loaded: &LoadedJob, request: &kubeci_render::BuildRequest) {
        let Some(job) = loaded.job.as_ref() else {
            return;
        };
        let Some(subject) = Subject::of(request, job) else {
            return;
        };
        let Ok(rows) = self.store().builds(&loaded.namespace, &job.name) else {
            return;
        };
        let summaries: Vec<BuildSummary> = rows.iter().map(|r| summary(r, true)).collect();
        for number in decide::superseded_builds(&subject, request.number, &summaries) {
            let by = format!("kubeci (superseded by build {})", request.number);
            if let Err(e) = self.stop(&loaded.namespace, &job.name, number, &by) {
                log::warn!(
                    "cannot cancel superseded build {number} of {}/{}: {e}",
                    loaded.namespace,
                    job.name
                );
            }
        }
    }
}
