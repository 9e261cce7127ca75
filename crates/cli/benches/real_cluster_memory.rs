//! `real_cluster -- --memory`: kubeci's start, memory and idle CPU on the real API server
//! with 1,000 job ConfigMaps (and their ledger Leases) and 10,000 finished builds, first without their pods, then
//! with them (each finished pod still present, as the Job controller leaves them), for this
//! kubeci and, with `KUBECI_B=PATH[:PATH…]`, other binaries in turn.
//!
//! The Jobs are rendered by `kubeci render` (the real pod template) and name an outside
//! controller (`spec.managedBy`), so the real Job controller never syncs them: their status
//! is written here, as it writes a finished build's, and nothing but kubeci works on them
//! while it is measured. The pods carry the labels, owner reference and spec the Job
//! controller gives a build's pod; no scheduler picks them (`schedulerName` names none)
//! and they name no node (so the pod garbage collector, which deletes pods bound to
//! missing nodes, leaves them); their status is then written as the kubelet writes a
//! finished pod's: `clone` and `build` terminated, with exit codes, times and conditions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::finished::{build_pod, in_parallel, job_status, pod_status, COMMIT};
use crate::support::{cpu_seconds, percentile, rss_mb, status, Kubeci, BUILDS, JOBS};

/// The template's job name and build number, replaced in each rendered copy.
const TEMPLATE_JOB: &str = "tmpl-job";
const TEMPLATE_NUMBER: &str = "987654";

/// One binary's figures.
#[derive(Default)]
struct Figures {
    ready: Vec<Duration>,
    rss: Vec<f64>,
    peak: Vec<f64>,
    pods_ready: Vec<Duration>,
    pods_rss: Vec<f64>,
    pods_peak: Vec<f64>,
    idle_cpu: Option<f64>,
}

/// The Job kubeci renders for build `TEMPLATE_NUMBER` of job `TEMPLATE_JOB`, as JSON text.
fn rendered_template(ns: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, format!("- job:\n    name: {TEMPLATE_JOB}\n    git:\n      url: git@github.com:example/repo.git\n      branch: main\n    run_command: make test\n    timeout: 30m\n    max_concurrency: 1\n    node_selector:\n      kubeci.io/bench: nowhere\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args([
            "render",
            "-o",
            "json",
            "-n",
            ns,
            "--build-number",
            TEMPLATE_NUMBER,
        ])
        .args(["--commit", COMMIT])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Finished build `i` (of job `i % JOBS`): the rendered Job, managed by no controller here.
fn finished_job(template: &str, i: usize) -> Job {
    let (job, number) = (format!("job-{}", i % JOBS), i / JOBS + 1);
    let text = template
        .replace(TEMPLATE_JOB, &job)
        .replace(TEMPLATE_NUMBER, &number.to_string());
    let mut job: Value = serde_json::from_str(&text).unwrap();
    job["spec"]["managedBy"] = json!("bench.kubeci.io/nobody");
    serde_json::from_value(job).unwrap()
}

/// The ConfigMaps, the jobs' ledger Leases and the finished Jobs (created, then their
/// status written).
async fn store_builds(client: &kube::Client, ns: &str, started: i64) -> Vec<Job> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let configmaps = (0..JOBS).map(|i| super::configmap(ns, i)).collect();
    in_parallel(configmaps, |cm: Value| {
        let cms = cms.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(cm).unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    })
    .await;
    // Each job's ledger, as kubeci keeps it after ten builds.
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    in_parallel((0..JOBS).collect(), |i| {
        let leases = leases.clone();
        async move {
            let lease = json!({"metadata": {"name": format!("kubeci-job-job-{i}"),
                "labels": {"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": format!("job-{i}")},
                "annotations": {"kubeci.io/last-build-number": (BUILDS / JOBS).to_string()}}});
            let lease: Lease = serde_json::from_value(lease).unwrap();
            leases.create(&PostParams::default(), &lease).await.unwrap();
        }
    })
    .await;
    let template = rendered_template(ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    in_parallel((0..BUILDS).collect(), |i| {
        let (jobs, job) = (jobs.clone(), finished_job(&template, i));
        async move {
            let job = jobs.create(&PostParams::default(), &job).await.unwrap();
            let name = job.metadata.name.clone().unwrap();
            let status = job_status(i, started + i as i64);
            jobs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
            job
        }
    })
    .await
}

/// One finished pod per Job (created, then its status written).
async fn store_pods(client: &kube::Client, ns: &str, jobs: Vec<Job>, started: i64) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    in_parallel(jobs.into_iter().enumerate().collect(), |(i, job)| {
        let pods = pods.clone();
        async move {
            let pod = pods
                .create(&PostParams::default(), &build_pod(&job, i))
                .await
                .unwrap();
            let status = pod_status(&pod, i, started + i as i64);
            pods.patch_status(
                &pod.metadata.name.unwrap(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
        }
    })
    .await;
}

/// The peak resident memory of a process so far, in MB.
fn peak_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts `exe`, waits for ready and `settle`: (process, start to ready, RSS, peak RSS).
fn start_and_settle(
    exe: &Path,
    kubeconfig: &Path,
    ns: &str,
    settle: Duration,
) -> (Kubeci, Duration, f64, f64) {
    let (kubeci, took) = super::start_exe(exe, kubeconfig, ns);
    std::thread::sleep(settle);
    assert_eq!(status(kubeci.port, "GET", "/readyz", ""), 200);
    let pid = kubeci.child.id();
    (kubeci, took, rss_mb(pid), peak_mb(pid))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

/// The `--memory` run (see the module's doc).
pub fn memory(runtime: &tokio::runtime::Runtime, client: kube::Client, kubeconfig: &Path) {
    const STARTS: usize = 5;
    const SETTLE: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(60);
    let ns = format!("bench-mem-{}", std::process::id());
    super::make_namespace(runtime, &client, &ns);
    let own: PathBuf = env!("CARGO_BIN_EXE_kubeci").into();
    let mut binaries = vec![("this kubeci".to_owned(), own)];
    // Several others, as `PATH` lists them: `KUBECI_B=/a/kubeci:/b/kubeci`.
    if let Some(others) = std::env::var_os("KUBECI_B") {
        for (n, other) in std::env::split_paths(&others).enumerate() {
            binaries.push((format!("KUBECI_B #{}", n + 1), other));
        }
    }
    let started = jiff::Timestamp::now().as_second() - 2 * 3600;
    let storing = Instant::now();
    let jobs = runtime.block_on(store_builds(&client, &ns, started));
    let stored_builds = storing.elapsed();
    let mut figures: Vec<Figures> = binaries.iter().map(|_| Figures::default()).collect();
    for _ in 0..STARTS {
        for ((_, exe), figures) in binaries.iter().zip(&mut figures) {
            let (kubeci, took, rss, peak) = start_and_settle(exe, kubeconfig, &ns, SETTLE);
            figures.ready.push(took);
            figures.rss.push(rss);
            figures.peak.push(peak);
            drop(kubeci);
        }
    }
    let storing = Instant::now();
    runtime.block_on(store_pods(&client, &ns, jobs, started));
    let stored_pods = storing.elapsed();
    for round in 0..3 {
        for ((_, exe), figures) in binaries.iter().zip(&mut figures) {
            let (kubeci, took, rss, peak) = start_and_settle(exe, kubeconfig, &ns, SETTLE);
            figures.pods_ready.push(took);
            figures.pods_rss.push(rss);
            figures.pods_peak.push(peak);
            if round == 0 {
                let pid = kubeci.child.id();
                let before = cpu_seconds(pid);
                std::thread::sleep(IDLE);
                figures.idle_cpu = Some(cpu_seconds(pid) - before);
            }
            drop(kubeci);
        }
    }
    // `KUBECI_MEMORY_KEEP=1` leaves the namespace, to measure other starts against it.
    if std::env::var_os("KUBECI_MEMORY_KEEP").is_some() {
        println!("kept namespace {ns} (KUBECI_MEMORY_KEEP)");
    } else {
        runtime.block_on(async {
            let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
                .delete(&ns, &Default::default())
                .await;
        });
    }
    println!("== memory on the real API server ({JOBS} job ConfigMaps + {BUILDS} finished Jobs stored in {stored_builds:.1?}, then {BUILDS} finished pods in {stored_pods:.1?})");
    for ((name, exe), mut f) in binaries.into_iter().zip(figures) {
        println!("-- {name} ({})", exe.display());
        println!(
            "start to /readyz: median {:?}, max {:?} ({STARTS} starts)",
            percentile(&mut f.ready, 0.5),
            percentile(&mut f.ready, 1.0)
        );
        println!(
            "RSS {SETTLE:?} after ready, without pods: median {:.1} MB, max {:.1} MB; peak (VmHWM) median {:.1} MB, max {:.1} MB",
            median(&f.rss),
            max(&f.rss),
            median(&f.peak),
            max(&f.peak)
        );
        println!(
            "RSS {SETTLE:?} after ready, with {BUILDS} finished pods: median {:.1} MB, max {:.1} MB; peak median {:.1} MB, max {:.1} MB (3 starts)",
            median(&f.pods_rss),
            max(&f.pods_rss),
            median(&f.pods_peak),
            max(&f.pods_peak)
        );
        println!(
            "start to /readyz with the pods too: median {:?}, max {:?} (3 starts)",
            percentile(&mut f.pods_ready, 0.5),
            percentile(&mut f.pods_ready, 1.0)
        );
        println!(
            "idle CPU over {IDLE:?} with those builds and pods: {:.2} s",
            f.idle_cpu.unwrap_or_default()
        );
    }
}
