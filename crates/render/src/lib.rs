//! Renders one build of a job into the `batch/v1` Job that runs it.
//!
//! A pure function of (job spec, build request, render settings): the same inputs always
//! give the same Job, byte for byte. No value from a spec or a webhook is pasted into a
//! shell string: they reach the pod as argv elements and environment values, escaped
//! against Kubernetes' own `$(VAR)` expansion (see [`expansion`]).

pub mod collector;
pub mod emit;
pub mod expansion;
pub mod log_line;
mod pod;

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job as KubeJob, JobSpec};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubeci_build::outputs::DeclaredOutputs;
use kubeci_build::{build_name, keys, BuildRequest};
use kubeci_spec::duration::parse_duration;
use kubeci_spec::validate::normalize_workdir;
use kubeci_spec::Job;

/// Paths inside the build pod.
pub mod paths {
    /// The shared `emptyDir` workspace.
    pub const WORKSPACE: &str = "/workspace";
    /// The checkout, inside the workspace.
    pub const CHECKOUT: &str = "/workspace/src";
    /// Facts the clone step learns (commit, branch), read by the build step's prelude.
    pub const META: &str = "/workspace/.kubeci";
    /// Where the SSH Secret is mounted (clone step only).
    pub const SSH: &str = "/var/run/kubeci/ssh";
    /// Where the clone step leaves its result for Kubernetes to keep in the pod's status
    /// (the container's `terminationMessagePath`, Kubernetes' default).
    pub const TERMINATION_MESSAGE: &str = "/dev/termination-log";
    /// Where a pod's service-account credentials are mounted (the build step only).
    pub const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
}

/// The user the clone step runs as; the pod's `fsGroup`, so the build step can use the
/// checkout whatever user its image runs as.
pub const CLONE_UID: i64 = 65532;

/// Sets `GIT_COMMIT`/`GIT_BRANCH` from what the clone step found, then runs the job's
/// script (`$1`) with bash, stopping at the first failing command. A constant: no spec
/// value is ever part of it.
pub const BUILD_PRELUDE: &str = r#"meta="$KUBECI_WORKSPACE/.kubeci"
if [ -z "${GIT_COMMIT:-}" ] && [ -r "$meta/commit" ]; then GIT_COMMIT=$(cat "$meta/commit"); export GIT_COMMIT; fi
if [ -z "${GIT_BRANCH:-}" ] && [ -r "$meta/branch" ]; then GIT_BRANCH=$(cat "$meta/branch"); export GIT_BRANCH; fi
if [ -n "${ghprbPullId:-}" ]; then
  ghprbActualCommit="${ghprbActualCommit:-$GIT_COMMIT}"; sha1="${sha1:-$GIT_COMMIT}"; export ghprbActualCommit sha1
fi
exec /bin/bash -e -c "$1" kubeci-build
"#;

/// Settings of the server (or CLI) that renders builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderConfig {
    /// Image of the clone step: kubeci itself, with git and ssh.
    pub clone_image: String,
    /// Image of the build step for jobs that do not set `image`.
    pub default_image: String,
    /// Base URL of the kubeci UI, for `BUILD_URL`.
    pub base_url: String,
    /// Where build pods reach kubeci to hand over the files their jobs declare
    /// (`test_reports`, `artifacts`); `None`: no collector is rendered and those files stay
    /// in the pod (an engine without an archive, or one that collects them itself).
    pub collect_url: Option<String>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            clone_image: concat!("ghcr.io/kubeci/kubeci:", env!("CARGO_PKG_VERSION")).into(),
            default_image: "docker.io/library/buildpack-deps:bookworm".into(),
            base_url: "http://localhost:8080".into(),
            collect_url: None,
        }
    }
}

/// What a build's pod uses as its Job holds it: its ServiceAccount, every Secret its pod
/// template names (any field about a secret — volumes, projected sources, `secretKeyRef`,
/// `envFrom`, image pull secrets — so nothing added later slips past), and the repository
/// of its `kubeci.io/git-url`. Tenancy checks a queued build with it before releasing it.
pub fn pod_uses(job: &KubeJob) -> kubeci_spec::tenancy::PodUses {
    fn secrets_in(value: &serde_json::Value, about_secrets: bool, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if about_secrets {
                    for key in ["name", "secretName"] {
                        if let Some(serde_json::Value::String(name)) = map.get(key) {
                            if !found.contains(name) {
                                found.push(name.clone());
                            }
                        }
                    }
                }
                for (key, child) in map {
                    secrets_in(child, key.to_ascii_lowercase().contains("secret"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    secrets_in(item, about_secrets, found);
                }
            }
            _ => {}
        }
    }
    let template = job.spec.as_ref().map(|s| &s.template);
    let mut secrets = Vec::new();
    if let Some(pod) = template.and_then(|t| t.spec.as_ref()) {
        let pod = serde_json::to_value(pod).expect("a pod spec serializes");
        secrets_in(&pod, false, &mut secrets);
    }
    let annotations = job.metadata.annotations.as_ref();
    kubeci_spec::tenancy::PodUses {
        service_account: template
            .and_then(|t| t.spec.as_ref())
            .and_then(|p| p.service_account_name.clone()),
        secrets,
        repository: annotations
            .and_then(|a| a.get(keys::GIT_URL))
            .and_then(|url| kubeci_spec::giturl::GitUrl::parse(url).ok())
            .and_then(|url| url.repository_key()),
    }
}

/// Facts about the job's declaration that builds record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOrigin {
    /// The namespace the build runs in.
    pub namespace: String,
    /// `sha256` of the `job.yaml` text.
    pub spec_hash: String,
    pub chart_version: Option<String>,
}

impl JobOrigin {
    pub fn of(loaded: &kubeci_spec::LoadedJob) -> JobOrigin {
        JobOrigin {
            namespace: loaded.namespace.clone(),
            spec_hash: loaded.spec_hash.clone(),
            chart_version: loaded.chart_version.clone(),
        }
    }
}

/// Why a build could not be rendered. None is worth retrying: the inputs must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("build numbers start at 1")]
    ZeroBuildNumber,
    #[error("workdir `{workdir}` {reason}")]
    InvalidWorkdir { workdir: String, reason: String },
    #[error("{field} `{value}` is not a duration: {reason}")]
    InvalidDuration {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// The URL of a build's page in the kubeci UI.
pub fn build_url(config: &RenderConfig, namespace: &str, job: &str, number: u64) -> String {
    kubeci_build::build_url(&config.base_url, namespace, job, number)
}

/// Renders build `request` of `job` into the Job that runs it.
pub fn render(
    job: &Job,
    origin: &JobOrigin,
    request: &BuildRequest,
    config: &RenderConfig,
) -> Result<KubeJob, RenderError> {
    if request.number == 0 {
        return Err(RenderError::ZeroBuildNumber);
    }
    let (workdir, deadline) = checked_fields(job)?;
    let branch = request.branch.clone().or_else(|| job.git.branch.clone());
    let labels: BTreeMap<String, String> = [
        (keys::MANAGED_BY, keys::MANAGER.to_owned()),
        (keys::JOB, job.name.clone()),
        (keys::BUILD, request.number.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let declared = declared_outputs(job, &workdir);
    let collecting = (config.collect_url.as_deref())
        .filter(|_| declared.any())
        .map(|url| pod::Collecting {
            declared: &declared,
            url,
            deadline,
        });
    let pod = pod::build_pod(
        job,
        origin,
        request,
        (branch.as_deref(), &workdir),
        config,
        collecting.as_ref(),
    );
    Ok(KubeJob {
        metadata: ObjectMeta {
            name: Some(build_name(&job.name, request.number)),
            namespace: Some(origin.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations(job, origin, request, branch, &declared)),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: deadline,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    // The Job controller copies it to the pod, beside its own
                    // `batch.kubernetes.io/job-tracking`: the pod stays until kubeci has
                    // archived its logs and removed it.
                    finalizers: Some(vec![keys::ARCHIVE_FINALIZER.to_owned()]),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// The job's fields that are checked again when a build is rendered, so a bad value fails
/// the build request: its working directory (normalized) and its timeout (seconds).
fn checked_fields(job: &Job) -> Result<(String, Option<i64>), RenderError> {
    let workdir = match &job.workdir {
        Some(workdir) => {
            normalize_workdir(workdir).map_err(|reason| RenderError::InvalidWorkdir {
                workdir: workdir.clone(),
                reason,
            })?
        }
        None => String::new(),
    };
    let duration =
        |field: &'static str, value: &Option<String>| -> Result<Option<i64>, RenderError> {
            value
                .as_deref()
                .map(|v| {
                    parse_duration(v)
                        .map(|s| i64::try_from(s).unwrap_or(i64::MAX))
                        .map_err(|reason| RenderError::InvalidDuration {
                            field,
                            value: v.to_owned(),
                            reason,
                        })
                })
                .transpose()
        };
    let deadline = duration("timeout", &job.timeout)?;
    // Checked here too; kubeci itself deletes expired builds (never one whose final state
    // is not reported yet), so the Job carries no `ttlSecondsAfterFinished`.
    duration(
        "retention.ttl",
        &job.retention.as_ref().and_then(|r| r.ttl.clone()),
    )?;
    Ok((workdir, deadline))
}

/// The files `job`'s builds leave behind, as its builds record them.
fn declared_outputs(job: &Job, workdir: &str) -> DeclaredOutputs {
    DeclaredOutputs {
        workdir: workdir.to_owned(),
        test_reports: job.test_reports.clone(),
        artifacts: job.artifacts.clone(),
    }
}

/// What the build's Job records of its request and origin (the build record's fields).
fn annotations(
    job: &Job,
    origin: &JobOrigin,
    request: &BuildRequest,
    branch: Option<String>,
    outputs: &DeclaredOutputs,
) -> BTreeMap<String, String> {
    let pr = request.pull_request.as_ref();
    [
        (keys::TRIGGER, Some(request.trigger.as_str().to_owned())),
        (keys::REQUESTED_BY, request.requested_by.clone()),
        (keys::GIT_URL, Some(job.git.url.clone())),
        (keys::BRANCH, branch),
        (keys::REF, request.git_ref.clone()),
        (keys::COMMIT, request.commit.clone()),
        (keys::PR, pr.map(|p| p.number.to_string())),
        (keys::PR_AUTHOR, pr.and_then(|p| p.author.clone())),
        (keys::SPEC_HASH, Some(origin.spec_hash.clone())),
        (keys::CHART_VERSION, origin.chart_version.clone()),
        (
            keys::OUTPUTS,
            outputs.any().then(|| outputs.to_annotation()),
        ),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), value?)))
    .collect()
}

/// The Job as YAML, with `apiVersion` and `kind` first, as `kubectl` shows objects.
pub fn to_yaml(job: &KubeJob) -> String {
    let mut value = serde_json::to_value(job).expect("a Job serializes");
    if let serde_json::Value::Object(map) = &mut value {
        let mut ordered = serde_json::Map::new();
        for key in ["apiVersion", "kind"] {
            if let Some(v) = map.remove(key) {
                ordered.insert(key.into(), v);
            }
        }
        ordered.append(map);
        value = serde_json::Value::Object(ordered);
    }
    emit::to_yaml(&value)
}
