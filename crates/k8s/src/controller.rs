//! The work one replica does for all while it leads (see `election`): the leader's passes
//! over every build — heal requests whose creator died, fail builds that cannot start, cancel builds
//! of deleted jobs (by option), release queues, report states, run cron, apply retention.
//! Each pass decides with the engine's pure functions and acts through the API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use kubeci_engine::api::Backend;
use kubeci_engine::ledger::Ledger;
use kubeci_engine::plan::{self, Action, JobPolicy};
use kubeci_engine::record::BuildJob;
use kubeci_engine::report::{self, CommitState, ReportTarget};
use kubeci_engine::{observe, schedule, BuildSummary};
use kubeci_render::{keys, BuildRequest, Trigger};
use kubeci_spec::cron::CronSchedule;
use kubeci_spec::LoadedJob;

use crate::{label, ledger, now, now_ms, BuildRecord, Cluster};

/// Reports in flight or waiting to be retried, by (namespace, Job name).
#[derive(Default)]
struct Reports {
    waiting: Mutex<HashMap<(String, String), Retry>>,
    /// States this replica reported and recorded that its cache may not show yet: without
    /// them, a pass right after a report would send it again.
    recorded: Mutex<HashMap<(String, String), Vec<CommitState>>>,
}

#[derive(Clone, Copy)]
struct Retry {
    /// Milliseconds since the epoch; `i64::MAX` while a report is in flight.
    not_before_ms: i64,
    attempts: u32,
}

/// The leader's loop: a pass whenever something changed, and at least every `resync`.
pub(crate) async fn run(cluster: Arc<Cluster>) {
    let reports = Arc::new(Reports::default());
    loop {
        tokio::select! {
            _ = cluster.changed.notified() => {}
            _ = tokio::time::sleep(cluster.settings.resync) => {}
        }
        if cluster.ready() && cluster.is_leader() {
            pass(&cluster, &reports).await;
        }
    }
}

async fn pass(cluster: &Arc<Cluster>, reports: &Arc<Reports>) {
    let now = now();
    let groups = cluster.snapshot();
    let pending = heal_and_settle(cluster, &groups, now).await;
    for ((namespace, name), records) in &groups {
        let (loaded, declared) = cluster.lookup(namespace, name);
        let loaded = loaded.as_deref();
        let job = loaded.and_then(|l| l.job.as_ref());
        let retention = job.and_then(|j| j.retention.as_ref());
        let policy = JobPolicy {
            // A job whose ConfigMap became invalid is still declared: its builds stay.
            declared,
            valid: job.is_some(),
            max_concurrency: job.and_then(|j| j.max_concurrency),
            keep: retention.and_then(|r| r.keep),
            ttl: retention
                .and_then(|r| r.ttl.as_deref())
                .and_then(|t| kubeci_spec::duration::parse_duration(t).ok()),
            cancel_when_deleted: cluster.settings.cancel_when_deleted,
        };
        let summaries: Vec<BuildSummary> = records
            .iter()
            .map(|r| {
                let mut summary = r.summary.clone();
                // A build the reporter does not report is never waiting for a report.
                if let Some(reporter) = &cluster.reporter {
                    if !reporter.wants(&report_target(cluster, namespace, name, loaded, r)) {
                        summary.fully_reported = true;
                    }
                }
                summary
            })
            .collect();
        for action in plan::plan(&policy, &summaries, now) {
            if let Action::Delete(number) = action {
                if pending.contains(&(namespace.clone(), name.clone(), number)) {
                    continue;
                }
            }
            act(cluster, namespace, name, records, action).await;
        }
        if let Some(reporter) = &cluster.reporter {
            for record in records {
                report(cluster, reporter, reports, namespace, name, loaded, record);
            }
        }
    }
    cron(cluster, now).await;
}

/// Builds the requests whose creator died before creating their Job, marks those whose Job
/// exists as done, and returns the (namespace, job, number) still pending.
async fn heal_and_settle(
    cluster: &Cluster,
    groups: &BTreeMap<(String, String), Vec<BuildRecord>>,
    now: i64,
) -> BTreeSet<(String, String, u64)> {
    let mut still_pending = BTreeSet::new();
    for lease in cluster.cached_ledgers() {
        let namespace = lease.namespace().unwrap_or_default();
        let Some(job) = label(&*lease, keys::JOB).map(str::to_owned) else {
            continue;
        };
        let cached = Ledger::read(lease.annotations());
        if cached.entries.iter().all(|e| e.pending.is_none()) {
            continue;
        }
        let records = groups.get(&(namespace.clone(), job.clone()));
        let present: Vec<BuildSummary> = records
            .map(|r| r.iter().map(|r| r.summary.clone()).collect())
            .unwrap_or_default();
        let exists = |n: u64| present.iter().any(|b| b.number == n);
        let mut healed = Vec::new();
        for entry in cached.to_heal(exists, now) {
            let (Some(loaded), _) = cluster.lookup(&namespace, &job) else {
                continue;
            };
            let request = entry.pending.clone().expect("a pending entry");
            log::info!(
                "starting build {} of {namespace}/{job}: its request ({}) was recorded but its Job never created",
                entry.number, entry.key
            );
            match cluster.create_build(&loaded, &request, &entry.key).await {
                Ok(_) => healed.push(entry.number),
                Err(e) => {
                    cluster
                        .counters
                        .increment("kubeci_reconcile_errors_total", &["heal"]);
                    log::warn!("cannot start build {}: {e}", entry.number)
                }
            }
        }
        let settled = ledger::update(cluster, &namespace, &job, |ledger| {
            let (abandoned, changed) = ledger.settle(|n| exists(n) || healed.contains(&n), now);
            let pending: Vec<u64> = ledger
                .entries
                .iter()
                .filter(|e| e.pending.is_some())
                .map(|e| e.number)
                .collect();
            ((abandoned, pending), changed)
        })
        .await;
        match settled {
            Ok((abandoned, pending)) => {
                for entry in abandoned {
                    log::warn!(
                        "gave up request {} of {namespace}/{job} (build {}): its job could not be built for {} s",
                        entry.key,
                        entry.number,
                        kubeci_engine::ledger::HEAL_WINDOW
                    );
                }
                still_pending.extend(
                    pending
                        .into_iter()
                        .map(|n| (namespace.clone(), job.clone(), n)),
                );
            }
            Err(e) => {
                {
                    cluster
                        .counters
                        .increment("kubeci_reconcile_errors_total", &["ledger"]);
                    log::warn!("cannot update the ledger of {namespace}/{job}: {e}")
                };
                still_pending.extend(
                    cached
                        .entries
                        .iter()
                        .filter(|e| e.pending.is_some())
                        .map(|e| (namespace.clone(), job.clone(), e.number)),
                );
            }
        }
    }
    still_pending
}

async fn act(
    cluster: &Cluster,
    namespace: &str,
    job: &str,
    records: &[BuildRecord],
    action: Action,
) {
    let number = match &action {
        Action::Fail { number, .. } | Action::Cancel { number, .. } => *number,
        Action::Release(number) | Action::Delete(number) => *number,
    };
    let Some(record) = records.iter().find(|r| r.summary.number == number) else {
        return;
    };
    let name = record.job.name_any();
    let jobs: Api<BuildJob> = Api::namespaced(cluster.client.clone(), namespace);
    let result = match action {
        Action::Fail {
            reason, message, ..
        } => {
            log::warn!("build {number} of {namespace}/{job} cannot start: {reason}: {message}");
            cluster
                .stop(
                    namespace,
                    &name,
                    serde_json::json!({ keys::ERROR: observe::error_annotation(&reason, &message) }),
                )
                .await
                .map(drop)
        }
        Action::Cancel { by, .. } => cluster
            .stop(
                namespace,
                &name,
                serde_json::json!({ keys::CANCELLED_BY: by }),
            )
            .await
            .map(drop),
        Action::Release(_) => jobs
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
            )
            .await
            .map(drop),
        Action::Delete(_) => jobs
            .delete(&name, &DeleteParams::background())
            .await
            .map(drop),
    };
    match result {
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => {
            cluster
                .counters
                .increment("kubeci_reconcile_errors_total", &["update"]);
            log::warn!("cannot update build {number} of {namespace}/{job}: {e}")
        }
    }
}

/// Sends the report a build still owes, unless one is in flight or waiting for a retry.
fn report(
    cluster: &Arc<Cluster>,
    reporter: &Arc<dyn report::Reporter>,
    reports: &Arc<Reports>,
    namespace: &str,
    job: &str,
    loaded: Option<&LoadedJob>,
    record: &BuildRecord,
) {
    let annotations = record.job.annotations();
    let key = (namespace.to_owned(), record.job.name_any());
    let mut reported = report::parse_reported(annotations.get(keys::REPORTED).map(String::as_str));
    {
        let mut recorded = reports.recorded.lock().expect("the reports lock");
        if let Some(known) = recorded.get(&key) {
            if known.iter().all(|s| reported.contains(s)) {
                recorded.remove(&key);
            } else {
                reported.clone_from(known);
            }
        }
    }
    let Some((state, description)) = report::next_report(&record.summary.state, &reported) else {
        return;
    };
    let target = report_target(cluster, namespace, job, loaded, record);
    if !reporter.wants(&target) {
        return;
    }
    let attempts = {
        let mut waiting = reports.waiting.lock().expect("the reports lock");
        let retry = waiting.get(&key).copied();
        if retry.is_some_and(|r| r.not_before_ms > now_ms()) {
            return;
        }
        let attempts = retry.map_or(0, |r| r.attempts);
        waiting.insert(
            key.clone(),
            Retry {
                not_before_ms: i64::MAX,
                attempts,
            },
        );
        attempts
    };
    let cluster = cluster.clone();
    let reporter = reporter.clone();
    let reports = reports.clone();
    let mut recorded = reported.clone();
    tokio::spawn(async move {
        let outcome = match reporter.report(&target, state, &description).await {
            Ok(()) => {
                recorded.push(state);
                // Sent: never send it again from here, even if recording it fails.
                reports
                    .recorded
                    .lock()
                    .expect("the reports lock")
                    .insert(key.clone(), recorded.clone());
                record_reported(&cluster, &target, &recorded).await;
                Ok(())
            }
            Err(e) => Err((
                e.retry_after.map_or_else(
                    || e.message.clone(),
                    |after| format!("{} (retry after {} s)", e.message, after.as_secs()),
                ),
                report::retry_delay(attempts, &e),
            )),
        };
        let mut waiting = reports.waiting.lock().expect("the reports lock");
        match outcome {
            Ok(()) => {
                waiting.remove(&key);
            }
            Err((message, delay)) => {
                log::warn!(
                    "cannot report {state} for build {} of {}/{}: {message}; retrying in {} s",
                    target.number,
                    target.namespace,
                    target.job,
                    delay.as_secs()
                );
                waiting.insert(
                    key,
                    Retry {
                        not_before_ms: now_ms()
                            + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                        attempts: attempts + 1,
                    },
                );
            }
        }
        drop(waiting);
        cluster.changed.notify_one();
    });
}

/// What a report about `record` is about.
fn report_target(
    cluster: &Cluster,
    namespace: &str,
    job: &str,
    loaded: Option<&LoadedJob>,
    record: &BuildRecord,
) -> ReportTarget {
    let annotations = record.job.annotations();
    ReportTarget {
        namespace: namespace.to_owned(),
        job: job.to_owned(),
        number: record.summary.number,
        build_name: record.job.name_any(),
        trigger: annotations.get(keys::TRIGGER).cloned(),
        git_url: annotations.get(keys::GIT_URL).cloned(),
        commit: annotations.get(keys::COMMIT).cloned(),
        pull_request: record.summary.pull_request,
        url: kubeci_render::build_url(
            &cluster.settings.render,
            namespace,
            job,
            record.summary.number,
        ),
        context: loaded.and_then(|l| l.job.as_ref()?.ghprb.as_ref()?.context.clone()),
    }
}

/// Records on the build's Job which states were reported, until the API server takes it
/// (waiting up to 10 s between tries): a report sent but not recorded would be sent again
/// by the next leader, and this leader sends nothing while it is not recorded.
async fn record_reported(cluster: &Cluster, target: &ReportTarget, reported: &[CommitState]) {
    let patch = serde_json::json!({"metadata": {"annotations": {keys::REPORTED: report::format_reported(reported)}}});
    let jobs = Api::<BuildJob>::namespaced(cluster.client.clone(), &target.namespace);
    for attempt in 0u32.. {
        match jobs
            .patch(
                &target.build_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return,
            // The build is gone: nothing left to record on.
            Err(kube::Error::Api(status)) if status.code == 404 => return,
            Err(e) => {
                if attempt < 5 || attempt % 10 == 0 {
                    log::warn!(
                        "reported build {} of {}/{}, cannot record it yet: {e}",
                        target.number,
                        target.namespace,
                        target.job
                    );
                }
                let delay =
                    Duration::from_millis(200 << attempt.min(6)).min(Duration::from_secs(10));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Starts the cron builds that are due.
async fn cron(cluster: &Cluster, now: i64) {
    for (namespace, name, text) in cluster.cron_jobs() {
        let (namespace, name) = (namespace.as_str(), name.as_str());
        let Ok(schedule) = CronSchedule::parse(&text, name) else {
            continue;
        };
        let last = cluster
            .cached_ledger(namespace, name)
            .and_then(|lease| Ledger::read(lease.annotations()).last_cron_run);
        let Some(due) = schedule::due_run(&schedule, last, now) else {
            continue;
        };
        let request = BuildRequest {
            trigger: Trigger::Cron,
            ..BuildRequest::manual(0)
        };
        match cluster
            .start_build(namespace, name, request, format!("cron:{due}"), Some(due))
            .await
        {
            Ok(started) if started.created => log::info!(
                "cron started build {} of {namespace}/{name}",
                started.build.number
            ),
            Ok(_) => {}
            Err(e) => {
                cluster
                    .counters
                    .increment("kubeci_reconcile_errors_total", &["cron"]);
                log::warn!("cron cannot start {namespace}/{name}: {e}")
            }
        }
    }
}
