//! The Kubernetes engine's write path to the archive (issue 29), in-process
//! (`kubeci_k8s::Cluster` as kubeci's ServiceAccount through the proxy): each build pod
//! held by kubeci's finalizer until its build is archived whole, retention deleting a Job
//! only then, a pod deleted by an administrator mid-run kept until its log is archived, a
//! Job deleted mid-run archived from its pod, and a store that is down for a whole build.
//! On the fake API server with an archive in memory; on the real control plane with a
//! real S3 server (versitygw).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::TestCluster;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kubeci_archive::Archive;
use kubeci_build::{BuildRef, BuildRequest};
use kubeci_engine::api::{Backend, TriggerRequest};
use kubeci_engine::archive::{ArchivedBuild, BuildArchive};
use kubeci_k8s::Cluster;
use kubeci_testkit::S3Server;

/// The archive a scenario's kubeci writes: in memory on the fake API server, a real S3
/// server (kept while the scenario runs) on a real cluster.
struct Store {
    archive: Arc<Archive>,
    /// Runs while the scenario does (stopped when dropped).
    _s3: Option<S3Server>,
}

fn store_for(cluster: &TestCluster) -> Store {
    if !cluster.is_real() {
        return Store {
            archive: Arc::new(Archive::in_memory()),
            _s3: None,
        };
    }
    s3_store()
}

fn s3_store() -> Store {
    let s3 = S3Server::start();
    let archive = Archive::open_with_env(&s3.url().parse().unwrap(), &s3.env()).unwrap();
    Store {
        archive: Arc::new(archive),
        _s3: Some(s3),
    }
}

/// kubeci's Kubernetes engine in this process, on `cluster`, archiving to `archive`.
async fn kubeci(cluster: &TestCluster, archive: Arc<Archive>) -> Arc<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    cluster.proxy.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let ns = cluster.namespace.clone();
    let archive: Arc<dyn BuildArchive> = archive;
    let settings = kubeci_k8s::Settings {
        namespaces: vec![ns.clone()],
        load: kubeci_spec::LoadOptions {
            builds_run: kubeci_spec::BuildsRun::InACluster,
            ..Default::default()
        },
        election: kubeci_k8s::Election {
            namespace: ns,
            name: "kubeci-leader".into(),
            lease_duration: Duration::from_secs(2),
        },
        archiving: kubeci_engine::archive::Archiving {
            archive: Some(archive),
            ..Default::default()
        },
        ..kubeci_k8s::Settings::default()
    };
    let backend = Cluster::start(kube::Client::try_from(config).unwrap(), settings, None);
    cluster
        .until("kubeci to be ready and to lead", async || {
            backend.ready() && backend.is_leader()
        })
        .await;
    backend
}

async fn trigger(backend: &Cluster, ns: &str, job: &str) -> u64 {
    let request = TriggerRequest {
        namespace: ns.into(),
        name: job.into(),
        build: BuildRequest::manual(0),
        key: None,
    };
    backend.trigger(request).await.unwrap().build.number
}

fn build<'a>(cluster: &'a TestCluster, job: &'a str, number: u64) -> BuildRef<'a> {
    BuildRef {
        namespace: &cluster.namespace,
        job,
        number,
    }
}

/// The build's record in the archive, once it is complete.
async fn complete_record(
    cluster: &TestCluster,
    archive: &Archive,
    at: BuildRef<'_>,
) -> ArchivedBuild {
    let mut found = None;
    cluster
        .until(&format!("{at} to be archived whole"), async || {
            found = BuildArchive::record(archive, at).await.ok().flatten();
            found.as_ref().is_some_and(|r| r.complete)
        })
        .await;
    found.unwrap()
}

/// A step's archived log, its lines joined.
async fn archived_log(archive: &Archive, at: BuildRef<'_>, step: &str) -> String {
    let mut lines = BuildArchive::step_log(archive, at, step)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {step} log archived for {at}"));
    let mut text = String::new();
    while let Some(line) = lines.next().await {
        text.push_str(&String::from_utf8_lossy(&line.unwrap().text));
        text.push('\n');
    }
    text
}

fn finalizers(pod: &Pod) -> Vec<String> {
    pod.metadata.finalizers.clone().unwrap_or_default()
}

fn held(pods: &[Pod]) -> bool {
    pods.iter()
        .any(|p| finalizers(p).iter().any(|f| f == "kubeci.io/archive"))
}

/// Retention (keep 1) deletes build 1's Job once a newer build ended — and only once
/// build 1 is archived whole: its record says it succeeded, its log is there with each
/// step, and no pod of it is left held.
async fn retention_deletes_a_job_only_once_its_build_is_archived_whole(cluster: TestCluster) {
    let store = store_for(&cluster);
    let yaml = cluster.job_yaml(
        "kept",
        "echo \"hello from build $BUILD_NUMBER\"",
        "    retention:\n      keep: 1\n",
    );
    cluster.apply("kept", &yaml).await;
    let backend = kubeci(&cluster, store.archive.clone()).await;
    let ns = cluster.namespace.clone();
    cluster
        .until("the job to be read", async || backend.jobs().len() == 1)
        .await;
    assert_eq!(trigger(&backend, &ns, "kept").await, 1);
    let first = complete_record(&cluster, &store.archive, build(&cluster, "kept", 1)).await;
    assert_eq!(
        first.build.state.phase,
        kubeci_engine::build::Phase::Succeeded
    );
    let steps: Vec<&str> = first.log.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["clone", "build"]);
    assert!(
        first.log.iter().all(|s| s.incomplete.is_none()),
        "{first:?}"
    );
    let log = archived_log(&store.archive, build(&cluster, "kept", 1), "build").await;
    assert!(
        log.starts_with("==> build: container started\n") && log.contains("hello from build 1\n"),
        "{log}"
    );
    cluster
        .until("build 1's Job to be marked archived", async || {
            let job = cluster.job("kept-1").await;
            job.and_then(|j| j.metadata.annotations).is_some_and(|a| {
                a.get("kubeci.io/archived").map(String::as_str) == Some("complete")
            })
        })
        .await;
    cluster
        .until("build 1's pod to be released", async || {
            !held(&cluster.pods("kept", 1).await)
        })
        .await;

    assert_eq!(trigger(&backend, &ns, "kept").await, 2);
    complete_record(&cluster, &store.archive, build(&cluster, "kept", 2)).await;
    cluster
        .until("retention to delete build 1's Job", async || {
            cluster.build_numbers("kept").await == [2]
        })
        .await;
    cluster
        .until("build 1's pod to go with its Job", async || {
            !cluster.pod_exists("kept", 1).await
        })
        .await;
    let kept = BuildArchive::record(&*store.archive, build(&cluster, "kept", 1))
        .await
        .unwrap()
        .unwrap();
    assert!(kept.complete, "the archive keeps the build its Job was");
    drop(store);
    cluster.finish().await;
}

/// An administrator deletes a build's pod while it runs: the pod stays (being deleted)
/// until its log is archived; the build ends failed, its record and log say what it
/// wrote, and then the pod goes.
async fn a_pod_deleted_mid_run_stays_until_its_log_is_archived(cluster: TestCluster) {
    let store = store_for(&cluster);
    let yaml = cluster.job_yaml("slow", "echo started; sleep 600", "");
    cluster.apply("slow", &yaml).await;
    let backend = kubeci(&cluster, store.archive.clone()).await;
    let ns = cluster.namespace.clone();
    cluster
        .until("the job to be read", async || backend.jobs().len() == 1)
        .await;
    assert_eq!(trigger(&backend, &ns, "slow").await, 1);
    let at = build(&cluster, "slow", 1);
    cluster
        .until("the build's first record", async || {
            BuildArchive::record(&*store.archive, at)
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let mut name = String::new();
    cluster
        .until("the build to write its first line", async || {
            let Some(pod) = cluster.pods("slow", 1).await.pop() else {
                return false;
            };
            name = pod.metadata.name.clone().unwrap();
            let params = kube::api::LogParams {
                container: Some("build".into()),
                ..Default::default()
            };
            let log = pods.logs(&name, &params).await;
            log.is_ok_and(|l| l.contains("started"))
        })
        .await;
    pods.delete(&name, &DeleteParams::default()).await.unwrap();
    let record = complete_record(&cluster, &store.archive, at).await;
    assert!(
        record.build.state.state().is_finished()
            && record.build.state.phase != kubeci_engine::build::Phase::Succeeded,
        "{record:?}"
    );
    let log = archived_log(&store.archive, at, "build").await;
    assert!(
        log.contains("started\n"),
        "what the pod wrote before it was deleted: {log}"
    );
    cluster
        .until("the pod to go once archived", async || {
            pods.get_opt(&name).await.unwrap().is_none()
        })
        .await;
    drop(store);
    cluster.finish().await;
}

/// An administrator deletes a running build's Job (not kubeci): its pod is held, and the
/// build is archived from its first record and its pod's log, its end saying why. With
/// its ledger deleted too, the next build is numbered above the archived one.
async fn a_job_deleted_mid_run_is_archived_from_its_pod(cluster: TestCluster) {
    let store = store_for(&cluster);
    let yaml = cluster.job_yaml("gone", "echo started; sleep 600", "");
    cluster.apply("gone", &yaml).await;
    let backend = kubeci(&cluster, store.archive.clone()).await;
    let ns = cluster.namespace.clone();
    cluster
        .until("the job to be read", async || backend.jobs().len() == 1)
        .await;
    assert_eq!(trigger(&backend, &ns, "gone").await, 1);
    let at = build(&cluster, "gone", 1);
    cluster
        .until("the build to run, archived first", async || {
            cluster.pod_running("gone", 1).await
                && BuildArchive::record(&*store.archive, at)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        })
        .await;
    cluster.delete_job("gone-1").await;
    let record = complete_record(&cluster, &store.archive, at).await;
    assert_eq!(
        record.build.state.reason.as_deref(),
        Some("JobDeleted"),
        "{record:?}"
    );
    assert!(record.build.finished_at.is_some());
    cluster
        .until("the pod to go once archived", async || {
            !cluster.pod_exists("gone", 1).await
        })
        .await;
    // Its Job gone and its ledger too: the archive is all that is left of build 1, and
    // the next build is numbered above it, never 1 again.
    assert!(cluster.job("gone-1").await.is_none());
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    let ledger = kubeci_k8s::ledger_name("gone");
    leases.delete(&ledger, &Default::default()).await.unwrap();
    assert_eq!(trigger(&backend, &ns, "gone").await, 2);
    drop(store);
    cluster.finish().await;
}

on_both!(
    retention_deletes_a_job_only_once_its_build_is_archived_whole,
    s3
);
on_both!(a_pod_deleted_mid_run_stays_until_its_log_is_archived, s3);
on_both!(a_job_deleted_mid_run_is_archived_from_its_pod, s3);
