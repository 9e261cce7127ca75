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
    if let Some(ended) = ended_by_its_pod(pods) {
        return ended.into();
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
    pods.iter()
        .find_map(|pod| step_failure(pod.borrow()))
        .unwrap_or_else(|| BuildState::Failed {
            reason,
            message: failed.message.clone().unwrap_or_default(),
        })
}

/// How a step of `pod` that exited non-zero failed the build, if one did.
fn step_failure(pod: &BuildPod) -> Option<BuildState> {
    let (container, is_init, code) = failed_container(pod)?;
    Some(match is_init && container == "clone" {
        true => BuildState::Error {
            reason: "CloneFailed".into(),
            message: format!(
                "the clone step exited with code {code} ({})",
                clone_failure(code)
            ),
        },
        false => BuildState::Failed {
            reason: "ExitCode".into(),
            message: format!("{container} exited with code {code}"),
        },
    })
}

/// The end a build's pod shows before its Job does. The Job controller writes a Job's end
/// up to a second after its pod's (it batches its syncs: `SyncJobBatchPeriod`), and a
/// build's Job runs one pod it never retries (`backoffLimit: 0`), so a pod that ended by
/// itself ends the build: it succeeded, or a step exited non-zero. A pod being deleted
/// (its Job's deadline passed, or someone deleted it) or disrupted (evicted, preempted)
/// ends the build only once its Job says so, and why.
fn ended_by_its_pod<P: Borrow<BuildPod>>(pods: &[P]) -> Option<BuildState> {
    let [pod] = pods else {
        return None;
    };
    let pod = pod.borrow();
    let status = pod.status.as_ref()?;
    let disrupted = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "DisruptionTarget" && c.status == "True");
    if pod.metadata.deletion_timestamp.is_some() || disrupted {
        return None;
    }
    match status.phase.as_deref()? {
        "Succeeded" => Some(BuildState::Succeeded),
        "Failed" => step_failure(pod),
        _ => None,
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

/// When the last step of `pods` ended, if one did: a build's end before its Job shows it
/// ([`ended_by_its_pod`]).
fn last_step_end<P: Borrow<BuildPod>>(pods: &[P]) -> Option<i64> {
    pods.iter()
        .filter_map(|pod| pod.borrow().status.as_ref())
        .flat_map(|status| {
            let init = status.init_container_statuses.iter().flatten();
            init.chain(status.container_statuses.iter().flatten())
        })
        .filter_map(|s| s.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max()
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
        finished_at: state
            .is_finished()
            .then(|| finished_at(job).or_else(|| last_step_end(pods)))
            .flatten(),
        settled: is_settled(job),
        archived: crate::archive::Archived::parse(annotation(job, keys::ARCHIVED)),
        state,
    })
}

#[cfg(test)]
mod tests;
