//! What only a real control plane can do to kubeci: its etcd compacted (a resumed watch is
//! answered `410 Gone` by the real API server) and the API server itself stopped for 30 s
//! and started again. It runs on a control plane of its own (`scripts/cluster up` in a
//! directory and on ports of its own), so the other real-cluster tests never see the
//! outage.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::cluster::TestCluster;
use common::serve::{http, job_names, state_in, trigger_in, Kubeci, Receiver};

/// A control plane of this test's own; taken down when dropped.
struct Plane {
    dir: tempfile::TempDir,
    ports: Vec<(&'static str, String)>,
}

impl Plane {
    /// Where its node agent reads each namespace's git configuration.
    fn gitconfig_dir(&self) -> PathBuf {
        self.dir.path().join("gitconfig.d")
    }

    fn up() -> (Plane, PathBuf) {
        let kubeci = PathBuf::from(env!("CARGO_BIN_EXE_kubeci"));
        let agent = kubeci.with_file_name("node-agent");
        assert!(
            agent.is_file(),
            "{} is missing: cargo build -p kubeci-testkit --bin node-agent",
            agent.display()
        );
        let plane = Plane {
            dir: tempfile::tempdir().unwrap(),
            ports: [
                "KUBECI_CLUSTER_ETCD_PORT",
                "KUBECI_CLUSTER_ETCD_PEER_PORT",
                "KUBECI_CLUSTER_APISERVER_PORT",
                "KUBECI_CLUSTER_NODE_PORT",
            ]
            .into_iter()
            .map(|name| (name, common::free_port().to_string()))
            .collect(),
        };
        let up = plane.run(&["up"]);
        let exports = String::from_utf8_lossy(&up.stdout).into_owned();
        let kubeconfig = exports
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .unwrap_or_else(|| {
                panic!(
                    "scripts/cluster up: {}",
                    String::from_utf8_lossy(&up.stderr)
                )
            })
            .into();
        (plane, kubeconfig)
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = Command::new("bash")
            .arg(common::repo_root().join("scripts/cluster"))
            .args(args)
            .env("KUBECI_CLUSTER_DIR", self.dir.path())
            .env(
                "KUBECI_NODE_AGENT",
                Path::new(env!("CARGO_BIN_EXE_kubeci")).with_file_name("node-agent"),
            )
            .env("KUBECI_EXE", env!("CARGO_BIN_EXE_kubeci"))
            .envs(self.ports.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/cluster {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(common::repo_root().join("scripts/cluster"))
            .arg("down")
            .env("KUBECI_CLUSTER_DIR", self.dir.path())
            .status();
    }
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a control plane of its own with scripts/cluster (its binaries from scripts/cluster build, which needs Go): .ci/run builds them and runs cargo test --workspace -- --include-ignored"]
async fn etcd_compacted_and_the_api_server_gone_for_30_s_kubeci_carries_on() {
    let (plane, kubeconfig) = tokio::task::spawn_blocking(Plane::up).await.unwrap();
    let cluster = TestCluster::real_at(&kubeconfig, Some(plane.gitconfig_dir())).await;
    let ns = cluster.namespace.clone();
    cluster
        .apply(
            "long",
            &cluster.job_yaml("long", "echo begun; sleep 20; echo ended", ""),
        )
        .await;
    let receiver = Receiver::start().await;
    let kubeci = cluster.serve(&["--notify-url", receiver.url.as_str()]);
    assert_eq!(trigger_in(&kubeci, &ns, "long", None).0, 201);
    cluster
        .until("build 1 to run", async || {
            cluster.pod_running("long", 1).await
        })
        .await;

    // Compacted past everything kubeci has seen, then the API server restarts with an empty
    // watch cache: kubeci's watches, resumed from its last resourceVersions, are refused
    // 410 Gone and it lists again.
    let gate = cluster.proxy.gate();
    let lists = crate::common::cluster::first_lists;
    let before = lists(gate);
    let plane = std::sync::Arc::new(plane);
    let compacting = plane.clone();
    let compacted = tokio::task::spawn_blocking(move || compacting.run(&["compact"]))
        .await
        .unwrap();
    assert!(!compacted.stdout.is_empty(), "etcd's compacted revision");
    let restarting = plane.clone();
    let restart = std::thread::spawn(move || restarting.run(&["restart", "kube-apiserver", "30"]));
    // While it is gone kubeci keeps serving what it knows.
    let mut kubeci = kubeci;
    while !restart.is_finished() {
        assert!(
            kubeci.alive(),
            "kubeci crashed during the outage:\n{}",
            kubeci.log()
        );
        assert_eq!(http(&kubeci, "GET", "/healthz", &[]).0, 200);
        assert_eq!(job_names(&kubeci), ["long"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    restart.join().unwrap();
    cluster
        .until(
            "kubeci to read a first list again after its watches were refused",
            async || lists(gate) > before,
        )
        .await;

    // It carries on: the build that ran through the outage ends and is reported once, and a
    // job declared after it is served and built.
    let port = kubeci.port;
    let namespace = ns.clone();
    cluster
        .until_blocking("build 1 to succeed", move || {
            state_in(&Kubeci::probe(port), &namespace, "long", 1) == "succeeded"
        })
        .await;
    cluster
        .until("build 1's end to be reported", async || {
            receiver.finals("long", 1) == ["success"]
        })
        .await;
    cluster
        .apply("after", &cluster.job_yaml("after", "echo after", ""))
        .await;
    let probe = Kubeci::probe(port);
    cluster
        .until_blocking("the new job to be served", move || {
            job_names(&probe).contains(&"after".to_owned())
        })
        .await;
    assert_eq!(trigger_in(&kubeci, &ns, "after", None).0, 201);
    let namespace = ns.clone();
    cluster
        .until_blocking("its build to succeed", move || {
            state_in(&Kubeci::probe(port), &namespace, "after", 1) == "succeeded"
        })
        .await;
    drop(kubeci);
    cluster.finish().await;
    drop(plane);
}
