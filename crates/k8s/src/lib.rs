//! The Kubernetes backend: job discovery from ConfigMaps, builds as `batch/v1` Jobs.
//!
//! Everything lives in the cluster: jobs are ConfigMaps, builds are Jobs (their labels,
//! annotations and status are the build record), build numbers are kept in a Lease per job
//! updated with optimistic concurrency. A restarted kubeci rebuilds its view from watches.

pub mod index;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{reflector, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use kubeci_engine::api::{Backend, BuildView, JobView, TriggerError};
use kubeci_engine::{decide, observe, BuildState, BuildSummary};
use kubeci_render::{keys, BuildRequest, JobOrigin, RenderConfig};
use kubeci_spec::{ConfigMapData, LoadOptions, Severity};

pub use index::JobIndex;

/// The annotation of a job's Lease that holds its last build number.
pub const LAST_BUILD_NUMBER: &str = "kubeci.io/last-build-number";

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
    /// This replica's name, for the Events it records.
    pub identity: String,
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
        }
    }
}

/// The Job and Pod caches of one watched scope (a namespace, or all).
struct Scope {
    jobs: Store<Job>,
    pods: Store<Pod>,
}

/// The cluster as kubeci sees it.
pub struct Cluster {
    client: Client,
    settings: Settings,
    index: Arc<RwLock<JobIndex>>,
    scopes: Vec<Scope>,
    synced: Vec<Arc<AtomicBool>>,
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

/// A flag set once `store` has its first complete list.
fn ready_flag<K: kube::Resource + Clone + Send + Sync + 'static>(store: Store<K>) -> Arc<AtomicBool>
where
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            set.store(true, Ordering::SeqCst);
        }
    });
    flag
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Cluster {
    /// Starts the watches; [`Cluster::ready`] tells when their first lists are in.
    pub fn start(client: Client, settings: Settings) -> Arc<Cluster> {
        let index = Arc::new(RwLock::new(JobIndex::default()));
        let mut synced = Vec::new();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "kubeci".into(),
                instance: Some(settings.identity.clone()),
            },
        );
        for api in apis::<ConfigMap>(&client, &settings.namespaces) {
            let flag = Arc::new(AtomicBool::new(false));
            synced.push(flag.clone());
            let config = watcher::Config::default().labels(&settings.selector);
            tokio::spawn(discover(
                api,
                config,
                index.clone(),
                settings.load.clone(),
                recorder.clone(),
                flag,
            ));
        }
        let mut scopes = Vec::new();
        for (jobs_api, pods_api) in apis::<Job>(&client, &settings.namespaces)
            .into_iter()
            .zip(apis::<Pod>(&client, &settings.namespaces))
        {
            let (jobs, jobs_writer) = kube::runtime::reflector::store();
            let (pods, pods_writer) = kube::runtime::reflector::store();
            let job_config = watcher::Config::default().labels(&format!(
                "{}={}",
                keys::MANAGED_BY,
                keys::MANAGER
            ));
            let pod_config = watcher::Config::default().labels(keys::JOB);
            tokio::spawn(
                reflector(
                    jobs_writer,
                    watcher::watcher(jobs_api, job_config).default_backoff(),
                )
                .for_each(|_| async {}),
            );
            tokio::spawn(
                reflector(
                    pods_writer,
                    watcher::watcher(pods_api, pod_config).default_backoff(),
                )
                .for_each(|_| async {}),
            );
            synced.push(ready_flag(jobs.clone()));
            synced.push(ready_flag(pods.clone()));
            scopes.push(Scope { jobs, pods });
        }
        Arc::new(Cluster {
            client,
            settings,
            index,
            scopes,
            synced,
        })
    }

    /// The builds of job `name` in `namespace`, from the caches.
    fn build_records(&self, namespace: &str, name: &str) -> Vec<(Arc<Job>, BuildSummary)> {
        let now = now();
        let deadline = i64::try_from(self.settings.pending_deadline.as_secs()).unwrap_or(i64::MAX);
        let mut records = Vec::new();
        for scope in &self.scopes {
            for job in scope.jobs.state() {
                let labels = job.labels();
                if job.namespace().as_deref() != Some(namespace)
                    || labels.get(keys::JOB).map(String::as_str) != Some(name)
                {
                    continue;
                }
                let Some(number) = labels.get(keys::BUILD).and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                let pods: Vec<Pod> = scope
                    .pods
                    .state()
                    .iter()
                    .filter(|p| {
                        p.namespace().as_deref() == Some(namespace)
                            && p.labels().get(keys::JOB).map(String::as_str) == Some(name)
                            && p.labels().get(keys::BUILD) == labels.get(keys::BUILD)
                    })
                    .map(|p| (**p).clone())
                    .collect();
                let state = observe::build_state(&job, &pods, now, deadline);
                let annotations = job.annotations();
                let reported = kubeci_engine::report::parse_reported(
                    annotations.get(keys::REPORTED).map(String::as_str),
                );
                let summary = BuildSummary {
                    number,
                    pull_request: annotations.get(keys::PR).and_then(|p| p.parse().ok()),
                    branch: annotations.get(keys::BRANCH).cloned(),
                    fully_reported: reported.iter().any(|r| r.is_final()) || !state.is_finished(),
                    finished_at: None,
                    state,
                };
                records.push((job, summary));
            }
        }
        records.sort_by_key(|(_, s)| std::cmp::Reverse(s.number));
        records
    }

    /// Takes the next build number of a job, counting in its Lease with optimistic
    /// concurrency: concurrent replicas never get the same number.
    async fn allocate_number(
        &self,
        namespace: &str,
        job: &str,
        present: &[BuildSummary],
    ) -> Result<u64, kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let name = format!("kubeci-job-{job}");
        loop {
            match leases.get_opt(&name).await? {
                None => {
                    let number = decide::next_build_number(None, present);
                    let lease: Lease = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": name, "labels": {keys::MANAGED_BY: keys::MANAGER, keys::JOB: job}, "annotations": {LAST_BUILD_NUMBER: number.to_string()}},
                    }))
                    .expect("a valid Lease");
                    match leases.create(&PostParams::default(), &lease).await {
                        Ok(_) => return Ok(number),
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(mut lease) => {
                    let counter = lease
                        .annotations()
                        .get(LAST_BUILD_NUMBER)
                        .and_then(|n| n.parse().ok());
                    let number = decide::next_build_number(counter, present);
                    lease
                        .annotations_mut()
                        .insert(LAST_BUILD_NUMBER.into(), number.to_string());
                    match leases.replace(&name, &PostParams::default(), &lease).await {
                        Ok(_) => return Ok(number),
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn view(job: &Job, summary: &BuildSummary) -> BuildView {
        let (state, message) = BuildView::describe(&summary.state);
        let annotations = job.annotations();
        BuildView {
            number: summary.number,
            name: job.name_any(),
            state,
            message,
            trigger: annotations.get(keys::TRIGGER).cloned(),
            commit: annotations.get(keys::COMMIT).cloned(),
            spec_hash: annotations.get(keys::SPEC_HASH).cloned(),
        }
    }
}

impl Backend for Cluster {
    fn ready(&self) -> bool {
        self.synced.iter().all(|f| f.load(Ordering::SeqCst))
    }

    fn jobs(&self) -> Vec<JobView> {
        let index = self.index.read().expect("the index lock");
        index
            .all()
            .map(|loaded| {
                let job = loaded.job.as_ref();
                JobView {
                    namespace: loaded.namespace.clone(),
                    name: loaded.name.clone(),
                    configmap: loaded.configmap.as_ref().map(ToString::to_string),
                    valid: job.is_some(),
                    errors: loaded
                        .diagnostics
                        .iter()
                        .filter(|d| d.severity == Severity::Error)
                        .map(ToString::to_string)
                        .collect(),
                    git_url: job.map(|j| j.git.url.clone()),
                    branch: job.and_then(|j| j.git.branch.clone()),
                    chart_version: loaded.chart_version.clone(),
                    spec_hash: loaded.spec_hash.clone(),
                }
            })
            .collect()
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
                .map(|(job, summary)| Cluster::view(job, summary))
                .collect(),
        )
    }

    async fn trigger(
        &self,
        namespace: &str,
        name: &str,
        requested_by: Option<String>,
    ) -> Result<BuildView, TriggerError> {
        let loaded = {
            let index = self.index.read().expect("the index lock");
            match index.find(namespace, name) {
                Some(job) => job.clone(),
                None => {
                    return Err(match index.find_any(namespace, name) {
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
            }
        };
        let present: Vec<BuildSummary> = self
            .build_records(namespace, name)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let number = self
            .allocate_number(namespace, name, &present)
            .await
            .map_err(|e| TriggerError::Backend(e.to_string()))?;
        let request = BuildRequest {
            requested_by,
            ..BuildRequest::manual(number)
        };
        let job = loaded.job.as_ref().expect("a found job is valid");
        let rendered = kubeci_render::render(
            job,
            &JobOrigin::of(&loaded),
            &request,
            &self.settings.render,
        )
        .map_err(|e| TriggerError::Backend(e.to_string()))?;
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let created = match jobs.create(&PostParams::default(), &rendered).await {
            Ok(created) => created,
            // A retried create of the same build: it exists, which is all that was wanted.
            Err(kube::Error::Api(status)) if status.code == 409 => jobs
                .get(&rendered.name_any())
                .await
                .map_err(|e| TriggerError::Backend(e.to_string()))?,
            Err(e) => return Err(TriggerError::Backend(e.to_string())),
        };
        let summary = BuildSummary {
            number,
            state: BuildState::Pending { message: None },
            pull_request: None,
            branch: job.git.branch.clone(),
            fully_reported: true,
            finished_at: None,
        };
        Ok(Cluster::view(&created, &summary))
    }
}

/// Follows job ConfigMaps into the index; invalid ones get a Warning Event. A relist
/// (after 410 Gone) drops the ConfigMaps deleted while the watch was down.
async fn discover(
    api: Api<ConfigMap>,
    config: watcher::Config,
    index: Arc<RwLock<JobIndex>>,
    options: LoadOptions,
    recorder: Recorder,
    synced: Arc<AtomicBool>,
) {
    let mut listed: Option<Vec<index::ConfigMapKey>> = None;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else { continue };
        let cm = match event {
            Event::Init => {
                listed = Some(Vec::new());
                continue;
            }
            Event::InitDone => {
                if let Some(present) = listed.take() {
                    index.write().expect("the index lock").retain(&present);
                }
                synced.store(true, Ordering::SeqCst);
                continue;
            }
            Event::Delete(cm) => {
                index
                    .write()
                    .expect("the index lock")
                    .remove(&cm.namespace().unwrap_or_default(), &cm.name_any());
                continue;
            }
            Event::InitApply(cm) | Event::Apply(cm) => cm,
        };
        let namespace = cm.namespace().unwrap_or_default();
        let name = cm.name_any();
        if let Some(present) = listed.as_mut() {
            present.push(index::ConfigMapKey {
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let labels = cm.metadata.labels.as_ref().unwrap_or(&empty);
        let change = index.write().expect("the index lock").upsert(
            ConfigMapData {
                namespace: &namespace,
                name: &name,
                labels,
                data,
            },
            cm.resource_version().as_deref().unwrap_or(""),
            &options,
        );
        if change == (index::Change::Updated { errors: true }) {
            report_invalid(&index, &recorder, &cm, &namespace, &name).await;
        }
    }
}

async fn report_invalid(
    index: &Arc<RwLock<JobIndex>>,
    recorder: &Recorder,
    cm: &ConfigMap,
    namespace: &str,
    name: &str,
) {
    let message: String = {
        let index = index.read().expect("the index lock");
        let found = index
            .all()
            .find(|j| {
                j.configmap
                    .as_ref()
                    .is_some_and(|c| c.namespace == namespace && c.name == name)
            })
            .map(|j| {
                j.diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
        found.unwrap_or_default()
    };
    eprintln!("kubeci: ConfigMap {namespace}/{name} has an invalid job: {message}");
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: cm.uid(),
        ..ObjectReference::default()
    };
    let note: String = message.chars().take(1000).collect();
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: "InvalidJob".into(),
        note: Some(note),
        action: "Validate".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        eprintln!("kubeci: cannot record an Event on ConfigMap {namespace}/{name}: {e}");
    }
}
