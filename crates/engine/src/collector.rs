//! Who may hand a build's files to kubeci, and which (issue 30): the decisions over a
//! build pod's collector, pure. The Kubernetes engine's collector presents its pod's
//! token; its unverified claims must be a build pod's before the cluster is asked
//! ([`TokenClaims`]); the cluster's TokenReview says whose it is
//! ([`CollectorIdentity::of_review`]), its answers kept a minute ([`KeptReviews`]); then the pod and its Job as kubeci's caches hold them say which build it may write to
//! ([`authorize_pod`]), and the job's declaration which files ([`authorize_file`]). Each
//! refusal says why — never which other builds exist — like Prow's trigger.

use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use kubeci_build::outputs::{check_file_path, DeclaredOutputs, COLLECT_AUDIENCE};
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_build::{build_name, keys, BuildRef};
use kubeci_spec::glob::{Pattern, MAX_PATTERNS, MAX_PATTERN_CHARS};

use crate::archive::FileKind;

mod claims;
mod kept;

pub use claims::{TokenClaims, EXPIRY_LEEWAY_SECONDS, LONGEST_TOKEN};
pub use kept::{
    Answer, KeptReviews, TokenKey, REFUSALS_KEPT_AT_MOST, REVIEW_KEPT, TOKENS_KEPT_PER_POD,
};

/// The pod a collector's token was minted for, as the cluster's TokenReview names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorIdentity {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
}

/// Why a collector's request is refused: its HTTP status, a stable code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectRefusal {
    /// 401 (who it is is not known), 403 (not this, not here), 404 (this engine takes no
    /// files), 409 (the build's files are all in), 413 (too large), 503 (try again).
    pub status: u16,
    pub code: &'static str,
    pub why: String,
}

impl CollectRefusal {
    pub fn new(status: u16, code: &'static str, why: impl Into<String>) -> CollectRefusal {
        CollectRefusal {
            status,
            code,
            why: why.into(),
        }
    }

    fn unauthenticated(why: impl Into<String>) -> CollectRefusal {
        CollectRefusal::new(401, "not-a-collector", why)
    }

    fn forbidden(code: &'static str, why: impl Into<String>) -> CollectRefusal {
        CollectRefusal::new(403, code, why)
    }

    /// The engine does not take build pods' files (the local engine collects itself).
    pub fn not_taken() -> CollectRefusal {
        CollectRefusal::new(
            404,
            "not-collecting",
            "this kubeci takes no build pod's files: its engine collects them itself",
        )
    }
}

/// The one value of `extra[key]`, if it has exactly one.
fn only(status: &TokenReviewStatus, key: &str) -> Option<String> {
    let extra = status.user.as_ref()?.extra.as_ref()?;
    match extra.get(key)?.as_slice() {
        [one] if !one.is_empty() => Some(one.clone()),
        _ => None,
    }
}

impl CollectorIdentity {
    /// Who a TokenReview (asked for [`COLLECT_AUDIENCE`]) says presented the token: a
    /// ServiceAccount's token bound to a pod, for that audience; otherwise why not.
    pub fn of_review(status: &TokenReviewStatus) -> Result<CollectorIdentity, CollectRefusal> {
        if status.authenticated != Some(true) {
            let why = status.error.as_deref().unwrap_or("no reason given");
            return Err(CollectRefusal::unauthenticated(format!(
                "the token is not a {COLLECT_AUDIENCE} token of this cluster: {why}"
            )));
        }
        let audiences = status.audiences.as_deref().unwrap_or_default();
        if !audiences.iter().any(|a| a == COLLECT_AUDIENCE) {
            return Err(CollectRefusal::unauthenticated(format!(
                "the token is not for {COLLECT_AUDIENCE}"
            )));
        }
        let username = (status.user.as_ref()).and_then(|u| u.username.as_deref());
        let namespace = username
            .and_then(|u| u.strip_prefix("system:serviceaccount:"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(namespace, _account)| namespace.to_owned())
            .filter(|namespace| !namespace.is_empty());
        let pod = only(status, "authentication.kubernetes.io/pod-name");
        let pod_uid = only(status, "authentication.kubernetes.io/pod-uid");
        match (namespace, pod, pod_uid) {
            (Some(namespace), Some(pod), Some(pod_uid)) => Ok(CollectorIdentity {
                namespace,
                pod,
                pod_uid,
            }),
            _ => Err(CollectRefusal::unauthenticated(
                "the token is not a pod's ServiceAccount token (a build pod's collector presents its own pod's)",
            )),
        }
    }
}

/// The build whose files a collector may hand over, and what its job declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectingBuild {
    pub namespace: String,
    pub job: String,
    pub number: u64,
    pub declared: DeclaredOutputs,
}

impl CollectingBuild {
    pub fn build_ref(&self) -> BuildRef<'_> {
        BuildRef {
            namespace: &self.namespace,
            job: &self.job,
            number: self.number,
        }
    }
}

fn label<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Which build `who`'s pod may hand files over for, given that pod and its Job as
/// kubeci's caches hold them: a build pod kubeci made (its labels), the same pod (its uid:
/// not one made again under that name), owned by its build's Job (the controller
/// reference names the Job and its uid), a Job kubeci manages for that build, whose job
/// declares files, and a pod that has not ended. One rule for every refusal's words: none
/// says which other builds exist.
pub fn authorize_pod(
    who: &CollectorIdentity,
    pod: Option<&BuildPod>,
    job: Option<&BuildJob>,
) -> Result<CollectingBuild, CollectRefusal> {
    let not_a_build = || {
        CollectRefusal::forbidden(
            "not-a-build-pod",
            format!(
                "pod {}/{} is not a build pod kubeci runs: only a build's own pod may hand over its files",
                who.namespace, who.pod
            ),
        )
    };
    let pod = pod.ok_or_else(not_a_build)?;
    if pod.metadata.uid.as_deref() != Some(who.pod_uid.as_str()) {
        return Err(not_a_build());
    }
    let meta = &pod.metadata;
    let managed = label(meta, keys::MANAGED_BY) == Some(keys::MANAGER);
    let job_name = label(meta, keys::JOB).ok_or_else(not_a_build)?;
    let number: u64 =
        (label(meta, keys::BUILD).and_then(|n| n.parse().ok())).ok_or_else(not_a_build)?;
    let name = build_name(job_name, number);
    let job = job.ok_or_else(not_a_build)?;
    let job_meta = &job.metadata;
    let owner = (meta.owner_references.iter().flatten()).find(|r| r.controller == Some(true));
    let owned = owner.is_some_and(|r| {
        r.kind == "Job"
            && r.api_version == "batch/v1"
            && r.name == name
            && Some(r.uid.as_str()) == job_meta.uid.as_deref()
    });
    let job_is_the_build = job_meta.name.as_deref() == Some(name.as_str())
        && job_meta.namespace.as_deref() == Some(who.namespace.as_str())
        && label(job_meta, keys::MANAGED_BY) == Some(keys::MANAGER)
        && label(job_meta, keys::JOB) == Some(job_name)
        && label(job_meta, keys::BUILD) == Some(number.to_string().as_str());
    if !(managed && owned && job_is_the_build) {
        return Err(not_a_build());
    }
    let annotations = job_meta.annotations.as_ref();
    let declared = annotations.and_then(|a| a.get(keys::OUTPUTS));
    if let Some(why) = declared.and_then(|text| over_bounds(text)) {
        return Err(CollectRefusal::forbidden(
            "bad-declaration",
            format!(
                "build {number} of job {}/{job_name} declares more than a job may: {why}",
                who.namespace
            ),
        ));
    }
    let declared =
        DeclaredOutputs::from_annotation(declared.map(String::as_str)).ok_or_else(|| {
            CollectRefusal::forbidden(
                "nothing-declared",
                format!(
                    "build {number} of job {}/{job_name} declares no test_reports or artifacts",
                    who.namespace
                ),
            )
        })?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Err(CollectRefusal::new(
            409,
            "build-ended",
            format!("the pod of build {number} of job {}/{job_name} has ended: its files are taken while it stops, not after", who.namespace),
        ));
    }
    Ok(CollectingBuild {
        namespace: who.namespace.clone(),
        job: job_name.to_owned(),
        number,
        declared,
    })
}

/// The longest `kubeci.io/outputs` annotation read: the most patterns a job may declare,
/// each of the longest, with room for its `workdir` and the JSON around them.
const MAX_DECLARED_BYTES: usize = 2 * MAX_PATTERNS * (4 * MAX_PATTERN_CHARS + 8) + 8 * 1024;

/// Why the files a build's annotation declares are more than a job may declare (its
/// patterns are read on each of its collector's requests), if they are: what the spec
/// bounds a job to, applied to what its build recorded.
fn over_bounds(text: &str) -> Option<String> {
    if text.len() > MAX_DECLARED_BYTES {
        return Some(format!("its annotation is over {MAX_DECLARED_BYTES} bytes"));
    }
    let declared: DeclaredOutputs = serde_json::from_str(text).ok()?;
    let lists = [
        ("test_reports", declared.test_reports),
        ("artifacts", declared.artifacts),
    ];
    lists.into_iter().find_map(|(key, patterns)| {
        if patterns.len() > MAX_PATTERNS {
            Some(format!(
                "{} {key} patterns, at most {MAX_PATTERNS}",
                patterns.len()
            ))
        } else {
            (patterns.iter())
                .any(|p| p.chars().count() > MAX_PATTERN_CHARS)
                .then(|| format!("a {key} pattern over {MAX_PATTERN_CHARS} characters"))
        }
    })
}

/// Whether `build` may hand over the file at `path` (relative to its `workdir`) as
/// `kind`: a path that names a file under its build, matched by one of the patterns its
/// job declares for that kind.
pub fn authorize_file(
    build: &CollectingBuild,
    kind: FileKind,
    path: &str,
) -> Result<(), CollectRefusal> {
    check_file_path(path).map_err(|problem| {
        CollectRefusal::forbidden(
            "bad-path",
            format!("`{}` is not a file's path: {problem}", path.escape_debug()),
        )
    })?;
    let (patterns, key) = match kind {
        FileKind::Report => (&build.declared.test_reports, "test_reports"),
        FileKind::Artifact => (&build.declared.artifacts, "artifacts"),
    };
    let declared = (patterns.iter())
        .filter_map(|text| Pattern::parse(text).ok())
        .any(|pattern| pattern.matches(path));
    if declared {
        Ok(())
    } else {
        Err(CollectRefusal::forbidden(
            "not-declared",
            format!(
                "`{}` is not one of the {key} the job of build {} declares",
                path.escape_debug(),
                build.number
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
