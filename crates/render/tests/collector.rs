//! The collector of a build that declares test reports or artifacts (issue 30): a native
//! sidecar after the checkout, holding the pod's only token kubeci takes for its files —
//! which the build step, running the pull request's code, never sees.

use k8s_openapi::api::core::v1::PodSpec;
use kubeci_build::BuildRequest;
use kubeci_render::expansion::escape;
use kubeci_render::{render, JobOrigin, RenderConfig};
use kubeci_spec::Job;
use serde_json::json;

fn job(extra: serde_json::Value) -> Job {
    let mut value = json!({
        "name": "api",
        "git": {"url": "https://github.com/org/api.git", "branch": "main"},
        "run_command": "make test",
        "timeout": "30m",
        "workdir": "app",
    });
    value.as_object_mut().unwrap().extend(
        extra
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    serde_json::from_value(value).unwrap()
}

fn pod_of(job: &Job, collect_url: Option<&str>) -> PodSpec {
    let origin = JobOrigin {
        namespace: "team".into(),
        spec_hash: "h".into(),
        chart_version: None,
    };
    let config = RenderConfig {
        collect_url: collect_url.map(str::to_owned),
        ..RenderConfig::default()
    };
    let rendered = render(job, &origin, &BuildRequest::manual(3), &config).unwrap();
    rendered.spec.unwrap().template.spec.unwrap()
}

fn mounts(container: &k8s_openapi::api::core::v1::Container) -> Vec<(&str, &str, bool)> {
    (container.volume_mounts.iter().flatten())
        .map(|m| {
            (
                m.name.as_str(),
                m.mount_path.as_str(),
                m.read_only == Some(true),
            )
        })
        .collect()
}

// Long on purpose: the collector's contract, field by field over one rendered pod.
#[test]
fn a_job_that_declares_outputs_runs_a_collector_beside_its_build_step_with_a_token_of_its_own() {
    let declared = job(json!({
        "test_reports": ["**/junit*.xml"],
        "artifacts": ["dist/$(HOME).tar.gz"],
    }));
    let pod = pod_of(&declared, Some("http://kubeci.ci.svc:8080"));
    let inits = pod.init_containers.as_ref().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["clone", "collect"],
        "after the checkout, before the build"
    );
    let collect = &inits[1];
    assert_eq!(
        collect.restart_policy.as_deref(),
        Some("Always"),
        "a sidecar"
    );
    assert_eq!(
        collect.command.as_deref().unwrap(),
        ["kubeci".to_owned(), "collect".to_owned()]
    );
    assert_eq!(
        collect.args.as_deref().unwrap(),
        [
            "--server=http://kubeci.ci.svc:8080",
            "--token-file=/var/run/kubeci/collect/token",
            "--workspace=/workspace/src",
            "--within=50s",
            "--ready-file=/var/run/kubeci/collect-state/ready",
            "--workdir=app",
            "--test-report=**/junit*.xml",
            // Each pattern one argument, `$(` escaped against the kubelet's expansion.
            "--artifact=dist/$$(HOME).tar.gz",
        ]
    );
    assert_eq!(
        mounts(collect),
        [
            ("workspace", "/workspace", true),
            ("collect-token", "/var/run/kubeci/collect", true),
            ("collect-state", "/var/run/kubeci/collect-state", false)
        ]
    );
    let probe = collect.startup_probe.as_ref().unwrap();
    assert_eq!(
        probe.exec.as_ref().unwrap().command.as_deref().unwrap(),
        [
            "kubeci",
            "collect",
            "--probe",
            "--ready-file=/var/run/kubeci/collect-state/ready"
        ],
        "the build step starts once the collector waits for its end"
    );
    let security = collect.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let resources = collect.resources.as_ref().unwrap();
    assert!(resources.limits.as_ref().unwrap().contains_key("memory"));

    let token = (pod.volumes.iter().flatten())
        .find(|v| v.name == "collect-token")
        .unwrap();
    let source = token.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(source.audience.as_deref(), Some("kubeci-collect"));
    assert_eq!(
        source.expiration_seconds,
        Some(30 * 60 + 60),
        "through the build's timeout and its grace period"
    );
    // The build step — the pull request's code — never sees that token, nor any other.
    let build = &pod.containers[0];
    assert_eq!(mounts(build), [("workspace", "/workspace", false)]);
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
    assert_eq!(
        build.command.as_ref().unwrap()[2],
        escape(kubeci_render::collector::COLLECTING_PRELUDE),
        "the build step ends on SIGTERM, leaving the collector the grace period"
    );
}

#[test]
fn a_job_that_declares_nothing_or_a_server_without_a_collect_url_renders_as_before() {
    let plain = job(json!({}));
    assert_eq!(
        pod_of(&plain, Some("http://kubeci.ci.svc:8080")),
        pod_of(&plain, None),
        "no declared file: no collector, nothing changed"
    );
    let declared = job(json!({"artifacts": ["dist/"]}));
    let pod = pod_of(&declared, None);
    assert_eq!(pod, pod_of(&plain, None), "no URL to send the files to");
    assert_eq!(
        pod.containers[0].command.as_ref().unwrap()[2],
        escape(kubeci_render::BUILD_PRELUDE)
    );
}

/// Runs `prelude` with `script` as a container's first process (PID 1 of its own PID
/// namespace, as the build step runs), then sends it SIGTERM once `ready` appears in its
/// output, as the kubelet does on the Job's deadline; its exit code.
fn as_pid_1(prelude: &str, script: &str, terminate: bool) -> i32 {
    use std::io::BufRead;
    let mut child = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--kill-child",
            "/bin/bash",
            "-c",
            prelude,
        ])
        .args(["kubeci-prelude", script])
        .env("KUBECI_WORKSPACE", "/nonexistent")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare runs");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    if terminate {
        // The namespace's PID 1 is unshare's child.
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()))
                .unwrap();
        let pid_1: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid_1.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    let status = child.wait().unwrap();
    status.code().unwrap_or(-1)
}

#[test]
#[ignore = "needs root for a PID namespace (unshare --pid): .ci/run runs as root with --include-ignored"]
fn the_collecting_build_step_ends_on_sigterm_as_pid_1_and_keeps_its_script_s_exit_code() {
    let prelude = kubeci_render::collector::COLLECTING_PRELUDE;
    assert_eq!(as_pid_1(prelude, "echo ready; exit 3", false), 3);
    assert_eq!(as_pid_1(prelude, "echo ready", false), 0);
    // A script still running when the Job's deadline deletes the pod: the build step
    // ends at once (SIGTERM), so the collector gets the grace period, not its last two
    // seconds. (Without the trap, bash as PID 1 ignores SIGTERM: the test would hang.)
    assert_eq!(
        as_pid_1(prelude, "echo ready; sleep 1000; echo never", true),
        143
    );
}
