//! The API objects a pod refers to (as a kubelet reads them) reach its environment and
//! volumes, and a container's life is reported as it happens.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::Job;
use kubeci_pod_runner::{ContainerChange, LocalEnv, LogEvent, LogSink, Outcome, PodObjects};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
    changes: Mutex<Vec<ContainerChange>>,
}

impl LogSink for Recorder {
    fn event(&self, event: LogEvent) {
        if let LogEvent::Line { text, .. } = event {
            self.lines.lock().unwrap().push(text);
        }
    }

    fn container(&self, change: ContainerChange) {
        self.changes.lock().unwrap().push(change);
    }
}

fn job(pod: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "build-1", "namespace": "team"},
        "spec": {"template": {"spec": pod}},
    }))
    .unwrap()
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

async fn run(job: &Job, objects: PodObjects) -> (Outcome, Arc<Recorder>) {
    let dir = tempfile::tempdir().unwrap();
    let env = LocalEnv {
        build_dir: dir.path().join("build"),
        secrets_dir: None,
        kubeci_exe: "/bin/false".into(),
        host_env: LocalEnv::host_env_from_process(),
        objects,
        run_as: None,
        sidecars: false,
    };
    let recorder = Arc::new(Recorder::default());
    let result = kubeci_pod_runner::run_job(job, &env, recorder.clone(), CancellationToken::new())
        .await
        .unwrap();
    (result.outcome, recorder)
}

#[tokio::test]
async fn config_maps_fields_tokens_and_secrets_reach_the_pod() {
    let pod = json!({
        "restartPolicy": "Never",
        "volumes": [
            {"name": "settings", "configMap": {"name": "settings", "items": [{"key": "mode", "path": "conf/mode"}]}},
            {"name": "api", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}},
        ],
        "containers": [{
            "name": "build", "image": "any",
            "command": ["/bin/sh", "-c", "cat \"$MODE_FILE\" \"$API/token\"; echo; cat \"$API/namespace\" \"$API/ca.crt\"; echo; echo \"$MODE $NODE $POD $PASSWORD\""],
            "env": [
                // Paths are mapped where they are whole values (see `paths`).
                {"name": "MODE_FILE", "value": "/etc/settings/conf/mode"},
                {"name": "API", "value": "/var/run/secrets/kubernetes.io/serviceaccount"},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            ],
            "volumeMounts": [
                {"name": "settings", "mountPath": "/etc/settings"},
                {"name": "api", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
            ],
        }],
    });
    let objects = PodObjects {
        secrets: [("db".to_owned(), data(&[("password", "s3cret")]))].into(),
        config_maps: [
            ("settings".to_owned(), data(&[("mode", "fast")])),
            ("kube-root-ca.crt".to_owned(), data(&[("ca.crt", "CA")])),
        ]
        .into(),
        fields: [("spec.nodeName".to_owned(), "node-1".to_owned())].into(),
        tokens: [(String::new(), "TOKEN".to_owned())].into(),
    };
    let (outcome, recorder) = run(&job(pod), objects).await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        *recorder.lines.lock().unwrap(),
        ["fastTOKEN", "teamCA", "fast node-1 build-1-local s3cret"]
    );
    let changes = recorder.changes.lock().unwrap();
    assert!(
        matches!(&changes[..], [ContainerChange::Started { container, init: false, .. }, ContainerChange::Exited { exit_code: 0, .. }] if container == "build"),
        "{changes:?}"
    );
}

#[tokio::test]
async fn a_missing_config_map_or_key_stops_the_container_in_kubernetes_words() {
    let pod = |env: serde_json::Value| {
        json!({
            "initContainers": [{"name": "first", "image": "any", "command": ["/bin/true"]}],
            "containers": [{"name": "build", "image": "any", "command": ["/bin/true"], "env": [env]}],
        })
    };
    let missing =
        pod(json!({"name": "A", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}));
    let (outcome, recorder) = run(&job(missing), PodObjects::default()).await;
    let message = "configmap \"nope\" not found";
    assert_eq!(
        outcome,
        Outcome::NotStarted {
            reason: "CreateContainerConfigError".into(),
            message: message.into()
        }
    );
    // The init container ran first, as the kubelet runs it.
    let changes = recorder.changes.lock().unwrap().clone();
    assert!(
        matches!(&changes[..], [ContainerChange::Started { init: true, .. }, ContainerChange::Exited { init: true, exit_code: 0, .. }, ContainerChange::Waiting { container, reason, message: m, .. }] if container == "build" && reason == "CreateContainerConfigError" && m == message),
        "{changes:?}"
    );

    let no_key =
        pod(json!({"name": "A", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user"}}}));
    let objects = PodObjects {
        secrets: [("db".to_owned(), data(&[("password", "x")]))].into(),
        ..PodObjects::default()
    };
    let (outcome, _) = run(&job(no_key), objects).await;
    assert_eq!(
        outcome,
        Outcome::NotStarted {
            reason: "CreateContainerConfigError".into(),
            message: "couldn't find key user in Secret team/db".into()
        }
    );
}

#[tokio::test]
async fn a_volume_path_cannot_leave_its_volume() {
    let pod = json!({
        "volumes": [{"name": "v", "configMap": {"name": "m", "items": [{"key": "k", "path": "../escape"}]}}],
        "containers": [{"name": "build", "image": "any", "command": ["/bin/true"],
                        "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
    });
    let objects = PodObjects {
        config_maps: [("m".to_owned(), data(&[("k", "x")]))].into(),
        ..PodObjects::default()
    };
    let (outcome, _) = run(&job(pod), objects).await;
    assert!(
        matches!(&outcome, Outcome::NotStarted { reason, message } if reason == "FailedMount" && message.contains("invalid path")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn dropping_a_run_ends_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let pod = json!({"containers": [{"name": "build", "image": "any",
        "command": ["/bin/sh", "-c", "echo $$$$ > \"$PID_FILE\"; sleep 600"],
        "env": [{"name": "PID_FILE", "value": pid_file.to_str().unwrap()}]}]});
    let job = job(pod);
    let env = LocalEnv {
        build_dir: dir.path().join("build"),
        secrets_dir: None,
        kubeci_exe: "/bin/false".into(),
        host_env: LocalEnv::host_env_from_process(),
        objects: PodObjects::default(),
        run_as: None,
        sidecars: false,
    };
    let sink: Arc<dyn LogSink> = Arc::new(Recorder::default());
    let run = kubeci_pod_runner::run_job(&job, &env, sink, CancellationToken::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    // (`$$$$` is the shell's `$$` once Kubernetes' `$(VAR)` expansion has read it.)
    // Run it until the script wrote its pid, then drop it (as a caller's select! does).
    let pid = {
        let mut run = std::pin::pin!(run);
        loop {
            tokio::select! {
                _ = &mut run => panic!("the script ended by itself"),
                () = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
            }
            if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                if !pid.trim().is_empty() {
                    break pid.trim().parse::<i32>().unwrap();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the script never started"
            );
        }
    };
    let alive = || nix_alive(pid);
    while alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} outlived its run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` exists and is not a zombie.
fn nix_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}
