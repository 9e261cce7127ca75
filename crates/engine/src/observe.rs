//! A build's state read from its `batch/v1` Job and the Job's pod, as Kubernetes reports
//! them. Pure: the caller passes the objects and the time.

use std::borrow::Borrow;

use k8s_openapi::api::core::v1::ContainerStatus;
use kubeci_build::keys;
use kubeci_build::record::{BuildJob, BuildPod};

use crate::build::{BuildState, BuildSummary};

/// Waiting reasons after which a pod will not start by itself in time: past the pending
/// deadline, they fail the build with Kubernetes' own reason.
const CANNOT_START: [&str; 7] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RunContainerError",
];

/// What the clone step's exit codes mean (see `kubeci clone --help`).
pub fn clone_failure(code: i32) -> &'static str {
    match code {
        2 => "bad clone request",
        10 => "host key mismatch",
        11 => "authentication failed",
        12 => "repository, ref or commit not found",
        13 => "network failure",
        14 => "workspace unusable",
        15 => "SSH key unreadable",
        _ => "git failed",
    }
}

fn annotation<'a>(job: &'a BuildJob, key: &str) -> Option<&'a str> {
    job.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn condition<'a>(
    job: &'a BuildJob,
    kind: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

fn terminated_code(status: &ContainerStatus) -> Option<i32> {
    status
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn failed_container(pod: &BuildPod) -> Option<(String, bool, i32)> {
    let status = pod.status.as_ref()?;
    let init = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|s| (s, true));
    let main = status
        .container_statuses
        .iter()
        .flatten()
        .map(|s| (s, false));
    // The collector never fails a build: its end (killed at the end of the grace period,
    // say) says nothing of the build's.
    init.chain(main)
        .filter(|(s, _)| s.name != kubeci_build::outputs::COLLECT_STEP)
        .find_map(|(s, is_init)| match terminated_code(s) {
            Some(code) if code != 0 => Some((s.name.clone(), is_init, code)),
            _ => None,
        })
}

/// The commit the clone step checked out, from its termination message: what a build
/// that named no commit (a branch's head) built.
pub fn checked_out_commit<'a>(pods: impl IntoIterator<Item = &'a BuildPod>) -> Option<String> {
    pods.into_iter().find_map(|pod| {
        let clone = pod
            .status
            .as_ref()?
            .init_container_statuses
            .iter()
            .flatten()
            .find(|s| s.name == "clone")?;
        let message = clone
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .message
            .as_deref()?;
        kubeci_build::clone_result::commit(message).map(str::to_owned)
    })
}

/// Why a pending pod waits, in Kubernetes' words: (reason, message).
fn waiting(pod: &BuildPod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for s in statuses {
        if let Some(waiting) = s.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            if reason != "PodInitializing" && reason != "ContainerCreating" {
                return Some((reason, waiting.message.clone().unwrap_or_default()));
            }
        }
    }
    status.conditions.iter().flatten().find_map(|c| {
        (c.type_ == "PodScheduled" && c.status == "False").then(|| {
            (
                c.reason.clone().unwrap_or_else(|| "Unschedulable".into()),
                c.message.clone().unwrap_or_default(),
            )
        })
    })
}

fn created_at(pod: &BuildPod) -> Option<i64> {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

/// The state of the build that `job` runs, given its pods (owned, or shared from a cache),
/// the time (seconds since the epoch) and how long a pod may stay unable to start.
pub fn build_state<P: Borrow<BuildPod>>(
    job: &BuildJob,
    pods: &[P],
    now: i64,
    pending_deadline: i64,
) -> BuildState {
    build_state_over_time(job, pods, pending_deadline).at(now)
}

/// A build's state as its objects show it, and the one time alone turns it into: a build
/// whose pod cannot start is an error once it has waited the pending deadline. Worked out
/// when the objects change, it gives the state at any later time without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateOverTime {
    pub now: BuildState,
    /// From this time (seconds since the epoch) on, the state is this one.
    pub later: Option<(i64, BuildState)>,
}

impl StateOverTime {
    /// The state at `now`.
    pub fn at(self, now: i64) -> BuildState {
        match self.later {
            Some((from, later)) if now >= from => later,
            _ => self.now,
        }
    }
}

impl From<BuildState> for StateOverTime {
    fn from(state: BuildState) -> StateOverTime {
        StateOverTime {
            now: state,
            later: None,
        }
    }
}

/// [`build_state`] at every time at once (see [`StateOverTime`]).
pub fn build_state_over_time<P: Borrow<BuildPod>>(
    job: &BuildJob,
    pods: &[P],
    pending_deadline: i64,
) -> StateOverTime {
    if condition(job, "Complete").is_some() {
        return BuildState::Succeeded.into();
    }
    if let Some(by) = annotation(job, keys::CANCELLED_BY) {
        return BuildState::Aborted {
            by: Some(by.to_owned()).filter(|b| !b.is_empty()),
        }
        .into();
    }
    if let Some(error) = annotation(job, keys::ERROR) {
        let (reason, message) = error.split_once(": ").unwrap_or((error, ""));
        return BuildState::Error {
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
        .into();
    }
    if let Some(failed) = condition(job, "Failed") {
        return failed_state(failed, pods).into();
    }
    let suspended = job.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    if suspended {
        return BuildState::Queued.into();
    }
    pod_state(pods, pending_deadline)
}

/// The state of a build whose Job failed: why, from the failed container if one did.
fn failed_state<P: Borrow<BuildPod>>(
    failed: &k8s_openapi::api::batch::v1::JobCondition,
    pods: &[P],
) -> BuildState {
    let reason = failed.reason.clone().unwrap_or_default();
    if reason == "DeadlineExceeded" {
        return BuildState::Failed {
            reason,
            message: "the build ran longer than its timeout".into(),
        };
    }
    match pods.iter().find_map(|pod| failed_container(pod.borrow())) {
        Some((container, true, code)) if container == "clone" => BuildState::Error {
            reason: "CloneFailed".into(),
            message: format!(
                "the clone step exited with code {code} ({})",
                clone_failure(code)
            ),
        },
        Some((container, _, code)) => BuildState::Failed {
            reason: "ExitCode".into(),
            message: format!("{container} exited with code {code}"),
        },
        None => BuildState::Failed {
            reason,
            message: failed.message.clone().unwrap_or_default(),
        },
    }
}

/// The state of a released build that has not ended, from its pod: pending (and why), or
/// running; an error once its pod could not start for `pending_deadline` seconds.
fn pod_state<P: Borrow<BuildPod>>(pods: &[P], pending_deadline: i64) -> StateOverTime {
    let active: Vec<&BuildPod> = pods
        .iter()
        .map(Borrow::borrow)
        .filter(|p: &&BuildPod| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    let Some(pod) = active.first() else {
        return BuildState::Pending { message: None }.into();
    };
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
        return BuildState::Running.into();
    }
    match waiting(pod) {
        Some((reason, message)) => {
            let stuck = CANNOT_START.contains(&reason.as_str()) || reason == "Unschedulable";
            let pending = BuildState::Pending {
                message: Some(format!("{reason}: {message}")),
            };
            // Waited since it was created (or, not knowing when, not at all).
            let from = match created_at(pod) {
                Some(created) => created.saturating_add(pending_deadline),
                None if pending_deadline <= 0 => i64::MIN,
                None => return pending.into(),
            };
            StateOverTime {
                now: pending,
                later: stuck.then_some((from, BuildState::Error { reason, message })),
            }
        }
        None => BuildState::Pending { message: None }.into(),
    }
}

/// The value of the [`keys::ERROR`] annotation that stops a build which cannot run.
pub fn error_annotation(reason: &str, message: &str) -> String {
    format!("{reason}: {message}")
}

/// Whether Kubernetes is done with the Job: it completed or failed, or kubeci stopped it
/// (cancelled, or failed it because its pod could not start).
pub fn is_settled(job: &BuildJob) -> bool {
    condition(job, "Complete").is_some()
        || condition(job, "Failed").is_some()
        || annotation(job, keys::FINISHED_AT).is_some()
}

/// When the build finished (seconds since the epoch), if it did.
pub fn finished_at(job: &BuildJob) -> Option<i64> {
    let from_condition = ["Complete", "Failed"].iter().find_map(|kind| {
        condition(job, kind)?
            .last_transition_time
            .as_ref()
            .map(|t| t.0.as_second())
    });
    from_condition
        .or_else(|| {
            annotation(job, keys::FINISHED_AT)?
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_second())
        })
        .or_else(|| {
            job.status
                .as_ref()?
                .completion_time
                .as_ref()
                .map(|t| t.0.as_second())
        })
}

/// What the engine needs of one build Job (`None` when it lacks kubeci's build label).
/// `reporting` says whether builds must be reported before they may be deleted.
pub fn summarize<P: Borrow<BuildPod>>(
    job: &BuildJob,
    pods: &[P],
    now: i64,
    pending_deadline: i64,
    reporting: bool,
) -> Option<BuildSummary> {
    let number = job
        .metadata
        .labels
        .as_ref()?
        .get(keys::BUILD)?
        .parse::<u64>()
        .ok()?;
    let state = build_state(job, pods, now, pending_deadline);
    let reported = crate::report::parse_reported(annotation(job, keys::REPORTED));
    Some(BuildSummary {
        number,
        pull_request: annotation(job, keys::PR).and_then(|p| p.parse().ok()),
        branch: annotation(job, keys::BRANCH).map(str::to_owned),
        fully_reported: !reporting || reported.iter().any(|r| r.is_final()),
        finished_at: state.is_finished().then(|| finished_at(job)).flatten(),
        settled: is_settled(job),
        archived: crate::archive::Archived::parse(annotation(job, keys::ARCHIVED)),
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_PODS: &[BuildPod] = &[];
    use serde_json::json;

    fn job(extra: serde_json::Value) -> BuildJob {
        let mut value = json!({"metadata": {"name": "demo-1", "annotations": {}}, "spec": {"template": {}}, "status": {}});
        crate::tests::merge(&mut value, extra);
        serde_json::from_value(value).unwrap()
    }

    fn pod(status: serde_json::Value) -> BuildPod {
        serde_json::from_value(json!({"metadata": {"name": "demo-1-abcde", "creationTimestamp": "2026-11-23T10:00:00Z"}, "status": status})).unwrap()
    }

    const T0: i64 = 1_795_428_000; // 2026-11-23T10:00:00Z

    fn conditions(kind: &str, reason: &str) -> serde_json::Value {
        json!({"status": {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": "m"}]}})
    }

    #[test]
    fn the_commit_a_branch_build_checked_out_is_read_from_the_clone_steps_message() {
        let clone = |message: &str| {
            pod(
                json!({"initContainerStatuses": [{"name": "clone", "image": "k", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": message}}}]}),
            )
        };
        let sha = "4d7de2707d0240ba622e8f56097a34e57c61cb4d";
        assert_eq!(
            checked_out_commit(&[clone(&format!("commit={sha}\nbranch=main\n"))]),
            Some(sha.to_owned())
        );
        assert_eq!(checked_out_commit(&[clone("oops")]), None);
        assert_eq!(
            checked_out_commit(&[pod(json!({"phase": "Pending"}))]),
            None
        );
    }

    #[test]
    fn finished_jobs() {
        assert_eq!(
            build_state(
                &job(conditions("Complete", "CompletionsReached")),
                NO_PODS,
                T0,
                300
            ),
            BuildState::Succeeded
        );
        let failed_pod = pod(
            json!({"phase": "Failed", "initContainerStatuses": [{"name": "clone", "image": "k", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}], "containerStatuses": [{"name": "build", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}),
        );
        assert_eq!(
            build_state(
                &job(conditions("Failed", "BackoffLimitExceeded")),
                std::slice::from_ref(&failed_pod),
                T0,
                300
            ),
            BuildState::Failed {
                reason: "ExitCode".into(),
                message: "build exited with code 3".into()
            }
        );
        // A collector killed after its grace period is not why the build failed.
        let collector_killed = pod(
            json!({"phase": "Failed", "initContainerStatuses": [{"name": "clone", "image": "k", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}, {"name": "collect", "image": "k", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 137}}}], "containerStatuses": [{"name": "build", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}),
        );
        let failed = job(conditions("Failed", "BackoffLimitExceeded"));
        assert_eq!(
            build_state(&failed, &[collector_killed], T0, 300),
            build_state(&failed, std::slice::from_ref(&failed_pod), T0, 300)
        );
        let clone_failed = pod(
            json!({"phase": "Failed", "initContainerStatuses": [{"name": "clone", "image": "k", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 10}}}]}),
        );
        assert_eq!(
            build_state(
                &job(conditions("Failed", "BackoffLimitExceeded")),
                &[clone_failed],
                T0,
                300
            ),
            BuildState::Error {
                reason: "CloneFailed".into(),
                message: "the clone step exited with code 10 (host key mismatch)".into()
            }
        );
        assert_eq!(
            build_state(
                &job(conditions("Failed", "DeadlineExceeded")),
                NO_PODS,
                T0,
                300
            ),
            BuildState::Failed {
                reason: "DeadlineExceeded".into(),
                message: "the build ran longer than its timeout".into()
            }
        );
    }

    #[test]
    fn cancelled_and_queued_jobs() {
        let mut cancelled = conditions("Failed", "DeadlineExceeded");
        cancelled["metadata"] = json!({"annotations": {keys::CANCELLED_BY: "alice"}});
        assert_eq!(
            build_state(&job(cancelled), NO_PODS, T0, 300),
            BuildState::Aborted {
                by: Some("alice".into())
            }
        );
        assert_eq!(
            build_state(&job(json!({"spec": {"suspend": true}})), NO_PODS, T0, 300),
            BuildState::Queued
        );
        let suspended_cancel = json!({"spec": {"suspend": true}, "metadata": {"annotations": {keys::CANCELLED_BY: ""}}});
        assert_eq!(
            build_state(&job(suspended_cancel), NO_PODS, T0, 300),
            BuildState::Aborted { by: None }
        );
    }

    #[test]
    fn a_stuck_build_s_state_over_time_says_when_time_alone_makes_it_an_error() {
        let missing_secret = [pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "build", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"aws-key\" not found"}}}]}),
        )];
        let over_time = build_state_over_time(&job(json!({})), &missing_secret, 300);
        assert_eq!(
            over_time.later.as_ref().map(|(from, _)| *from),
            Some(T0 + 300)
        );
        for now in [T0, T0 + 299, T0 + 300, T0 + 10_000] {
            assert_eq!(
                over_time.clone().at(now),
                build_state(&job(json!({})), &missing_secret, now, 300),
                "at {now}"
            );
        }
        let running = [pod(json!({"phase": "Running"}))];
        assert_eq!(
            build_state_over_time(&job(json!({})), &running, 300).later,
            None,
            "time alone changes nothing else"
        );
    }

    #[test]
    fn pods_that_cannot_start_fail_the_build_after_the_pending_deadline() {
        let missing_secret = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "build", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"aws-key\" not found"}}}]}),
        );
        let early = build_state(
            &job(json!({})),
            std::slice::from_ref(&missing_secret),
            T0 + 10,
            300,
        );
        assert_eq!(
            early,
            BuildState::Pending {
                message: Some("CreateContainerConfigError: secret \"aws-key\" not found".into())
            }
        );
        let late = build_state(&job(json!({})), &[missing_secret], T0 + 300, 300);
        assert_eq!(
            late,
            BuildState::Error {
                reason: "CreateContainerConfigError".into(),
                message: "secret \"aws-key\" not found".into()
            }
        );
        let unschedulable = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
        );
        assert!(
            matches!(build_state(&job(json!({})), &[unschedulable], T0 + 600, 300), BuildState::Error { reason, .. } if reason == "Unschedulable")
        );
        let initializing = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "build", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        assert_eq!(
            build_state(&job(json!({})), &[initializing], T0 + 600, 300),
            BuildState::Pending { message: None }
        );
        let running = pod(json!({"phase": "Running"}));
        assert_eq!(
            build_state(&job(json!({})), &[running], T0, 300),
            BuildState::Running
        );
        assert_eq!(
            build_state(&job(json!({})), NO_PODS, T0, 300),
            BuildState::Pending { message: None }
        );
    }

    #[test]
    fn a_build_kubeci_stopped_is_settled_with_its_reason_and_time() {
        let stopped = job(json!({
            "metadata": {"labels": {keys::BUILD: "4"}, "annotations": {
                keys::ERROR: error_annotation("ErrImagePull", "no such image"),
                keys::FINISHED_AT: "2026-11-23T10:05:00Z",
                keys::REPORTED: "pending",
            }},
            "spec": {"suspend": true, "template": {}},
        }));
        let summary = summarize(&stopped, NO_PODS, T0 + 600, 300, true).unwrap();
        assert_eq!(
            summary.state,
            BuildState::Error {
                reason: "ErrImagePull".into(),
                message: "no such image".into()
            }
        );
        assert!(summary.settled);
        assert_eq!(summary.finished_at, Some(T0 + 300));
        assert!(!summary.fully_reported, "only `pending` was reported");
        assert!(
            summarize(&stopped, NO_PODS, T0, 300, false)
                .unwrap()
                .fully_reported
        );

        let mut late_cancel = conditions("Complete", "CompletionsReached");
        late_cancel["metadata"] = json!({"annotations": {keys::CANCELLED_BY: "bob"}});
        assert_eq!(
            build_state(&job(late_cancel), NO_PODS, T0, 300),
            BuildState::Succeeded,
            "a cancel that came after the end changes nothing"
        );
        assert!(
            summarize(&job(json!({})), NO_PODS, T0, 300, true).is_none(),
            "not a build"
        );
    }
}
