//! The local backend (`kubeci serve --local`): the jobs of the ConfigMap files in a
//! directory (reloaded when they change), builds run on this machine by the pod runner,
//! history and logs in SQLite in the data directory — the same `Backend` the server and
//! the GitHub webhooks use with the Kubernetes engine. A build that was running when
//! kubeci died ends as an error that says so; queued builds start when it comes back.
//!
//! - this file: [`LocalBackend`] and its settings
//! - `workload` — [`kubeci_engine::scheduler::Workload`] for [`LocalBackend`]: what the
//!   leader's pass (queue, retention, reports, cron) reads and does
//! - `running` — builds running through `kubeci_pod_runner`, their logs stored and broadcast
//! - `backend` — [`LocalBackend`] as the engine's `BuildStore` and `Engine`, which makes
//!   it a [`kubeci_engine::api::Backend`] (the commands are `kubeci_engine::service`'s)
//! - `store` — SQLite; the job files are read by `kubeci_jobfiles`

mod archiving;
mod backend;
mod outputs;
mod running;
pub mod store;
mod workload;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kubeci_engine::report::Reporter;
use kubeci_engine::{BuildState, BuildSummary};
use kubeci_pod_runner::Outcome;
use kubeci_render::RenderConfig;
use kubeci_spec::LoadOptions;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::store::{BuildRow, Readers, Store};
use kubeci_jobfiles::JobSet;

/// What failed in the embedded engine.
#[derive(Debug, thiserror::Error)]
pub enum LocalBackendError {
    /// The database cannot be opened, read or written. Not worth retrying at once: the
    /// data directory needs attention (space, permissions).
    #[error("the database failed: {0}")]
    Database(#[source] rusqlite::Error),
    /// The database cannot be brought to this kubeci's schema (nothing of a failed run of
    /// migrations is kept: it is one transaction).
    #[error("cannot bring the database {path} to this kubeci's schema: {source}")]
    Migration {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
    /// The database was written by a newer kubeci, whose schema this one does not know.
    #[error("the database {path} was written by a newer kubeci (schema version {found}; this kubeci knows versions up to {known}) and is left as it is: run that kubeci or a newer one on it, or give this one another --data directory")]
    NewerDatabase {
        path: String,
        found: usize,
        known: usize,
    },
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
    /// Builds run as another user, who cannot pass through a directory on the way to
    /// their own directories or to kubeci's program (for the clone step).
    #[error("builds run as {user}, who cannot reach {what}: {path} (mode {mode:o}) lets no other user pass; `chmod o+x {path}`, or choose a --data directory {user} can reach")]
    Unreachable {
        user: String,
        what: &'static str,
        path: String,
        mode: u32,
    },
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
    /// The most bytes of a build's output kept; past it, its lines are dropped (the build
    /// goes on) and its log says so.
    pub log_limit: u64,
    /// The user builds run as, when not kubeci's own (kubeci runs as root): the data
    /// directory, the database, the token and the secrets directory are not theirs to read.
    pub build_user: Option<kubeci_pod_runner::RunAs>,
    /// Where builds are kept once they ended (`--archive`; `serve --local` archives to
    /// `DATA/archive` unless told otherwise): the store then keeps only what is live.
    pub archiving: kubeci_engine::archive::Archiving,
}

/// [`Settings::log_limit`] unless told otherwise: 64 MiB.
pub const DEFAULT_LOG_LIMIT: u64 = 64 * 1024 * 1024;

struct Running {
    cancel: CancellationToken,
    /// Who cancelled it, once someone did.
    cancelled_by: Option<String>,
    /// How many of its log lines are stored: followers read the new ones from the store
    /// when it changes, so no line is held for them.
    live: watch::Sender<u64>,
}

type BuildKey = (String, String, u64);

/// The embedded engine.
pub struct LocalBackend {
    settings: Settings,
    /// The writer: locked by the blocking pool's threads for what async code asks of the
    /// store ([`LocalBackend::with_store`]).
    store: Arc<Mutex<Store>>,
    /// The bounded reads, inline ([`LocalBackend::read`]).
    readers: Readers,
    jobs: Arc<RwLock<JobSet>>,
    running: Mutex<HashMap<BuildKey, Running>>,
    reporter: Option<Arc<dyn Reporter>>,
    /// Wakes the scheduler.
    changed: Arc<Notify>,
    /// When the job files were last re-read.
    last_reload: Mutex<Instant>,
    /// Failed writes of the scheduler's passes.
    common: kubeci_engine::service::Common<JobSet>,
    ready: AtomicBool,
    /// Itself, for log followers that outlive a call (waiting for a queued build).
    me: std::sync::Weak<LocalBackend>,
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
        archived: row.archived,
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

/// The first directory on the way to `path` that `user` may not pass, and its mode.
fn closed_ancestor(
    path: &std::path::Path,
    user: &kubeci_pod_runner::RunAs,
) -> Option<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::absolute(path).ok()?;
    path.ancestors().skip(1).find_map(|ancestor| {
        let meta = std::fs::metadata(ancestor).ok()?;
        let mode = meta.mode() & 0o7777;
        let passes = mode & 0o001 != 0
            || (meta.uid() == user.uid && mode & 0o100 != 0)
            || (meta.gid() == user.gid && mode & 0o010 != 0);
        (!passes).then(|| (ancestor.to_owned(), mode & 0o777))
    })
}

/// Sets directory `dir`'s mode.
fn private_dir(dir: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Makes the secrets directory `dir` kubeci's user's alone (builds get copies of their own
/// Secrets in their directories).
fn owner_only_dir(dir: &std::path::Path) -> Result<(), LocalBackendError> {
    use std::os::unix::fs::PermissionsExt;
    let failed = |source| LocalBackendError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    let mode = std::fs::metadata(dir).map_err(failed)?.permissions().mode();
    if mode & 0o077 != 0 {
        private_dir(dir, mode & 0o700).map_err(failed)?;
        tracing::info!(
            dir = %dir.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the secrets directory was open to other users: now to kubeci's user alone; builds get copies of their own Secrets"
        );
    }
    Ok(())
}

impl LocalBackend {
    /// Opens the database (marking builds that were running as interrupted), reads the
    /// jobs and starts the scheduler.
    pub fn start(
        settings: Settings,
        reporter: Option<Arc<dyn Reporter>>,
    ) -> Result<Arc<LocalBackend>, LocalBackendError> {
        let data_dir_error = |source| LocalBackendError::DataDir {
            path: settings.data_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&settings.data_dir).map_err(data_dir_error)?;
        // Its database holds every build's log: for kubeci's user alone. A build run as
        // another user may pass through it (and `work`) to its own directory, and list
        // neither.
        let mode = if settings.build_user.is_some() {
            0o711
        } else {
            0o700
        };
        private_dir(&settings.data_dir, mode).map_err(data_dir_error)?;
        if let Some(user) = &settings.build_user {
            // The directories above each: the data directory itself is made passable below.
            for (what, path) in [
                ("the data directory", &*settings.data_dir),
                ("kubeci's program", &*settings.kubeci_exe),
            ] {
                if let Some((path, mode)) = closed_ancestor(path, user) {
                    return Err(LocalBackendError::Unreachable {
                        user: user.name.clone(),
                        what,
                        path: path.display().to_string(),
                        mode,
                    });
                }
            }
            let work = settings.data_dir.join("work");
            std::fs::create_dir_all(&work)
                .and_then(|()| private_dir(&work, 0o711))
                .map_err(data_dir_error)?;
            if let Some(secrets) = &settings.secrets_dir {
                owner_only_dir(secrets)?;
            }
        }
        let database = settings.data_dir.join("kubeci.db");
        let store = Store::open(&database)?;
        let readers = Readers::new(&database);
        let interrupted = store.mark_interrupted(now())?;
        if interrupted > 0 {
            tracing::info!(
                builds = interrupted,
                "builds were running when kubeci stopped: marked as interrupted"
            );
        }
        let mut jobs = JobSet::default();
        jobs.reload(&settings.jobs_dir, &settings.load);
        let jobs = Arc::new(RwLock::new(jobs));
        let common = kubeci_engine::service::Common {
            jobs: jobs.clone(),
            log_url_template: settings.log_url_template.clone(),
            base_url: settings.render.base_url.clone(),
            counters: Arc::default(),
            archiving: settings.archiving.clone(),
            uploads: Default::default(),
        };
        let engine = Arc::new_cyclic(|me| LocalBackend {
            settings,
            store: Arc::new(Mutex::new(store)),
            readers,
            jobs,
            common,
            running: Mutex::default(),
            reporter,
            changed: Arc::new(Notify::new()),
            last_reload: Mutex::new(Instant::now()),
            ready: AtomicBool::new(true),
            me: me.clone(),
        });
        tokio::spawn(Arc::clone(&engine).schedule());
        Ok(engine)
    }

    /// Runs `read` on a connection of its own, inline: for bounded reads alone (a job's
    /// builds, one build, a batch of log lines), which never wait for the writer (WAL).
    fn read<T>(
        &self,
        read: impl FnOnce(&store::Reader) -> Result<T, LocalBackendError>,
    ) -> Result<T, LocalBackendError> {
        self.readers.read(read)
    }

    /// Runs `f` on the store on tokio's blocking pool: a slow disk or a long query (or a
    /// store locked by another call) holds that thread, never an async worker serving
    /// pages, webhooks and other builds. Run to the end even when its caller goes away.
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let store = Arc::clone(&self.store);
        off_worker(move || f(&mut store.lock().expect("the store lock"))).await
    }

    /// Holds the store locked while `f` runs on the calling thread: tests show that what
    /// waits for the store waits off the async workers.
    #[doc(hidden)]
    pub fn with_store_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.store.lock().expect("the store lock");
        f()
    }
}

/// Runs `f` on tokio's blocking pool (a panic in it goes on in the caller). Only a
/// runtime shutting down drops it unrun, and its caller with it: then this never returns.
async fn off_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => std::future::pending().await,
        },
    }
}

/// Removes directory `dir` and all it holds on tokio's blocking pool (a build's tree may
/// be large). What cannot be removed is left, as before a build runs there again.
async fn remove_dir_all(dir: PathBuf) {
    off_worker(move || {
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
}
