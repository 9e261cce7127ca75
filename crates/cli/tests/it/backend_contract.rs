//! The `Backend` contract, in-process: one suite of what the server relies on — triggering
//! with idempotency keys, numbering, reading a build and a job's builds newest first,
//! cancelling, the request a rebuild repeats, logs read and followed — run against both
//! backends: `kubeci_k8s::Cluster` on the fake API server (its pods run by the local
//! engine), and `kubeci_local::LocalBackend` on a temporary directory. A failure names
//! the backend and the promise, without the binary or HTTP in between.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::cluster::TestCluster;
use futures_util::StreamExt;
use kubeci_build::BuildRequest;
use kubeci_engine::api::{Backend, CancelError, LogOptions, TriggerError, TriggerRequest};

/// A job cloning `url` (for the local backend; the Kubernetes one's come from
/// [`TestCluster::job_yaml`]).
fn job_yaml(name: &str, url: &str, run_command: &str) -> String {
    format!(
        "- job:\n    name: {name}\n    git:\n      url: {url}\n      branch: main\n    run_command: {}\n    timeout: 5m\n",
        serde_json::to_string(run_command).unwrap()
    )
}

const QUICK: &str = "echo \"hello from build $BUILD_NUMBER\"";
const SLOW: &str = "echo started; sleep 60";

async fn until<B: Backend>(backend: &B, what: &str, check: impl Fn(&B) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check(backend) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state<B: Backend>(backend: &B, ns: &str, job: &str, number: u64) -> Option<&'static str> {
    backend
        .builds(ns, job)?
        .into_iter()
        .find(|b| b.number == number)
        .map(|b| b.state.as_str())
}

fn request(ns: &str, job: &str, key: Option<&str>) -> TriggerRequest {
    TriggerRequest {
        namespace: ns.into(),
        name: job.into(),
        build: BuildRequest {
            requested_by: Some("contract".into()),
            ..BuildRequest::manual(0)
        },
        key: key.map(str::to_owned),
    }
}

async fn read_log<B: Backend>(
    backend: &B,
    ns: &str,
    job: &str,
    number: u64,
    options: LogOptions,
) -> String {
    let mut stream = backend
        .log(ns, job, number, options)
        .await
        .unwrap_or_else(|e| panic!("log of {job} {number}: {e}"));
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.expect("a log chunk"));
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// What every backend promises the server. `name`: which one, for the messages.
async fn contract<B: Backend>(name: &str, backend: Arc<B>, ns: &str) {
    until(&*backend, "the backend to be ready", |b| b.ready()).await;
    until(&*backend, "the jobs to be read", |b| b.jobs().len() == 2).await;

    // Numbering, and keys: the same key gives the same build.
    let first = backend
        .trigger(request(ns, "quick", Some("k1")))
        .await
        .unwrap();
    assert!(first.created, "{name}: a new key creates a build");
    assert_eq!(first.build.number, 1, "{name}: numbers start at 1");
    let again = backend
        .trigger(request(ns, "quick", Some("k1")))
        .await
        .unwrap();
    assert!(!again.created, "{name}: the same key is a retry");
    assert_eq!(again.build.number, 1, "{name}: … of the same build");
    let second = backend.trigger(request(ns, "quick", None)).await.unwrap();
    assert_eq!(second.build.number, 2, "{name}: numbers go up by one");

    // A build the backend just reported can be read at once.
    let read = backend.build(ns, "quick", 2).await.unwrap();
    assert_eq!(read.map(|b| b.number), Some(2), "{name}: readable at once");

    // Builds end, newest first; their logs are read whole and followed to the end.
    until(&*backend, "both builds to succeed", |b| {
        state(b, ns, "quick", 1) == Some("succeeded")
            && state(b, ns, "quick", 2) == Some("succeeded")
    })
    .await;
    let numbers: Vec<u64> = backend
        .builds(ns, "quick")
        .unwrap()
        .iter()
        .map(|b| b.number)
        .collect();
    assert_eq!(numbers, [2, 1], "{name}: newest first");
    let whole = LogOptions::default();
    let log = read_log(&*backend, ns, "quick", 2, whole).await;
    assert!(log.contains("hello from build 2\n"), "{name}: {log}");
    let follow = LogOptions {
        follow: true,
        ..whole
    };
    let followed = read_log(&*backend, ns, "quick", 2, follow).await;
    assert_eq!(
        followed, log,
        "{name}: a finished build's followed log ends"
    );
    // The log is in steps, each begun by its container's start: the clone's, the build's.
    let starts: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("==> "))
        .filter(|l| l.contains("container started"))
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(starts, ["clone", "build"], "{name}: {log}");
    // Each line's time, on demand.
    for follow in [false, true] {
        let stamped = LogOptions {
            follow,
            timestamps: true,
        };
        let stamped = read_log(&*backend, ns, "quick", 2, stamped).await;
        common::serve::assert_timestamped(&stamped, &log);
    }

    // The request a rebuild repeats.
    let recorded = backend.request(ns, "quick", 1).await.expect("recorded");
    assert_eq!(recorded.requested_by.as_deref(), Some("contract"), "{name}");

    // Cancel: a running build stops and says who; a finished one cannot be cancelled.
    let slow = backend.trigger(request(ns, "slow", None)).await.unwrap();
    let number = slow.build.number;
    until(&*backend, "the slow build to run", |b| {
        state(b, ns, "slow", number) == Some("running")
    })
    .await;
    let cancelled = backend.cancel(ns, "slow", number, "contract").await;
    assert!(cancelled.is_ok(), "{name}: {:?}", cancelled.err());
    until(&*backend, "the slow build to end aborted", |b| {
        state(b, ns, "slow", number) == Some("aborted")
    })
    .await;
    let aborted = backend.build(ns, "slow", number).await.unwrap().unwrap();
    assert!(
        aborted
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("contract"),
        "{name}: who cancelled it: {aborted:?}"
    );
    match backend.cancel(ns, "quick", 1, "contract").await {
        Err(CancelError::Finished { .. }) => {}
        other => panic!("{name}: cancelling a finished build: {other:?}"),
    }
    match backend.cancel(ns, "quick", 99, "contract").await {
        Err(CancelError::NotFound { .. }) => {}
        other => panic!("{name}: cancelling no build: {other:?}"),
    }

    // An unknown job: refused, and no builds.
    match backend.trigger(request(ns, "nope", None)).await {
        Err(TriggerError::NotFound { .. }) => {}
        other => panic!(
            "{name}: an unknown job: {:?}",
            other.map(|t| t.build.number)
        ),
    }
    assert!(backend.builds(ns, "nope").is_none(), "{name}");
}

/// `kubeci_k8s::Cluster` in this process, on `cluster` (as kubeci's ServiceAccount, through
/// the proxy), watching its namespace.
async fn kubernetes(cluster: TestCluster) {
    for (job, run) in [("quick", QUICK), ("slow", SLOW)] {
        cluster.apply(job, &cluster.job_yaml(job, run, "")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    cluster.proxy.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let ns = cluster.namespace.clone();
    let settings = kubeci_k8s::Settings {
        namespaces: vec![ns.clone()],
        load: kubeci_spec::LoadOptions {
            builds_run: kubeci_spec::BuildsRun::InACluster,
            ..Default::default()
        },
        election: kubeci_k8s::Election {
            namespace: ns.clone(),
            name: "kubeci-leader".into(),
            lease_duration: Duration::from_secs(2),
        },
        ..kubeci_k8s::Settings::default()
    };
    let backend =
        kubeci_k8s::Cluster::start(kube::Client::try_from(config).unwrap(), settings, None);
    let name = if cluster.is_real() {
        "the Kubernetes backend on a real control plane"
    } else {
        "the Kubernetes backend on the fake API server"
    };
    contract(name, backend, &ns).await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_backend_keeps_the_contract_on_the_fake_api_server() {
    kubernetes(TestCluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
async fn the_kubernetes_backend_keeps_the_contract_on_a_real_cluster() {
    kubernetes(TestCluster::real().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::git::Repo::new(&dir.path().join("git"));
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    for (name, run) in [("quick", QUICK), ("slow", SLOW)] {
        let yaml = job_yaml(name, &repo.bare.display().to_string(), run);
        let configmap = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{ci-job-spec: \"true\"}}\ndata:\n  job.yaml: {}\n",
            serde_json::to_string(&yaml).unwrap()
        );
        std::fs::write(jobs.join(format!("{name}.yaml")), configmap).unwrap();
    }
    let engine = kubeci_local::LocalBackend::start(
        kubeci_local::Settings {
            jobs_dir: jobs,
            data_dir: dir.path().join("data"),
            secrets_dir: None,
            kubeci_exe: env!("CARGO_BIN_EXE_kubeci").into(),
            render: Default::default(),
            load: Default::default(),
            log_url_template: None,
            reload_every: Duration::from_millis(200),
            log_limit: kubeci_local::DEFAULT_LOG_LIMIT,
            archiving: Default::default(),
            build_user: None,
        },
        None,
    )
    .unwrap();
    contract("the local backend", engine, "default").await;
}
