//! What Prow is given to run: its configuration, one presubmit per repository as the
//! equivalent of a kubeci job, the `trigger` plugin, its identity on the API server and its
//! kubeconfig. Pure: each is built from [`ProwSettings`] as JSON, which Prow's YAML loader
//! (sigs.k8s.io/yaml) reads as it reads YAML.

use std::path::Path;

use serde_json::{json, Value};

/// The ServiceAccount Prow acts as, in its namespace.
pub const SERVICE_ACCOUNT: &str = "prow";

/// One presubmit job: on every pull request of `repo` (`owner/name`) from a trusted
/// author, clone the pull request's head and run `script`.
#[derive(Debug, Clone)]
pub struct Presubmit {
    pub repo: String,
    pub name: String,
    /// Run by `sh -c` in the checkout, after the clone.
    pub script: String,
}

/// How to run Prow: where its ProwJobs and pods live, GitHub, and its jobs.
#[derive(Debug, Clone)]
pub struct ProwSettings {
    /// The namespace of its ProwJobs, their pods and its leader-election leases.
    pub namespace: String,
    /// The API server's URL and the CA file that signs its certificate.
    pub api_server: String,
    pub api_server_ca: std::path::PathBuf,
    /// A token of [`SERVICE_ACCOUNT`] (see [`identity_objects`]).
    pub token: String,
    /// The GitHub API's base URL (the fake GitHub's) and the token Prow calls it with.
    pub github_url: String,
    pub github_token: String,
    /// The webhook's HMAC secret.
    pub hmac_secret: String,
    pub presubmits: Vec<Presubmit>,
    /// `sinker`'s section of `config.yaml` ([`integration_test_sinker`]); `None` leaves
    /// Prow's defaults (a pass each hour, ProwJobs kept 7 days, pods 24 hours).
    pub sinker: Option<Value>,
}

/// The ages of Prow's own integration-test configuration
/// (test/integration/config/prow/config.yaml of the pinned module), resyncing every minute.
pub fn integration_test_sinker() -> Value {
    json!({
        "resync_period": "1m",
        "max_prowjob_age": "48h",
        "max_pod_age": "48h",
        "terminated_pod_ttl": "30m",
    })
}

/// Prow's `config.yaml`: ProwJobs and pods in one namespace, crier reporting presubmits
/// as commit statuses, sinker as [`ProwSettings::sinker`] says.
pub fn config(settings: &ProwSettings) -> Value {
    let mut config = json!({
        "prowjob_namespace": settings.namespace,
        "pod_namespace": settings.namespace,
        "plank": {"max_goroutines": 20},
        "github_reporter": {"job_types_to_report": ["presubmit"]},
    });
    if let Some(sinker) = &settings.sinker {
        config["sinker"] = sinker.clone();
    }
    config
}

/// The job configuration: each presubmit undecorated (Prow's decoration needs its
/// clonerefs, initupload, entrypoint and sidecar images and a GCS or S3 bucket), its one
/// container cloning the pull request's head — from the variables plank gives an
/// undecorated job's container — and running the script, as kubeci's clone step and build
/// step do in two containers. Reported as context `prow/<name>`.
pub fn job_config(settings: &ProwSettings) -> Value {
    let mut presubmits = serde_json::Map::new();
    for job in &settings.presubmits {
        let clone = "set -e; git init -q; \
            git fetch -q --no-tags \"https://github.com/$REPO_OWNER/$REPO_NAME.git\" \
            \"+refs/pull/$PULL_NUMBER/head\"; \
            git -c advice.detachedHead=false checkout -q --detach \"$PULL_PULL_SHA\"";
        let entry = json!({
            "name": job.name,
            "always_run": true,
            "decorate": false,
            "context": format!("prow/{}", job.name),
            "spec": {
                "containers": [{
                    "image": "bash:5",
                    "command": ["sh", "-c", format!("{clone}\n{}", job.script)],
                    "workingDir": "/workspace",
                    "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                }],
                "volumes": [{"name": "workspace", "emptyDir": {}}],
            },
        });
        let list = presubmits
            .entry(job.repo.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        list.as_array_mut().expect("a list").push(entry);
    }
    json!({ "presubmits": presubmits })
}

/// `plugins.yaml`: `trigger` on every repository with a presubmit, at its defaults (org
/// members and collaborators are trusted).
pub fn plugins(settings: &ProwSettings) -> Value {
    let mut repos: Vec<&str> = settings
        .presubmits
        .iter()
        .map(|p| p.repo.as_str())
        .collect();
    repos.sort_unstable();
    repos.dedup();
    let plugins: serde_json::Map<String, Value> = repos
        .iter()
        .map(|repo| ((*repo).to_owned(), json!({"plugins": ["trigger"]})))
        .collect();
    json!({"plugins": plugins, "triggers": [{"repos": repos}]})
}

/// Prow's identity in `namespace`: [`SERVICE_ACCOUNT`] with a Role granting what hook,
/// plank, crier and sinker use there — ProwJobs, pods, events and their leader-election
/// leases.
pub fn identity_objects(namespace: &str) -> Vec<Value> {
    let all = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
        "rules": [
            {"apiGroups": ["prow.k8s.io"], "resources": ["prowjobs", "prowjobs/status"], "verbs": all},
            {"apiGroups": [""], "resources": ["pods"], "verbs": all},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": all},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": all},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]}),
    ]
}

/// The kubeconfig every component loads: one context, named `default` (the build
/// cluster Prow's jobs run on, and its own).
pub fn kubeconfig(settings: &ProwSettings) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kubeci", "cluster": {
            "server": settings.api_server,
            "certificate-authority": path_text(&settings.api_server_ca),
        }}],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": settings.token}}],
        "contexts": [{"name": "default", "context": {
            "cluster": "kubeci", "user": SERVICE_ACCOUNT, "namespace": settings.namespace,
        }}],
        "current-context": "default",
    })
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// `X-Hub-Signature` of a webhook delivery as GitHub computes it and Prow's hook checks
/// it: `sha1=` and the hex HMAC-SHA1 of the body (hook reads no `X-Hub-Signature-256`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProwSettings {
        ProwSettings {
            namespace: "prow-1".into(),
            api_server: "https://127.0.0.1:6443".into(),
            api_server_ca: "/tmp/ca.crt".into(),
            token: "t0ken".into(),
            github_url: "http://127.0.0.1:1".into(),
            github_token: "gh".into(),
            hmac_secret: "s3cret".into(),
            presubmits: vec![
                Presubmit {
                    repo: "Codertocat/Hello-World".into(),
                    name: "hello".into(),
                    script: "echo built".into(),
                },
                Presubmit {
                    repo: "Codertocat/Hello-World".into(),
                    name: "lint".into(),
                    script: "true".into(),
                },
            ],
            sinker: Some(integration_test_sinker()),
        }
    }

    #[test]
    fn each_presubmit_clones_the_pull_request_head_then_runs_its_script() {
        let config = job_config(&settings());
        let jobs = config["presubmits"]["Codertocat/Hello-World"]
            .as_array()
            .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0]["context"], "prow/hello");
        assert_eq!(jobs[0]["decorate"], false);
        let command = jobs[0]["spec"]["containers"][0]["command"][2]
            .as_str()
            .unwrap();
        assert!(
            command.contains("+refs/pull/$PULL_NUMBER/head"),
            "{command}"
        );
        assert!(command.contains("checkout -q --detach \"$PULL_PULL_SHA\""));
        assert!(command.ends_with("\necho built"), "{command}");
    }

    #[test]
    fn trigger_is_on_for_each_repository_once() {
        let plugins = plugins(&settings());
        assert_eq!(
            plugins["plugins"]["Codertocat/Hello-World"]["plugins"],
            json!(["trigger"])
        );
        assert_eq!(
            plugins["triggers"][0]["repos"],
            json!(["Codertocat/Hello-World"])
        );
    }

    #[test]
    fn sinker_is_left_at_prows_defaults_unless_given() {
        let mut settings = settings();
        assert_eq!(config(&settings)["sinker"]["resync_period"], "1m");
        settings.sinker = None;
        assert!(config(&settings).get("sinker").is_none());
    }

    #[test]
    fn jobs_and_pods_live_in_the_namespace_of_prows_identity() {
        let settings = settings();
        assert_eq!(config(&settings)["pod_namespace"], "prow-1");
        let objects = identity_objects("prow-1");
        assert!(objects
            .iter()
            .all(|o| o["metadata"]["namespace"] == "prow-1"));
        let kubeconfig = kubeconfig(&settings);
        assert_eq!(kubeconfig["current-context"], "default");
        assert_eq!(kubeconfig["users"][0]["user"]["token"], "t0ken");
    }

    #[test]
    fn the_signature_is_githubs_hmac_sha1() {
        // GitHub's documented example (secret "It's a Secret to Everybody", body
        // "Hello, World!") in SHA-1, as Python's hmac module computes it.
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"
        );
    }
}
