//! `kubeci serve --kubernetes --archive URL --collect-url URL` with jobs that declare
//! `test_reports` and `artifacts` (issue 30): each build pod's collector — a native sidecar
//! running `kubeci collect` — hands the declared files to kubeci with its pod's own token
//! once the build step ended, passed, failed or stopped on its Job's deadline; they are
//! served from the archive. A hostile tenant's tokens, pods and paths are refused, and
//! nothing of another build changes. On the fake API server with a `file://` archive; on
//! the real control plane (a real TokenReview) with a real S3 server.

use crate::common;

use common::cluster::TestCluster;
use common::serve::{http, http_with_body, spawn_on, Kubeci};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kubeci_build::BuildRef;
use kubeci_engine::archive::{BuildArchive, FileKind};
use serde_json::{json, Value};

use crate::archive_kubernetes_served::{complete_record, trigger, Store};

/// `kubeci serve` on `cluster` archiving to `store`, its build pods' collectors sending to
/// it on this machine (the fake's pods and the node agent's run here), ready.
pub(crate) fn serve(cluster: &TestCluster, store: &Store) -> Kubeci {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.proxy.write_kubeconfig(&kubeconfig).unwrap();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let ns = cluster.namespace.as_str();
    let mut flags = vec!["--namespace", ns, "--lease-namespace", ns];
    flags.extend(["--archive", store.url.as_str(), "--collect-url", &url]);
    let image = std::env::var("KUBECI_E2E_CLONE_IMAGE").ok();
    if let Some(image) = &image {
        flags.extend(["--clone-image", image.as_str()]);
    }
    let env: Vec<(&str, &str)> = (store.env.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let kubeci = spawn_on(port, dir, &kubeconfig, &flags, &env);
    common::git::wait_for(cluster.patience(), "kubeci to be ready", || {
        http(&kubeci, "GET", "/readyz", &[]).0 == 200
    });
    kubeci
}

/// A JUnit report of one passing and one failing case, written by the build itself.
const WRITE_FILES: &str = "mkdir -p reports dist\n\
cat > reports/junit.xml <<'XML'\n\
<?xml version=\"1.0\"?>\n\
<testsuite name=\"app\" tests=\"2\" failures=\"1\"><testcase classname=\"app\" name=\"adds\"/>\
<testcase classname=\"app\" name=\"breaks\"><failure message=\"one and one\">boom</failure></testcase></testsuite>\n\
XML\n\
printf built > dist/app.txt\n";

pub(crate) const DECLARED: &str =
    "    test_reports: [\"reports/*.xml\"]\n    artifacts: [\"dist/\"]\n";

fn json_of(kubeci: &Kubeci, path: &str) -> Value {
    let (status, body) = http(kubeci, "GET", path, &[]);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until build 1 of `job` has its files served: its artifacts listed.
async fn files_served(cluster: &TestCluster, kubeci: &Kubeci, job: &str) -> String {
    let build = format!("/api/v1/jobs/{}/{job}/builds/1", cluster.namespace);
    let path = format!("{build}/artifacts");
    cluster
        .until(&format!("{job}'s files to be served"), async || {
            let (status, body) = http(kubeci, "GET", &path, &[]);
            status == 200 && body.contains("dist/app.txt")
        })
        .await;
    build
}

/// Three builds of one job's files — one passes, one fails, one overruns its timeout and
/// is stopped on its Job's deadline — each leaves its test results and its artifact,
/// served from the archive, committed before its build's complete record.
async fn a_pod_s_declared_files_are_served_whether_it_passed_failed_or_timed_out(
    cluster: TestCluster,
) {
    let store = Store::for_cluster(&cluster);
    let outcomes = [
        ("passes", "exit 0", ""),
        ("fails", "exit 1", ""),
        ("overruns", "sleep 600", "    timeout: 8s\n"),
    ];
    for (job, end, timeout) in outcomes {
        let script = format!("{WRITE_FILES}{end}\n");
        let yaml = cluster.job_yaml(job, &script, &format!("{DECLARED}{timeout}"));
        cluster.apply(job, &yaml).await;
    }
    let kubeci = serve(&cluster, &store);
    for (job, _, _) in outcomes {
        assert_eq!(trigger(&kubeci, &cluster, job), 1);
    }
    let ns = cluster.namespace.clone();
    for (job, state) in [
        ("passes", "succeeded"),
        ("fails", "failed"),
        ("overruns", "failed"),
    ] {
        let build = files_served(&cluster, &kubeci, job).await;
        let tests = json_of(&kubeci, &format!("{build}/tests"));
        assert_eq!(tests["counts"]["passed"], 1, "{job}: {tests}");
        assert_eq!(tests["counts"]["failed"], 1, "{job}: {tests}");
        assert_eq!(tests["files"][0]["path"], "reports/junit.xml", "{job}");
        let (status, bytes) = http(
            &kubeci,
            "GET",
            &format!("{build}/artifacts/dist/app.txt"),
            &[],
        );
        assert_eq!((status, bytes.as_str()), (200, "built"), "{job}");
        let at = BuildRef {
            namespace: &ns,
            job,
            number: 1,
        };
        let record = complete_record(&cluster, &store, at).await;
        assert_eq!(
            record.build.state.phase.as_str(),
            state,
            "{job}: {record:?}"
        );
        assert!(
            record.build.tests.is_some(),
            "{job}: its tests were committed before its complete record: {record:?}"
        );
        let steps: Vec<&str> = record.log.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(steps, ["clone", "build", "collect"], "{job}");
    }
    let overran = json_of(&kubeci, &format!("/api/v1/jobs/{ns}/overruns/builds/1"));
    assert_eq!(
        overran["message"], "the build ran longer than its timeout",
        "{overran}"
    );
    // The collector's own log, archived as the build's step `collect`.
    let at = BuildRef {
        namespace: &ns,
        job: "overruns",
        number: 1,
    };
    let archive: &dyn BuildArchive = &store.archive;
    let mut lines = archive.step_log(at, "collect").await.unwrap().unwrap();
    let mut collected = String::new();
    while let Some(line) = futures_util::StreamExt::next(&mut lines).await {
        collected.push_str(&String::from_utf8_lossy(&line.unwrap().text));
        collected.push('\n');
    }
    assert!(
        collected.contains("sent reports/reports/junit.xml"),
        "{collected}"
    );
    assert!(collected.contains("done: "), "{collected}");
    drop(kubeci);
    cluster.finish().await;
}

on_both!(
    a_pod_s_declared_files_are_served_whether_it_passed_failed_or_timed_out,
    s3
);

/// A token minted for `pod` (bound to it) for `audience`, as the kubelet mints one.
pub(crate) async fn token(cluster: &TestCluster, pod: &Pod, audience: &str) -> String {
    let name = pod.metadata.name.clone().unwrap();
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": [audience], "expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name,
                                    "uid": pod.metadata.uid}}});
    let path = format!(
        "/api/v1/namespaces/{}/serviceaccounts/default/token",
        cluster.namespace
    );
    let request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .body(request.to_string().into_bytes())
        .unwrap();
    let answer: Value =
        serde_json::from_str(&cluster.client.request_text(request).await.unwrap()).unwrap();
    answer["status"]["token"].as_str().unwrap().to_owned()
}

/// Build 1 of `job` triggered and running: its pod, and a `kubeci-collect` token bound to
/// it (as its collector holds).
pub(crate) async fn running_build(
    cluster: &TestCluster,
    kubeci: &Kubeci,
    job: &str,
) -> (Pod, String) {
    assert_eq!(trigger(kubeci, cluster, job), 1);
    cluster
        .until(&format!("{job}'s build to run"), async || {
            cluster.pod_running(job, 1).await
        })
        .await;
    let pod = cluster.pods(job, 1).await.remove(0);
    let collect = token(cluster, &pod, "kubeci-collect").await;
    (pod, collect)
}

/// `PUT` of `path` as a build's `kind` with `token`: (status, the error's code or body).
pub(crate) fn put(
    kubeci: &Kubeci,
    token: &str,
    kind: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let url = format!("/internal/v1/outputs/{kind}/{path}");
    let (status, answer) = http_with_body(kubeci, "PUT", &url, &[("Authorization", &auth)], body);
    (status, code_of(&answer))
}

pub(crate) fn done(kubeci: &Kubeci, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let body = br#"{"refused": []}"#;
    let (status, answer) = http_with_body(
        kubeci,
        "POST",
        "/internal/v1/outputs/done",
        &[("Authorization", &auth)],
        body,
    );
    (status, code_of(&answer))
}

pub(crate) fn code_of(answer: &str) -> String {
    serde_json::from_str::<Value>(answer)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| answer.to_owned())
}

/// What the archive holds of a build's files: each kind's paths and sizes.
pub(crate) async fn held(store: &Store, at: BuildRef<'_>) -> Vec<(String, u64)> {
    let archive: &dyn BuildArchive = &store.archive;
    let mut all = archive
        .list_files(at, FileKind::Artifact, 100)
        .await
        .unwrap();
    all.extend(archive.list_files(at, FileKind::Report, 100).await.unwrap());
    all
}

/// Creates a pod of this scenario's namespace: `labels`, `owners`; never scheduled.
async fn create_pod(cluster: &TestCluster, name: &str, labels: Value, owners: Value) -> Pod {
    let pod = json!({"metadata": {"name": name, "labels": labels, "ownerReferences": owners},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"kubeci.test/nowhere": "true"},
                 "containers": [{"name": "main", "image": "bash:5", "command": ["/bin/true"]}]}});
    Api::<Pod>::namespaced(cluster.client.clone(), &cluster.namespace)
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).unwrap(),
        )
        .await
        .unwrap()
}

// Long on purpose: one tenant's attacks one after the other, against the same builds.
/// A tenant who may create pods and tokens in its namespace tries to write build files it
/// should not: each way is refused, and the other build's files stay as they were.
async fn hostile_tokens_pods_and_paths_write_nothing(cluster: TestCluster) {
    let store = Store::for_cluster(&cluster);
    let victim_script = "mkdir -p dist && printf \"victim's\" > dist/app.txt";
    let victim = cluster.job_yaml("victim", victim_script, "    artifacts: [\"dist/\"]\n");
    cluster.apply("victim", &victim).await;
    let holder = cluster.job_yaml("holder", "sleep 600", DECLARED);
    cluster.apply("holder", &holder).await;
    let kubeci = serve(&cluster, &store);
    assert_eq!(trigger(&kubeci, &cluster, "victim"), 1);
    let ns = cluster.namespace.clone();
    let victim_at = BuildRef {
        namespace: &ns,
        job: "victim",
        number: 1,
    };
    complete_record(&cluster, &store, victim_at).await;
    let victim_files = held(&store, victim_at).await;
    assert_eq!(victim_files, [("dist/app.txt".to_owned(), 8)]);
    let (pod, collect) = running_build(&cluster, &kubeci, "holder").await;

    // Who: no token, a forged one, the pod's token for another audience.
    let other = token(
        &cluster,
        &pod,
        "https://kubernetes.default.svc.cluster.local",
    )
    .await;
    let (status, _) = http(&kubeci, "PUT", "/internal/v1/outputs/artifacts/dist/x", &[]);
    assert_eq!(status, 401, "no token");
    for forged in ["not-a-token", other.as_str()] {
        assert_eq!(
            put(&kubeci, forged, "artifacts", "dist/x", b"x"),
            (401, "not-a-collector".into())
        );
    }
    // Which pod: one that is no build's (not in kubeci's caches: refused on its token's
    // claims, unreviewed), one forged with the build's labels (owned by nothing).
    // kubeci's labels of the build (not the Job's selector: its controller would adopt
    // such a pod as its own, see docs/security.md).
    let labels = json!({"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": "holder",
                        "kubeci.io/build": "1"});
    let intruder = create_pod(&cluster, "intruder", json!({}), json!([])).await;
    let forged = create_pod(&cluster, "forged", labels.clone(), json!([])).await;
    let intruder = token(&cluster, &intruder, "kubeci-collect").await;
    let unreviewed = (401, "not-a-collector".to_owned());
    assert_eq!(
        put(&kubeci, &intruder, "artifacts", "dist/app.txt", b"x"),
        unreviewed
    );
    assert_eq!(done(&kubeci, &intruder), unreviewed);
    // (One naming the build's Job with another uid is refused too — a unit test of
    // `kubeci_engine::collector` shows it — but a real garbage collector deletes it first.)
    let forged = token(&cluster, &forged, "kubeci-collect").await;
    let not_a_build_pod = (403, "not-a-build-pod".to_owned());
    let (port, token_of_forged) = (kubeci.port, forged.clone());
    let expected = not_a_build_pod.clone();
    // Once kubeci's caches hold the forged pod (until then it is refused unreviewed).
    cluster
        .until_blocking("the forged pod's token to be reviewed", move || {
            let kubeci = common::serve::Kubeci::probe(port);
            put(&kubeci, &token_of_forged, "artifacts", "dist/app.txt", b"x") == expected
        })
        .await;
    assert_eq!(done(&kubeci, &forged), not_a_build_pod);
    // Which files: only those the job declares, as their kind, by a path under the build.
    let refused = [
        ("artifacts", "secrets.env", "not-declared"),
        ("artifacts", "reports/junit.xml", "not-declared"),
        ("reports", "dist/app.txt", "not-declared"),
        (
            "artifacts",
            "dist/..%2F..%2F..%2Fvictim%2Fbuilds%2F1%2Frecord.json",
            "bad-path",
        ),
        ("artifacts", "%2Fetc%2Fpasswd", "bad-path"),
        ("logs", "build.log", "not-found"),
    ];
    for (kind, path, code) in refused {
        let status = if code == "not-found" { 404 } else { 403 };
        let answer = put(&kubeci, &collect, kind, path, b"x");
        assert_eq!(answer, (status, code.into()), "{kind}/{path}");
    }
    // Its own build's files, once: then done, and nothing more.
    assert_eq!(
        put(&kubeci, &collect, "artifacts", "dist/app.txt", b"holder's").0,
        201
    );
    assert_eq!(
        put(
            &kubeci,
            &collect,
            "reports",
            "reports/junit.xml",
            b"<testsuite/>"
        )
        .0,
        201
    );
    assert_eq!(done(&kubeci, &collect).0, 200);
    assert_eq!(
        done(&kubeci, &collect),
        (409, "outputs-done".into()),
        "a second done"
    );
    assert_eq!(
        put(&kubeci, &collect, "artifacts", "dist/app.txt", b"changed"),
        (409, "outputs-done".into()),
        "a write after done"
    );
    let build = "/api/v1/jobs/{ns}/holder/builds/1".replace("{ns}", &ns);
    let (_, bytes) = http(
        &kubeci,
        "GET",
        &format!("{build}/artifacts/dist/app.txt"),
        &[],
    );
    assert_eq!(bytes, "holder's");
    // The other build's files are as they were.
    assert_eq!(held(&store, victim_at).await, victim_files);
    let victim_build = format!("/api/v1/jobs/{ns}/victim/builds/1/artifacts/dist/app.txt");
    assert_eq!(http(&kubeci, "GET", &victim_build, &[]).1, "victim's");
    // Six tokens were presented (the victim's collector's, the forged and other-audience
    // ones, the intruder's, the forged pod's, the holder's: a dozen requests): those whose
    // claims name a build pod kubeci runs (the victim's, the forged pod's, the holder's)
    // are reviewed once each, however often they come; the others never.
    if let Some(fake) = cluster.fake_server() {
        let reviews = (fake.requests().iter())
            .filter(|r| r.resource == "tokenreviews")
            .count();
        assert_eq!(reviews, 3, "TokenReviews");
    }
    drop(kubeci);
    cluster.finish().await;
}

on_both!(hostile_tokens_pods_and_paths_write_nothing, s3);

/// A real pytest run in a build pod of the real control plane: its JUnit report and an
/// artifact leave the pod through a real TokenReview into a real S3 server, and are
/// served with the failure's file and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane, versitygw and pytest: eval \"$(scripts/cluster up)\", scripts/s3 build, python3 -m pip install pytest==9.2.0 (.ci/run does all)"]
async fn a_pytest_report_and_an_artifact_leave_a_real_cluster_s_pod() {
    let cluster = TestCluster::real().await;
    let store = Store::for_cluster(&cluster);
    let script = "mkdir -p tests dist\n\
cat > tests/test_app.py <<'PY'\n\
def test_adds():\n    assert 1 + 1 == 2\n\n\n\
def test_breaks():\n    assert 1 + 1 == 3, 'one and one'\n\
PY\n\
printf built > dist/app.txt\n\
\"$PYTHON\" -m pytest -q -p no:cacheprovider --junitxml=reports/junit.xml tests\n";
    let extra = format!(
        "{DECLARED}    env:\n      PYTHON: {}\n",
        serde_json::to_string(&crate::serve_local_outputs::python()).unwrap()
    );
    cluster
        .apply("pytest", &cluster.job_yaml("pytest", script, &extra))
        .await;
    let kubeci = serve(&cluster, &store);
    assert_eq!(trigger(&kubeci, &cluster, "pytest"), 1);
    let build = files_served(&cluster, &kubeci, "pytest").await;
    let tests = json_of(&kubeci, &format!("{build}/tests"));
    assert_eq!(tests["counts"]["passed"], 1, "{tests}");
    assert_eq!(tests["counts"]["failed"], 1, "{tests}");
    let failure = &tests["detailed"][0];
    assert_eq!(failure["name"], "test_breaks", "{tests}");
    assert_eq!(failure["file"], "tests/test_app.py", "{tests}");
    assert_eq!(failure["line"], 6, "{tests}");
    let (status, bytes) = http(
        &kubeci,
        "GET",
        &format!("{build}/artifacts/dist/app.txt"),
        &[],
    );
    assert_eq!((status, bytes.as_str()), (200, "built"));
    drop(kubeci);
    cluster.finish().await;
}
