//! The node agent as the real control plane of `scripts/cluster up` uses it: the pods the
//! real scheduler binds to it get the Secrets, ConfigMaps, downward-API fields and
//! service-account token they refer to, read from the API as the kubelet reads them; their
//! logs reach `pods/log`; a deleted pod's processes get SIGTERM and its grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn client() -> kube::Client {
    let path = std::env::var_os("KUBECI_E2E_NODE_AGENT")
        .and(std::env::var_os("KUBECI_E2E_KUBECONFIG"))
        .expect(
            "the control plane of scripts/cluster and its node agent: `eval \"$(scripts/cluster up)\"`",
        );
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn namespace(client: &kube::Client, name: &str) -> String {
    let name = format!("{name}-{}", std::process::id());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &name);
    for _ in 0..600 {
        if accounts.get_opt("default").await.unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    name
}

async fn wait_for_phase(pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    for _ in 0..600 {
        let pod = pods.get(name).await.unwrap();
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return pod;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "pod {name} never reached {phase}: {:?}",
        pods.get(name).await.unwrap().status
    );
}

// Long on purpose: one pod referring to every kind of object the node agent reads for it, and
// the check of each in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
async fn a_pod_gets_what_it_refers_to_from_the_api() {
    let client = client().await;
    let ns = namespace(&client, "node-agent").await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "settings"}, "data": {"mode": "fast"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = json!({
        "metadata": {"name": "reader", "labels": {"team": "ci"}},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "db", "secret": {"secretName": "db"}}],
            "containers": [{
                "name": "main", "image": "bash:5",
                "command": ["/bin/sh", "-c", "echo \"$MODE $PASSWORD $POD $NODE $TEAM\"; cat \"$DB/password\"; echo; test -s \"$SA/token\" && cat \"$SA/namespace\""],
                "env": [
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
                    {"name": "DB", "value": "/etc/db"},
                    {"name": "SA", "value": "/var/run/secrets/kubernetes.io/serviceaccount"},
                ],
                "volumeMounts": [{"name": "db", "mountPath": "/etc/db"}],
            }],
        },
    });
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let done = wait_for_phase(&pods, "reader", "Succeeded").await;
    let log = pods.logs("reader", &Default::default()).await.unwrap();
    let node = done.spec.unwrap().node_name.unwrap();
    // The service-account token volume was added by the real ServiceAccount admission.
    assert_eq!(log, format!("fast s3cret reader {node} ci\ns3cret\n{ns}\n"));
    let state = &done.status.unwrap().container_statuses.unwrap()[0];
    let terminated = state.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );

    // A missing key: the kubelet's words, and the pod waits.
    let pod = json!({"metadata": {"name": "missing-key"}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "bash:5", "command": ["true"],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}]}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let mut waiting = None;
    for _ in 0..600 {
        let pod = pods.get("missing-key").await.unwrap();
        waiting = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.waiting)
            .filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError"));
        if waiting.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = waiting.expect("CreateContainerConfigError");
    assert_eq!(
        waiting.message.as_deref(),
        Some(format!("couldn't find key user in Secret {ns}/db").as_str())
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
async fn a_deleted_pod_gets_sigterm_and_its_grace_period() {
    let client = client().await;
    let ns = namespace(&client, "node-agent-stop").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = json!({"metadata": {"name": "stopper"}, "spec": {"restartPolicy": "Never",
        "terminationGracePeriodSeconds": 30,
        "containers": [{"name": "main", "image": "bash:5",
            "command": ["/bin/bash", "-c", "trap 'echo got SIGTERM; exit 0' TERM; echo waiting; while true; do sleep 0.1; done"]}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    wait_for_phase(&pods, "stopper", "Running").await;
    for _ in 0..600 {
        if pods
            .logs("stopper", &Default::default())
            .await
            .unwrap_or_default()
            == "waiting\n"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut follow = pods
        .log_stream(
            "stopper",
            &kube::api::LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    pods.delete("stopper", &DeleteParams::default())
        .await
        .unwrap();
    let mut followed = Vec::new();
    use futures_util::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_secs(20), follow.read_to_end(&mut followed)).await;
    assert_eq!(
        String::from_utf8_lossy(&followed),
        "waiting\ngot SIGTERM\n",
        "the container heard SIGTERM and ended within its grace period"
    );
    for _ in 0..600 {
        if pods.get_opt("stopper").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pods.get_opt("stopper").await.unwrap().is_none(),
        "the agent removed the pod"
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
async fn a_volume_whose_secret_comes_later_is_mounted_once_it_is_there() {
    let client = client().await;
    let ns = namespace(&client, "node-agent-late").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = json!({"metadata": {"name": "late"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "key", "secret": {"secretName": "late-key"}}],
        "containers": [{"name": "main", "image": "bash:5", "command": ["/bin/sh", "-c", "cat \"$KEY/k\""],
            "env": [{"name": "KEY", "value": "/etc/key"}],
            "volumeMounts": [{"name": "key", "mountPath": "/etc/key"}]}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    // The kubelet's Warning first, as it cannot mount it yet.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
    let mut warned = false;
    for _ in 0..600 {
        let listed = events.list(&Default::default()).await.unwrap().items;
        warned = listed
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedMount"));
        if warned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(warned, "a FailedMount event while the Secret is missing");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    let secret = json!({"metadata": {"name": "late-key"}, "stringData": {"k": "here"}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).unwrap(),
        )
        .await
        .unwrap();
    wait_for_phase(&pods, "late", "Succeeded").await;
    assert_eq!(
        pods.logs("late", &Default::default()).await.unwrap(),
        "here\n",
        "the container read the Secret's key from its volume"
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .unwrap();
}
