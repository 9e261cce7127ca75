//! The writes of builds: creating a build's Job (once per request key, through the job's
//! ledger), stopping one, cancelling the builds a new one supersedes, and the views the
//! API shows of them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_build::{keys, BuildRef, BuildRequest};
use kubeci_engine::api::{BuildFacts, LogStream, TriggerError};
use kubeci_engine::service::{Created, NewBuild};
use kubeci_engine::{observe, BuildSummary};
use kubeci_render::JobOrigin;
use kubeci_spec::LoadedJob;

use crate::{label, ledger, now, BuildRecord, Cluster, ClusterError};

impl Cluster {
    /// Creates the Job of build `request` of `loaded` (queued when the job is at its
    /// concurrency limit). A Job that exists already is the one wanted: a retried create is
    /// harmless.
    /// `check_name` is recorded on it (`keys::CHECK_NAME`): the name its reports go under
    /// should its job turn invalid before it ends.
    pub(crate) async fn create_build(
        &self,
        loaded: &LoadedJob,
        request: &BuildRequest,
        key: &str,
        check_name: Option<&str>,
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
        let annotations = rendered
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        annotations.insert(keys::REQUEST_KEY.to_owned(), key.to_owned());
        if let Some(name) = check_name {
            annotations.insert(keys::CHECK_NAME.to_owned(), name.to_owned());
        }
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &loaded.namespace);
        match create_strictly(&self.client, &jobs, &rendered).await {
            Ok(created) => Ok(created.into()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Api::<BuildJob>::namespaced(self.client.clone(), &loaded.namespace)
                    .get(&rendered.name_any())
                    .await
                    .map_err(|source| ClusterError::ReadJob {
                        namespace: loaded.namespace.clone(),
                        name: rendered.name_any(),
                        source,
                    })
                    .map_err(|e| TriggerError::Backend(e.into()))
            }
            Err(source) => Err(TriggerError::Backend(
                ClusterError::CreateJob {
                    namespace: loaded.namespace.clone(),
                    name: rendered.name_any(),
                    source,
                }
                .into(),
            )),
        }
    }

    /// Stops a build: suspends its Job (Kubernetes deletes its pod) and records why and
    /// when on it.
    pub(crate) async fn stop_job(
        &self,
        namespace: &str,
        job_name: &str,
        annotations: serde_json::Value,
    ) -> Result<BuildJob, ClusterError> {
        let mut annotations = annotations;
        annotations[keys::FINISHED_AT] = jiff::Timestamp::now().to_string().into();
        let patch = serde_json::json!({
            "metadata": {"annotations": annotations},
            "spec": {"suspend": true},
        });
        Api::<BuildJob>::namespaced(self.client.clone(), namespace)
            .patch(job_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| ClusterError::WriteJob {
                what: "stop",
                namespace: namespace.to_owned(),
                name: job_name.to_owned(),
                source,
            })
    }

    /// A followed log of a build without a pod yet: it waits, checking the caches every
    /// 250 ms, until the build has a pod (then follows it) or ends.
    pub(crate) fn log_once_it_has_a_pod(&self, build: BuildRef<'_>, timestamps: bool) -> LogStream {
        let me = self.me.clone();
        let (namespace, name, number) = (
            build.namespace.to_owned(),
            build.job.to_owned(),
            build.number,
        );
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
                        return cluster.logs.follow(
                            pods,
                            &namespace,
                            &r.pods[0].name_any(),
                            timestamps,
                        );
                    }
                    _ => return futures_util::StreamExt::boxed(futures_util::stream::empty()),
                }
                drop(cluster);
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
        Box::pin(futures_util::StreamExt::flatten(waited))
    }

    /// What the API, the metrics and the reports know of build `record`.
    pub(crate) fn facts<'a>(&self, record: &'a BuildRecord) -> BuildFacts<'a> {
        let (job, pods, summary) = (&record.job, &record.pods, &record.summary);
        let annotations = job.annotations();
        let recorded = |key: &str| annotations.get(key).cloned();
        BuildFacts {
            namespace: job.metadata.namespace.as_deref().unwrap_or_default(),
            job: label(&**job, keys::JOB).unwrap_or_default(),
            number: summary.number,
            name: job.name_any(),
            state: &summary.state,
            trigger: recorded(keys::TRIGGER),
            requested_by: recorded(keys::REQUESTED_BY),
            commit: recorded(keys::COMMIT)
                .or_else(|| observe::checked_out_commit(pods.iter().map(|p| &**p))),
            pull_request: summary.pull_request,
            spec_hash: recorded(keys::SPEC_HASH),
            chart_version: recorded(keys::CHART_VERSION),
            reported: kubeci_engine::report::parse_reported(
                annotations.get(keys::REPORTED).map(String::as_str),
            ),
            pod: pods.first().map(|p| p.name_any()),
            created_at: job
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            started_at: job
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_second()),
            finished_at: summary.finished_at,
            git_url: recorded(keys::GIT_URL),
            check_name: recorded(keys::CHECK_NAME),
        }
    }

    /// A build from its Job alone (one the API just answered with), with `pods`.
    pub(crate) fn record_of(&self, job: BuildJob, pods: Vec<Arc<BuildPod>>) -> BuildRecord {
        let reporting = self.reporter.is_some();
        let summary = observe::summarize(&job, &pods, now(), self.pending_deadline(), reporting)
            .unwrap_or(BuildSummary {
                number: 0,
                state: kubeci_engine::BuildState::Pending { message: None },
                pull_request: None,
                branch: None,
                fully_reported: true,
                finished_at: None,
                settled: false,
                archived: Default::default(),
            });
        BuildRecord {
            job: Arc::new(job),
            pods,
            summary,
        }
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

    /// Creates build `new` once per key: a key seen before finds its build; else the
    /// request is numbered in the job's ledger (compare-and-swap; a cron build also
    /// records its time there, in the same write) and its Job created.
    pub(crate) async fn create_once(
        &self,
        new: NewBuild<'_>,
    ) -> Result<Created<BuildRecord>, TriggerError> {
        let namespace = new.loaded.namespace.as_str();
        let name = new.loaded.job.as_ref().map_or("", |j| j.name.as_str());
        let key = new.key.unwrap_or_else(|| self.unique_key());
        let records = self.build_records(namespace, name);
        // A request seen before whose build exists: that build, whatever the ledger still
        // remembers (it keeps a bounded number of keys).
        let mut present = Vec::with_capacity(records.len());
        for record in records {
            if record.job.annotations().get(keys::REQUEST_KEY) == Some(&key) {
                return Ok(Created {
                    build: record,
                    created: false,
                });
            }
            present.push(record.summary);
        }
        let (allocation, to_create) = ledger::allocate(
            &self.ledgers,
            &self.client,
            self.ledger_cache(namespace, name),
            kubeci_build::JobRef {
                namespace,
                job: name,
            },
            &key,
            present,
            ledger::Asked {
                build: new.request,
                cron_run: new.cron_run,
                floor: new.floor,
            },
        )
        .await
        .map_err(|source| ClusterError::Ledger {
            namespace: namespace.to_owned(),
            job: name.to_owned(),
            source,
        })
        .map_err(|e| TriggerError::Backend(e.into()))?;
        let check_name = new.check_name.as_deref();
        let job = match to_create {
            Some(request) => {
                self.create_build(new.loaded, &request, &key, check_name)
                    .await?
            }
            // A retry of a request whose build exists (or existed).
            None => Api::<BuildJob>::namespaced(self.client.clone(), namespace)
                .get_opt(&kubeci_build::build_name(name, allocation.number))
                .await
                .map_err(|source| ClusterError::ReadJob {
                    namespace: namespace.to_owned(),
                    name: kubeci_build::build_name(name, allocation.number),
                    source,
                })
                .map_err(|e| TriggerError::Backend(e.into()))?
                .ok_or(TriggerError::Gone {
                    number: allocation.number,
                })?,
        };
        self.remember_fresh(&job);
        self.changed.notify_one();
        Ok(Created {
            build: self.record_of(job, Vec::new()),
            created: allocation.fresh,
        })
    }
}

/// Creates `job` with `fieldValidation=Strict`: the API server refuses a Job with an unknown
/// or duplicate field instead of dropping it silently, so a rendering mistake fails the
/// request (kube's `PostParams` cannot say it; the request is built here).
pub(crate) async fn create_strictly(
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
