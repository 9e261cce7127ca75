//! What kubeci does with a build pod it holds (its finalizer `kubeci.io/archive`, from the
//! Job's template): nothing while it runs; once it has ended — or is being deleted and its
//! kubelet should have stopped it — archive its logs and release it; and past an age, give
//! up on the archive and release it all the same, saying why. A pure decision over the
//! pod as the caches show it.

use k8s_openapi::api::core::v1::ContainerStatus;
use kubeci_build::keys;
use kubeci_build::record::BuildPod;

/// What to do with a held pod now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodHold {
    /// It runs (or its deletion's grace period is not over): wait.
    Wait,
    /// Archive its logs, then release it. `since`: when it ended or its deletion was
    /// asked (Unix seconds).
    Archive { since: i64 },
    /// Held longer than the give-up age since `since`: release it without waiting for
    /// the archive any longer.
    GiveUp { since: i64, why: String },
}

/// Whether kubeci holds `pod` (its finalizer is on it).
pub fn is_held(pod: &BuildPod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == keys::ARCHIVE_FINALIZER))
}

fn seconds(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    time.0.as_second()
}

/// When the pod's last container ended, if every container that started has ended.
fn ended_at(pod: &BuildPod) -> Option<i64> {
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref();
    if !matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let statuses = [&status.init_container_statuses, &status.container_statuses];
    let finished = statuses
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|c: &ContainerStatus| {
            c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()
        })
        .map(seconds)
        .max();
    // A pod ended without a container's time (it never started one): its creation.
    finished.or_else(|| pod.metadata.creation_timestamp.as_ref().map(seconds))
}

/// When the pod's deletion was asked (its deletion time less its grace period), and
/// whether that grace period is over at `now`.
fn deletion(pod: &BuildPod, now: i64) -> Option<(i64, bool)> {
    let at = seconds(pod.metadata.deletion_timestamp.as_ref()?);
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    Some((at.saturating_sub(grace), now >= at))
}

/// What to do with `pod` at `now` (Unix seconds) when kubeci gives up on archiving a pod
/// `give_up_after` seconds after it ended; `None` when kubeci does not hold it.
pub fn pod_hold(pod: &BuildPod, now: i64, give_up_after: i64) -> Option<PodHold> {
    if !is_held(pod) {
        return None;
    }
    let deletion = deletion(pod, now);
    let since = match (ended_at(pod), deletion) {
        (Some(ended), Some((asked, _))) => ended.min(asked),
        (Some(ended), None) => ended,
        // Deleted, and its kubelet had the grace period to stop it: what it wrote is
        // all there will be (a kubelet that does not answer: its node is gone).
        (None, Some((asked, true))) => asked,
        (None, Some((_, false))) | (None, None) => return Some(PodHold::Wait),
    };
    if now.saturating_sub(since) >= give_up_after {
        let why = format!(
            "its logs were not archived within {give_up_after} s of its end: kubeci gave up and released the pod"
        );
        return Some(PodHold::GiveUp { since, why });
    }
    Some(PodHold::Archive { since })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: i64 = 1_790_000_000;

    fn time(at: i64) -> String {
        jiff::Timestamp::from_second(at).unwrap().to_string()
    }

    fn pod(finalizers: &[&str], phase: &str, finished: Option<i64>) -> BuildPod {
        let state = match finished {
            Some(at) => json!({"terminated": {"exitCode": 0, "finishedAt": time(at)}}),
            None => json!({"running": {"startedAt": time(T0)}}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": "demo-1-x", "finalizers": finalizers,
                         "creationTimestamp": time(T0)},
            "status": {"phase": phase, "containerStatuses": [{"name": "build", "ready": false,
                "restartCount": 0, "image": "i", "imageID": "", "state": state}]},
        }))
        .unwrap()
    }

    fn deleted(mut pod: BuildPod, at: i64, grace: i64) -> BuildPod {
        pod.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!(time(at + grace))).unwrap());
        pod.metadata.deletion_grace_period_seconds = Some(grace);
        pod
    }

    const HELD: &[&str] = &["kubeci.io/archive", "batch.kubernetes.io/job-tracking"];

    #[test]
    fn a_pod_without_kubeci_s_finalizer_is_not_kubeci_s_to_release() {
        let theirs = pod(&["batch.kubernetes.io/job-tracking"], "Succeeded", Some(T0));
        assert_eq!(pod_hold(&theirs, T0 + 10, 3600), None);
        assert!(!is_held(&theirs));
        assert!(is_held(&pod(HELD, "Running", None)));
    }

    #[test]
    fn a_running_pod_waits_and_an_ended_one_is_archived() {
        assert_eq!(
            pod_hold(&pod(HELD, "Running", None), T0 + 10, 3600),
            Some(PodHold::Wait)
        );
        for phase in ["Succeeded", "Failed"] {
            assert_eq!(
                pod_hold(&pod(HELD, phase, Some(T0 + 5)), T0 + 10, 3600),
                Some(PodHold::Archive { since: T0 + 5 })
            );
        }
    }

    #[test]
    fn a_pod_deleted_mid_run_waits_for_its_kubelet_then_is_archived_with_what_was_read() {
        let running = deleted(pod(HELD, "Running", None), T0 + 100, 30);
        assert_eq!(
            pod_hold(&running, T0 + 110, 3600),
            Some(PodHold::Wait),
            "within its grace period"
        );
        assert_eq!(
            pod_hold(&running, T0 + 130, 3600),
            Some(PodHold::Archive { since: T0 + 100 }),
            "no kubelet stopped it (its node is gone): archived with what can be read"
        );
        let killed = deleted(pod(HELD, "Failed", Some(T0 + 103)), T0 + 100, 30);
        assert_eq!(
            pod_hold(&killed, T0 + 104, 3600),
            Some(PodHold::Archive { since: T0 + 100 })
        );
    }

    #[test]
    fn past_the_give_up_age_kubeci_releases_the_pod_and_says_why() {
        let ended = pod(HELD, "Failed", Some(T0));
        assert_eq!(
            pod_hold(&ended, T0 + 3599, 3600),
            Some(PodHold::Archive { since: T0 })
        );
        let Some(PodHold::GiveUp { since, why }) = pod_hold(&ended, T0 + 3600, 3600) else {
            panic!("kubeci should give up");
        };
        assert_eq!(since, T0);
        assert!(why.contains("3600 s") && why.contains("gave up"), "{why}");
        let never_ends = deleted(pod(HELD, "Running", None), T0, 30);
        assert!(matches!(
            pod_hold(&never_ends, T0 + 4000, 3600),
            Some(PodHold::GiveUp { .. })
        ));
    }
}
