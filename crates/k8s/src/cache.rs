//! What a replica knows of the cluster: the watched caches of build Jobs, their pods and
//! the job ledgers, the builds they make up (with the Jobs this replica just created, until
//! the caches show them), and lookups of the jobs declared.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::reflector::{reflector, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use kubeci_build::keys;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_engine::scheduler::ChangeLog;
use kubeci_engine::{observe, BuildSummary};
use kubeci_spec::{Catalogue, LoadedJob};
use tokio::sync::Notify;

use crate::lists::InitialLists;
use crate::newest::{Caches, NewestStates};
use crate::packed::{Changed, JobKey, Packed};
use crate::{label, ledger_name, now, Cluster};

/// The Job, Pod and ledger Lease caches of one watched scope (a namespace, or all).
pub(crate) struct Scope {
    pub(crate) jobs: Arc<Packed<BuildJob>>,
    pub(crate) pods: Arc<Packed<BuildPod>>,
    pub(crate) leases: Store<Lease>,
    pub(crate) newest: Arc<NewestStates>,
}

/// One build as the caches show it.
pub struct BuildRecord {
    pub job: Arc<BuildJob>,
    pub pods: Vec<Arc<BuildPod>>,
    pub summary: BuildSummary,
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

/// `duration` in whole seconds, as build times are kept.
pub(crate) fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Wakes the leader's pass, and says which jobs changed.
#[derive(Clone, Default)]
pub(crate) struct Wake {
    pub(crate) notify: Arc<Notify>,
    pub(crate) changes: Arc<ChangeLog>,
}

impl Wake {
    /// Anything may have changed (a declaration, a Namespace's rules).
    pub(crate) fn everything(&self) {
        self.changes.everything();
        self.notify.notify_one();
    }

    /// What a watch event of a cache indexed by job changed.
    fn mark(&self, changed: &Changed) {
        match changed {
            Changed::Nothing => {}
            Changed::All => self.changes.everything(),
            Changed::Jobs(jobs) => {
                for (namespace, job) in jobs {
                    self.changes.job(namespace, job);
                }
            }
        }
    }
}

/// What follows a cache's watch events, once the cache shows each.
pub(crate) type OnEvent<K> = Arc<dyn Fn(&watcher::Event<K>) + Send + Sync>;

/// Follows `api` into a kube reflector's cache (and `on_event`, if given); every change
/// wakes `changed`. Returns the cache and a flag set once its first complete list is in.
/// (The ledger Leases': one per job. The many build Jobs and pods are packed instead.)
pub(crate) fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    lists: &Arc<InitialLists>,
    changed: Arc<Notify>,
    on_event: Option<OnEvent<K>>,
) -> (Store<K>, Arc<AtomicBool>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = kube::runtime::reflector::store();
    let lists = lists.clone();
    tokio::spawn(async move {
        let config = lists.config(config).await;
        let events = watcher::watcher(api, config)
            .modify(|object| object.meta_mut().managed_fields = None)
            .backoff(WatchBackoff::new());
        reflector(writer, events)
            .for_each(move |event| {
                if let (Some(on_event), Ok(event)) = (&on_event, &event) {
                    on_event(event);
                }
                changed.notify_one();
                async {}
            })
            .await;
    });
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

/// The caches of build Jobs, their pods and the job ledgers of each watched scope (every
/// namespace of `namespaces`, or all), with their flags set once synced, and the newest
/// builds' states kept from them.
pub(crate) fn watch_builds(
    client: &kube::Client,
    namespaces: &[String],
    lists: &Arc<InitialLists>,
    wake: &Wake,
    synced: &mut Vec<Arc<AtomicBool>>,
    pending_deadline: i64,
) -> Vec<Scope> {
    let managed = format!("{}={}", keys::MANAGED_BY, keys::MANAGER);
    let mut scopes = Vec::new();
    let job_apis = crate::apis::<BuildJob>(client, namespaces);
    let pod_apis = crate::apis::<BuildPod>(client, namespaces);
    let lease_apis = crate::apis::<Lease>(client, namespaces);
    for ((jobs_api, pods_api), leases_api) in job_apis.into_iter().zip(pod_apis).zip(lease_apis) {
        let jobs = Arc::new(Packed::new(|_: &BuildJob| false));
        let pods = Arc::new(Packed::new(kubeci_engine::pod_hold::is_held));
        let newest = Arc::new(NewestStates::new(pending_deadline));
        let jobs_synced = follow_packed(
            jobs_api,
            watcher::Config::default().labels(&managed),
            lists,
            &jobs,
            &newest,
            wake,
        );
        let pods_synced = follow_packed(
            pods_api,
            watcher::Config::default().labels(keys::JOB),
            lists,
            &pods,
            &newest,
            wake,
        );
        newest.follow(Caches {
            jobs: jobs.clone(),
            pods: pods.clone(),
        });
        let (leases, leases_synced) = follow(
            leases_api,
            watcher::Config::default().labels(&format!("{managed},{}", keys::JOB)),
            lists,
            wake.notify.clone(),
            Some(ledger_changes(wake)),
        );
        synced.extend([jobs_synced, pods_synced, leases_synced]);
        scopes.push(Scope {
            jobs,
            pods,
            leases,
            newest,
        });
    }
    scopes
}

/// Follows `api` into the packed cache `cache`: each event is applied to it, tells the
/// leader's pass which jobs it changed, then works out the newest build state of those
/// jobs. Returns a flag set once its first complete list is in.
fn follow_packed<K>(
    api: Api<K>,
    config: watcher::Config,
    lists: &Arc<InitialLists>,
    cache: &Arc<Packed<K>>,
    newest: &Arc<NewestStates>,
    wake: &Wake,
) -> Arc<AtomicBool>
where
    K: kube::Resource + serde::Serialize + serde::de::DeserializeOwned + Clone,
    K: kubeci_build::record::protobuf::FromProtobuf + kubeci_build::record::protobuf::ToProtobuf,
    K: std::fmt::Debug + Send + Sync + 'static,
{
    let (cache, newest, wake) = (cache.clone(), newest.clone(), wake.clone());
    let lists = lists.clone();
    let synced = Arc::new(AtomicBool::new(false));
    let set = synced.clone();
    tokio::spawn(async move {
        // Streamed first lists come with protobuf (`crate::protowatch`); paged ones, from
        // API servers without WatchList, with kube's JSON watcher.
        let events = if lists.streamed().await {
            let url = api.resource_url().to_owned();
            let labels = config.label_selector.unwrap_or_default();
            crate::protowatch::watch(api.into_client(), url, labels).boxed()
        } else {
            watcher::watcher(api, config).boxed()
        };
        events
            .backoff(WatchBackoff::new())
            .for_each(move |event| {
                if let Ok(event) = event {
                    let changed = cache.apply(&event);
                    if matches!(event, watcher::Event::InitDone) {
                        set.store(true, Ordering::SeqCst);
                    }
                    wake.mark(&changed);
                    newest.after(changed);
                }
                wake.notify.notify_one();
                async {}
            })
            .await;
    });
    synced
}

/// Tells the leader's pass whose ledger a watch event changed.
fn ledger_changes(wake: &Wake) -> OnEvent<Lease> {
    let wake = wake.clone();
    Arc::new(move |event: &watcher::Event<Lease>| match event {
        watcher::Event::Apply(lease) | watcher::Event::Delete(lease) => {
            if let Some(job) = label(lease, keys::JOB) {
                wake.changes
                    .job(&lease.namespace().unwrap_or_default(), job);
            }
        }
        watcher::Event::InitDone => wake.changes.everything(),
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    })
}

impl Cluster {
    pub(crate) fn pending_deadline(&self) -> i64 {
        seconds(self.settings.pending_deadline)
    }

    /// The jobs with cached builds: those of `only`, or every one.
    pub(crate) fn jobs_with_builds(&self, only: Option<&BTreeSet<JobKey>>) -> BTreeSet<JobKey> {
        match only {
            Some(only) => only.clone(),
            None => self.scopes.iter().flat_map(|s| s.jobs.jobs()).collect(),
        }
    }

    /// The cached builds of job `name` in `namespace`, newest first. The caches are packed
    /// (`crate::packed`): a pass over every job reads them one job at a time, so it never
    /// holds every build read back at once.
    pub(crate) fn cached_records(&self, namespace: &str, name: &str) -> Vec<BuildRecord> {
        let mut records = self.indexed_records(namespace, name);
        records.sort_by_key(|r| std::cmp::Reverse(r.summary.number));
        records
    }

    /// One build from its Job and pods, if the Job is a build's.
    fn record(
        &self,
        job: Arc<BuildJob>,
        pods: Vec<Arc<BuildPod>>,
        now: i64,
    ) -> Option<BuildRecord> {
        let summary = observe::summarize(
            &job,
            &pods,
            now,
            self.pending_deadline(),
            self.reporter.is_some(),
        )?;
        Some(BuildRecord { job, pods, summary })
    }

    /// The cached builds of job `name` in `namespace`, found through the caches' indexes
    /// by job (no scan of the other jobs' builds).
    fn indexed_records(&self, namespace: &str, name: &str) -> Vec<BuildRecord> {
        let now = now();
        let mut records = Vec::new();
        for scope in &self.scopes {
            let mut pods_by_build: BTreeMap<String, Vec<Arc<BuildPod>>> = BTreeMap::new();
            for pod in scope.pods.of_job(namespace, name) {
                if label(&*pod, keys::JOB) != Some(name) {
                    continue;
                }
                if let Some(build) = label(&*pod, keys::BUILD) {
                    pods_by_build.entry(build.to_owned()).or_default().push(pod);
                }
            }
            for job in scope.jobs.of_job(namespace, name) {
                if label(&*job, keys::JOB) != Some(name) {
                    continue;
                }
                let pods = label(&*job, keys::BUILD)
                    .and_then(|build| pods_by_build.get(build))
                    .cloned()
                    .unwrap_or_default();
                records.extend(self.record(job, pods, now));
            }
        }
        records
    }

    /// The builds of job `name` in `namespace`, newest first.
    pub(crate) fn build_records(&self, namespace: &str, name: &str) -> Vec<BuildRecord> {
        let mut records = self.indexed_records(namespace, name);
        let cached: std::collections::BTreeSet<String> =
            records.iter().map(|r| r.job.name_any()).collect();
        let fresh = self.fresh.lock().expect("the fresh lock").of(
            namespace,
            name,
            &cached,
            std::time::Instant::now(),
        );
        let now = now();
        for job in fresh {
            records.extend(self.record(job, Vec::new(), now));
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.summary.number));
        records
    }

    /// Keeps `job` readable until the cache shows it (see `fresh`).
    pub(crate) fn remember_fresh(&self, job: &BuildJob) {
        let Some(job_label) = label(job, keys::JOB) else {
            return;
        };
        let key = (job.namespace().unwrap_or_default(), job_label.to_owned());
        self.fresh.lock().expect("the fresh lock").remember(
            key,
            job.name_any(),
            Arc::new(job.clone()),
            std::time::Instant::now(),
        );
    }

    /// Build `number` of job `name`: from the cache, else — a build another replica has
    /// just created, not yet in this one's cache — from the API.
    pub(crate) async fn cached_or_read(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> Option<BuildRecord> {
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
            .get_opt(&kubeci_build::build_name(name, number))
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

    /// Job `name` of `namespace`, from the cache (one lookup, no scan).
    pub(crate) fn cached_job(&self, namespace: &str, name: &str) -> Option<Arc<BuildJob>> {
        self.scopes
            .iter()
            .find_map(|scope| scope.jobs.get(namespace, name))
    }

    /// The ledger Lease of a job, from the cache.
    pub(crate) fn cached_ledger(&self, namespace: &str, job: &str) -> Option<Arc<Lease>> {
        let key = ObjectRef::new(&ledger_name(job)).within(namespace);
        self.scopes.iter().find_map(|scope| scope.leases.get(&key))
    }

    /// Reads job `job`'s ledger Lease from the caches when called: a ledger write's first
    /// try ([`crate::ledger::update`]).
    pub(crate) fn ledger_cache(&self, namespace: &str, job: &str) -> crate::ledger::CachedLedger {
        let stores: Vec<Store<Lease>> = self.scopes.iter().map(|s| s.leases.clone()).collect();
        let key = ObjectRef::new(&ledger_name(job)).within(namespace);
        Box::new(move || stores.iter().find_map(|store| store.get(&key)))
    }

    /// The ledger Leases in the caches: those of the jobs of `only`, or every one.
    pub(crate) fn cached_ledgers(&self, only: Option<&BTreeSet<JobKey>>) -> Vec<Arc<Lease>> {
        match only {
            None => self
                .scopes
                .iter()
                .flat_map(|scope| scope.leases.state())
                .collect(),
            Some(only) => only
                .iter()
                .filter_map(|(namespace, job)| self.cached_ledger(namespace, job))
                .collect(),
        }
    }

    /// Job `name` of `namespace` for the leader's pass: the valid declaration, if any, and
    /// whether any ConfigMap declares it at all (an invalid job keeps its builds).
    pub(crate) fn lookup(&self, namespace: &str, name: &str) -> (Option<Arc<LoadedJob>>, bool) {
        let index = self.index.read().expect("the index lock");
        (
            index.find(namespace, name),
            index.is_declared(namespace, name),
        )
    }
}
