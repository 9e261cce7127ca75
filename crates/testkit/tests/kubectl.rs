//! A second, independent client: `kubectl` creates, applies, gets, watches, replaces,
//! deletes and reads logs against the fake API server.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn kubectl_path() -> String {
    let found = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("kubectl"))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    found
        .expect("this test needs kubectl (Debian's kubernetes-client; .ci/run installs it when none is present)")
        .display()
        .to_string()
}

struct Kubectl {
    program: String,
    kubeconfig: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(server: &FakeApiServer) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        Kubectl {
            program: kubectl_path(),
            kubeconfig,
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl to the end (at most 60 s) and returns its stdout; a failure fails the test.
    async fn run(&self, args: &[&str]) -> String {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} hung"))
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: NAME\n  labels:\n    ci-job-spec: \"true\"\ndata:\n  job.yaml: VALUE\n";

fn manifest(name: &str, value: &str) -> String {
    CONFIGMAP.replace("NAME", name).replace("VALUE", value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
async fn kubectl_creates_applies_gets_replaces_and_deletes() {
    let server = FakeApiServer::start().await;
    let kubectl = Kubectl::new(&server);
    let created = kubectl.file("a.yaml", &manifest("a", "one"));
    assert_eq!(
        kubectl.run(&["create", "-f", &created]).await.trim(),
        "configmap/a created"
    );
    let applied = kubectl.file("b.yaml", &manifest("b", "two"));
    assert_eq!(
        kubectl.run(&["apply", "-f", &applied]).await.trim(),
        "configmap/b created"
    );
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let b = cms.get("b").await.unwrap();
    assert!(b
        .metadata
        .annotations
        .unwrap()
        .contains_key("kubectl.kubernetes.io/last-applied-configuration"));

    let got: serde_json::Value =
        serde_json::from_str(&kubectl.run(&["get", "configmap", "a", "-o", "json"]).await).unwrap();
    assert_eq!(got["data"]["job.yaml"], "one");
    let names = kubectl
        .run(&["get", "configmaps", "-l", "ci-job-spec=true", "-o", "name"])
        .await;
    assert_eq!(names, "configmap/a\nconfigmap/b\n");

    let replaced = kubectl.file("a2.yaml", &manifest("a", "changed"));
    assert_eq!(
        kubectl.run(&["replace", "-f", &replaced]).await.trim(),
        "configmap/a replaced"
    );
    assert_eq!(
        cms.get("a").await.unwrap().data.unwrap()["job.yaml"],
        "changed"
    );

    // kubectl 1.34 and later add "from default namespace".
    let deleted = kubectl.run(&["delete", "configmap", "a"]).await;
    assert!(deleted.starts_with("configmap \"a\" deleted"), "{deleted}");
    assert!(cms.get_opt("a").await.unwrap().is_none());

    let agents: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.user_agent.clone())
        .collect();
    assert!(
        agents.iter().any(|a| a.starts_with("kubectl")),
        "{agents:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
async fn kubectl_watches_changes() {
    let server = FakeApiServer::start().await;
    let kubectl = Kubectl::new(&server);
    let mut watching = kubectl
        .command(&["get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watching.stdout.take().unwrap()).lines();
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    // Create objects until the watch shows one (kubectl may still be starting).
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        let mut created = 0;
        loop {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("w-{created}")}}))
                    .unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
            created += 1;
            if let Ok(Some(line)) =
                tokio::time::timeout(Duration::from_millis(500), lines.next_line())
                    .await
                    .map(Result::unwrap)
            {
                return line;
            }
        }
    })
    .await
    .expect("kubectl get -w printed a change");
    assert!(seen.starts_with("configmap/w-"), "{seen}");
    // kubectl lists first, then watches: an object created now can only arrive by the watch.
    let mut watched = false;
    for _ in 0..500 {
        if server
            .requests()
            .iter()
            .any(|r| r.verb == "watch" && r.user_agent.starts_with("kubectl"))
        {
            watched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(watched, "kubectl opened a watch");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "after-the-watch"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "configmap/after-the-watch" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(arrived, "the watch delivered the new object");
    watching.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
async fn kubectl_reads_pod_logs() {
    let server = FakeApiServer::start().await;
    server.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: vec!["hello from the pod".into(), "done".into()],
        duration: Duration::from_millis(20),
    });
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job: Job = serde_json::from_value(json!({"metadata": {"name": "logs"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "busybox:1.36"}]}}}})).unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut name = None;
    for _ in 0..500 {
        let list = pods
            .list(&ListParams::default().labels("job-name=logs"))
            .await
            .unwrap();
        if let Some(pod) = list
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        {
            name = pod.metadata.name;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let name = name.expect("the pod finished");
    let kubectl = Kubectl::new(&server);
    assert_eq!(
        kubectl.run(&["logs", &name]).await,
        "hello from the pod\ndone\n"
    );
    assert_eq!(kubectl.run(&["logs", &name, "--tail", "1"]).await, "done\n");
}

/// The `fake-apiserver` binary serves manifests it was given to any client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
async fn the_binary_serves_loaded_manifests_to_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("objects.yaml");
    std::fs::write(
        &manifests,
        format!(
            "{}---\n{}",
            manifest("loaded-a", "one"),
            manifest("loaded-b", "two").replace("namespace: default", "")
        ),
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut server = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
        .args([
            "--port",
            "0",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--load",
            manifests.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        first.starts_with("serving the Kubernetes API on http://127.0.0.1:"),
        "{first}"
    );
    let output = Command::new(kubectl_path())
        .args(["get", "configmaps", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .env("HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "configmap/loaded-a\nconfigmap/loaded-b\n"
    );
    server.kill().await.unwrap();
}
