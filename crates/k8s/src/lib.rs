//! The Kubernetes backend: job discovery from ConfigMaps, builds as `batch/v1` Jobs.
//!
//! Everything lives in the cluster: jobs are ConfigMaps, builds are Jobs (their labels,
//! annotations and status are the build record), and each job's ledger (build counter,
//! recent requests, last cron run) is a Lease updated with optimistic concurrency. A
//! restarted kubeci rebuilds its view from watches. Every replica takes build requests;
//! the leader (another Lease) does what must happen once: releasing queues, failing
//! builds that cannot start, reporting, cron, retention, and building requests whose
//! creator died.
//!
//! - this file: the settings and [`Cluster`], started with its watches and loops
//! - `cache` — the watched caches, the builds they make up, lookups of declared jobs
//! - `builds` — creating (through `ledger`), stopping and superseding builds; their views
//! - `backend` — [`kubeci_engine::api::Backend`] for [`Cluster`]
//! - `controller` — the cluster as the scheduler's `Workload` (the pass itself is
//!   `kubeci_engine::scheduler`'s); `election` — the leader Lease; `error` — `ClusterError`
//! - `discover` — job ConfigMaps into `index`; `logs` — pod logs, one shared upstream per
//!   pod for followers
//! - `hold` — the finalizer on each build pod: its logs archived (`steplog` reads each
//!   step's), then the pod released

mod backend;
mod builds;
mod cache;
pub mod collectors;
mod controller;
mod discover;
mod election;
mod error;
mod fresh;
pub mod hold;
pub mod index;
mod ledger;
mod lists;
mod logs;
mod newest;
mod packed;
mod protowatch;
pub mod steplog;
mod tenancy;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use kube::runtime::watcher;
use kube::Client;

use kubeci_engine::report::Reporter;
use kubeci_render::RenderConfig;
use kubeci_spec::LoadOptions;
use tokio::sync::Notify;

pub use error::ClusterError;
pub use index::JobIndex;

pub use crate::cache::BuildRecord;
use crate::cache::Scope;
pub(crate) use crate::cache::WatchBackoff;
use crate::fresh::FreshJobs;

/// Where and how replicas elect the leader.
#[derive(Debug, Clone)]
pub struct Election {
    /// Namespace of the leader Lease.
    pub namespace: String,
    /// Name of the leader Lease.
    pub name: String,
    /// How long a leader holds the Lease without renewing it.
    pub lease_duration: Duration,
}

/// How the backend watches and builds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Label selector of job ConfigMaps.
    pub selector: String,
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    pub render: RenderConfig,
    pub load: LoadOptions,
    /// How long a pod may be unable to start before its build fails.
    pub pending_deadline: Duration,
    /// This replica's name: the leader Lease's holder and the Events' reporter.
    pub identity: String,
    pub election: Election,
    /// Cancel the running builds of a job whose ConfigMap is deleted (otherwise they
    /// finish).
    pub cancel_when_deleted: bool,
    /// The log store's URL for a build; `{namespace}`, `{pod}`, `{job}`, `{build}`,
    /// `{start}`, `{end}` are replaced.
    pub log_url_template: Option<String>,
    /// How often the leader looks at every build even when nothing changed (cron, TTLs,
    /// pending deadlines).
    pub resync: Duration,
    /// After taking the lead, how long builds from before wait for a first report that
    /// creates something (a check run): the longest a report of the leader before can
    /// still be under way.
    pub takeover_grace: Duration,
    /// Whether Namespaces decide where jobs build (`kubeci_spec::tenancy`).
    pub tenancy: Tenancy,
    /// Where builds are archived (`--archive`), if anywhere; without an archive a build's
    /// pod is released once it ended.
    pub archiving: kubeci_engine::archive::Archiving,
    /// How long after its end a pod is held for the archive at most (a store down that
    /// long): then kubeci releases it and says why.
    pub archive_give_up_after: Duration,
}

/// Who decides where jobs build, with which ServiceAccounts, Secrets and repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tenancy {
    /// Each Namespace, by its label `kubeci.io/builds: enabled` and its annotations
    /// `kubeci.io/service-accounts`, `kubeci.io/secrets`, `kubeci.io/repositories`.
    #[default]
    Labels,
    /// Nobody: every watched namespace builds, whatever its jobs name.
    Open,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            selector: "ci-job-spec=true".into(),
            namespaces: Vec::new(),
            render: RenderConfig::default(),
            load: LoadOptions::default(),
            pending_deadline: Duration::from_secs(300),
            identity: "kubeci".into(),
            election: Election {
                namespace: "default".into(),
                name: "kubeci-leader".into(),
                lease_duration: Duration::from_secs(15),
            },
            cancel_when_deleted: false,
            log_url_template: None,
            resync: Duration::from_secs(1),
            takeover_grace: Duration::from_secs(30),
            tenancy: Tenancy::default(),
            archiving: Default::default(),
            archive_give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

/// The cluster as kubeci sees it.
pub struct Cluster {
    client: Client,
    settings: Settings,
    index: Arc<RwLock<JobIndex>>,
    scopes: Vec<Scope>,
    synced: Vec<Arc<AtomicBool>>,
    reporter: Option<Arc<dyn Reporter>>,
    /// Wakes the controller when a watched object changed.
    changed: Arc<Notify>,
    /// Which jobs changed since the leader's last pass.
    changes: Arc<kubeci_engine::scheduler::ChangeLog>,
    /// Until when (`clock_ms`) this replica surely holds the leader Lease.
    leading_until: AtomicI64,
    /// The origin of `clock_ms`: leadership is timed by this process's monotonic clock,
    /// which no step of the wall clock (NTP, an operator) moves.
    clock_origin: std::time::Instant,
    /// Set when kubeci is stopping: it no longer takes or renews the leader Lease.
    stopping: AtomicBool,
    /// When it took the lead last: whether a leader before it may still be reporting.
    predecessor_may_be_reporting: AtomicBool,
    /// The leader's report calls under way (set once its scheduler runs).
    reports_in_flight: std::sync::OnceLock<Arc<kubeci_engine::scheduler::InFlight>>,
    /// Held while the leader Lease is taken, renewed or released, so a release is not
    /// undone by a renewal in flight.
    election_turn: tokio::sync::Mutex<()>,
    request_counter: AtomicU64,
    /// Build Jobs this replica created, or read from the API, that its cache has not shown
    /// yet, by job: a build the API just reported is readable and cancellable at once,
    /// before the watch delivers it.
    fresh: std::sync::Mutex<FreshJobs>,
    /// Followed build logs, one upstream per pod.
    logs: logs::LogHub,
    /// The held pods being archived and released now.
    holds: hold::Holds,
    /// Collectors' tokens as the cluster reviewed them, kept a minute.
    reviews: collectors::Reviews,
    /// This replica's writes of its jobs' ledgers, batched per job.
    ledgers: ledger::LedgerWrites,
    /// Failed writes of the controller, by what it was doing.
    pub(crate) common: kubeci_engine::service::Common<JobIndex>,
    /// Itself, for log followers that outlive a call (waiting for a build's pod).
    me: std::sync::Weak<Cluster>,
}

fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn label<'a, K: kube::Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object.meta().labels.as_ref()?.get(key).map(String::as_str)
}

/// The name of job `job`'s ledger Lease.
pub fn ledger_name(job: &str) -> String {
    format!("kubeci-job-{job}")
}

pub use kubeci_engine::api::log_url;

impl Cluster {
    /// Starts the watches and the controller; `Backend::ready` tells when their first
    /// lists are in. `reporter` receives build states (the leader reports each once).
    pub fn start(
        client: Client,
        settings: Settings,
        reporter: Option<Arc<dyn Reporter>>,
    ) -> Arc<Cluster> {
        let index = Arc::new(RwLock::new(match settings.tenancy {
            Tenancy::Labels => JobIndex::with_tenancy(),
            Tenancy::Open => JobIndex::default(),
        }));
        let wake = cache::Wake::default();
        let changed = wake.notify.clone();
        let probe = apis(&client, &settings.namespaces).swap_remove(0);
        let lists = Arc::new(lists::InitialLists::new(probe));
        let mut synced = Vec::new();
        let recorder = Recorder::new(
            client.clone(),
            EventReporter {
                controller: "kubeci".into(),
                instance: Some(settings.identity.clone()),
            },
        );
        let namespaces_known = (settings.tenancy == Tenancy::Labels).then(|| {
            let (known, receiver) = tokio::sync::watch::channel(false);
            let follower = tenancy::Follower {
                index: index.clone(),
                recorder: recorder.clone(),
                known,
                wake: wake.clone(),
            };
            tenancy::follow(&client, &settings.namespaces, follower, &mut synced);
            receiver
        });
        for api in apis::<ConfigMap>(&client, &settings.namespaces) {
            let flag = Arc::new(AtomicBool::new(false));
            synced.push(flag.clone());
            let config = watcher::Config::default().labels(&settings.selector);
            tokio::spawn(discover::discover(
                api,
                config,
                lists.clone(),
                index.clone(),
                settings.load.clone(),
                recorder.clone(),
                flag,
                wake.clone(),
                namespaces_known.clone(),
            ));
        }
        let scopes = cache::watch_builds(
            &client,
            &settings.namespaces,
            &lists,
            &wake,
            &mut synced,
            cache::seconds(settings.pending_deadline),
        );
        let (index_handle, log_url_template, base_url, archiving) = (
            index.clone(),
            settings.log_url_template.clone(),
            settings.render.base_url.clone(),
            settings.archiving.clone(),
        );
        let cluster = Arc::new_cyclic(|me| Cluster {
            me: me.clone(),
            client,
            settings,
            index,
            scopes,
            synced,
            reporter,
            changed,
            changes: wake.changes,
            leading_until: AtomicI64::new(0),
            clock_origin: std::time::Instant::now(),
            stopping: AtomicBool::new(false),
            predecessor_may_be_reporting: AtomicBool::new(false),
            reports_in_flight: std::sync::OnceLock::new(),
            election_turn: tokio::sync::Mutex::new(()),
            request_counter: AtomicU64::new(0),
            fresh: Default::default(),
            logs: Default::default(),
            holds: Default::default(),
            reviews: Default::default(),
            ledgers: Default::default(),
            common: kubeci_engine::service::Common {
                jobs: index_handle,
                log_url_template,
                base_url,
                counters: Default::default(),
                archiving,
                uploads: Default::default(),
            },
        });
        tokio::spawn(election::elect(cluster.clone()));
        tokio::spawn(controller::run(cluster.clone()));
        tokio::spawn(hold::run(cluster.clone()));
        cluster
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.clock_ms() < self.leading_until.load(Ordering::SeqCst)
    }

    /// Milliseconds on this process's monotonic clock (`leading_until`'s).
    fn clock_ms(&self) -> i64 {
        i64::try_from(self.clock_origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Stops leading for good and, once its report calls under way have ended, gives the
    /// leader Lease back if this replica holds it, so another replica takes over at once
    /// (instead of after the Lease's duration) without waiting for reports of this one.
    /// Whoever calls it bounds the wait: if the reports do not end, the Lease expires.
    pub async fn give_up_leadership(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _turn = self.election_turn.lock().await;
        let was_leading = self.is_leader();
        self.leading_until.store(0, Ordering::SeqCst);
        if let Some(reports) = self.reports_in_flight.get() {
            reports.close();
            reports.settled().await;
        }
        let election = &self.settings.election;
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &election.namespace);
        match election::release(&leases, &election.name, &self.settings.identity).await {
            Ok(true) => {
                tracing::info!(identity = %self.settings.identity, "this replica gave the leader Lease back")
            }
            Ok(false) if was_leading => {
                tracing::info!(identity = %self.settings.identity, "this replica no longer held the leader Lease")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot give the leader Lease back"),
        }
    }
}
