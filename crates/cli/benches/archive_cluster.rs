//! The archive with the Kubernetes engine: `serve --kubernetes --archive s3://…` on the
//! fake API server, its S3 requests counted by [`CountingProxy`]: 1,000 builds finishing
//! together ([`finish_together`]), and start to `/readyz` with and without the archive
//! ([`start_pairs`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kubeci_archive::Archive;
use kubeci_build::{BuildRef, JobRef};
use kubeci_engine::archive::{ArchivedBuild, ArchivedSummary};
use kubeci_testkit::{Options, PodBehaviour, S3Server};

use crate::s3_counter::CountingProxy;
use crate::support::{self, percentile, scale_configmap, scale_namespace};
use crate::{metric, setting, verdict, wait_for};

const TOKEN: &str = "archive-load-token-of-some-length";
const MANAGED: &str = "app.kubernetes.io/managed-by=kubeci";

/// The S3 server, the forwarder counting kubeci's requests to it, and the environment
/// that sends kubeci through the forwarder.
fn counted_store() -> (S3Server, CountingProxy, Vec<(String, String)>) {
    let s3 = S3Server::start();
    let proxy = CountingProxy::start(s3.port());
    let env = (s3.env().into_iter())
        .map(|(k, v)| match k.as_str() {
            "AWS_ENDPOINT_URL" => (k, proxy.endpoint()),
            _ => (k, v),
        })
        .collect();
    (s3, proxy, env)
}

/// Waits until the store has had no request for a second (at most `within`).
fn until_quiet(proxy: &CountingProxy, within: Duration) {
    let started = Instant::now();
    let mut last = proxy.total();
    while started.elapsed() < within {
        std::thread::sleep(Duration::from_secs(1));
        let now = proxy.total();
        if now == last {
            return;
        }
        last = now;
    }
}

/// `after` less `before`, kind by kind.
fn counted_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    (after.iter())
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// `builds` POSTs of one build each of `job-0` … from 8 clients.
fn request_builds(port: u16, builds: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= builds {
                    return;
                }
                let path = format!("/api/v1/jobs/{}/job-{i}/builds", scale_namespace(i));
                let auth = format!("Authorization: Bearer {TOKEN}\r\nIdempotency-Key: a-{i}\r\n");
                let code = support::status(port, "POST", &path, &auth);
                assert_eq!(code, 201, "POST {path}");
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
}

/// Every build of the run archived whole: its record complete, its build step's log the
/// 60 lines the pod wrote, in order, and one entry in its job's index.
async fn check_archived(archive: &Archive, builds: &[(String, String, u64)]) {
    let expected: Vec<String> = (1..=60).map(|n| format!("step {n} of 60")).collect();
    for (namespace, job, number) in builds {
        let build = BuildRef {
            namespace,
            job,
            number: *number,
        };
        let record: ArchivedBuild = archive
            .record(build)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{build}: no record"));
        assert!(record.complete, "{build}: its record is not complete");
        assert!(
            record.log.iter().all(|s| s.incomplete.is_none()),
            "{build}: {:?}",
            record.log
        );
        let lines = archive
            .log(build, "build", 0)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{build}: no build log"));
        let lines: Vec<String> = lines
            .map(|line| String::from_utf8(line.unwrap().line.text.to_vec()).unwrap())
            .filter(|text| std::future::ready(!text.starts_with("==> ")))
            .collect()
            .await;
        assert_eq!(lines, expected, "{build}: its archived log");
        let job = JobRef { namespace, job };
        let page: Vec<kubeci_archive::IndexEntry<ArchivedSummary>> =
            archive.page(job, None, 10).await.unwrap();
        let numbers: Vec<u64> = page.iter().map(|e| e.number).collect();
        assert_eq!(numbers, [*number], "{build}: its job's index");
    }
}

/// 1,000 builds finishing together, archived to S3 through the counting forwarder.
// Long on purpose: a load driver read top to bottom (start, load, wait, check, print).
pub fn finish_together() {
    let builds = setting("FINISH_BUILDS", 1_000);
    let run_for = Duration::from_secs(setting("FINISH_RUN_SECONDS", 30) as u64);
    let (s3, proxy, env) = counted_store();
    let (runtime, server) = support::fake_api_server_as(Options {
        history: 200_000,
        ..Options::default()
    });
    server.set_pod_behaviour(move |_| PodBehaviour::Succeed {
        logs: (1..=60).map(|n| format!("step {n} of 60")).collect(),
        duration: run_for,
    });
    let _guard = runtime.enter();
    server
        .preload((0..builds).map(scale_configmap).collect())
        .unwrap();
    let args = ["--token-file", "{dir}/token", "--archive", &s3.url()];
    let (kubeci, ready_in) = support::start_with_env(&server, &[("token", TOKEN)], &args, &env);
    let port = kubeci.port;
    // The leader's first pass goes over every job's newest archived build (the
    // retention's sweep, every 10 minutes): counted apart from the builds'.
    wait_for("the first sweep", Duration::from_secs(120), || {
        proxy.counts().get("GET head.json").copied().unwrap_or(0) >= builds as u64
    });
    until_quiet(&proxy, Duration::from_secs(120));
    let before_burst = proxy.counts();

    let burst = Instant::now();
    request_builds(port, builds);
    let requested_in = burst.elapsed();
    let client = runtime.block_on(server.client());
    let pods: Api<Pod> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client);
    let ended = |pod: &Pod| {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, Some("Succeeded" | "Failed"))
    };
    let mut first_end = None;
    wait_for(
        "every build pod ended",
        run_for + Duration::from_secs(300),
        || {
            let listed = runtime
                .block_on(pods.list(&ListParams::default()))
                .unwrap()
                .items;
            let done = listed.iter().filter(|p| ended(p)).count();
            if done > 0 && first_end.is_none() {
                first_end = Some(Instant::now());
            }
            done == builds
        },
    );
    let last_end = Instant::now();
    let archived = |job: &Job| {
        let annotations = job.metadata.annotations.as_ref();
        annotations
            .and_then(|a| a.get("kubeci.io/archived"))
            .map(String::as_str)
            == Some("complete")
    };
    let mut archived_by_second = Vec::new();
    wait_for(
        "every build archived whole",
        Duration::from_secs(600),
        || {
            let listed = runtime
                .block_on(jobs.list(&ListParams::default().labels(MANAGED)))
                .unwrap()
                .items;
            let done = listed.iter().filter(|j| archived(j)).count();
            let second = last_end.elapsed().as_secs() as usize;
            while archived_by_second.len() <= second {
                archived_by_second.push(done);
            }
            done == builds && metric(port, "kubeci_archive_pending") == Some(0.0)
        },
    );
    let all_archived = last_end.elapsed();
    let after = proxy.counts();

    // What must hold: each Job once, marked archived; each pod released; the archive whole.
    let listed = runtime
        .block_on(jobs.list(&ListParams::default().labels(MANAGED)))
        .unwrap()
        .items;
    assert_eq!(listed.len(), builds, "one build Job per request");
    let ran: Vec<(String, String, u64)> = listed
        .iter()
        .map(|job| {
            let labels = job.metadata.labels.clone().unwrap_or_default();
            let number = labels["kubeci.io/build"].parse().unwrap();
            (
                job.metadata.namespace.clone().unwrap(),
                labels["kubeci.io/job"].clone(),
                number,
            )
        })
        .collect();
    let held = runtime
        .block_on(pods.list(&ListParams::default()))
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "kubeci.io/archive")
        })
        .count();
    assert_eq!(held, 0, "every pod released once its build is archived");
    let direct = Archive::open_with_env(&s3.url().parse().unwrap(), &s3.env()).unwrap();
    runtime.block_on(check_archived(&direct, &ran));

    let run = counted_between(&before_burst, &after);
    let total: u64 = run.values().sum();
    println!("{builds} builds of {builds} jobs, each pod running {}s, archived to S3 (versitygw, through a counting forwarder):", run_for.as_secs());
    println!("  start to /readyz {ready_in:.2?}; before the builds (the first pass's sweep), kubeci asked the store {} times: {:?}", proxy.total() - total, before_burst);
    println!("  {builds} POSTs in {requested_in:.2?}; first pod ended {:.1?} after the first request, the last (seen) {:.1?} after it",
        first_end.map(|t| t - burst).unwrap_or_default(), last_end - burst);
    println!(
        "  all {builds} archived whole {all_archived:.1?} after the last ended (target ≤ 60 s: {}); archived (Jobs marked) by each second after it: {archived_by_second:?}",
        verdict(all_archived <= Duration::from_secs(60))
    );
    println!(
        "  requests to the store from the first POST to the end: {total} ({:.2} per build):",
        total as f64 / builds as f64
    );
    for (what, n) in &run {
        println!(
            "    {what:40} {n:>7}  ({:.2} per build)",
            *n as f64 / builds as f64
        );
    }
    println!("  invariants: {builds} Jobs marked archived complete, 0 pods held, every record complete, every build log the pod's 60 lines, one index entry per job");
}

/// Start to `/readyz` with `jobs` jobs without and with `--archive s3://…`, in pairs
/// taken in turn (without, with; then with, without).
pub fn start_pairs() {
    let jobs = setting("START_JOBS", 10_000);
    let pairs = setting("START_PAIRS", 5);
    let (s3, proxy, env) = counted_store();
    let (runtime, server) = support::fake_api_server(Options {
        history: 200_000,
        ..Options::default()
    });
    let _guard = runtime.enter();
    server
        .preload((0..jobs).map(scale_configmap).collect())
        .unwrap();
    let url = s3.url();
    let with_archive = ["--archive", url.as_str()];
    let (mut without, mut with, mut asked) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        for archived in [pair % 2 == 1, pair % 2 == 0] {
            let before = proxy.total();
            let (kubeci, took) = match archived {
                true => support::start_with_env(&server, &[], &with_archive, &env),
                false => support::start(&server, &[], &[]),
            };
            let asked_at_start = proxy.total() - before;
            drop(kubeci);
            match archived {
                true => {
                    with.push(took);
                    asked.push(asked_at_start);
                }
                false => without.push(took),
            }
        }
    }
    println!(
        "start to /readyz with {jobs} jobs, {pairs} pairs (without, with; then with, without):"
    );
    println!("  without an archive: {without:.0?}");
    println!("  with --archive s3://… : {with:.0?}");
    println!("  requests to the store by the time /readyz answered: {asked:?}");
    let (a, b) = (percentile(&mut without, 0.5), percentile(&mut with, 0.5));
    let change = (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0;
    println!(
        "  medians: {a:.0?} without, {b:.0?} with: {change:+.1} % (target within 10 %: {})",
        verdict(change.abs() <= 10.0)
    );
}
