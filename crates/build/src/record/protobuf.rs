//! A build's Job and pod read from Kubernetes' protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), keeping the same fields as from JSON
//! ([`super::kept`]), so either encoding gives the same record.
//!
//! Why: the API server encodes protobuf several times faster than JSON. Streaming the
//! first list of 10,000 build Jobs to kubeci takes it ~2.4 s as JSON and ~0.4 s as protobuf
//! (BENCHMARKS.md, "the real API server"), and kubeci's start waits for that list.
//!
//! Only the fields kept are read; the others (the pod template, `managedFields`, a pod's
//! spec) are skipped in place. Field numbers are those of the `generated.proto` files of
//! `k8s.io/api` and `k8s.io/apimachinery`. The encoder in [`encode`] writes the same subset:
//! kubeci's caches keep each record so ([`ToProtobuf`]: a third smaller than its JSON for a
//! Job, more than half for a pod), and the fake API server and tests send objects so.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use super::{kept, BuildJob, BuildJobSpec, BuildPod};
use wire::{fields, Value};

pub mod encode;
mod wire;

#[cfg(test)]
mod tests;

/// What starts every object Kubernetes encodes in protobuf, before its `runtime.Unknown`
/// envelope.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type to ask for; a watch's is this with `;stream=watch`.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why protobuf bytes could not be read. None is worth retrying with the same bytes: they
/// are not what the API server sends for the resource asked for.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the protobuf message {message} ends inside a field")]
    Truncated { message: &'static str },
    #[error("field {field} of the protobuf message {message} is not of the wire type Kubernetes uses for it")]
    WrongWireType { message: &'static str, field: u32 },
    #[error("field {field} of the protobuf message {message} is not UTF-8")]
    NotUtf8 { message: &'static str, field: u32 },
    #[error("the object does not start with Kubernetes' protobuf magic number (k8s\\0)")]
    NoMagic,
    #[error("expected a {expected} object, the API server sent a {sent:?}")]
    UnexpectedKind {
        expected: &'static str,
        sent: String,
    },
}

type Result<T> = std::result::Result<T, ProtobufError>;

/// An object as sent: its kind and its message's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub raw: &'a [u8],
}

/// Opens the envelope of an object (the magic number, then a `runtime.Unknown`).
pub fn envelope(object: &[u8]) -> Result<Envelope<'_>> {
    let unknown = object.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut envelope = Envelope {
        api_version: "",
        kind: "",
        raw: &[],
    };
    for field in fields(unknown, "Unknown") {
        match field? {
            (1, value) => {
                for field in fields(value.bytes("Unknown", 1)?, "TypeMeta") {
                    match field? {
                        (1, value) => envelope.api_version = value.string("TypeMeta", 1)?,
                        (2, value) => envelope.kind = value.string("TypeMeta", 2)?,
                        _ => {}
                    }
                }
            }
            (2, value) => envelope.raw = value.bytes("Unknown", 2)?,
            _ => {}
        }
    }
    Ok(envelope)
}

/// One event of a protobuf watch stream (a `metav1.WatchEvent`, not enveloped): its type
/// (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) and its enveloped object.
pub fn watch_event(frame: &[u8]) -> Result<(&str, &[u8])> {
    let (mut kind, mut object) = ("", &[][..]);
    for field in fields(frame, "WatchEvent") {
        match field? {
            (1, value) => kind = value.string("WatchEvent", 1)?,
            (2, value) => {
                for field in fields(value.bytes("WatchEvent", 2)?, "RawExtension") {
                    if let (1, value) = field? {
                        object = value.bytes("RawExtension", 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((kind, object))
}

/// What a bookmark says: the resource version reached, and whether it ends the initial
/// events of a watch that streams its first list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Bookmark {
    pub resource_version: String,
    pub initial_events_end: bool,
}

/// The bookmark in `raw`, an object of any kind with only its metadata filled.
pub fn bookmark(raw: &[u8]) -> Result<Bookmark> {
    let mut bookmark = Bookmark::default();
    for field in fields(raw, "object") {
        let (1, meta) = field? else { continue };
        for field in fields(meta.bytes("object", 1)?, "ObjectMeta") {
            match field? {
                (6, value) => {
                    bookmark.resource_version = value.string("ObjectMeta", 6)?.to_owned();
                }
                (12, value) => {
                    let (key, value) = map_entry(value, 12)?;
                    if key == "k8s.io/initial-events-end" {
                        bookmark.initial_events_end = value == "true";
                    }
                }
                _ => {}
            }
        }
    }
    Ok(bookmark)
}

/// A `metav1.Status` (an ERROR event's object, an error response's body).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApiStatus {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

pub fn status(raw: &[u8]) -> Result<ApiStatus> {
    let mut status = ApiStatus::default();
    for field in fields(raw, "Status") {
        match field? {
            (3, value) => status.message = value.string("Status", 3)?.to_owned(),
            (4, value) => status.reason = value.string("Status", 4)?.to_owned(),
            (6, value) => status.code = u16::try_from(value.varint("Status", 6)?).unwrap_or(0),
            _ => {}
        }
    }
    Ok(status)
}

/// A record read from its protobuf message.
pub trait FromProtobuf: Sized {
    /// The kind its envelope names.
    const KIND: &'static str;

    /// Reads the message (`raw`, out of its envelope).
    fn from_protobuf(raw: &[u8]) -> Result<Self>;

    /// Reads an enveloped object, which must be of kind [`Self::KIND`].
    fn from_enveloped(object: &[u8]) -> Result<Self> {
        let envelope = envelope(object)?;
        if envelope.kind != Self::KIND {
            return Err(ProtobufError::UnexpectedKind {
                expected: Self::KIND,
                sent: envelope.kind.to_owned(),
            });
        }
        Self::from_protobuf(envelope.raw)
    }
}

/// A record written as its protobuf message, which [`FromProtobuf::from_protobuf`] reads
/// back as the same record — up to what Kubernetes' encoding cannot tell apart, as Go's
/// `omitempty` cannot in JSON either: an empty string, list or map, a zero count or time,
/// is read back as absent.
pub trait ToProtobuf {
    fn to_protobuf(&self) -> Vec<u8>;
}

impl FromProtobuf for BuildJob {
    const KIND: &'static str = "Job";

    fn from_protobuf(raw: &[u8]) -> Result<BuildJob> {
        let mut job = BuildJob::default();
        for field in fields(raw, "Job") {
            match field? {
                (1, value) => job.metadata = meta(value.bytes("Job", 1)?, true)?,
                (2, value) => {
                    let mut spec = BuildJobSpec::default();
                    for field in fields(value.bytes("Job", 2)?, "JobSpec") {
                        if let (10, value) = field? {
                            spec.suspend = Some(value.varint("JobSpec", 10)? != 0);
                        }
                    }
                    job.spec = Some(spec);
                }
                (3, value) => job.status = Some(job_status(value.bytes("Job", 3)?)?),
                _ => {}
            }
        }
        Ok(job)
    }
}

impl FromProtobuf for BuildPod {
    const KIND: &'static str = "Pod";

    fn from_protobuf(raw: &[u8]) -> Result<BuildPod> {
        let mut pod = BuildPod::default();
        for field in fields(raw, "Pod") {
            match field? {
                (1, value) => pod.metadata = meta(value.bytes("Pod", 1)?, false)?,
                (3, value) => pod.status = Some(pod_status(value.bytes("Pod", 3)?)?),
                _ => {}
            }
        }
        Ok(pod)
    }
}

/// A string field as JSON would give it: Go's `omitempty` leaves out an empty string,
/// which protobuf (proto2, as Kubernetes generates it) sends.
fn present(value: Value<'_>, message: &'static str, field: u32) -> Result<Option<String>> {
    let text = value.string(message, field)?;
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// An `int32` count as JSON would give it: left out when zero (`omitempty`).
fn count(value: Value<'_>, message: &'static str, field: u32) -> Result<Option<i32>> {
    let number = value.varint(message, field)? as i32;
    Ok((number != 0).then_some(number))
}

/// A `metav1.Time`, to the second as its JSON form is. The zero time is sent as an empty
/// message, and in JSON as `null`: none.
fn time(value: Value<'_>, message: &'static str, field: u32) -> Result<Option<Time>> {
    let mut seconds = None;
    for field in fields(value.bytes(message, field)?, "Time") {
        if let (1, value) = field? {
            seconds = Some(value.varint("Time", 1)? as i64);
        }
    }
    Ok(seconds
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(Time))
}

fn map_entry(value: Value<'_>, field: u32) -> Result<(&str, &str)> {
    let (mut key, mut entry) = ("", "");
    for part in fields(value.bytes("ObjectMeta", field)?, "map entry") {
        match part? {
            (1, value) => key = value.string("map entry", 1)?,
            (2, value) => entry = value.string("map entry", 2)?,
            _ => {}
        }
    }
    Ok((key, entry))
}

/// The metadata kept (as [`kept::Meta::kept`] keeps it from JSON).
fn meta(raw: &[u8], annotations: bool) -> Result<ObjectMeta> {
    let mut meta = ObjectMeta::default();
    let (mut labels, mut kept_annotations) = (BTreeMap::new(), BTreeMap::new());
    let (mut has_labels, mut has_annotations) = (false, false);
    for field in fields(raw, "ObjectMeta") {
        match field? {
            (1, value) => meta.name = present(value, "ObjectMeta", 1)?,
            (3, value) => meta.namespace = present(value, "ObjectMeta", 3)?,
            (5, value) => meta.uid = present(value, "ObjectMeta", 5)?,
            (6, value) => meta.resource_version = present(value, "ObjectMeta", 6)?,
            (8, value) => meta.creation_timestamp = time(value, "ObjectMeta", 8)?,
            (9, value) => meta.deletion_timestamp = time(value, "ObjectMeta", 9)?,
            (10, value) => {
                meta.deletion_grace_period_seconds = Some(value.varint("ObjectMeta", 10)? as i64);
            }
            (11, value) => {
                has_labels = true;
                let (key, value) = map_entry(value, 11)?;
                if kept::is_kept_label(key) {
                    labels.insert(key.to_owned(), value.to_owned());
                }
            }
            (12, value) if annotations => {
                has_annotations = true;
                let (key, value) = map_entry(value, 12)?;
                if kept::is_kept_annotation(key) {
                    kept_annotations.insert(key.to_owned(), value.to_owned());
                }
            }
            (13, value) => {
                let owner = owner_reference(value.bytes("ObjectMeta", 13)?)?;
                let owners = meta.owner_references.get_or_insert_with(Vec::new);
                if owner.controller == Some(true) {
                    owners.push(owner);
                }
            }
            (14, value) => meta
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(value.string("ObjectMeta", 14)?.to_owned()),
            _ => {}
        }
    }
    meta.labels = has_labels.then_some(labels);
    meta.annotations = has_annotations.then_some(kept_annotations);
    Ok(meta)
}

fn owner_reference(raw: &[u8]) -> Result<OwnerReference> {
    let mut owner = OwnerReference::default();
    for field in fields(raw, "OwnerReference") {
        match field? {
            (1, value) => owner.kind = value.string("OwnerReference", 1)?.to_owned(),
            (3, value) => owner.name = value.string("OwnerReference", 3)?.to_owned(),
            (4, value) => owner.uid = value.string("OwnerReference", 4)?.to_owned(),
            (5, value) => owner.api_version = value.string("OwnerReference", 5)?.to_owned(),
            (6, value) => owner.controller = Some(value.varint("OwnerReference", 6)? != 0),
            (7, value) => {
                owner.block_owner_deletion = Some(value.varint("OwnerReference", 7)? != 0);
            }
            _ => {}
        }
    }
    Ok(owner)
}

/// A Job's status: the counts, times, and the conditions that hold.
fn job_status(raw: &[u8]) -> Result<JobStatus> {
    let mut status = JobStatus::default();
    for field in fields(raw, "JobStatus") {
        match field? {
            (1, value) => {
                let condition = job_condition(value.bytes("JobStatus", 1)?)?;
                // No list where none is kept, as from JSON (`kept`).
                if let Some(condition) = condition {
                    status
                        .conditions
                        .get_or_insert_with(Vec::new)
                        .push(condition);
                }
            }
            (2, value) => status.start_time = time(value, "JobStatus", 2)?,
            (3, value) => status.completion_time = time(value, "JobStatus", 3)?,
            (4, value) => status.active = count(value, "JobStatus", 4)?,
            (5, value) => status.succeeded = count(value, "JobStatus", 5)?,
            (6, value) => status.failed = count(value, "JobStatus", 6)?,
            _ => {}
        }
    }
    Ok(status)
}

fn job_condition(raw: &[u8]) -> Result<Option<JobCondition>> {
    let mut condition = JobCondition::default();
    for field in fields(raw, "JobCondition") {
        match field? {
            (1, value) => condition.type_ = value.string("JobCondition", 1)?.to_owned(),
            (2, value) => condition.status = value.string("JobCondition", 2)?.to_owned(),
            (4, value) => condition.last_transition_time = time(value, "JobCondition", 4)?,
            (5, value) => condition.reason = present(value, "JobCondition", 5)?,
            (6, value) => condition.message = present(value, "JobCondition", 6)?,
            _ => {}
        }
    }
    Ok((condition.status == "True").then_some(condition))
}

/// A pod's status: the phase, why it cannot be scheduled, its containers' states.
fn pod_status(raw: &[u8]) -> Result<PodStatus> {
    let mut status = PodStatus::default();
    for field in fields(raw, "PodStatus") {
        match field? {
            (1, value) => status.phase = present(value, "PodStatus", 1)?,
            (2, value) => {
                let condition = pod_condition(value.bytes("PodStatus", 2)?)?;
                // No list where none is kept, as from JSON (`kept`).
                if let Some(condition) = condition {
                    status
                        .conditions
                        .get_or_insert_with(Vec::new)
                        .push(condition);
                }
            }
            (8, value) => status
                .container_statuses
                .get_or_insert_with(Vec::new)
                .push(container_status(value.bytes("PodStatus", 8)?)?),
            (10, value) => status
                .init_container_statuses
                .get_or_insert_with(Vec::new)
                .push(container_status(value.bytes("PodStatus", 10)?)?),
            _ => {}
        }
    }
    Ok(status)
}

fn pod_condition(raw: &[u8]) -> Result<Option<PodCondition>> {
    let mut condition = PodCondition::default();
    for field in fields(raw, "PodCondition") {
        match field? {
            (1, value) => condition.type_ = value.string("PodCondition", 1)?.to_owned(),
            (2, value) => condition.status = value.string("PodCondition", 2)?.to_owned(),
            (5, value) => condition.reason = present(value, "PodCondition", 5)?,
            (6, value) => condition.message = present(value, "PodCondition", 6)?,
            _ => {}
        }
    }
    let unschedulable = condition.type_ == "PodScheduled" && condition.status == "False";
    Ok(unschedulable.then_some(condition))
}

/// A container's name and state (its container ID left out, as from JSON).
fn container_status(raw: &[u8]) -> Result<ContainerStatus> {
    let mut container = ContainerStatus::default();
    for field in fields(raw, "ContainerStatus") {
        match field? {
            (1, value) => container.name = value.string("ContainerStatus", 1)?.to_owned(),
            (2, value) => {
                container.state = Some(container_state(value.bytes("ContainerStatus", 2)?)?)
            }
            _ => {}
        }
    }
    Ok(container)
}

fn container_state(raw: &[u8]) -> Result<ContainerState> {
    let mut state = ContainerState::default();
    for field in fields(raw, "ContainerState") {
        match field? {
            (1, value) => {
                let mut waiting = ContainerStateWaiting::default();
                for field in fields(value.bytes("ContainerState", 1)?, "ContainerStateWaiting") {
                    match field? {
                        (1, value) => waiting.reason = present(value, "ContainerStateWaiting", 1)?,
                        (2, value) => waiting.message = present(value, "ContainerStateWaiting", 2)?,
                        _ => {}
                    }
                }
                state.waiting = Some(waiting);
            }
            (2, value) => {
                let mut running = ContainerStateRunning::default();
                for field in fields(value.bytes("ContainerState", 2)?, "ContainerStateRunning") {
                    if let (1, value) = field? {
                        running.started_at = time(value, "ContainerStateRunning", 1)?;
                    }
                }
                state.running = Some(running);
            }
            (3, value) => {
                state.terminated = Some(terminated(value.bytes("ContainerState", 3)?)?);
            }
            _ => {}
        }
    }
    Ok(state)
}

fn terminated(raw: &[u8]) -> Result<ContainerStateTerminated> {
    const M: &str = "ContainerStateTerminated";
    let mut terminated = ContainerStateTerminated::default();
    for field in fields(raw, M) {
        match field? {
            (1, value) => terminated.exit_code = value.varint(M, 1)? as i32,
            (2, value) => terminated.signal = count(value, M, 2)?,
            (3, value) => terminated.reason = present(value, M, 3)?,
            (4, value) => terminated.message = present(value, M, 4)?,
            (5, value) => terminated.started_at = time(value, M, 5)?,
            (6, value) => terminated.finished_at = time(value, M, 6)?,
            _ => {}
        }
    }
    Ok(terminated)
}
