//! Jobs and pods written in Kubernetes' protobuf encoding as the API server writes them,
//! though only the fields kubeci may read (and their neighbours in the same messages): the
//! records kubeci's caches keep ([`ToProtobuf`]), and objects for the fake API server and to
//! test the reader.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::wire::Writer;
use super::{ToProtobuf, MAGIC};
use crate::record::{BuildJob, BuildPod};

/// Object bytes in their envelope: the magic number, then a `runtime.Unknown`.
pub fn enveloped(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut unknown = Writer::default();
    unknown.message(1, |w| {
        w.string(1, api_version);
        w.string(2, kind);
    });
    unknown.bytes(2, raw);
    unknown.string(3, "");
    unknown.string(4, "");
    let mut object = MAGIC.to_vec();
    object.extend_from_slice(&unknown.buf);
    object
}

/// One frame of a protobuf watch stream: the length (4 bytes, big-endian), then a
/// `metav1.WatchEvent` of type `kind` carrying the enveloped `object`.
pub fn watch_frame(kind: &str, object: &[u8]) -> Vec<u8> {
    let mut event = Writer::default();
    event.string(1, kind);
    event.message(2, |w| w.bytes(1, object));
    let len = u32::try_from(event.buf.len()).expect("a watch event under 4 GB");
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&event.buf);
    frame
}

/// The message of an object with only its metadata filled: a bookmark's.
pub fn bookmark(resource_version: &str, initial_events_end: bool) -> Vec<u8> {
    let mut object = Writer::default();
    object.message(1, |w| {
        w.string(6, resource_version);
        if initial_events_end {
            w.message(12, |w| {
                w.string(1, "k8s.io/initial-events-end");
                w.string(2, "true");
            });
        }
    });
    object.buf
}

/// A `metav1.Status` message.
pub fn status(code: u16, reason: &str, message: &str) -> Vec<u8> {
    let mut status = Writer::default();
    status.string(2, "Failure");
    status.string(3, message);
    status.string(4, reason);
    status.varint(6, u64::from(code));
    status.buf
}

/// A Job's message.
pub fn job(job: &Job) -> Vec<u8> {
    let suspend = job.spec.as_ref().map(|spec| spec.suspend);
    job_message(&job.metadata, suspend, job.status.as_ref())
}

/// A pod's message.
pub fn pod(pod: &Pod) -> Vec<u8> {
    pod_message(&pod.metadata, pod.status.as_ref())
}

impl ToProtobuf for BuildJob {
    fn to_protobuf(&self) -> Vec<u8> {
        let suspend = self.spec.as_ref().map(|spec| spec.suspend);
        job_message(&self.metadata, suspend, self.status.as_ref())
    }
}

impl ToProtobuf for BuildPod {
    fn to_protobuf(&self) -> Vec<u8> {
        pod_message(&self.metadata, self.status.as_ref())
    }
}

/// `suspend`: `None` without a spec, else the spec's field.
fn job_message(
    meta: &ObjectMeta,
    suspend: Option<Option<bool>>,
    status: Option<&JobStatus>,
) -> Vec<u8> {
    let mut out = Writer::default();
    out.message(1, |w| write_meta(w, meta));
    if let Some(suspend) = suspend {
        out.message(2, |w| {
            if let Some(suspend) = suspend {
                w.varint(10, u64::from(suspend));
            }
        });
    }
    if let Some(status) = status {
        out.message(3, |w| job_status(w, status));
    }
    out.buf
}

fn pod_message(meta: &ObjectMeta, status: Option<&PodStatus>) -> Vec<u8> {
    let mut out = Writer::default();
    out.message(1, |w| write_meta(w, meta));
    out.message(2, |_| {});
    if let Some(status) = status {
        out.message(3, |w| pod_status(w, status));
    }
    out.buf
}

fn time(w: &mut Writer, field: u32, time: Option<&Time>) {
    if let Some(time) = time {
        w.message(field, |w| {
            w.varint(1, time.0.as_second() as u64);
            w.varint(2, 0);
        });
    }
}

fn string(w: &mut Writer, field: u32, value: Option<&String>) {
    w.string(field, value.map_or("", String::as_str));
}

fn map(w: &mut Writer, field: u32, map: Option<&BTreeMap<String, String>>) {
    for (key, value) in map.into_iter().flatten() {
        w.message(field, |w| {
            w.string(1, key);
            w.string(2, value);
        });
    }
}

fn write_meta(w: &mut Writer, meta: &ObjectMeta) {
    string(w, 1, meta.name.as_ref());
    w.string(2, "");
    string(w, 3, meta.namespace.as_ref());
    string(w, 5, meta.uid.as_ref());
    string(w, 6, meta.resource_version.as_ref());
    w.varint(7, 1);
    w.message(8, |w| {
        if let Some(created) = &meta.creation_timestamp {
            w.varint(1, created.0.as_second() as u64);
        }
    });
    time(w, 9, meta.deletion_timestamp.as_ref());
    if let Some(grace) = meta.deletion_grace_period_seconds {
        w.varint(10, grace as u64);
    }
    map(w, 11, meta.labels.as_ref());
    map(w, 12, meta.annotations.as_ref());
    for owner in meta.owner_references.iter().flatten() {
        w.message(13, |w| {
            w.string(1, &owner.kind);
            w.string(3, &owner.name);
            w.string(4, &owner.uid);
            w.string(5, &owner.api_version);
            if let Some(controller) = owner.controller {
                w.varint(6, u64::from(controller));
            }
            if let Some(block) = owner.block_owner_deletion {
                w.varint(7, u64::from(block));
            }
        });
    }
    for finalizer in meta.finalizers.iter().flatten() {
        w.string(14, finalizer);
    }
}

fn job_status(w: &mut Writer, status: &JobStatus) {
    for condition in status.conditions.iter().flatten() {
        w.message(1, |w| {
            w.string(1, &condition.type_);
            w.string(2, &condition.status);
            time(w, 3, condition.last_probe_time.as_ref());
            time(w, 4, condition.last_transition_time.as_ref());
            string(w, 5, condition.reason.as_ref());
            string(w, 6, condition.message.as_ref());
        });
    }
    time(w, 2, status.start_time.as_ref());
    time(w, 3, status.completion_time.as_ref());
    // Counts are sent even when zero (proto2, not pointers in Go).
    w.varint(4, status.active.unwrap_or(0) as u64);
    w.varint(5, status.succeeded.unwrap_or(0) as u64);
    w.varint(6, status.failed.unwrap_or(0) as u64);
}

fn pod_status(w: &mut Writer, status: &PodStatus) {
    string(w, 1, status.phase.as_ref());
    for condition in status.conditions.iter().flatten() {
        w.message(2, |w| {
            w.string(1, &condition.type_);
            w.string(2, &condition.status);
            string(w, 5, condition.reason.as_ref());
            string(w, 6, condition.message.as_ref());
        });
    }
    for container in status.container_statuses.iter().flatten() {
        w.message(8, |w| container_status(w, container));
    }
    for container in status.init_container_statuses.iter().flatten() {
        w.message(10, |w| container_status(w, container));
    }
}

fn container_status(w: &mut Writer, container: &ContainerStatus) {
    w.string(1, &container.name);
    w.message(2, |w| {
        if let Some(state) = &container.state {
            container_state(w, state);
        }
    });
    w.varint(4, u64::from(container.ready));
}

fn container_state(w: &mut Writer, state: &ContainerState) {
    if let Some(waiting) = &state.waiting {
        w.message(1, |w| {
            string(w, 1, waiting.reason.as_ref());
            string(w, 2, waiting.message.as_ref());
        });
    }
    if let Some(running) = &state.running {
        w.message(2, |w| time(w, 1, running.started_at.as_ref()));
    }
    if let Some(terminated) = &state.terminated {
        w.message(3, |w| {
            w.varint(1, terminated.exit_code as u64);
            w.varint(2, terminated.signal.unwrap_or(0) as u64);
            string(w, 3, terminated.reason.as_ref());
            string(w, 4, terminated.message.as_ref());
            time(w, 5, terminated.started_at.as_ref());
            time(w, 6, terminated.finished_at.as_ref());
            string(w, 7, terminated.container_id.as_ref());
        });
    }
}
