//! The Kubernetes backend: job discovery from ConfigMaps, builds as `batch/v1` Jobs.
//!
//! Everything lives in the cluster: jobs are ConfigMaps, builds are Jobs (their labels,
//! annotations and status are the build record), and each job's ledger (build counter,
//! recent requests, last cron run) is a Lease updated with optimistic concurrency. A
//! restarted kubeci rebuilds its view from watches. Every replica takes build requests;
//! the leader (another Lease) does what must happen once: releasing queues, failing
//! builds that cannot start, reporting, cron, retention, and building requests whose
//! creator died.

mod controller;
mod discover;
pub mod index;
mod ledger;
mod logs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter as EventReporter};
use kube::runtime::reflector::{reflector, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use kubeci_engine::api::{
    Backend, BuildView, CancelError, JobView, LogError, LogStream, TriggerError, TriggerRequest,
    Triggered,
};
use kubeci_engine::record::{BuildJob, BuildPod};
use kubeci_engine::report::Reporter;
use kubeci_engine::{decide, observe, BuildSummary};
use kubeci_render::{keys, BuildRequest, JobOrigin, RenderConfig};
use kubeci_spec::{LoadOptions, LoadedJob, Severity};
use tokio::sync::Notify;

pub use index::JobIndex;

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
        }
    }
}

/// Build Jobs by (namespace, Job name), with when they were seen.
type FreshJobs = BTreeMap<(String, String), (Arc<BuildJob>, std::time::Instant)>;

/// How long a build Job this replica created is shown without its cache showing it.
const FRESH_FOR: Duration = Duration::from_secs(30);

/// The Job, Pod and ledger Lease caches of one watched scope (a namespace, or all).
struct Scope {
    jobs: Store<BuildJob>,
    pods: Store<BuildPod>,
    leases: Store<Lease>,
}

/// One build as the caches show it.
pub(crate) struct BuildRecord {
    pub job: Arc<BuildJob>,
    pub pods: Vec<Arc<BuildPod>>,
    pub summary: BuildSummary,
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
    /// Until when (ms since the epoch) this replica surely holds the leader Lease.
    leading_until: AtomicI64,
    /// Set when kubeci is stopping: it no longer takes or renews the leader Lease.
    stopping: AtomicBool,
    /// Held while the leader Lease is taken, renewed or released, so a release is not
    /// undone by a renewal in flight.
    election_turn: tokio::sync::Mutex<()>,
    request_counter: AtomicU64,
    /// Build Jobs this replica created, or read from the API, that its cache has not shown
    /// yet, by (namespace, Job name): a build the API just reported is readable and
    /// cancellable at once, before the watch delivers it.
    fresh: std::sync::Mutex<FreshJobs>,
    /// Followed build logs, one upstream per pod.
    logs: logs::LogHub,
    /// Failed writes of the controller, by what it was doing.
    pub(crate) counters: kubeci_engine::metrics::Counters,
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

/// How watches retry after errors: quickly at first (a dropped connection), at most every
/// 5 s (an API server that is down), so catching up after an outage takes seconds.
pub(crate) struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> WatchBackoff {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Follows `api` into a cache; every change wakes `changed`. Returns the cache and a flag
/// set once its first complete list is in.
/// `trim` drops what kubeci never reads from the cached objects (it matters at 10,000 Jobs).
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    trim: fn(&mut K),
) -> (Store<K>, Arc<AtomicBool>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = kube::runtime::reflector::store();
    tokio::spawn(
        reflector(
            writer,
            watcher::watcher(api, config)
                .modify(move |object| {
                    object.meta_mut().managed_fields = None;
                    trim(object);
                })
                .backoff(WatchBackoff::new()),
        )
        .for_each(move |_| {
            changed.notify_one();
            async {}
        }),
    );
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let ready = store.clone();
    tokio::spawn(async move {
        if ready.wait_until_ready().await.is_ok() {
            set.store(true, Ordering::SeqCst);
        }
    });
    (store, flag)
}

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
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
    /// Starts the watches and the controller; [`Cluster::ready`] tells when their first
    /// lists are in. `reporter` receives build states (the leader reports each once).
    pub fn start(
        client: Client,
        settings: Settings,
        reporter: Option<Arc<dyn Reporter>>,
    ) -> Arc<Cluster> {
        let index = Arc::new(RwLock::new(JobIndex::default()));
        let changed = Arc::new(Notify::new());
        let mut synced = Vec::new();
        let recorder = Recorder::new(
            client.clone(),
            EventReporter {
                controller: "kubeci".into(),
                instance: Some(settings.identity.clone()),
            },
        );
        for api in apis::<ConfigMap>(&client, &settings.namespaces) {
            let flag = Arc::new(AtomicBool::new(false));
            synced.push(flag.clone());
            let config = watcher::Config::default().labels(&settings.selector);
            tokio::spawn(discover::discover(
                api,
                config,
                index.clone(),
                settings.load.clone(),
                recorder.clone(),
                flag,
                changed.clone(),
            ));
        }
        let managed = format!("{}={}", keys::MANAGED_BY, keys::MANAGER);
        let mut scopes = Vec::new();
        let job_apis = apis::<BuildJob>(&client, &settings.namespaces);
        let pod_apis = apis::<BuildPod>(&client, &settings.namespaces);
        let lease_apis = apis::<Lease>(&client, &settings.namespaces);
        for ((jobs_api, pods_api), leases_api) in job_apis.into_iter().zip(pod_apis).zip(lease_apis)
        {
            let (jobs, jobs_synced) = cache(
                jobs_api,
                watcher::Config::default().labels(&managed),
                changed.clone(),
                // `BuildJob` holds only what builds are read from.
                |_: &mut BuildJob| {},
            );
            let (pods, pods_synced) = cache(
                pods_api,
                watcher::Config::default().labels(keys::JOB),
                changed.clone(),
                |_: &mut BuildPod| {},
            );
            let (leases, leases_synced) = cache(
                leases_api,
                watcher::Config::default().labels(&format!("{managed},{}", keys::JOB)),
                changed.clone(),
                |_: &mut Lease| {},
            );
            synced.extend([jobs_synced, pods_synced, leases_synced]);
            scopes.push(Scope { jobs, pods, leases });
        }
        let cluster = Arc::new_cyclic(|me| Cluster {
            me: me.clone(),
            client,
            settings,
            index,
            scopes,
            synced,
            reporter,
            changed,
            leading_until: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            election_turn: tokio::sync::Mutex::new(()),
            request_counter: AtomicU64::new(0),
            fresh: Default::default(),
            logs: Default::default(),
            counters: Default::default(),
        });
        tokio::spawn(controller::elect(cluster.clone()));
        tokio::spawn(controller::run(cluster.clone()));
        cluster
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        now_ms() < self.leading_until.load(Ordering::SeqCst)
    }

    /// Stops leading for good and gives the leader Lease back if this replica holds it, so
    /// another replica takes over at once instead of after the Lease's duration.
    pub async fn give_up_leadership(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _turn = self.election_turn.lock().await;
        let was_leading = self.is_leader();
        self.leading_until.store(0, Ordering::SeqCst);
        let election = &self.settings.election;
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &election.namespace);
        match controller::release(&leases, &election.name, &self.settings.identity).await {
            Ok(true) => log::info!("{} gave the leader Lease back", self.settings.identity),
            Ok(false) if was_leading => {
                log::info!("{} no longer held the leader Lease", self.settings.identity)
            }
            Ok(false) => {}
            Err(e) => log::warn!("cannot give the leader Lease back: {e}"),
        }
    }

    fn pending_deadline(&self) -> i64 {
        i64::try_from(self.settings.pending_deadline.as_secs()).unwrap_or(i64::MAX)
    }

    /// Every build in the caches, by (namespace, job), newest first.
    pub(crate) fn snapshot(&self) -> BTreeMap<(String, String), Vec<BuildRecord>> {
        self.records(|_, _| true)
    }

    /// The builds of jobs for which `wanted(namespace, job)` holds, by (namespace, job),
    /// newest first.
    fn records(
        &self,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> BTreeMap<(String, String), Vec<BuildRecord>> {
        let now = now();
        let reporting = self.reporter.is_some();
        let mut groups: BTreeMap<(String, String), Vec<BuildRecord>> = BTreeMap::new();
        for scope in &self.scopes {
            let mut pods_by_build: BTreeMap<(String, &str, &str), Vec<Arc<BuildPod>>> =
                BTreeMap::new();
            let pods = scope.pods.state();
            for pod in &pods {
                let (Some(job), Some(build)) =
                    (label(&**pod, keys::JOB), label(&**pod, keys::BUILD))
                else {
                    continue;
                };
                let namespace = pod.namespace().unwrap_or_default();
                if wanted(&namespace, job) {
                    pods_by_build
                        .entry((namespace, job, build))
                        .or_default()
                        .push(pod.clone());
                }
            }
            for job in scope.jobs.state() {
                let namespace = job.namespace().unwrap_or_default();
                let (Some(name), Some(build)) =
                    (label(&*job, keys::JOB), label(&*job, keys::BUILD))
                else {
                    continue;
                };
                if !wanted(&namespace, name) {
                    continue;
                }
                let pods = pods_by_build
                    .get(&(namespace.clone(), name, build))
                    .cloned()
                    .unwrap_or_default();
                let owned: Vec<BuildPod> = pods.iter().map(|p| (**p).clone()).collect();
                let Some(summary) =
                    observe::summarize(&job, &owned, now, self.pending_deadline(), reporting)
                else {
                    continue;
                };
                let name = name.to_owned();
                groups
                    .entry((namespace, name))
                    .or_default()
                    .push(BuildRecord {
                        job: job.clone(),
                        pods,
                        summary,
                    });
            }
        }
        for records in groups.values_mut() {
            records.sort_by_key(|r| std::cmp::Reverse(r.summary.number));
        }
        groups
    }

    /// The builds of job `name` in `namespace`, newest first.
    pub(crate) fn build_records(&self, namespace: &str, name: &str) -> Vec<BuildRecord> {
        let mut records = self
            .records(|ns, job| ns == namespace && job == name)
            .into_values()
            .next()
            .unwrap_or_default();
        let cached: std::collections::BTreeSet<String> =
            records.iter().map(|r| r.job.name_any()).collect();
        let mut fresh = self.fresh.lock().expect("the fresh lock");
        // Kept until the cache shows the Job (or for a bounded time: one deleted before
        // the cache saw it is gone from the API too).
        fresh.retain(|(ns, job_name), (_, at)| {
            at.elapsed() < FRESH_FOR && !(ns == namespace && cached.contains(job_name))
        });
        for ((ns, _), (job, _)) in fresh.iter() {
            if ns != namespace || label(&**job, keys::JOB) != Some(name) {
                continue;
            }
            let summary = observe::summarize(
                job,
                &[],
                now(),
                self.pending_deadline(),
                self.reporter.is_some(),
            );
            if let Some(summary) = summary {
                records.push(BuildRecord {
                    job: Arc::clone(job),
                    pods: Vec::new(),
                    summary,
                });
            }
        }
        drop(fresh);
        records.sort_by_key(|r| std::cmp::Reverse(r.summary.number));
        records
    }

    /// Keeps `job` readable until the cache shows it (see `fresh`).
    fn remember_fresh(&self, job: &BuildJob) {
        let key = (job.namespace().unwrap_or_default(), job.name_any());
        self.fresh
            .lock()
            .expect("the fresh lock")
            .insert(key, (Arc::new(job.clone()), std::time::Instant::now()));
    }

    /// Build `number` of job `name`: from the cache, else — a build another replica has
    /// just created, not yet in this one's cache — from the API.
    async fn find_build(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRecord> {
        let cached = self
            .build_records(namespace, name)
            .into_iter()
            .find(|r| r.summary.number == number);
        if cached.is_some() {
            return cached;
        }
        if !self
            .index
            .read()
            .expect("the index lock")
            .is_declared(namespace, name)
        {
            return None;
        }
        let job = Api::<BuildJob>::namespaced(self.client.clone(), namespace)
            .get_opt(&kubeci_render::build_name(name, number))
            .await
            .ok()??;
        if label(&job, keys::JOB) != Some(name) {
            return None;
        }
        self.remember_fresh(&job);
        self.build_records(namespace, name)
            .into_iter()
            .find(|r| r.summary.number == number)
    }

    /// The ledger Lease of a job, from the cache.
    pub(crate) fn cached_ledger(&self, namespace: &str, job: &str) -> Option<Arc<Lease>> {
        let name = ledger_name(job);
        self.scopes.iter().find_map(|scope| {
            scope
                .leases
                .state()
                .into_iter()
                .find(|l| l.namespace().as_deref() == Some(namespace) && l.name_any() == name)
        })
    }

    /// Every ledger Lease in the caches.
    pub(crate) fn cached_ledgers(&self) -> Vec<Arc<Lease>> {
        self.scopes
            .iter()
            .flat_map(|scope| scope.leases.state())
            .collect()
    }

    /// The valid job `name` in `namespace`, or why it cannot build.
    fn declared(&self, namespace: &str, name: &str) -> Result<Arc<LoadedJob>, TriggerError> {
        let index = self.index.read().expect("the index lock");
        if let Some(job) = index.find(namespace, name) {
            return Ok(job.clone());
        }
        Err(match index.find_any(namespace, name) {
            Some(invalid) => TriggerError::Invalid {
                namespace: namespace.into(),
                name: name.into(),
                errors: invalid
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            },
            None => TriggerError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            },
        })
    }

    /// Job `name` of `namespace` for the leader's pass: the valid declaration, if any, and
    /// whether any ConfigMap declares it at all (an invalid job keeps its builds).
    pub(crate) fn lookup(&self, namespace: &str, name: &str) -> (Option<Arc<LoadedJob>>, bool) {
        let index = self.index.read().expect("the index lock");
        (
            index.find(namespace, name).cloned(),
            index.is_declared(namespace, name),
        )
    }

    /// The valid jobs with a cron trigger: (namespace, name, job, its schedule's text).
    pub(crate) fn cron_jobs(&self) -> Vec<(String, String, String)> {
        let index = self.index.read().expect("the index lock");
        index
            .shared()
            .filter_map(|loaded| {
                let job = loaded.job.as_ref()?;
                let cron = job.triggers.as_ref()?.cron.clone()?;
                Some((loaded.namespace.clone(), job.name.clone(), cron))
            })
            .collect()
    }

    /// Creates the Job of build `request` of `loaded` (queued when the job is at its
    /// concurrency limit). A Job that exists already is the one wanted: a retried create is
    /// harmless.
    pub(crate) async fn create_build(
        &self,
        loaded: &LoadedJob,
        request: &BuildRequest,
        key: &str,
    ) -> Result<BuildJob, TriggerError> {
        let job = loaded.job.as_ref().expect("a declared job is valid");
        let mut rendered =
            kubeci_render::render(job, &JobOrigin::of(loaded), request, &self.settings.render)
                .map_err(|e| TriggerError::Invalid {
                    namespace: loaded.namespace.clone(),
                    name: job.name.clone(),
                    errors: e.to_string(),
                })?;
        // A job with a concurrency limit queues every build: the leader releases them in
        // order, so the limit holds however many replicas take requests at once.
        if job.max_concurrency.is_some() {
            if let Some(spec) = rendered.spec.as_mut() {
                spec.suspend = Some(true);
            }
        }
        rendered
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(keys::REQUEST_KEY.to_owned(), key.to_owned());
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &loaded.namespace);
        match create_strictly(&self.client, &jobs, &rendered).await {
            Ok(created) => Ok(created.into()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Api::<BuildJob>::namespaced(self.client.clone(), &loaded.namespace)
                    .get(&rendered.name_any())
                    .await
                    .map_err(|e| TriggerError::Backend(e.to_string()))
            }
            Err(e) => Err(TriggerError::Backend(e.to_string())),
        }
    }

    /// Stops a build: suspends its Job (Kubernetes deletes its pod) and records why and
    /// when on it.
    pub(crate) async fn stop(
        &self,
        namespace: &str,
        job_name: &str,
        annotations: serde_json::Value,
    ) -> Result<BuildJob, kube::Error> {
        let mut annotations = annotations;
        annotations[keys::FINISHED_AT] = jiff::Timestamp::now().to_string().into();
        let patch = serde_json::json!({
            "metadata": {"annotations": annotations},
            "spec": {"suspend": true},
        });
        Api::<BuildJob>::namespaced(self.client.clone(), namespace)
            .patch(job_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    /// A followed log of a build without a pod yet: it waits, checking the caches every
    /// 250 ms, until the build has a pod (then follows it) or ends.
    fn log_once_it_has_a_pod(&self, namespace: &str, name: &str, number: u64) -> LogStream {
        let me = self.me.clone();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let waited = futures_util::stream::once(async move {
            loop {
                let Some(cluster) = me.upgrade() else {
                    return futures_util::StreamExt::boxed(futures_util::stream::empty());
                };
                let record = cluster
                    .build_records(&namespace, &name)
                    .into_iter()
                    .find(|r| r.summary.number == number);
                match record {
                    Some(r) if r.pods.is_empty() && !r.summary.state.is_finished() => {}
                    Some(r) if !r.pods.is_empty() => {
                        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
                        return cluster.logs.follow(pods, &namespace, &r.pods[0].name_any());
                    }
                    _ => return futures_util::StreamExt::boxed(futures_util::stream::empty()),
                }
                drop(cluster);
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
        Box::pin(futures_util::StreamExt::flatten(waited))
    }

    fn view(&self, job: &BuildJob, pods: &[Arc<BuildPod>], summary: &BuildSummary) -> BuildView {
        let (state, message) = BuildView::describe(&summary.state);
        let annotations = job.annotations();
        let namespace = job.namespace().unwrap_or_default();
        let job_name = label(job, keys::JOB).unwrap_or_default();
        let declared_url = {
            let index = self.index.read().expect("the index lock");
            index
                .find(&namespace, job_name)
                .and_then(|j| j.job.as_ref()?.log_url.clone())
        };
        let template = declared_url.or_else(|| self.settings.log_url_template.clone());
        let log_url = template.map(|template| {
            let pod = pods.first().map(|p| p.name_any()).unwrap_or_default();
            let start = job
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let end = observe::finished_at(job)
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .map(|t| t.to_string())
                .unwrap_or_else(|| "now".into());
            let number = summary.number.to_string();
            log_url(
                &template,
                &[
                    ("namespace", &namespace),
                    ("pod", &pod),
                    ("job", job_name),
                    ("build", &number),
                    ("start", &start),
                    ("end", &end),
                ],
            )
        });
        BuildView {
            number: summary.number,
            name: job.name_any(),
            state,
            message,
            trigger: annotations.get(keys::TRIGGER).cloned(),
            requested_by: annotations.get(keys::REQUESTED_BY).cloned(),
            commit: annotations
                .get(keys::COMMIT)
                .cloned()
                .or_else(|| observe::checked_out_commit(pods.iter().map(|p| &**p))),
            pull_request: summary.pull_request,
            spec_hash: annotations.get(keys::SPEC_HASH).cloned(),
            chart_version: annotations.get(keys::CHART_VERSION).cloned(),
            reported: kubeci_engine::report::parse_reported(
                annotations.get(keys::REPORTED).map(String::as_str),
            )
            .into_iter()
            .map(|s| s.as_str())
            .collect(),
            log_url,
            created_at: kubeci_engine::api::timestamp(
                job.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            ),
            started_at: kubeci_engine::api::timestamp(
                job.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0.as_second()),
            ),
            finished_at: kubeci_engine::api::timestamp(summary.finished_at),
        }
    }

    fn fresh_view(&self, job: &BuildJob) -> BuildView {
        let reporting = self.reporter.is_some();
        let summary = observe::summarize(job, &[], now(), self.pending_deadline(), reporting)
            .unwrap_or(BuildSummary {
                number: 0,
                state: kubeci_engine::BuildState::Pending { message: None },
                pull_request: None,
                branch: None,
                fully_reported: true,
                finished_at: None,
                settled: false,
            });
        self.view(job, &[], &summary)
    }

    /// A key for a request that brought none: unique to this replica and moment.
    fn unique_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.settings.identity,
            jiff::Timestamp::now().as_nanosecond(),
            self.request_counter.fetch_add(1, Ordering::SeqCst)
        )
    }

    /// Starts build `build` of job `name`, once per `key`; a cron build also records its
    /// time (`cron_run`) in the same ledger write.
    pub(crate) async fn start_build(
        &self,
        namespace: &str,
        name: &str,
        build: BuildRequest,
        key: String,
        cron_run: Option<i64>,
    ) -> Result<Triggered, TriggerError> {
        let loaded = self.declared(namespace, name)?;
        let records = self.build_records(namespace, name);
        // A request seen before whose build exists: that build, whatever the ledger still
        // remembers (it keeps a bounded number of keys).
        if let Some(built) = records
            .iter()
            .find(|r| r.job.annotations().get(keys::REQUEST_KEY) == Some(&key))
        {
            return Ok(Triggered {
                build: self.view(&built.job, &built.pods, &built.summary),
                created: false,
            });
        }
        let present: Vec<BuildSummary> = records.into_iter().map(|r| r.summary).collect();
        let (allocation, to_create) =
            ledger::allocate(self, namespace, name, &key, &present, build, cron_run)
                .await
                .map_err(|e| TriggerError::Backend(e.to_string()))?;
        let job = match to_create {
            Some(request) => {
                let created = self.create_build(&loaded, &request, &key).await?;
                if allocation.fresh {
                    self.cancel_superseded(&loaded, &request).await;
                }
                created
            }
            // A retry of a request whose build exists (or existed).
            None => Api::<BuildJob>::namespaced(self.client.clone(), namespace)
                .get_opt(&kubeci_render::build_name(name, allocation.number))
                .await
                .map_err(|e| TriggerError::Backend(e.to_string()))?
                .ok_or(TriggerError::Gone {
                    number: allocation.number,
                })?,
        };
        self.remember_fresh(&job);
        self.changed.notify_one();
        Ok(Triggered {
            build: self.fresh_view(&job),
            created: allocation.fresh,
        })
    }

    /// Cancels the unfinished builds that build `number` supersedes.
    async fn cancel_superseded(&self, loaded: &LoadedJob, request: &BuildRequest) {
        let job = loaded.job.as_ref().expect("a declared job is valid");
        let Some(subject) = decide::Subject::of(request, job) else {
            return;
        };
        let present: Vec<BuildSummary> = self
            .build_records(&loaded.namespace, &job.name)
            .into_iter()
            .map(|r| r.summary)
            .collect();
        for number in decide::superseded_builds(&subject, request.number, &present) {
            let by = format!("kubeci (superseded by build {})", request.number);
            if let Err(e) = self.cancel(&loaded.namespace, &job.name, number, &by).await {
                log::warn!(
                    "cannot cancel superseded build {number} of {}/{}: {e}",
                    loaded.namespace,
                    job.name
                );
            }
        }
    }
}

impl Backend for Cluster {
    async fn stop(&self) {
        self.give_up_leadership().await;
    }

    fn ready(&self) -> bool {
        self.synced.iter().all(|f| f.load(Ordering::SeqCst))
    }

    fn jobs(&self) -> Vec<JobView> {
        let index = self.index.read().expect("the index lock");
        index.all().map(JobView::of).collect()
    }

    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>> {
        let declared = self
            .index
            .read()
            .expect("the index lock")
            .find_any(namespace, name)
            .is_some();
        let records = self.build_records(namespace, name);
        if !declared && records.is_empty() {
            return None;
        }
        Some(
            records
                .iter()
                .map(|r| self.view(&r.job, &r.pods, &r.summary))
                .collect(),
        )
    }

    async fn build(&self, namespace: &str, name: &str, number: u64) -> Option<BuildView> {
        let record = self.find_build(namespace, name, number).await?;
        Some(self.view(&record.job, &record.pods, &record.summary))
    }

    fn latest_builds(&self) -> std::collections::HashMap<(String, String), BuildView> {
        self.records(|_, _| true)
            .into_iter()
            .filter_map(|(key, records)| {
                let newest = records.first()?;
                Some((key, self.view(&newest.job, &newest.pods, &newest.summary)))
            })
            .collect()
    }

    async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
        let key = request.key.unwrap_or_else(|| self.unique_key());
        self.start_build(&request.namespace, &request.name, request.build, key, None)
            .await
    }

    async fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> Result<BuildView, CancelError> {
        let not_found = || CancelError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
            number,
        };
        let record = self
            .find_build(namespace, name, number)
            .await
            .ok_or_else(not_found)?;
        if record.summary.state.is_finished() {
            return Err(CancelError::Finished {
                namespace: namespace.into(),
                name: name.into(),
                number,
                state: record.summary.state.name(),
            });
        }
        let stopped = self
            .stop(
                namespace,
                &record.job.name_any(),
                serde_json::json!({ keys::CANCELLED_BY: by }),
            )
            .await
            .map_err(|e| match e {
                kube::Error::Api(status) if status.code == 404 => not_found(),
                e => CancelError::Backend(e.to_string()),
            })?;
        self.changed.notify_one();
        let summary = observe::summarize(
            &stopped,
            &[],
            now(),
            self.pending_deadline(),
            self.reporter.is_some(),
        )
        .unwrap_or_else(|| record.summary.clone());
        Ok(self.view(&stopped, &record.pods, &summary))
    }

    fn request(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRequest> {
        self.build_records(namespace, name)
            .into_iter()
            .find(|r| r.summary.number == number)
            .map(|r| kubeci_render::recorded_request(number, r.job.annotations()))
    }

    fn declaration(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.index
            .read()
            .expect("the index lock")
            .find_declared(namespace, name)
            .cloned()
    }

    fn metrics(&self) -> Vec<kubeci_engine::metrics::Family> {
        let builds: Vec<kubeci_engine::metrics::BuildFact> = self
            .records(|_, _| true)
            .into_iter()
            .flat_map(|((namespace, job), records)| {
                records
                    .into_iter()
                    .map(move |r| kubeci_engine::metrics::BuildFact {
                        namespace: namespace.clone(),
                        job: job.clone(),
                        state: r.summary.state.name(),
                        seconds: r
                            .job
                            .status
                            .as_ref()
                            .and_then(|s| s.start_time.as_ref())
                            .map(|t| t.0.as_second())
                            .zip(r.summary.finished_at)
                            .map(|(start, end)| (end - start).max(0) as f64),
                    })
            })
            .collect();
        let mut families = kubeci_engine::metrics::build_families(&builds);
        families.push(kubeci_engine::metrics::Family {
            samples: self
                .counters
                .samples("kubeci_reconcile_errors_total", &["action"]),
            ..kubeci_engine::metrics::Family::new(
                "kubeci_reconcile_errors_total",
                "Cluster writes of the leader's passes that failed (retried on the next pass).",
                kubeci_engine::metrics::Kind::Counter,
            )
        });
        families
    }

    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<kubeci_spec::Job>)> {
        self.index
            .read()
            .expect("the index lock")
            .specs(repositories)
    }

    async fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        follow: bool,
    ) -> Result<LogStream, LogError> {
        let record = self
            .find_build(namespace, name, number)
            .await
            .ok_or_else(|| {
                LogError::NotFound(format!("no build {number} of job {namespace}/{name}"))
            })?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match record.pods.first() {
            Some(pod) if follow => Ok(self.logs.follow(pods, namespace, &pod.name_any())),
            Some(pod) => Ok(logs::stream(pods, pod.name_any(), false)),
            None if follow && !record.summary.state.is_finished() => {
                // Queued, or its pod not created yet: follow from when it has one.
                Ok(self.log_once_it_has_a_pod(namespace, name, number))
            }
            None => Err(LogError::NotFound(format!(
                "build {number} of job {namespace}/{name} has no pod ({})",
                record.summary.state
            ))),
        }
    }
}

/// Creates `job` with `fieldValidation=Strict`: the API server refuses a Job with an unknown
/// or duplicate field instead of dropping it silently, so a rendering mistake fails the
/// request (kube's `PostParams` cannot say it; the request is built here).
async fn create_strictly(
    client: &kube::Client,
    jobs: &Api<Job>,
    job: &Job,
) -> Result<Job, kube::Error> {
    let body = serde_json::to_vec(job).map_err(kube::Error::SerdeError)?;
    let params = PostParams {
        field_manager: Some("kubeci".into()),
        ..PostParams::default()
    };
    let mut request = kube::core::Request::new(jobs.resource_url())
        .create(&params, body)
        .map_err(kube::Error::BuildRequest)?;
    let uri = format!("{}&fieldValidation=Strict", request.uri());
    *request.uri_mut() = uri.parse().expect("a URI with one more query parameter");
    request.extensions_mut().insert("create");
    client.request::<Job>(request).await
}
