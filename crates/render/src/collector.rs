//! The build pod's collector (issue 30): for a job that declares `test_reports` or
//! `artifacts`, a native sidecar — an init container with `restartPolicy: Always`, after
//! `clone` — that waits beside the build step and, once Kubernetes stops it (SIGTERM: the
//! build step ended, passed or failed, or the pod is being deleted on the Job's deadline),
//! sends the declared files to kubeci (`kubeci collect`).
//!
//! It holds the only credential of the pod that kubeci takes for those files: a
//! ServiceAccount token of audience [`COLLECT_AUDIENCE`], bound to the pod, projected into
//! its own volume and mounted into the collector alone — never into the build step, whose
//! script (a pull request's code) could otherwise send files as the build. It reads the
//! workspace read-only and runs as the clone step does: not root, no capabilities, a
//! read-only root filesystem, bounded resources.

use super::*;
use expansion::escape;
use k8s_openapi::api::core::v1::{
    Container, ExecAction, Probe, ProjectedVolumeSource, ResourceRequirements,
    ServiceAccountTokenProjection, Volume, VolumeProjection,
};
use kubeci_build::outputs::{COLLECT_AUDIENCE, COLLECT_STEP};

use crate::pod::{mount, quantities};

/// The pod's `terminationGracePeriodSeconds` when it collects: how long Kubernetes gives
/// its containers, once stopped, before killing them — the collector's time to send the
/// build's files after the build step ended or was stopped on the Job's deadline.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// How long the collector works at most once told to collect: within the grace period,
/// with time left for kubeci to commit what it sent.
pub const COLLECT_WITHIN_SECONDS: i64 = 50;

/// How long the collector may take to be ready (its startup probe, once a second): it
/// resolves kubeci's host first, within less (`kubeci collect --resolve-within`, 30 s).
/// Past it the kubelet restarts the collector, and the build step waits on.
pub const COLLECT_STARTUP_SECONDS: i32 = 60;

/// The shortest life of a projected token Kubernetes allows (10 minutes).
const MIN_TOKEN_SECONDS: i64 = 600;

/// The longest life asked for: the kubelet renews a projected token after 80 % of its
/// life (at most 24 hours), and the collector reads it only when it collects.
const MAX_TOKEN_SECONDS: i64 = 86_400;

/// A token's life when the job has no timeout (renewed by the kubelet while the pod runs).
const UNBOUNDED_BUILD_TOKEN_SECONDS: i64 = 3_600;

/// Where the collector's token volume is mounted (the collector only).
pub const COLLECT_TOKEN_DIR: &str = "/var/run/kubeci/collect";

/// The volume holding the collector's token.
const TOKEN_VOLUME: &str = "collect-token";

/// The collector's own scratch volume, where it says it waits (its startup probe reads it).
const STATE_VOLUME: &str = "collect-state";

/// Where [`STATE_VOLUME`] is mounted (the collector only).
pub const COLLECT_STATE_DIR: &str = "/var/run/kubeci/collect-state";

/// The build step's script runner when the pod collects: [`BUILD_PRELUDE`]'s facts, then
/// the job's script as a child that a SIGTERM ends at once. The build step's first
/// process is PID 1 of its container, which ignores a SIGTERM it has no handler for: the
/// build step would then stop only when killed at the end of the grace period, and the
/// collector — which Kubernetes stops after the build step, with the time left — would
/// have two seconds. A constant: no spec value is ever part of it.
pub const COLLECTING_PRELUDE: &str = r#"meta="$KUBECI_WORKSPACE/.kubeci"
if [ -z "${GIT_COMMIT:-}" ] && [ -r "$meta/commit" ]; then GIT_COMMIT=$(cat "$meta/commit"); export GIT_COMMIT; fi
if [ -z "${GIT_BRANCH:-}" ] && [ -r "$meta/branch" ]; then GIT_BRANCH=$(cat "$meta/branch"); export GIT_BRANCH; fi
if [ -n "${ghprbPullId:-}" ]; then
  ghprbActualCommit="${ghprbActualCommit:-$GIT_COMMIT}"; sha1="${sha1:-$GIT_COMMIT}"; export ghprbActualCommit sha1
fi
script=
trap 'if [ -n "$script" ]; then kill -TERM "$script" 2>/dev/null; fi' TERM
/bin/bash -e -c "$1" kubeci-build &
script=$!
wait "$script"
status=$?
while kill -0 "$script" 2>/dev/null; do wait "$script"; status=$?; done
exit "$status"
"#;

/// The token's life: the build's timeout and the grace period, within Kubernetes' bounds.
fn token_seconds(deadline: Option<i64>) -> i64 {
    match deadline {
        Some(deadline) => deadline
            .saturating_add(TERMINATION_GRACE_SECONDS)
            .clamp(MIN_TOKEN_SECONDS, MAX_TOKEN_SECONDS),
        None => UNBOUNDED_BUILD_TOKEN_SECONDS,
    }
}

/// The collector's token: bound to the pod, for kubeci's collector alone.
pub(crate) fn token_volume(deadline: Option<i64>) -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    expiration_seconds: Some(token_seconds(deadline)),
                    audience: Some(COLLECT_AUDIENCE.into()),
                }),
                ..VolumeProjection::default()
            }]),
        }),
        ..Volume::default()
    }
}

/// The collector's scratch volume: a few bytes in memory.
pub(crate) fn state_volume() -> Volume {
    Volume {
        name: STATE_VOLUME.into(),
        empty_dir: Some(k8s_openapi::api::core::v1::EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "1Mi".into(),
            )),
        }),
        ..Volume::default()
    }
}

/// The collector container: `kubeci collect`, each value one argument.
pub(crate) fn collector_container(
    declared: &DeclaredOutputs,
    config: &RenderConfig,
    url: &str,
) -> Container {
    let mut args = vec![
        format!("--server={url}"),
        format!("--token-file={COLLECT_TOKEN_DIR}/token"),
        format!("--workspace={}", paths::CHECKOUT),
        format!("--within={COLLECT_WITHIN_SECONDS}s"),
        format!("--ready-file={COLLECT_STATE_DIR}/ready"),
    ];
    if !declared.workdir.is_empty() {
        args.push(format!("--workdir={}", declared.workdir));
    }
    args.extend((declared.test_reports.iter()).map(|pattern| format!("--test-report={pattern}")));
    args.extend((declared.artifacts.iter()).map(|pattern| format!("--artifact={pattern}")));
    Container {
        name: COLLECT_STEP.into(),
        image: Some(config.clone_image.clone()),
        command: Some(vec!["kubeci".into(), "collect".into()]),
        args: Some(args.iter().map(|a| escape(a)).collect()),
        // A native sidecar: started after the checkout, beside the build step, and
        // stopped by Kubernetes once the build step ended.
        restart_policy: Some("Always".into()),
        volume_mounts: Some(vec![
            mount("workspace", paths::WORKSPACE, true),
            mount(TOKEN_VOLUME, COLLECT_TOKEN_DIR, true),
            mount(STATE_VOLUME, COLLECT_STATE_DIR, false),
        ]),
        // The build step starts once the collector waits for its end: a build that ends
        // at once is collected all the same (a SIGTERM before then would end it unheard),
        // and kubeci's host is resolved before any of the build's code runs (it could
        // change what the name means: the pod's `/etc/hosts` is the build step's too).
        startup_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "kubeci".into(),
                    "collect".into(),
                    "--probe".into(),
                    format!("--ready-file={COLLECT_STATE_DIR}/ready"),
                ]),
            }),
            period_seconds: Some(1),
            timeout_seconds: Some(5),
            failure_threshold: Some(COLLECT_STARTUP_SECONDS),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "50m"), ("memory", "64Mi")])),
            limits: Some(quantities(&[("memory", "256Mi")])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(crate::pod::unprivileged()),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_lives_through_the_build_and_its_grace_period_within_kubernetes_bounds() {
        assert_eq!(token_seconds(Some(60)), MIN_TOKEN_SECONDS);
        assert_eq!(token_seconds(Some(1800)), 1800 + TERMINATION_GRACE_SECONDS);
        assert_eq!(token_seconds(Some(i64::MAX)), MAX_TOKEN_SECONDS);
        assert_eq!(token_seconds(None), UNBOUNDED_BUILD_TOKEN_SECONDS);
    }
}
