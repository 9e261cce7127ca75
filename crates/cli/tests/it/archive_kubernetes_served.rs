//! `kubeci serve --kubernetes --archive URL` (the binary, as kubeci's ServiceAccount
//! through the proxy), what a user sees: a 60 MB build whose Job retention deleted still
//! served whole by the page, the API and the CLI; the store down for a whole build, then
//! back; the leader killed while archiving, another replica taking over. On the fake API
//! server with a `file://` archive; on the real control plane with a real S3 server.

use crate::common;

use common::cluster::TestCluster;
use common::serve::{http, spawn_with_env, Kubeci};
use kubeci_archive::Archive;
use kubeci_build::BuildRef;
use kubeci_engine::archive::{ArchivedBuild, BuildArchive};
use kubeci_testkit::S3Server;

/// Where a scenario's kubeci archives, and how the test reads it and takes it down.
pub(crate) struct Store {
    pub(crate) url: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) archive: Archive,
    s3: Option<S3Server>,
    dir: tempfile::TempDir,
}

impl Store {
    /// A `file://` directory on the fake API server, a real S3 server on a real cluster.
    pub(crate) fn for_cluster(cluster: &TestCluster) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let (url, env, s3) = if cluster.is_real() {
            let s3 = S3Server::start();
            (s3.url(), s3.env(), Some(s3))
        } else {
            let path = dir.path().join("archive");
            (format!("file://{}", path.display()), Vec::new(), None)
        };
        let archive = Archive::open_with_env(&url.parse().unwrap(), &env).unwrap();
        Store {
            url,
            env,
            archive,
            s3,
            dir,
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("archive")
    }

    /// The store stops answering (S3 stopped; a directory that is now a file).
    fn down(&mut self) {
        match &mut self.s3 {
            Some(s3) => s3.stop(),
            None => {
                std::fs::rename(self.path(), self.dir.path().join("away")).unwrap();
                std::fs::write(self.path(), "not a directory").unwrap();
            }
        }
    }

    fn up(&mut self) {
        match &mut self.s3 {
            Some(s3) => s3.restart(),
            None => {
                std::fs::remove_file(self.path()).unwrap();
                std::fs::rename(self.dir.path().join("away"), self.path()).unwrap();
            }
        }
    }
}

/// `kubeci serve` on `cluster` archiving to `store`, ready.
pub(crate) fn serve(cluster: &TestCluster, store: &Store, extra: &[&str]) -> Kubeci {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.proxy.write_kubeconfig(&kubeconfig).unwrap();
    let ns = cluster.namespace.as_str();
    let mut flags = vec!["--namespace", ns, "--lease-namespace", ns];
    flags.extend(["--archive", store.url.as_str()]);
    let image = std::env::var("KUBECI_E2E_CLONE_IMAGE").ok();
    if let Some(image) = &image {
        flags.extend(["--clone-image", image.as_str()]);
    }
    flags.extend(extra);
    let env: Vec<(&str, &str)> = (store.env.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let kubeci = spawn_with_env(dir, &kubeconfig, &flags, &env);
    common::git::wait_for(cluster.patience(), "kubeci to be ready", || {
        http(&kubeci, "GET", "/readyz", &[]).0 == 200
    });
    kubeci
}

pub(crate) fn trigger(kubeci: &Kubeci, cluster: &TestCluster, job: &str) -> u64 {
    let path = format!("/api/v1/jobs/{}/{job}/builds", cluster.namespace);
    let auth = format!("Bearer {}", common::serve::TOKEN);
    let (code, body) = http(kubeci, "POST", &path, &[("authorization", &auth)]);
    assert!(code == 201 || code == 200, "{code} {body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    value["number"].as_u64().unwrap()
}

pub(crate) async fn complete_record(
    cluster: &TestCluster,
    store: &Store,
    at: BuildRef<'_>,
) -> ArchivedBuild {
    let mut found = None;
    cluster
        .until(&format!("{at} to be archived whole"), async || {
            found = BuildArchive::record(&store.archive, at)
                .await
                .ok()
                .flatten();
            found.as_ref().is_some_and(|r| r.complete)
        })
        .await;
    found.unwrap()
}

pub(crate) fn held(pods: &[k8s_openapi::api::core::v1::Pod]) -> bool {
    (pods
        .iter()
        .flat_map(|p| p.metadata.finalizers.iter().flatten()))
    .any(|f| f == "kubeci.io/archive")
}

/// Writes 600,000 lines of 100 bytes (with their newlines): 60 MB.
const SIXTY_MB: &str = "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -n 600000; echo last line";

/// A build of a 60 MB log, retention (keep 1) deleting its Job once a newer build ended:
/// still listed, shown and its log served whole by the API, the page and the CLI.
async fn a_60_mb_build_outlives_its_job_and_is_served_whole(cluster: TestCluster) {
    let store = Store::for_cluster(&cluster);
    let yaml = cluster.job_yaml("big", SIXTY_MB, "    retention:\n      keep: 1\n");
    cluster.apply("big", &yaml).await;
    let kubeci = serve(&cluster, &store, &[]);
    let ns = cluster.namespace.clone();
    assert_eq!(trigger(&kubeci, &cluster, "big"), 1);
    let at = BuildRef {
        namespace: &ns,
        job: "big",
        number: 1,
    };
    let record = complete_record(&cluster, &store, at).await;
    let build_step = record.log.iter().find(|s| s.name == "build").unwrap();
    assert_eq!(
        build_step.lines, 600_002,
        "the step's line, its 600,000 lines and the last"
    );
    assert_eq!(trigger(&kubeci, &cluster, "big"), 2);
    cluster
        .until("retention to delete build 1's Job", async || {
            cluster.build_numbers("big").await == [2]
        })
        .await;

    let (code, body) = http(
        &kubeci,
        "GET",
        &format!("/api/v1/jobs/{ns}/big/builds/1"),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["state"], "succeeded", "{view}");
    let (code, log) = http(
        &kubeci,
        "GET",
        &format!("/api/v1/jobs/{ns}/big/builds/1/log"),
        &[],
    );
    assert_eq!(code, 200);
    let log = common::serve::dechunk(&log);
    assert_eq!(
        log.lines().filter(|l| l.starts_with("xxxxxxxxxx")).count(),
        600_000
    );
    let tail = &log[log.len().saturating_sub(300)..];
    assert!(
        log.ends_with("last line\n"),
        "the whole log, to its end: …{tail}"
    );
    assert!(log.contains("==> build: container started\n"));
    let (code, page) = http(&kubeci, "GET", &format!("/jobs/{ns}/big/builds/1"), &[]);
    assert_eq!(code, 200, "the build's page");
    assert!(
        page.contains("big") && page.contains("succeeded"),
        "{page:.2000}"
    );
    let server = format!("http://127.0.0.1:{}", kubeci.port);
    let listed = common::kubeci(&["builds", "big", "-n", &ns, "--server", &server]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with('1')),
        "{}",
        listed.stdout
    );
    let logs = common::kubeci(&["logs", "big", "1", "-n", &ns, "--server", &server]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert_eq!(logs.stdout, log, "the CLI prints the log the API serves");
    drop(kubeci);
    cluster.finish().await;
}

/// The store is down for a whole build: the build runs and ends, kubeci stays ready, its
/// pages say archiving is behind, and the pod is held; once the store is back the build
/// is archived whole and its pod released.
async fn the_store_down_for_a_whole_build_then_back(cluster: TestCluster) {
    let mut store = Store::for_cluster(&cluster);
    let yaml = cluster.job_yaml("offline", "echo built while the store was away", "");
    cluster.apply("offline", &yaml).await;
    let kubeci = serve(&cluster, &store, &[]);
    let ns = cluster.namespace.clone();
    store.down();
    assert_eq!(trigger(&kubeci, &cluster, "offline"), 1);
    cluster
        .until("the build to succeed", async || {
            cluster.completed("offline-1").await
        })
        .await;
    cluster
        .until("the pages to say archiving is behind", async || {
            http(&kubeci, "GET", &format!("/jobs/{ns}/offline"), &[])
                .1
                .contains("archive-behind")
        })
        .await;
    assert_eq!(
        http(&kubeci, "GET", "/readyz", &[]).0,
        200,
        "kubeci stays ready"
    );
    assert!(
        held(&cluster.pods("offline", 1).await),
        "no log goes before it is archived"
    );

    store.up();
    let at = BuildRef {
        namespace: &ns,
        job: "offline",
        number: 1,
    };
    let record = complete_record(&cluster, &store, at).await;
    assert!(
        record.log.iter().all(|s| s.incomplete.is_none()),
        "{record:?}"
    );
    cluster
        .until("the pod to be released", async || {
            !held(&cluster.pods("offline", 1).await)
        })
        .await;
    drop(kubeci);
    cluster.finish().await;
}

/// The store is down longer than `--archive-give-up-after`: kubeci releases the build's
/// pod (no pod is held for ever) and says why on its Job; the pod deleted, its log goes,
/// and once the store is back the build's record says its log is missing, and why.
async fn past_the_give_up_age_the_pod_is_released_and_the_record_says_why(cluster: TestCluster) {
    let mut store = Store::for_cluster(&cluster);
    let yaml = cluster.job_yaml("patient", "echo nobody will read this", "");
    cluster.apply("patient", &yaml).await;
    let kubeci = serve(&cluster, &store, &["--archive-give-up-after", "1s"]);
    let ns = cluster.namespace.clone();
    store.down();
    assert_eq!(trigger(&kubeci, &cluster, "patient"), 1);
    cluster
        .until("kubeci to give the pod up", async || {
            let job = cluster.job("patient-1").await;
            let said = job
                .and_then(|j| j.metadata.annotations)
                .is_some_and(|a| a.contains_key("kubeci.io/archive-gave-up"));
            said && !held(&cluster.pods("patient", 1).await)
        })
        .await;
    // Released, the pod goes as soon as someone deletes it (here the garbage collector
    // would, with its Job): its log with it.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    for pod in cluster.pods("patient", 1).await {
        let name = pod.metadata.name.unwrap();
        pods.delete(&name, &Default::default()).await.unwrap();
    }
    cluster
        .until("the released pod to go", async || {
            !cluster.pod_exists("patient", 1).await
        })
        .await;
    store.up();
    let at = BuildRef {
        namespace: &ns,
        job: "patient",
        number: 1,
    };
    let record = complete_record(&cluster, &store, at).await;
    let lost: Vec<&str> = record
        .log
        .iter()
        .filter_map(|s| s.incomplete.as_deref())
        .collect();
    assert!(!lost.is_empty(), "its log is said missing: {record:?}");
    assert!(
        // Why: kubeci gave the pod up — or, when an attempt begun while the store was away
        // (its writes retried) read the step after the pod went, that the pod was gone.
        (lost.iter()).all(|why| why.contains("gave up") || why.contains("not found")),
        "and why: {lost:?}"
    );
    drop(kubeci);
    cluster.finish().await;
}

/// Two replicas; the leader is killed while it archives a 60 MB log (its first record
/// written, the complete one not yet): the other takes the lead and archives the build
/// once, whole, and releases its pod.
async fn the_leader_killed_while_archiving_hands_over_and_one_copy_is_whole(cluster: TestCluster) {
    let store = Store::for_cluster(&cluster);
    let yaml = cluster.job_yaml("handover", SIXTY_MB, "");
    cluster.apply("handover", &yaml).await;
    let first = serve(&cluster, &store, &["--identity", "replica-a"]);
    cluster
        .until("replica-a to lead", async || {
            cluster.leader().await.as_deref() == Some("replica-a")
        })
        .await;
    let second = serve(&cluster, &store, &["--identity", "replica-b"]);
    let ns = cluster.namespace.clone();
    assert_eq!(trigger(&second, &cluster, "handover"), 1);
    cluster
        .until("the build to end, its first record archived", async || {
            let job = cluster.job("handover-1").await;
            let archived = job
                .and_then(|j| j.metadata.annotations)
                .and_then(|a| a.get("kubeci.io/archived").cloned());
            cluster.completed("handover-1").await && archived.as_deref() == Some("first")
        })
        .await;
    first.kill();
    let at = BuildRef {
        namespace: &ns,
        job: "handover",
        number: 1,
    };
    let record = complete_record(&cluster, &store, at).await;
    let steps: Vec<(&str, u64)> = record
        .log
        .iter()
        .map(|s| (s.name.as_str(), s.lines))
        .collect();
    assert_eq!(steps[1], ("build", 600_002), "{steps:?}");
    cluster
        .until("replica-b to lead", async || {
            cluster.leader().await.as_deref() == Some("replica-b")
        })
        .await;
    cluster
        .until("the pod to be released", async || {
            !held(&cluster.pods("handover", 1).await)
        })
        .await;
    drop(second);
    cluster.finish().await;
}

on_both!(a_60_mb_build_outlives_its_job_and_is_served_whole, s3);
on_both!(the_store_down_for_a_whole_build_then_back, s3);
on_both!(
    past_the_give_up_age_the_pod_is_released_and_the_record_says_why,
    s3
);
on_both!(
    the_leader_killed_while_archiving_hands_over_and_one_copy_is_whole,
    s3
);
