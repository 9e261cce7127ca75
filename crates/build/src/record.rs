//! The parts of a build's `batch/v1` Job and of its pod that kubeci reads, as compact
//! types the caches hold instead of whole objects.
//!
//! A `Job` is 2.6 KB before any of its fields is filled (its pod template is inline); 10,000
//! of them in a cache cost more than kubeci's memory budget (docs/design.md §8). These types
//! deserialize from the same JSON and name the same Kubernetes resources, so the kube client
//! lists and watches them directly; reading them keeps only the fields kubeci reads ([`kept`]
//! lists them and who reads them): the rest is skipped as it is parsed.

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};

mod kept;
pub mod protobuf;

/// A build's Job: its metadata, whether it is suspended, and its status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BuildJob {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<BuildJobSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

/// The one field of a Job's spec kubeci reads after creating it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct BuildJobSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// A build's pod: its metadata and status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BuildPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

impl<'de> Deserialize<'de> for BuildJob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default)]
            metadata: kept::Meta,
            #[serde(default)]
            spec: Option<BuildJobSpec>,
            #[serde(default)]
            status: Option<kept::Status>,
        }
        let sent = Sent::deserialize(deserializer)?;
        Ok(BuildJob {
            metadata: sent.metadata.kept(true),
            spec: sent.spec,
            status: sent.status.map(kept::Status::kept),
        })
    }
}

impl<'de> Deserialize<'de> for BuildPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default)]
            metadata: kept::Meta,
            #[serde(default)]
            status: Option<kept::PodStatusSent>,
        }
        let sent = Sent::deserialize(deserializer)?;
        Ok(BuildPod {
            metadata: sent.metadata.kept(false),
            status: sent.status.map(kept::PodStatusSent::kept),
        })
    }
}

/// The whole Job, as the API sent it: kept whole (a Job this replica just created).
impl From<Job> for BuildJob {
    fn from(job: Job) -> Self {
        BuildJob {
            metadata: job.metadata,
            spec: job.spec.map(|spec| BuildJobSpec {
                suspend: spec.suspend,
            }),
            status: job.status,
        }
    }
}

/// The whole pod, kept whole.
impl From<Pod> for BuildPod {
    fn from(pod: Pod) -> Self {
        BuildPod {
            metadata: pod.metadata,
            status: pod.status,
        }
    }
}

impl k8s_openapi::Resource for BuildJob {
    const API_VERSION: &'static str = <Job as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Job as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Job as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Job as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Job as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Job as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::ListableResource for BuildJob {
    const LIST_KIND: &'static str = <Job as k8s_openapi::ListableResource>::LIST_KIND;
}

impl k8s_openapi::Metadata for BuildJob {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl k8s_openapi::Resource for BuildPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::ListableResource for BuildPod {
    const LIST_KIND: &'static str = <Pod as k8s_openapi::ListableResource>::LIST_KIND;
}

impl k8s_openapi::Metadata for BuildPod {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_read_as_a_build_job_keeps_what_kubeci_reads() {
        let json = serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "demo-7", "namespace": "ci", "labels": {"kubeci.io/build": "7"},
                         "annotations": {"kubeci.io/trigger": "manual"}},
            "spec": {"suspend": true, "backoffLimit": 0,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "alpine"}]}}},
            "status": {"active": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        });
        let compact: BuildJob = serde_json::from_value(json.clone()).unwrap();
        let full: Job = serde_json::from_value(json).unwrap();
        assert_eq!(compact, BuildJob::from(full));
        assert_eq!(compact.spec.unwrap().suspend, Some(true));
        assert_eq!(compact.metadata.labels.unwrap()["kubeci.io/build"], "7");
        assert_eq!(compact.status.unwrap().active, Some(1));
    }

    #[test]
    fn a_pod_read_as_a_build_pod_keeps_its_status() {
        let json = serde_json::json!({
            "metadata": {"name": "demo-7-abc"},
            "spec": {"containers": [{"name": "build", "image": "alpine"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "build", "ready": false,
                "restartCount": 0, "image": "alpine", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
        });
        let compact: BuildPod = serde_json::from_value(json).unwrap();
        let status = compact.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let build = &status.container_statuses.unwrap()[0];
        assert_eq!(build.name, "build");
        let waiting = build.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("ImagePullBackOff"));
        // Its image is not read: not kept.
        assert_eq!(build.image, "");
    }
}
