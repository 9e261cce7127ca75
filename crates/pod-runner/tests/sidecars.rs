//! Native sidecars as the kubelet runs them: started in their turn and left running beside
//! the containers after them, stopped with SIGTERM once those ended (or were stopped),
//! killed past the pod's grace period; the pod's outcome is its containers' alone. Or
//! left out, with the volumes only they mount.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kubeci_pod_runner::{ContainerChange, LocalEnv, LogEvent, LogSink, Outcome, Stops};
use serde_json::json;

#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<(String, String)>>,
    changes: Mutex<Vec<ContainerChange>>,
}

impl LogSink for Recorder {
    fn event(&self, event: LogEvent) {
        if let LogEvent::Line { container, text } = event {
            self.lines.lock().unwrap().push((container, text));
        }
    }

    fn container(&self, change: ContainerChange) {
        self.changes.lock().unwrap().push(change);
    }
}

impl Recorder {
    fn lines_of(&self, container: &str) -> Vec<String> {
        (self.lines.lock().unwrap().iter())
            .filter(|(c, _)| c == container)
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// Each container's end, in order: (name, exit code).
    fn ends(&self) -> Vec<(String, i32)> {
        (self.changes.lock().unwrap().iter())
            .filter_map(|change| match change {
                ContainerChange::Exited {
                    container,
                    exit_code,
                    ..
                } => Some((container.clone(), *exit_code)),
                _ => None,
            })
            .collect()
    }
}

/// A pod whose sidecar `collect` runs `sidecar` and whose build runs `build`, both with
/// the workspace at `$WS`; the sidecar mounts a token volume of its own.
fn pod(sidecar: &str, build: &str, grace: i64) -> Job {
    let workspace = json!([{"name": "workspace", "mountPath": "/workspace"}]);
    let env = json!([{"name": "WS", "value": "/workspace"}]);
    serde_json::from_value(json!({
        "metadata": {"name": "build-1", "namespace": "team"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": grace,
            "volumes": [
                {"name": "workspace", "emptyDir": {}},
                {"name": "collect-token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "audience": "kubeci-collect"}}]}},
            ],
            "initContainers": [
                {"name": "clone", "image": "any", "command": ["/bin/sh", "-c", "echo cloned > \"$WS/checkout\""],
                 "env": env, "volumeMounts": workspace},
                {"name": "collect", "image": "any", "restartPolicy": "Always",
                 "command": ["/bin/sh", "-c", sidecar],
                 "env": [{"name": "WS", "value": "/workspace"},
                         {"name": "TOKEN", "value": "/var/run/kubeci/collect/token"}],
                 "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                                  {"name": "collect-token", "mountPath": "/var/run/kubeci/collect"}]},
            ],
            "containers": [
                {"name": "build", "image": "any", "command": ["/bin/sh", "-c", build],
                 "env": env, "volumeMounts": workspace},
            ],
        }}},
    }))
    .unwrap()
}

/// Waits (bounded) for the sidecar to have set its trap: the build starts once it has.
const WAIT_FOR_SIDECAR: &str =
    "i=0; while [ ! -e \"$WS/ready\" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done";

fn env(dir: &std::path::Path, sidecars: bool) -> LocalEnv {
    LocalEnv {
        build_dir: dir.join("build"),
        secrets_dir: None,
        kubeci_exe: "/bin/false".into(),
        host_env: LocalEnv::host_env_from_process(),
        objects: kubeci_pod_runner::PodObjects {
            tokens: [("kubeci-collect".to_owned(), "TOKEN".to_owned())].into(),
            ..Default::default()
        },
        run_as: None,
        sidecars,
    }
}

async fn run(job: &Job, env: &LocalEnv, stops: Stops) -> (Outcome, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let result = kubeci_pod_runner::run_job_with(job, env, recorder.clone(), stops)
        .await
        .unwrap();
    (result.outcome, recorder)
}

#[tokio::test]
async fn a_sidecar_runs_beside_the_build_and_is_stopped_once_the_build_ended_which_alone_decides_the_outcome(
) {
    let sidecar = "trap 'echo \"collected: $(cat \"$WS/result\")\"; exit 0' TERM; \
                   cat \"$TOKEN\"; echo; touch \"$WS/ready\"; \
                   while :; do sleep 1000 & wait $!; done";
    let build =
        format!("{WAIT_FOR_SIDECAR}; cat \"$WS/checkout\"; echo built > \"$WS/result\"; exit 1");
    let dir = tempfile::tempdir().unwrap();
    let (outcome, recorder) = run(
        &pod(sidecar, &build, 30),
        &env(dir.path(), true),
        Stops::default(),
    )
    .await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            container: "build".into(),
            init: false,
            exit_code: 1
        }
    );
    assert_eq!(recorder.lines_of("build"), ["cloned"]);
    assert_eq!(
        recorder.lines_of("collect"),
        ["TOKEN", "collected: built"],
        "the sidecar saw the build's last file: it was stopped after the build ended"
    );
    assert_eq!(
        recorder.ends(),
        [
            ("clone".into(), 0),
            ("build".into(), 1),
            ("collect".into(), 0)
        ]
    );
}

#[tokio::test]
async fn a_sidecar_that_ignores_sigterm_is_killed_at_the_end_of_the_grace_period() {
    let sidecar = "trap '' TERM; touch \"$WS/ready\"; while :; do sleep 0.1; done";
    let dir = tempfile::tempdir().unwrap();
    let (outcome, recorder) = run(
        &pod(sidecar, WAIT_FOR_SIDECAR, 1),
        &env(dir.path(), true),
        Stops::default(),
    )
    .await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(
        recorder.ends(),
        [
            ("clone".into(), 0),
            ("build".into(), 0),
            ("collect".into(), 137)
        ]
    );
}

#[tokio::test]
async fn a_pod_stopped_gracefully_stops_its_build_then_lets_its_sidecar_finish() {
    let sidecar = "trap 'echo \"collected: $(cat \"$WS/result\")\"; exit 0' TERM; \
                   touch \"$WS/ready\"; while :; do sleep 1000 & wait $!; done";
    let build = format!("{WAIT_FOR_SIDECAR}; echo partial > \"$WS/result\"; touch \"$WS/running\"; sleep 1000; echo never");
    let dir = tempfile::tempdir().unwrap();
    let env = env(dir.path(), true);
    let job = pod(sidecar, &build, 30);
    let stops = Stops::default();
    let terminate = stops.terminate.clone();
    let running = env.build_dir.join("volumes/workspace/running");
    let deleting = tokio::spawn(async move {
        for _ in 0..1200 {
            if running.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        terminate.cancel();
    });
    let (outcome, recorder) = run(&job, &env, stops).await;
    deleting.await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed {
            container: "build".into(),
            init: false,
            exit_code: 143
        },
        "SIGTERM to the build step's first process"
    );
    assert_eq!(recorder.lines_of("collect"), ["collected: partial"]);
}

#[tokio::test]
async fn without_sidecars_the_pod_runs_as_if_it_had_none_and_their_volumes_are_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env(dir.path(), false);
    // No token for the sidecar's volume: mounting it would fail the pod.
    env.objects.tokens.clear();
    let (outcome, recorder) = run(
        &pod("echo sidecar ran", "cat \"$WS/checkout\"", 30),
        &env,
        Stops::default(),
    )
    .await;
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(recorder.lines_of("collect"), Vec::<String>::new());
    assert_eq!(recorder.ends(), [("clone".into(), 0), ("build".into(), 0)]);
    assert!(!env.build_dir.join("volumes/collect-token").exists());
}

#[tokio::test]
async fn the_containers_after_a_sidecar_start_once_its_startup_probe_passes() {
    let sidecar = "sleep 0.5; touch \"$WS/ready\"; while :; do sleep 1000 & wait $!; done";
    // The build finds what the sidecar made before its probe passed.
    let build = "test -e \"$WS/ready\" || exit 7";
    let mut job = serde_json::to_value(pod(sidecar, build, 1)).unwrap();
    job["spec"]["template"]["spec"]["initContainers"][1]["startupProbe"] = json!({
        "exec": {"command": ["/bin/sh", "-c", "test -e \"$WS/ready\""]},
        "periodSeconds": 1, "failureThreshold": 30,
    });
    let job: Job = serde_json::from_value(job).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _) = run(&job, &env(dir.path(), true), Stops::default()).await;
    assert_eq!(outcome, Outcome::Succeeded);
}
