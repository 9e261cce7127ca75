//! The build states and facts read from a build's Job and pods.

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
    let suspended_cancel =
        json!({"spec": {"suspend": true}, "metadata": {"annotations": {keys::CANCELLED_BY: ""}}});
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

/// A pod that ended with each step's exit code: `clone`, then `build`.
fn ended_pod(phase: &str, clone: i32, build: Option<i32>) -> BuildPod {
    let ended =
        |code: i32| json!({"terminated": {"exitCode": code, "finishedAt": "2026-11-23T10:01:40Z"}});
    let mut status = json!({"phase": phase,
        "initContainerStatuses": [{"name": "clone", "image": "k", "imageID": "", "ready": false, "restartCount": 0, "state": ended(clone)}]});
    if let Some(code) = build {
        status["containerStatuses"] = json!([{"name": "build", "image": "b", "imageID": "", "ready": false, "restartCount": 0, "state": ended(code)}]);
    }
    pod(status)
}

#[test]
fn a_pod_that_ended_by_itself_ends_the_build_before_its_job_says_so() {
    let running = job(json!({"metadata": {"labels": {keys::BUILD: "1"}}, "status": {"active": 1}}));
    let state = |pod: BuildPod| build_state(&running, &[pod], T0 + 100, 300);
    assert_eq!(
        state(ended_pod("Succeeded", 0, Some(0))),
        BuildState::Succeeded
    );
    assert_eq!(
        state(ended_pod("Failed", 0, Some(2))),
        BuildState::Failed {
            reason: "ExitCode".into(),
            message: "build exited with code 2".into()
        }
    );
    assert!(
        matches!(state(ended_pod("Failed", 128, None)), BuildState::Error { reason, .. } if reason == "CloneFailed")
    );
    let summary = summarize(
        &running,
        &[ended_pod("Succeeded", 0, Some(0))],
        T0 + 100,
        300,
        false,
    );
    assert_eq!(
        summary.unwrap().finished_at,
        Some(T0 + 100),
        "its end is its last step's"
    );
    assert!(!is_settled(&running), "Kubernetes is not done with it yet");
}

#[test]
fn a_pod_deleted_or_disrupted_ends_the_build_only_when_its_job_says_why() {
    let running = job(json!({"status": {"active": 1}}));
    let mut deleted = ended_pod("Failed", 0, Some(143));
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::from_second(T0 + 90).unwrap(),
        ));
    assert!(!build_state(&running, &[deleted.clone()], T0 + 100, 300).is_finished());
    let mut evicted = ended_pod("Failed", 0, Some(137));
    evicted.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(
        json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}),
    )
    .unwrap()]);
    assert!(!build_state(&running, &[evicted], T0 + 100, 300).is_finished());
    let timed_out = job(conditions("Failed", "DeadlineExceeded"));
    assert_eq!(
        build_state(&timed_out, &[deleted], T0 + 100, 300),
        BuildState::Failed {
            reason: "DeadlineExceeded".into(),
            message: "the build ran longer than its timeout".into()
        }
    );
}
