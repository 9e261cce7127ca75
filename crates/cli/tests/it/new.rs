//! `kubeci new`: a job as a Helm chart, from scaffold to served — Helm's own engine lints
//! and renders it, `kubeci lint` accepts the ConfigMap it renders, and the Kubernetes
//! engine (against the fake API server) serves the job with the chart's version.
//! `examples/job-chart/` is exactly what `kubeci new` writes.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::serve::{json, serve};
use common::{kubeci, kubeci_with_input, repo_root, require_python_module};
use kubeci_testkit::FakeApiServer;

const REPO: &str = "git@github.com:org/demo.git";

fn helm(args: &[&str]) -> String {
    require_python_module("helm_python", "helm-python-sdk");
    let output = Command::new("python3")
        .arg(repo_root().join("scripts/helm.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The files below `root`: (path relative to it, text), sorted.
fn relative_files(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python's helm-python-sdk (scripts/helm.py) and kubernetes-validate: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
async fn a_new_job_chart_lints_renders_and_is_served_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("demo");
    let run = kubeci(&["new", "demo", "--repo", REPO, "-o", chart.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("demo-ssh-key"),
        "says which Secret: {}",
        run.stdout
    );
    assert_eq!(
        relative_files(&chart),
        relative_files(&repo_root().join("examples/job-chart")),
        "examples/job-chart is what `kubeci new demo --repo {REPO}` writes"
    );

    let report: serde_json::Value =
        serde_json::from_str(&helm(&["lint", chart.to_str().unwrap()])).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert!(
        report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["severity"].as_u64() < Some(2)),
        "{report}"
    );
    let rendered = helm(&["render", chart.to_str().unwrap(), "demo", "default"]);
    let manifest = dir.path().join("rendered.yaml");
    std::fs::write(&manifest, &rendered).unwrap();
    common::kubernetes_validate(&[manifest]);
    let lint = kubeci_with_input(&["lint", "-"], Some(rendered.as_bytes()));
    assert_eq!(lint.code, 0, "{}{}", lint.stdout, lint.stderr);
    assert!(
        lint.stdout.contains("1 job (1 valid), 0 errors"),
        "{}",
        lint.stdout
    );

    let mut configmap = kubeci_spec::yaml::parse_stream(
        &rendered,
        &kubeci_spec::yaml::PosMap::Identity,
        Default::default(),
    )
    .unwrap()
    .into_iter()
    .flatten()
    .next()
    .unwrap()
    .to_json();
    configmap["metadata"]["namespace"] = "default".into();
    let server = FakeApiServer::start().await;
    // The namespace allows the chart's Secret, as its administrator would with `kubectl
    // annotate namespace default kubeci.io/secrets=demo-ssh-key`.
    {
        let mut store = server.store();
        for namespace in store.current(0, None) {
            let mut namespace = (*namespace).clone();
            if namespace["metadata"]["name"] == "default" {
                namespace["metadata"]["annotations"]["kubeci.io/secrets"] = "demo-ssh-key".into();
                store.update(0, "", "default", namespace, false).unwrap();
            }
        }
    }
    server.preload(vec![configmap]).unwrap();
    let kubeci = serve(&server);
    let job = &json(&kubeci, "/api/v1/jobs")["items"][0];
    assert_eq!(job["name"], "demo");
    assert_eq!(job["valid"], true, "{job}");
    assert_eq!(job["chart_version"], "0.1.0");
    assert_eq!(job["git_url"], REPO);
}

#[test]
fn bad_names_urls_and_existing_directories_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["new", "Demo_Job", "--repo", REPO], "NAME \"Demo_Job\""),
        (
            &["new", "demo", "--repo", "not a url"],
            "--repo \"not a url\"",
        ),
        (
            &["new", "demo", "--repo", REPO, "--branch", "a..b"],
            "--branch \"a..b\"",
        ),
        (
            &["new", "demo", "--repo", REPO, "--admin=-bad-"],
            "--admin \"-bad-\"",
        ),
    ];
    for (args, says) in cases {
        let target = out("x");
        let mut args = args.to_vec();
        args.extend(["-o", &target]);
        let run = kubeci(&args);
        assert_ne!(run.code, 0, "{args:?}");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert!(!Path::new(&target).exists(), "nothing written for {args:?}");
    }
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let run = kubeci(&["new", "demo", "--repo", REPO, "-o", &out("taken")]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("exists already"), "{}", run.stderr);

    // A chart directory is Helm's input: `kubeci lint` says how to check it instead.
    let run = kubeci(&["lint", "examples/job-chart"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains("helm template examples/job-chart | kubeci lint -"),
        "{}",
        run.stderr
    );
}
