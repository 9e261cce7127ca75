//! The Kubernetes-engine scenarios against a real cluster, when `KUBECI_E2E_KUBECONFIG`
//! names a kubeconfig; skipped (saying so) otherwise. The cluster needs to pull
//! kubeci's image for the clone step (`KUBECI_E2E_CLONE_IMAGE`, default `--clone-image`'s)
//! and `bash:5` (the job's image here), and the build clones a public GitHub repository,
//! so it needs network access.
//!
//! Run: `KUBECI_E2E_KUBECONFIG=~/.kube/config cargo test -p kubeci --test serve_kubernetes_e2e`

mod common;

use std::time::Duration;

use common::serve::{http, job_names, serve_cluster, AUTHORIZED};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};

fn kubeconfig() -> Option<std::path::PathBuf> {
    match std::env::var_os("KUBECI_E2E_KUBECONFIG") {
        Some(path) => Some(path.into()),
        None => {
            eprintln!(
                "SKIPPED: the real-cluster scenarios need KUBECI_E2E_KUBECONFIG=<kubeconfig>; \
                 the same scenarios ran against the fake API server"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_served_built_cancelled_and_removed_on_a_real_cluster() {
    let Some(path) = kubeconfig() else { return };
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&path).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespace = format!("kubeci-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let job_yaml = "- job:\n    name: e2e\n    image: bash:5\n    git:\n      url: https://github.com/octocat/Hello-World.git\n    run_command: ls -la && echo e2e-ok\n    timeout: 5m\n";
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "e2e", "labels": {"ci-job-spec": "true"}},
            "data": {"job.yaml": job_yaml},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let clone_image = std::env::var("KUBECI_E2E_CLONE_IMAGE").ok();
    let mut flags = vec![
        "--namespace",
        &namespace,
        "--lease-namespace",
        &namespace,
        "--pending-deadline",
        "5m",
    ];
    if let Some(image) = &clone_image {
        flags.extend(["--clone-image", image.as_str()]);
    }
    let kubeci = serve_cluster(&path, &flags);
    assert_eq!(job_names(&kubeci), ["e2e"]);
    let (status, body) = http(
        &kubeci,
        "POST",
        &format!("/api/v1/jobs/{namespace}/e2e/builds"),
        &[AUTHORIZED],
    );
    assert_eq!(status, 201, "{body}");
    let finished = |k: &common::serve::Kubeci| {
        common::serve::json(k, &format!("/api/v1/jobs/{namespace}/e2e/builds"))["items"][0]["state"]
            .as_str()
            .map(str::to_owned)
            .filter(|s| ["succeeded", "failed", "error"].contains(&s.as_str()))
    };
    common::git::wait_for(Duration::from_secs(300), "the build to finish", || {
        finished(&kubeci).is_some()
    });
    assert_eq!(finished(&kubeci).as_deref(), Some("succeeded"));
    let (status, log) = http(
        &kubeci,
        "GET",
        &format!("/api/v1/jobs/{namespace}/e2e/builds/1/log"),
        &[],
    );
    assert_eq!(status, 200);
    assert!(log.contains("e2e-ok"), "{log}");
    cms.delete("e2e", &DeleteParams::default()).await.unwrap();
    common::git::wait_for(Duration::from_secs(30), "the job to be gone", || {
        job_names(&kubeci).is_empty()
    });
    namespaces
        .delete(&namespace, &DeleteParams::background())
        .await
        .unwrap();
}
