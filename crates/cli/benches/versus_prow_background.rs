//! The background of versus_prow's cost phase (issue 31), stored in a system's namespace
//! before it starts: jobs configured that the measured pull requests do not trigger (each
//! on a repository of its own, `example/repo-<j>`, for pull requests of a trusted author)
//! and finished builds of those jobs, each left as the system leaves a finished build:
//!
//! - kubeci: a ConfigMap per job and its ledger Lease; per build the Job `kubeci render`
//!   makes for a pull request, its reports recorded as sent (`kubeci.io/reported`), its
//!   status as the Job controller writes a finished one's, and its finished pod
//!   (finished_builds.rs). kubeci keeps a build's pod until its Job goes, and keeps Jobs
//!   until the job's `retention` says (none by default).
//! - Prow: a presubmit per job in its job config (given to [`Side::prow_with`]); per build
//!   the ProwJob trigger creates for a pull request, its status as plank and crier leave a
//!   finished one (`prev_report_states` records the GitHub reporter's report), and the pod
//!   plank created for it, finished. Sinker deletes a finished ProwJob's pod
//!   `terminated_pod_ttl` after it ended (24 h by default) and the ProwJob after
//!   `max_prowjob_age` (7 days).
//!
//! The builds ended over the last three hours, one in five failed: both keep every one
//! of them and its pod, so each side holds the same 10,000 builds and 10,000 pods, and
//! neither deletes any while it is measured. The Jobs name an outside controller and the
//! pods a scheduler that does not exist (as in real_cluster_memory.rs): nothing else works
//! on them while a system is measured.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kubeci_testkit::prow::Presubmit;
use serde_json::{json, Value};

use super::finished::{build_pod, failed, in_parallel, job_status, pod_status, time, COMMIT};
use super::systems::SCRIPT;
use super::world::{World, AUTHOR};

/// The template's job, repository, build number and pull request, replaced in each copy.
const TEMPLATE_JOB: &str = "tmpl-job";
const TEMPLATE_REPO: &str = "tmpl-repo";
const TEMPLATE_NUMBER: &str = "987654";
const TEMPLATE_PULL: &str = "876543";
/// How long each stored build ran.
const RAN: i64 = 95;

/// How much background: jobs configured and finished builds (`i % jobs` is build `i`'s job).
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub jobs: usize,
    pub builds: usize,
}

impl Counts {
    /// Job `j` of build `i`, the build's number in its job and its pull request's number.
    fn build(self, i: usize) -> (usize, usize, usize) {
        (i % self.jobs, i / self.jobs + 1, 100 + i)
    }

    /// When build `i` started: one after the other over the three hours before now.
    fn started(self, i: usize, now: i64) -> i64 {
        now - 3 * 3600 + (i * (3 * 3600 - 600) / self.builds.max(1)) as i64
    }
}

/// The repository of other job `j`.
fn repo(j: usize) -> String {
    format!("repo-{j}")
}

/// Prow's other presubmits: one per job, on its own repository, running the same script.
pub fn prow_presubmits(counts: Counts) -> Vec<Presubmit> {
    (0..counts.jobs)
        .map(|j| Presubmit {
            repo: format!("example/{}", repo(j)),
            name: format!("job-{j}"),
            script: SCRIPT.into(),
        })
        .collect()
}

/// kubeci's job file for job `name` on `repo`: the measured job's, on another repository.
fn kubeci_job(name: &str, repo: &str) -> String {
    format!(
        "- job:\n    name: {name}\n    image: bash:5\n    git:\n      url: https://github.com/example/{repo}.git\n      branch: master\n    run_command: {}\n    timeout: 10m\n    ghprb:\n      enabled: true\n      whitelisted_users: [{AUTHOR}]\n",
        serde_json::to_string(SCRIPT).unwrap()
    )
}

/// The Job kubeci renders for the template's pull request, as JSON text.
fn rendered_template(ns: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, kubeci_job(TEMPLATE_JOB, TEMPLATE_REPO)).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args(["render", "-o", "json", "-n", ns])
        .args(["--build-number", TEMPLATE_NUMBER, "--pr", TEMPLATE_PULL])
        .args(["--commit", COMMIT, "--pr-author", AUTHOR])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// kubeci's background in `ns`; how long storing it took.
pub fn store_kubeci(world: &World, ns: &str, counts: Counts) -> Duration {
    let storing = Instant::now();
    let client = world.plane.client.clone();
    let template = rendered_template(ns);
    let now = jiff::Timestamp::now().as_second();
    let ns = ns.to_owned();
    world.runtime.block_on(async move {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        in_parallel((0..counts.jobs).collect(), |j| {
            let (cms, leases) = (cms.clone(), leases.clone());
            let name = format!("job-{j}");
            let configmap = json!({"metadata": {"name": name, "labels": {"ci-job-spec": "true"}},
                "data": {"job.yaml": kubeci_job(&name, &repo(j))}});
            // The job's ledger, as kubeci leaves it after its builds.
            let last = counts.builds / counts.jobs + usize::from(j < counts.builds % counts.jobs);
            let lease = json!({"metadata": {"name": format!("kubeci-job-{name}"),
                "labels": {"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": name},
                "annotations": {"kubeci.io/last-build-number": last.to_string()}}});
            async move {
                let configmap: ConfigMap = serde_json::from_value(configmap).unwrap();
                cms.create(&PostParams::default(), &configmap)
                    .await
                    .unwrap();
                let lease: Lease = serde_json::from_value(lease).unwrap();
                leases.create(&PostParams::default(), &lease).await.unwrap();
            }
        })
        .await;
        let (jobs, pods): (Api<Job>, Api<Pod>) = (
            Api::namespaced(client.clone(), &ns),
            Api::namespaced(client, &ns),
        );
        in_parallel((0..counts.builds).collect(), |i| {
            let (jobs, pods) = (jobs.clone(), pods.clone());
            let job = finished_job(&template, counts, i);
            let start = counts.started(i, now);
            async move {
                let job = jobs.create(&PostParams::default(), &job).await.unwrap();
                let name = job.metadata.name.clone().unwrap();
                let status = job_status(i, start);
                jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                create_finished(&pods, &build_pod(&job, i), |pod| pod_status(pod, i, start)).await;
            }
        })
        .await;
    });
    storing.elapsed()
}

/// Creates `pod`, then writes the status `status` gives for it, as its kubelet would.
async fn create_finished(pods: &Api<Pod>, pod: &Pod, status: impl FnOnce(&Pod) -> Value) {
    let pod = pods.create(&PostParams::default(), pod).await.unwrap();
    let status = status(&pod);
    let name = pod.metadata.name.unwrap();
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Finished build `i`: the rendered Job for its job and pull request, its reports sent.
fn finished_job(template: &str, counts: Counts, i: usize) -> Job {
    let (j, number, pull) = counts.build(i);
    let text = template
        .replace(TEMPLATE_JOB, &format!("job-{j}"))
        .replace(TEMPLATE_REPO, &repo(j))
        .replace(TEMPLATE_NUMBER, &number.to_string())
        .replace(TEMPLATE_PULL, &pull.to_string());
    let mut job: Value = serde_json::from_str(&text).unwrap();
    job["spec"]["managedBy"] = json!("bench.kubeci.io/nobody");
    // What kubeci adds to a webhook's build and records of its reports.
    let end = if failed(i) { "failure" } else { "success" };
    let annotations = &mut job["metadata"]["annotations"];
    annotations["kubeci.io/check-name"] = json!(format!("kubeci/job-{j}"));
    annotations["kubeci.io/request-key"] = json!(format!("pr:{pull}:{COMMIT}"));
    annotations["kubeci.io/requested-by"] = json!("github:example");
    annotations["kubeci.io/reported"] = json!(format!("github-status:pending,{end}"));
    serde_json::from_value(job).unwrap()
}

/// The ProwJob resource (the CRD of `scripts/prow apply-crd`).
fn prowjobs() -> ApiResource {
    let kind = GroupVersionKind::gvk("prow.k8s.io", "v1", "ProwJob");
    ApiResource::from_gvk_with_plural(&kind, "prowjobs")
}

/// Prow's background in `ns` (its presubmits are [`prow_presubmits`]); how long storing it
/// took.
pub fn store_prow(world: &World, ns: &str, counts: Counts) -> Duration {
    let storing = Instant::now();
    let client = world.plane.client.clone();
    let now = jiff::Timestamp::now().as_second();
    let pod_spec = presubmit_pod_spec();
    let ns = ns.to_owned();
    world.runtime.block_on(async move {
        let jobs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &prowjobs());
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        in_parallel((0..counts.builds).collect(), |i| {
            let (jobs, pods) = (jobs.clone(), pods.clone());
            let start = counts.started(i, now);
            let (prowjob, pod, status) = prow_build((&ns, &pod_spec), counts, i, start);
            async move {
                let prowjob: DynamicObject = serde_json::from_value(prowjob).unwrap();
                jobs.create(&PostParams::default(), &prowjob).await.unwrap();
                let pod: Pod = serde_json::from_value(pod).unwrap();
                create_finished(&pods, &pod, |_| status).await;
            }
        })
        .await;
    });
    storing.elapsed()
}

/// The `spec` of each presubmit in Prow's job config (its container unnamed, as a ProwJob
/// holds it).
fn presubmit_pod_spec() -> Value {
    let config = kubeci_testkit::prow::job_config(&kubeci_testkit::prow::ProwSettings {
        namespace: String::new(),
        api_server: String::new(),
        api_server_ca: Default::default(),
        token: String::new(),
        github_url: String::new(),
        github_token: String::new(),
        hmac_secret: String::new(),
        presubmits: prow_presubmits(Counts { jobs: 1, builds: 0 }),
        sinker: None,
    });
    let mut spec = config["presubmits"]["example/repo-0"][0]["spec"].clone();
    spec["containers"][0]["name"] = json!("");
    spec
}

/// Finished build `i` as Prow leaves it: (its ProwJob, its pod, the pod's status).
// Long on purpose: every field trigger, plank and crier leave, as one real ProwJob and its
// pod showed them, in one place to compare.
fn prow_build(
    (ns, pod_spec): (&str, &Value),
    counts: Counts,
    i: usize,
    start: i64,
) -> (Value, Value, Value) {
    let (j, number, pull) = counts.build(i);
    let (job, repo) = (format!("job-{j}"), repo(j));
    let name = format!("{i:08x}-0000-4000-8000-{number:012x}");
    // Prow's build ids are snowflakes (19 digits).
    let build_id = (2_129_884_419_010_334_720u64 + i as u64).to_string();
    let context = format!("prow/{job}");
    let end = start + RAN;
    let state = if failed(i) { "failure" } else { "success" };
    // The labels trigger and plank leave (`prow/job-<j>` is no label value: Prow keeps its
    // base name).
    let labels = json!({"created-by-prow": "true", "prow.k8s.io/type": "presubmit",
        "prow.k8s.io/job": job, "prow.k8s.io/context": job, "prow.k8s.io/refs.org": "example",
        "prow.k8s.io/refs.repo": repo, "prow.k8s.io/refs.base_ref": "master",
        "prow.k8s.io/refs.pull": pull.to_string(), "prow.k8s.io/is-optional": "false",
        "event-GUID": format!("delivery-{i}"), "prow.k8s.io/id": name,
        "prow.k8s.io/build-id": build_id});
    let annotations = json!({"prow.k8s.io/job": job, "prow.k8s.io/context": context});
    let link = format!("https://github.com/example/{repo}");
    let refs = json!({"org": "example", "repo": repo, "repo_link": link, "base_ref": "master",
        "base_sha": COMMIT, "base_link": format!("{link}/commit/{COMMIT}"),
        "pulls": [{"number": pull, "author": AUTHOR, "sha": COMMIT, "title": format!("change {pull}"),
                   "head_ref": format!("change-{pull}"), "link": format!("{link}/pull/{pull}"),
                   "commit_link": format!("{link}/pull/{pull}/commits/{COMMIT}"),
                   "author_link": format!("https://github.com/{AUTHOR}")}]});
    let prowjob = json!({"apiVersion": "prow.k8s.io/v1", "kind": "ProwJob",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"type": "presubmit", "agent": "kubernetes", "cluster": "default", "namespace": ns,
                 "job": job, "context": context, "rerun_command": format!("/test {job}"),
                 "report": true, "refs": refs, "pod_spec": pod_spec,
                 "prowjob_defaults": {"tenant_id": "GlobalDefaultID"}},
        "status": {"startTime": time(start), "pendingTime": time(start + 1),
                   "completionTime": time(end), "state": state,
                   "description": if failed(i) { "Job failed." } else { "Job succeeded." },
                   "pod_name": name, "build_id": build_id,
                   "prev_report_states": {"github-reporter": state}}});
    let mut pod_labels = labels;
    pod_labels["prow.k8s.io/plank-version"] = json!("v20240619-cfb8754e0459");
    // The pod plank makes of an undecorated job: its container named `test`, the job's
    // variables set.
    let mut spec = pod_spec.clone();
    spec["containers"][0]["name"] = json!("test");
    spec["containers"][0]["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    spec["automountServiceAccountToken"] = json!(false);
    spec["restartPolicy"] = json!("Never");
    spec["schedulerName"] = json!("bench.kubeci.io/nobody");
    let job_spec = json!({"type": "presubmit", "job": job, "buildid": build_id,
        "prowjobid": name, "refs": refs});
    let env = [
        ("BUILD_ID", build_id.clone()),
        ("BUILD_NUMBER", build_id.clone()),
        ("CI", "true".into()),
        ("JOB_NAME", job.clone()),
        ("JOB_SPEC", job_spec.to_string()),
        ("JOB_TYPE", "presubmit".into()),
        ("PROW_JOB_ID", name.clone()),
        ("PULL_BASE_REF", "master".into()),
        ("PULL_BASE_SHA", COMMIT.into()),
        ("PULL_HEAD_REF", format!("change-{pull}")),
        ("PULL_NUMBER", pull.to_string()),
        ("PULL_PULL_SHA", COMMIT.into()),
        ("PULL_REFS", format!("master:{COMMIT},{pull}:{COMMIT}")),
        ("PULL_TITLE", format!("change {pull}")),
        ("REPO_NAME", repo.clone()),
        ("REPO_OWNER", "example".into()),
    ];
    spec["containers"][0]["env"] = env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": pod_labels, "annotations": annotations},
        "spec": spec});
    let code = i32::from(failed(i));
    let id = format!("containerd://{i:064x}");
    let status = json!({"status": {
        "phase": if failed(i) { "Failed" } else { "Succeeded" },
        "conditions": [{"type": "Initialized", "status": "True", "lastTransitionTime": time(start)},
                       {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": time(end)},
                       {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": time(end)},
                       {"type": "PodScheduled", "status": "True", "lastTransitionTime": time(start)}],
        "hostIP": "10.0.0.7", "podIP": format!("10.245.{}.{}", i / 250, i % 250 + 2),
        "startTime": time(start),
        "containerStatuses": [{"name": "test", "image": "bash:5", "imageID": format!("bash:5@sha256:{i:064x}"),
            "containerID": id, "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                      "startedAt": time(start + 1), "finishedAt": time(end), "containerID": id}},
            "lastState": {}}],
    }});
    (prowjob, pod, status)
}
