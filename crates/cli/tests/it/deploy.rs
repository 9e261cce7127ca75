//! What installs kubeci: the Helm chart `deploy/helm/kubeci`, linted and rendered by Helm's
//! own engine (Helm v4's library, from PyPI's `helm-python-sdk`), every object checked
//! against Kubernetes' OpenAPI schema, and the plain manifests for users without Helm,
//! which must be exactly what the chart renders.

use crate::common;

use std::process::Command;

use common::{repo_root, require_python_module};
use serde_json::{json, Value};

const CHART: &str = "deploy/helm/kubeci";

/// `scripts/helm.py ARGS` in the repository root: its stdout.
fn helm_run(args: &[&str]) -> std::process::Output {
    require_python_module("helm_python", "helm-python-sdk");
    Command::new("python3")
        .arg("scripts/helm.py")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("python3 runs")
}

fn helm(args: &[&str]) -> String {
    let output = helm_run(args);
    assert!(
        output.status.success(),
        "scripts/helm.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn render(values: &Value) -> String {
    helm(&["render", CHART, "kubeci", "kubeci", &values.to_string()])
}

/// The objects of a YAML stream.
fn objects(stream: &str) -> Vec<Value> {
    kubeci_spec::yaml::parse_stream(
        stream,
        &kubeci_spec::yaml::PosMap::Identity,
        Default::default(),
    )
    .unwrap()
    .into_iter()
    .flatten()
    .map(|d| d.to_json())
    .collect()
}

fn namespaced() -> Value {
    json!({"watch": {"scope": "namespaces", "namespaces": ["team-a", "team-b"]}})
}

fn with_credentials() -> Value {
    json!({
        "auth": {"tokenSecret": {"name": "kubeci-token"}, "userHeader": "X-Forwarded-User", "allowedUsers": ["alice"]},
        "github": {"webhookSecret": {"name": "kubeci-github"}, "tokenSecret": {"name": "kubeci-github"}},
        "ingress": {"enabled": true, "host": "ci.example.com", "tlsSecretName": "ci-tls"},
    })
}

/// An archive in S3: its URL, its credentials from an existing Secret (every key, and
/// one key), its region, and a role by workload identity (IRSA).
fn with_an_archive() -> Value {
    json!({
        "archive": {
            "url": "s3://ci-builds/kubeci",
            "giveUpAfter": "12h",
            "maxAge": "90d",
            "maxCount": 1000,
            "credentialsSecret": "kubeci-archive",
            "env": [
                {"name": "AWS_REGION", "value": "eu-west-1"},
                {"name": "AWS_ENDPOINT_URL", "valueFrom": {"secretKeyRef": {"name": "kubeci-archive-endpoint", "key": "url"}}},
            ],
            "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/kubeci"},
        },
    })
}

/// kubeci as a GitHub App: its id, and the Secret of its private key.
fn as_a_github_app() -> Value {
    json!({
        "github": {
            "webhookSecret": {"name": "kubeci-github"},
            "app": {"id": "1717", "keySecret": {"name": "kubeci-github-app"}},
        },
    })
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn the_chart_lints_clean_in_every_mode() {
    for values in [
        json!({}),
        namespaced(),
        with_credentials(),
        as_a_github_app(),
        with_an_archive(),
    ] {
        let report: Value =
            serde_json::from_str(&helm(&["lint", CHART, &values.to_string()])).unwrap();
        assert_eq!(report["errors"], json!([]), "{values}: {report}");
        let problems: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64() >= Some(2))
            .collect();
        assert!(problems.is_empty(), "{values}: {problems:?}");
    }
}

#[test]
#[ignore = "needs Python's helm-python-sdk (scripts/helm.py) and kubernetes-validate: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn every_rendered_object_passes_strict_kubernetes_validation() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = 0;
    let mut files = Vec::new();
    for (name, values) in [
        ("default", json!({})),
        ("namespaced", namespaced()),
        ("credentials", with_credentials()),
        ("github-app", as_a_github_app()),
        ("archive", with_an_archive()),
    ] {
        let stream = render(&values);
        expected += objects(&stream).len();
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, stream).unwrap();
        files.push(file);
    }
    let report = common::kubernetes_validate(&files);
    assert_eq!(
        report.matches("passed for resource").count(),
        expected,
        "{report}"
    );
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn the_plain_manifests_are_what_the_chart_renders() {
    let committed =
        std::fs::read_to_string(repo_root().join("deploy/manifests/kubeci.yaml")).unwrap();
    let rendered = render(&json!({}));
    let body: String = committed
        .lines()
        .skip_while(|l| l.starts_with("# ") && !l.starts_with("# Source:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        body == rendered,
        "deploy/manifests/kubeci.yaml differs from the chart: run scripts/render-manifests"
    );
    assert_eq!(objects(&committed), objects(&rendered));
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn the_deployment_is_highly_available_unprivileged_and_probed() {
    let objects = objects(&render(&json!({})));
    let deployment = of_kind(&objects, "Deployment")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(spec["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(
        of_kind(&objects, "PodDisruptionBudget")[0]["spec"]["minAvailable"],
        1
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["memory"].is_string());
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[..2], ["serve", "--kubernetes"]);
    // The arguments are flags this kubeci knows.
    let help = common::kubeci(&["serve", "--help"]).stdout;
    for arg in &args[2..] {
        let flag = arg.split('=').next().unwrap();
        assert!(help.contains(flag), "{flag} is not a `kubeci serve` flag");
    }
    assert!(of_kind(&objects, "Ingress").is_empty(), "optional");
    assert!(of_kind(&objects, "ServiceMonitor").is_empty(), "optional");
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn kubecis_credentials_are_mounted_into_kubeci_alone_and_no_rule_names_secrets() {
    let objects = objects(&render(&with_credentials()));
    let spec = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let secrets: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(secrets, ["kubeci-token", "kubeci-github", "kubeci-github"]);
    let args = spec["containers"][0]["args"].to_string();
    for flag in [
        "--token-file=/etc/kubeci/token/token",
        "--github-webhook-secret-file=/etc/kubeci/github-webhook/webhook-secret",
        "--github-token-file=/etc/kubeci/github-token/token",
        "--auth-user-header=X-Forwarded-User",
        "--allow-user=alice",
    ] {
        assert!(args.contains(flag), "{flag} in {args}");
    }
    for values in [
        json!({}),
        namespaced(),
        with_credentials(),
        with_an_archive(),
    ] {
        for role in objects_of_roles(&values) {
            assert!(
                !role["rules"].to_string().contains("secret"),
                "{values}: {role}"
            );
        }
    }
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn the_archive_s_credentials_reach_kubeci_s_environment_through_the_kubelet_alone() {
    let objects = objects(&render(&with_an_archive()));
    let spec = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let args = container["args"].to_string();
    for flag in [
        "--archive=s3://ci-builds/kubeci",
        "--archive-give-up-after=12h",
        "--archive-max-age=90d",
        "--archive-max-count=1000",
        // Build pods hand their files to kubeci's own Service (issue 30).
        "--collect-url=http://kubeci.kubeci.svc:80",
    ] {
        assert!(args.contains(flag), "{flag} in {args}");
    }
    assert_eq!(
        container["envFrom"],
        json!([{"secretRef": {"name": "kubeci-archive"}}]),
        "the Secret's keys become the environment: the kubelet reads it, kubeci never does"
    );
    let env = container["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "AWS_REGION", "value": "eu-west-1"})),
        "{env:?}"
    );
    assert!(
        env.iter()
            .any(|e| e["valueFrom"]["secretKeyRef"]["name"] == "kubeci-archive-endpoint"),
        "{env:?}"
    );
    let account = &of_kind(&objects, "ServiceAccount")[0];
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/kubeci"
    );
    let plain = objects_of_deployment_args(&render(&json!({})));
    assert!(
        !plain.contains("--archive") && !plain.contains("--collect-url"),
        "off unless archive.url is set: {plain}"
    );
}

fn objects_of_deployment_args(stream: &str) -> String {
    let objects = objects(stream);
    of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string()
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn a_github_apps_key_is_mounted_into_kubeci_alone_and_named_by_flags_kubeci_knows() {
    let objects = objects(&render(&as_a_github_app()));
    let spec = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    let app_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "github-app")
        .expect("the key's volume");
    assert_eq!(
        app_volume["secret"],
        json!({"secretName": "kubeci-github-app", "items": [{"key": "private-key.pem", "path": "private-key.pem"}]})
    );
    let args: Vec<String> = spec["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    for flag in [
        "--github-app-id=1717",
        "--github-app-key-file=/etc/kubeci/github-app/private-key.pem",
    ] {
        assert!(args.iter().any(|a| a == flag), "{flag} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--github-token-file")));
    let help = common::kubeci(&["serve", "--help"]).stdout;
    for flag in ["--github-app-id", "--github-app-key-file"] {
        assert!(help.contains(flag), "{flag} is not a `kubeci serve` flag");
    }
    let without_id = json!({"github": {"app": {"keySecret": {"name": "k"}}}});
    let refused = helm_run(&["render", CHART, "kubeci", "kubeci", &without_id.to_string()]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a key without its App's id");
    assert!(error.contains("github.app.id"), "{error}");
}

fn objects_of_roles(values: &Value) -> Vec<Value> {
    objects(&render(values))
        .into_iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .collect()
}

/// The rule that lets kubeci ask whose a build pod collector's token is (issue 30).
fn collect_rule() -> Value {
    json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]})
}

/// The rule of the ClusterRole that lets kubeci watch the Namespaces of `watch.namespaces`
/// (tenancy): those by name, nothing else of the cluster.
fn namespaces_rule(names: &[&str]) -> Value {
    json!([{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": names, "verbs": ["list", "watch"]}])
}

#[test]
#[ignore = "needs Helm's engine, Python's helm-python-sdk (scripts/helm.py): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn namespaced_mode_grants_the_same_rules_in_each_namespace_and_cluster_wide_only_its_namespaces() {
    let objects = objects(&render(&namespaced()));
    let cluster_roles = of_kind(&objects, "ClusterRole");
    assert_eq!(cluster_roles.len(), 2, "{cluster_roles:?}");
    assert_eq!(cluster_roles[0]["metadata"]["name"], "kubeci-namespaces");
    assert_eq!(
        cluster_roles[0]["rules"],
        namespaces_rule(&["team-a", "team-b"])
    );
    // TokenReviews are cluster-scoped: the collectors' rule alone, cluster-wide.
    assert_eq!(cluster_roles[1]["metadata"]["name"], "kubeci-collect");
    assert_eq!(cluster_roles[1]["rules"], json!([collect_rule()]));
    assert_eq!(of_kind(&objects, "ClusterRoleBinding").len(), 2);
    let mut open = namespaced();
    open["tenancy"] = json!("open");
    let open = self::objects(&render(&open));
    let open_roles = of_kind(&open, "ClusterRole");
    assert_eq!(
        open_roles.len(),
        1,
        "open reads no Namespace: the collectors' rule alone"
    );
    assert_eq!(open_roles[0]["rules"], json!([collect_rule()]));
    assert_eq!(of_kind(&open, "ClusterRoleBinding").len(), 1);
    let cluster_wide = self::objects(&render(&json!({})));
    let mut cluster_rules = of_kind(&cluster_wide, "ClusterRole")[0]["rules"].clone();
    let tenancy_rule = cluster_rules.as_array_mut().unwrap().pop().unwrap();
    assert_eq!(
        tenancy_rule,
        json!({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}),
        "cluster-wide, the last rule watches Namespaces (tenancy)"
    );
    let collect = cluster_rules.as_array_mut().unwrap().pop().unwrap();
    assert_eq!(collect, collect_rule(), "then the collectors' TokenReviews");
    let cluster_rules = &cluster_rules;
    let roles = of_kind(&objects, "Role");
    let namespaces: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["team-a", "team-b", "kubeci"]);
    for role in &roles[..2] {
        assert_eq!(&role["rules"], cluster_rules);
    }
    assert_eq!(
        roles[2]["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update"]}]),
        "the release namespace: the leader Lease only"
    );
    let args = of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        ["args"]
        .to_string();
    assert!(args.contains("--namespace=team-a") && args.contains("--namespace=team-b"));
    assert_eq!(of_kind(&objects, "RoleBinding").len(), 3);
}

/// The plain manifests and the chart in each of its modes pass a real API server's
/// admission (`kubectl apply --dry-run=server`: schema, defaulting, validation, RBAC
/// escalation checks) on the control plane of `scripts/cluster up`, or the cluster of
/// `KUBECI_E2E_KUBECONFIG`.
#[test]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
fn the_manifests_and_every_chart_mode_pass_a_real_api_servers_admission() {
    let kubeconfig = std::env::var_os("KUBECI_E2E_KUBECONFIG").expect(
        "a real Kubernetes API server is needed: `eval \"$(scripts/cluster up)\"` or \
         KUBECI_E2E_KUBECONFIG=<kubeconfig>",
    );
    let kubeconfig = std::path::Path::new(&kubeconfig);
    let namespaces: Vec<Value> = ["kubeci", "team-a", "team-b", "payments"]
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": namespaces});
    common::cluster::kubectl(kubeconfig, &["apply", "-f", "-"], &list.to_string());
    let manifests =
        std::fs::read_to_string(repo_root().join("deploy/manifests/kubeci.yaml")).unwrap();
    // The build Jobs kubeci renders too (their golden files): the pod's hardening, the
    // SSH Secret's projection and the build step's own token volume are all valid.
    let mut golden_jobs: Vec<_> = std::fs::read_dir(repo_root().join("tests/golden/render"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    golden_jobs.sort();
    assert!(golden_jobs.len() >= 5, "{golden_jobs:?}");
    let golden_jobs = golden_jobs.into_iter().map(|path| {
        let name = path.display().to_string();
        (name, std::fs::read_to_string(path).unwrap())
    });
    for (name, stream) in [
        ("deploy/manifests/kubeci.yaml".to_owned(), manifests),
        ("the chart (default)".to_owned(), render(&json!({}))),
        ("the chart (namespaced)".to_owned(), render(&namespaced())),
        (
            "the chart (with credentials and an Ingress)".to_owned(),
            render(&with_credentials()),
        ),
        ("the chart (archive)".to_owned(), render(&with_an_archive())),
    ]
    .into_iter()
    .chain(golden_jobs)
    {
        let count = objects(&stream).len();
        let applied = common::cluster::kubectl(
            kubeconfig,
            &["apply", "--dry-run=server", "-f", "-"],
            &stream,
        );
        assert_eq!(
            applied.matches("(server dry run)").count(),
            count,
            "{name}: every object admitted:\n{applied}"
        );
    }
}

/// With `watch.scope: namespaces`, kubeci watches each of its Namespaces by name (a field
/// selector on `metadata.name`): a real API server allows exactly that with the chart's
/// ClusterRole (`resourceNames`), and refuses another Namespace and the whole list.
#[test]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
fn the_namespaced_charts_namespace_rule_lets_kubeci_watch_only_its_namespaces_by_name() {
    let kubeconfig = std::env::var_os("KUBECI_E2E_KUBECONFIG").expect(
        "a real Kubernetes API server is needed: `eval \"$(scripts/cluster up)\"` or \
         KUBECI_E2E_KUBECONFIG=<kubeconfig>",
    );
    let kubeconfig = std::path::Path::new(&kubeconfig);
    let probe = format!("kubeci-e2e-ns-rule-{}", std::process::id());
    let (mine, other) = (format!("{probe}-a"), format!("{probe}-b"));
    let objects = objects(&render(&namespaced()));
    let mut role = of_kind(&objects, "ClusterRole")[0].clone();
    role["metadata"] = json!({"name": probe});
    role["rules"][0]["resourceNames"] = json!([mine]);
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": probe},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": probe},
        "subjects": [{"kind": "User", "name": probe}]});
    let namespace =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let list = json!({"apiVersion": "v1", "kind": "List",
        "items": [namespace(&mine), namespace(&other), role, binding]});
    common::cluster::kubectl(kubeconfig, &["apply", "-f", "-"], &list.to_string());
    let as_probe = |path: &str| {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([&format!("--as={probe}"), "get", "--raw", path])
            .output()
            .expect("kubectl on PATH")
    };
    let by_name = |name: &str, watch: bool| {
        let watch = if watch {
            "&watch=true&timeoutSeconds=1"
        } else {
            ""
        };
        as_probe(&format!(
            "/api/v1/namespaces?fieldSelector=metadata.name%3D{name}{watch}"
        ))
    };
    let listed = by_name(&mine, false);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&mine));
    let watched = by_name(&mine, true);
    assert!(watched.status.success(), "{watched:?}");
    for refused in [
        by_name(&other, false),
        by_name(&other, true),
        as_probe("/api/v1/namespaces"),
    ] {
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("Forbidden"),
            "{refused:?}"
        );
    }
    common::cluster::kubectl(
        kubeconfig,
        &[
            "delete",
            "--wait=false",
            &format!("clusterrole/{probe}"),
            &format!("clusterrolebinding/{probe}"),
            &format!("namespace/{mine}"),
            &format!("namespace/{other}"),
        ],
        "",
    );
}
