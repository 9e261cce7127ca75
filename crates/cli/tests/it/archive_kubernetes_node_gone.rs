//! A build pod whose node goes away mid-run, on the real control plane: a second node
//! agent (a Node of its own, tainted so only this test's build goes there) is killed and
//! its Node deleted; the controller manager's pod garbage collector deletes the orphaned
//! pod; kubeci, holding it by its finalizer, archives the build with what could be read,
//! the record saying which step's log is missing and why, then lets the pod go.

use std::process::{Child, Command};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use kubeci_build::BuildRef;
use kubeci_engine::Phase;
use serde_json::json;

use crate::archive_kubernetes_served::{complete_record, held, serve, trigger, Store};
use crate::common;
use common::cluster::TestCluster;
use common::serve::http;

const TAINT: &str = "kubeci.io/test-node-gone";

/// A node agent playing the kubelet of Node `name`, until it is killed.
struct Agent(Child);

impl Agent {
    fn start(name: &str, kubelet_version: &str, work_dir: &std::path::Path) -> Agent {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: start the cluster with `eval \"$(scripts/cluster up)\"`")
            })
        };
        let kubeconfig = var("KUBECI_E2E_KUBECONFIG");
        let pki = std::path::Path::new(&kubeconfig).with_file_name("pki");
        let port = common::free_port().to_string();
        let child = Command::new(var("KUBECI_E2E_NODE_AGENT_EXE"))
            .args([
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                name,
                "--port",
                &port,
            ])
            .arg("--tls-cert")
            .arg(pki.join("node.crt"))
            .arg("--tls-key")
            .arg(pki.join("node.key"))
            .args(["--kubeci", env!("CARGO_BIN_EXE_kubeci")])
            .arg("--work-dir")
            .arg(work_dir)
            .args(["--git-config-dir", &var("KUBECI_E2E_GITCONFIG_DIR")])
            .args(["--kubelet-version", kubelet_version])
            .stderr(std::fs::File::create(work_dir.join("agent.stderr")).unwrap())
            .spawn()
            .expect("the node agent starts");
        Agent(child)
    }
}

impl Drop for Agent {
    /// SIGKILL: the node is gone at once, telling no one.
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_ready(node: &Node) -> bool {
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A second Node, `gone-<namespace>`, ready, tainted so that only a pod tolerating
/// [`TAINT`] goes there, and the agent playing its kubelet.
async fn second_node(cluster: &TestCluster) -> (Agent, String) {
    let ns = &cluster.namespace;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let name = format!("gone-{ns}");
    // The Node made tainted before its agent registers it: no other test's pod goes there.
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": TAINT, "effect": "NoSchedule"}]},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let theirs = nodes
        .get(&std::env::var("KUBECI_E2E_NODE_AGENT").unwrap())
        .await;
    let version = theirs
        .unwrap()
        .status
        .unwrap()
        .node_info
        .unwrap()
        .kubelet_version;
    let agent = Agent::start(&name, &version, cluster.dir());
    cluster
        .until("the second node to be ready", async || {
            nodes.get(&name).await.is_ok_and(|n| is_ready(&n))
        })
        .await;

    (agent, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane and versitygw: eval \"$(scripts/cluster up)\", scripts/s3 build, then cargo test --workspace -- --include-ignored (.ci/run does all)"]
async fn a_pod_whose_node_is_gone_is_archived_with_what_was_read_and_says_so() {
    let cluster = TestCluster::real().await;
    let ns = cluster.namespace.clone();
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let (agent, name) = second_node(&cluster).await;

    let store = Store::for_cluster(&cluster);
    let there = format!(
        "    node_selector:\n      kubernetes.io/hostname: {name}\n    tolerations:\n      - key: {TAINT}\n        operator: Exists\n        effect: NoSchedule\n"
    );
    let yaml = cluster.job_yaml("faraway", "echo before the node went; sleep 200", &there);
    cluster.apply("faraway", &yaml).await;
    let kubeci = serve(&cluster, &store, &[]);
    assert_eq!(trigger(&kubeci, &cluster, "faraway"), 1);
    let log = format!("/api/v1/jobs/{ns}/faraway/builds/1/log");
    cluster
        .until(
            "the build to run on the second node and write",
            async || {
                http(&kubeci, "GET", &log, &[])
                    .1
                    .contains("before the node went")
            },
        )
        .await;
    assert!(
        held(&cluster.pods("faraway", 1).await),
        "kubeci holds the running pod"
    );

    drop(agent);
    nodes.delete(&name, &Default::default()).await.unwrap();
    let at = BuildRef {
        namespace: &ns,
        job: "faraway",
        number: 1,
    };
    let record = complete_record(&cluster, &store, at).await;
    let build = record.log.iter().find(|s| s.name == "build");
    let lost = build.and_then(|s| s.incomplete.as_deref());
    assert!(
        lost.is_some_and(|why| !why.is_empty()),
        "the record says the build step's log is missing, and why: {record:?}"
    );
    let ended = record.build.state.phase;
    assert!(
        matches!(ended, Phase::Failed | Phase::Error),
        "the build ended, unsuccessfully: {ended:?}"
    );
    cluster
        .until("the orphaned pod to go once archived", async || {
            !cluster.pod_exists("faraway", 1).await
        })
        .await;
    let path = format!("/api/v1/jobs/{ns}/faraway/builds/1");
    let (code, body) = http(&kubeci, "GET", &path, &[]);
    assert_eq!(code, 200, "the build is still served: {body}");
    drop(kubeci);
    cluster.finish().await;
}
