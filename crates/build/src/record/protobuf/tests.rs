use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::encode;
use super::wire::Writer;
use super::*;

/// A finished build's Job as the API server sends it in JSON, with fields kubeci does not
/// keep (a label, an annotation and a condition not its own, `managedFields`, the template).
fn finished_job_json() -> serde_json::Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": "demo-7", "namespace": "ci", "uid": "u-1", "resourceVersion": "42",
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "labels": {"kubeci.io/build": "7", "kubeci.io/job": "demo",
                       "app.kubernetes.io/managed-by": "kubeci", "team": "a"},
            "annotations": {"kubeci.io/trigger": "manual", "other.io/x": "y"},
            "finalizers": ["kubeci.io/hold"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "demo",
                                 "uid": "u-0", "controller": true},
                                {"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": "u-2"}],
            "managedFields": [{"manager": "kubeci", "operation": "Update"}]
        },
        "spec": {"suspend": false, "backoffLimit": 0,
                 "template": {"spec": {"containers": [{"name": "build", "image": "alpine"}]}}},
        "status": {"succeeded": 1, "startTime": "2026-12-07T10:00:01Z",
                   "completionTime": "2026-12-07T10:00:09Z",
                   "conditions": [
                       {"type": "SuccessCriteriaMet", "status": "True",
                        "lastTransitionTime": "2026-12-07T10:00:09Z", "reason": "CompletionsReached"},
                       {"type": "Suspended", "status": "False"},
                       {"type": "Complete", "status": "True", "message": "Reached expected number of succeeded pods"}]}
    })
}

fn finished_pod_json() -> serde_json::Value {
    json!({
        "metadata": {"name": "demo-7-abc", "namespace": "ci", "uid": "p-1",
                     "resourceVersion": "43", "creationTimestamp": "2026-12-07T10:00:00Z",
                     "deletionTimestamp": "2026-12-07T10:05:00Z", "deletionGracePeriodSeconds": 30,
                     "labels": {"kubeci.io/build": "7", "kubeci.io/job": "demo",
                                "batch.kubernetes.io/job-name": "demo-7"},
                     "annotations": {"kubeci.io/not-on-pods": "x"}},
        "status": {"phase": "Failed",
                   "conditions": [{"type": "PodScheduled", "status": "True"},
                                  {"type": "Ready", "status": "False", "reason": "PodCompleted"}],
                   "initContainerStatuses": [{"name": "clone", "ready": false, "restartCount": 0,
                        "image": "git", "imageID": "",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                            "startedAt": "2026-12-07T10:00:02Z", "finishedAt": "2026-12-07T10:00:03Z",
                            "containerID": "containerd://1"}}}],
                   "containerStatuses": [{"name": "build", "ready": false, "restartCount": 0,
                        "image": "alpine", "imageID": "",
                        "state": {"terminated": {"exitCode": -1, "signal": 9, "reason": "Error",
                            "message": "killed", "startedAt": "2026-12-07T10:00:04Z",
                            "finishedAt": "2026-12-07T10:00:08Z"}}}]}
    })
}

#[test]
fn a_job_read_from_protobuf_is_the_record_read_from_json() {
    let from_json: BuildJob = serde_json::from_value(finished_job_json()).unwrap();
    let job: Job = serde_json::from_value(finished_job_json()).unwrap();
    let from_protobuf = BuildJob::from_protobuf(&encode::job(&job)).unwrap();
    assert_eq!(from_protobuf, from_json);
    let labels = from_protobuf.metadata.labels.as_ref().unwrap();
    assert!(
        !labels.contains_key("team"),
        "a label kubeci does not read is not kept"
    );
    let conditions = from_protobuf.status.unwrap().conditions.unwrap();
    assert_eq!(conditions.len(), 2, "only the conditions that hold");
}

#[test]
fn a_pod_read_from_protobuf_is_the_record_read_from_json() {
    let from_json: BuildPod = serde_json::from_value(finished_pod_json()).unwrap();
    let pod: Pod = serde_json::from_value(finished_pod_json()).unwrap();
    let from_protobuf = BuildPod::from_protobuf(&encode::pod(&pod)).unwrap();
    assert_eq!(from_protobuf, from_json);
    let status = from_protobuf.status.unwrap();
    let build = &status.container_statuses.unwrap()[0];
    let terminated = build.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        terminated.exit_code, -1,
        "a negative int32 survives its varint"
    );
    assert_eq!(terminated.signal, Some(9));
    assert_eq!(
        status.conditions, None,
        "sent, none unschedulable: none kept, no list"
    );
}

#[test]
fn fields_kubeci_does_not_read_are_skipped_whatever_they_hold() {
    let job: Job = serde_json::from_value(finished_job_json()).unwrap();
    let mut message = Writer::default();
    // A pod template (spec field 6), then a fixed64 and a fixed32 no message has.
    message.message(2, |w| {
        w.message(6, |w| w.string(1, "a whole pod template"));
        w.varint(10, 1);
    });
    message
        .buf
        .extend_from_slice(&[0x39, 1, 2, 3, 4, 5, 6, 7, 8]);
    message.buf.extend_from_slice(&[0x3d, 1, 2, 3, 4]);
    let mut bytes = encode::job(&job);
    bytes.extend_from_slice(&message.buf);
    let read = BuildJob::from_protobuf(&bytes).unwrap();
    assert_eq!(
        read.spec.unwrap().suspend,
        Some(true),
        "the later field wins"
    );
    assert_eq!(
        read.metadata,
        BuildJob::from_protobuf(&encode::job(&job))
            .unwrap()
            .metadata
    );
}

#[test]
fn a_watch_frame_carries_its_type_and_enveloped_object() {
    let pod: Pod = serde_json::from_value(finished_pod_json()).unwrap();
    let object = encode::enveloped("v1", "Pod", &encode::pod(&pod));
    let frame = encode::watch_frame("MODIFIED", &object);
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let (kind, sent) = watch_event(&frame[4..]).unwrap();
    assert_eq!(kind, "MODIFIED");
    let kept: BuildPod = serde_json::from_value(finished_pod_json()).unwrap();
    assert_eq!(BuildPod::from_enveloped(sent).unwrap(), kept);
    let err = BuildJob::from_enveloped(sent).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"expected a Job object, the API server sent a "Pod""#
    );
    assert!(matches!(
        BuildPod::from_enveloped(&encode::pod(&pod)),
        Err(ProtobufError::NoMagic)
    ));
}

#[test]
fn bookmarks_and_statuses_read_back() {
    let end = encode::enveloped("batch/v1", "Job", &encode::bookmark("981", true));
    let envelope = envelope(&end).unwrap();
    assert_eq!((envelope.api_version, envelope.kind), ("batch/v1", "Job"));
    assert_eq!(
        bookmark(envelope.raw).unwrap(),
        Bookmark {
            resource_version: "981".into(),
            initial_events_end: true
        }
    );
    assert!(
        !bookmark(&encode::bookmark("982", false))
            .unwrap()
            .initial_events_end
    );
    let gone = status(&encode::status(
        410,
        "Expired",
        "too old resource version: 1 (981)",
    ))
    .unwrap();
    assert_eq!(gone.code, 410);
    assert_eq!(gone.reason, "Expired");
    assert_eq!(gone.message, "too old resource version: 1 (981)");
}

#[test]
fn a_job_cut_short_is_an_error_naming_the_message() {
    let job: Job = serde_json::from_value(finished_job_json()).unwrap();
    let bytes = encode::job(&job);
    let err = BuildJob::from_protobuf(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(matches!(err, ProtobufError::Truncated { .. }), "{err}");
}

/// A pod still waiting: not scheduled, its build container pulling its image; and one
/// whose build runs.
fn waiting_and_running_pods() -> Vec<serde_json::Value> {
    let pod = |name: &str, status: serde_json::Value| {
        json!({"metadata": {"name": name, "namespace": "ci", "uid": format!("u-{name}"),
                            "resourceVersion": "50", "labels": {"kubeci.io/job": "demo"},
                            "finalizers": ["kubeci.io/archive"]},
               "status": status})
    };
    vec![
        pod(
            "unscheduled",
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
        ),
        pod(
            "pulling",
            json!({"phase": "Pending", "containerStatuses": [{"name": "build", "ready": false,
                "restartCount": 0, "image": "", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}}}]}),
        ),
        pod(
            "running",
            json!({"phase": "Running", "startTime": "2026-12-07T10:00:01Z",
                "containerStatuses": [{"name": "build", "ready": true, "restartCount": 0,
                "image": "", "imageID": "", "state": {"running": {"startedAt": "2026-12-07T10:00:04Z"}}}]}),
        ),
    ]
}

#[test]
fn records_written_as_protobuf_read_back_as_themselves() {
    let job: BuildJob = serde_json::from_value(finished_job_json()).unwrap();
    assert_eq!(BuildJob::from_protobuf(&job.to_protobuf()).unwrap(), job);
    let mut running = job.clone();
    running.spec = None;
    let status = running.status.as_mut().unwrap();
    (status.succeeded, status.active) = (None, Some(1));
    (status.conditions, status.completion_time) = (None, None);
    assert_eq!(
        BuildJob::from_protobuf(&running.to_protobuf()).unwrap(),
        running
    );
    let pods = [finished_pod_json()]
        .into_iter()
        .chain(waiting_and_running_pods());
    for pod in pods {
        let pod: BuildPod = serde_json::from_value(pod).unwrap();
        let read = BuildPod::from_protobuf(&pod.to_protobuf()).unwrap();
        assert_eq!(read, pod, "{:?}", pod.metadata.name);
    }
}

#[test]
fn a_record_is_smaller_as_protobuf_than_as_json() {
    let job: BuildJob = serde_json::from_value(finished_job_json()).unwrap();
    let pod: BuildPod = serde_json::from_value(finished_pod_json()).unwrap();
    let json = serde_json::to_vec(&job).unwrap().len() + serde_json::to_vec(&pod).unwrap().len();
    let protobuf = job.to_protobuf().len() + pod.to_protobuf().len();
    assert!(protobuf * 3 < json * 2, "{protobuf} bytes against {json}");
}
