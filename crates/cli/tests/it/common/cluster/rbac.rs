//! kubeci as the cluster knows it: its installed objects (the chart's manifests), its
//! ServiceAccount's identity, and the RBAC it is granted against what it used.

/// The objects of deploy/manifests/kubeci.yaml, as JSON.
pub fn installed_objects() -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(super::super::repo_root().join("deploy/manifests/kubeci.yaml"))
            .unwrap();
    kubeci_spec::yaml::parse_stream(
        &text,
        &kubeci_spec::yaml::PosMap::Identity,
        Default::default(),
    )
    .unwrap()
    .into_iter()
    .filter_map(|d| d.map(|d| d.to_json()))
    .collect()
}

/// Runs `kubectl` (the one on PATH: `scripts/cluster env` puts the built one first) with
/// `kubeconfig`, feeding it `input`; panics with its output unless it succeeds.
pub fn kubectl(kubeconfig: &std::path::Path, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl on PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// kubeci as the cluster knows it once installed: the objects of deploy/manifests/kubeci.yaml
/// applied with `kubectl` (all but the Deployment — kubeci runs here, as the test's own
/// process) and a TokenRequest token of its ServiceAccount. The client it returns acts as
/// `system:serviceaccount:kubeci:kubeci`, with exactly the installed RBAC.
pub(super) fn kubeci_identity(kubeconfig: &std::path::Path, admin: kube::Config) -> kube::Client {
    static TOKENS: std::sync::Mutex<std::collections::BTreeMap<std::path::PathBuf, String>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let mut tokens = TOKENS.lock().unwrap_or_else(|e| e.into_inner());
    let token = tokens.entry(kubeconfig.to_owned()).or_insert_with(|| {
        let mut items = vec![serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeci"}})];
        items.extend(installed_objects().into_iter().filter(|o| o["kind"] != "Deployment"));
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        kubectl(kubeconfig, &["apply", "-f", "-"], &list.to_string());
        kubectl(kubeconfig, &["create", "token", "kubeci", "-n", "kubeci", "--duration=4h"], "")
            .trim()
            .to_owned()
    });
    let mut config = admin;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.clone().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).unwrap()
}

/// The rules of kubeci's ClusterRole as installed: from deploy/manifests/kubeci.yaml,
/// which the Helm chart renders (a test keeps the two equal).
pub fn granted_rules() -> Vec<serde_json::Value> {
    let role = installed_objects()
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/manifests/kubeci.yaml");
    role["rules"].as_array().unwrap().clone()
}

/// What the rules grant: (API group, resource, verb).
pub fn granted(
    rules: &[serde_json::Value],
) -> std::collections::BTreeSet<(String, String, String)> {
    let strings = |rule: &serde_json::Value, field: &str| -> Vec<String> {
        rule[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let mut triples = std::collections::BTreeSet::new();
    for rule in rules {
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    triples.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    triples
}

/// What `requests` used: (API group, resource, verb).
pub fn used(
    requests: &[kubeci_testkit::RecordedRequest],
) -> std::collections::BTreeSet<(String, String, String)> {
    let group_of = |path: &str| -> String {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts[0] == "apis" {
            parts[1].to_owned()
        } else {
            String::new()
        }
    };
    requests
        .iter()
        .filter(|r| !r.resource.is_empty())
        .map(|r| (group_of(&r.path), r.resource.clone(), r.verb.clone()))
        .collect()
}

/// Asserts that `requests` (kubeci's, as recorded at the API server or the proxy) never
/// touched a Secret and used only what kubeci's installed ClusterRole grants.
pub fn assert_rbac_grants(requests: &[kubeci_testkit::RecordedRequest]) {
    let rules = granted_rules();
    let granted = granted(&rules);
    assert!(
        granted
            .iter()
            .all(|(_, resource, _)| !resource.contains("secret")),
        "no secrets rule at all: {granted:?}"
    );
    assert!(
        requests.iter().filter(|r| !r.resource.is_empty()).count() > 5,
        "kubeci made requests"
    );
    for request in requests {
        assert!(
            !request.resource.starts_with("secrets"),
            "kubeci asked for a Secret: {request:?}"
        );
    }
    let not_granted: Vec<_> = used(requests).difference(&granted).cloned().collect();
    assert!(
        not_granted.is_empty(),
        "used but not granted by deploy/manifests/kubeci.yaml: {not_granted:?}"
    );
}
