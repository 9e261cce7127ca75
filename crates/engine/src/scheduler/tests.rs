//! The scheduler against an in-memory workload: the queue of a valid, an invalid and a
//! deleted job, retention, cron, and reports owed once — sent, failed and retried, recorded
//! late — without a cluster or a database.

use kubeci_build::BuildRef;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeci_results::{Outcome, ResultsBuilder, TestCase, TestResults};
use kubeci_spec::{LoadOptions, LoadedJob};
use tokio::sync::Notify;

use super::*;
use crate::archive::Archived;
use crate::build::BuildState;
use crate::report::CommitState;

const NOW: i64 = 1_795_428_000;

/// A job as `Memory` holds it.
#[derive(Default)]
struct MemoryJob {
    loaded: Option<Arc<LoadedJob>>,
    declared: bool,
    /// number → (state, reported)
    builds: BTreeMap<u64, (BuildState, ReportRecord)>,
    cron: Option<(String, Option<i64>)>,
    /// Builds the workload says must not be deleted.
    keep: BTreeSet<u64>,
}

/// A workload in memory that writes down what was done to it.
#[derive(Default)]
struct Memory {
    jobs: Mutex<BTreeMap<String, MemoryJob>>,
    done: Mutex<Vec<String>>,
    /// `record_reported` fails this many more times.
    record_failures: AtomicU32,
    /// The snapshot does not show recorded reports (a watch cache that lags).
    lagging: AtomicBool,
    /// How far each build (job, number) is archived; `archive_build` fails while set.
    archived: Mutex<BTreeMap<(String, u64), Archived>>,
    archive_down: AtomicBool,
    archive_calls: AtomicU32,
    /// It follows its changes (as the Kubernetes engine's watches do): each write marks
    /// its job, and a pass is told only those.
    follows: AtomicBool,
    changes: ChangeLog,
    /// The jobs each snapshot was asked for (`None`: every one).
    asked: Mutex<Vec<Option<BTreeSet<JobKey>>>>,
}

fn target(job: &str, number: u64) -> ReportTarget {
    ReportTarget {
        namespace: "ns".into(),
        job: job.into(),
        number,
        build_name: format!("{job}-{number}"),
        trigger: Some("manual".into()),
        git_url: Some("https://github.com/o/r".into()),
        commit: Some("c0ffee".into()),
        pull_request: None,
        url: format!("http://kubeci.test/{job}/{number}"),
        context: None,
        created_at: Some(NOW - 3600),
        workdir: Some(String::new()),
        checkout_dir: None,
    }
}

impl Memory {
    fn did(&self, what: String) -> Result<(), WorkloadError> {
        self.done.lock().unwrap().push(what);
        Ok(())
    }

    fn done(&self) -> Vec<String> {
        self.done.lock().unwrap().clone()
    }

    fn set(&self, job: &str, number: u64, state: BuildState) {
        self.changes.job("ns", job);
        let mut jobs = self.jobs.lock().unwrap();
        let builds = &mut jobs.get_mut(job).expect("a job").builds;
        builds
            .entry(number)
            .or_insert((BuildState::Queued, ReportRecord::default()))
            .0 = state;
    }

    fn state(&self, job: &str, number: u64) -> Option<BuildState> {
        let jobs = self.jobs.lock().unwrap();
        jobs.get(job)?.builds.get(&number).map(|b| b.0.clone())
    }

    /// The states some reporter was sent, as recorded.
    fn reported(&self, job: &str, number: u64) -> Vec<CommitState> {
        self.recorded(job, number).states()
    }

    fn recorded(&self, job: &str, number: u64) -> ReportRecord {
        let jobs = self.jobs.lock().unwrap();
        jobs[job].builds[&number].1.clone()
    }

    fn archived_as(&self, job: &str, number: u64) -> Archived {
        let archived = self.archived.lock().unwrap();
        archived
            .get(&(job.to_owned(), number))
            .copied()
            .unwrap_or_default()
    }

    /// What `reporter` was sent of build `number` of `job`, as recorded.
    fn recorded_for(&self, job: &str, number: u64, reporter: &str) -> Vec<CommitState> {
        self.recorded(job, number).of(reporter).states
    }
}

impl Workload for Memory {
    async fn snapshot(
        &self,
        _now: i64,
        reporting: bool,
        only: Option<&BTreeSet<JobKey>>,
    ) -> Vec<JobBuilds> {
        self.asked.lock().unwrap().push(only.cloned());
        let lagging = self.lagging.load(Ordering::SeqCst);
        let jobs = self.jobs.lock().unwrap();
        jobs.iter()
            .filter(|(name, _)| {
                only.is_none_or(|only| only.contains(&("ns".into(), (*name).clone())))
            })
            .map(|(name, job)| JobBuilds {
                namespace: "ns".into(),
                job: name.clone(),
                loaded: job.loaded.clone(),
                declared: job.declared,
                builds: job
                    .builds
                    .iter()
                    .map(|(number, (state, reported))| ScheduledBuild {
                        summary: BuildSummary {
                            number: *number,
                            state: state.clone(),
                            pull_request: None,
                            branch: None,
                            fully_reported: false,
                            finished_at: state.is_finished().then_some(NOW - 60),
                            settled: true,
                            archived: self.archived_as(name, *number),
                        },
                        reported: if lagging {
                            ReportRecord::default()
                        } else {
                            reported.clone()
                        },
                        target: reporting.then(|| target(name, *number)),
                    })
                    .collect(),
                keep: job.keep.clone(),
            })
            .collect()
    }

    fn take_changes(&self) -> Changes {
        match self.follows.load(Ordering::SeqCst) {
            true => self.changes.take(),
            false => Changes::Everything,
        }
    }

    async fn release_build(&self, build: BuildRef<'_>) -> Result<(), WorkloadError> {
        let BuildRef { job, number, .. } = build;
        self.set(job, number, BuildState::Pending { message: None });
        self.did(format!("release {job} {number}"))
    }

    async fn stop_build(&self, build: BuildRef<'_>, why: Stop) -> Result<(), WorkloadError> {
        let BuildRef { job, number, .. } = build;
        let by = match why {
            Stop::Cancel { by } => by,
            Stop::Fail { reason, .. } => reason,
        };
        self.set(job, number, BuildState::Aborted { by: Some(by) });
        self.did(format!("stop {job} {number}"))
    }

    async fn delete_build(&self, build: BuildRef<'_>) -> Result<(), WorkloadError> {
        let BuildRef { job, number, .. } = build;
        let removed = self
            .jobs
            .lock()
            .unwrap()
            .get_mut(job)
            .and_then(|j| j.builds.remove(&number));
        self.changes.job("ns", job);
        match removed {
            Some(_) => self.did(format!("delete {job} {number}")),
            None => Err(WorkloadError::Gone),
        }
    }

    async fn archive_build(
        &self,
        build: BuildRef<'_>,
        stage: Archived,
    ) -> Result<(), WorkloadError> {
        self.archive_calls.fetch_add(1, Ordering::SeqCst);
        if self.archive_down.load(Ordering::SeqCst) {
            return Err(WorkloadError::Failed("the archive is unreachable".into()));
        }
        let key = (build.job.to_owned(), build.number);
        self.archived.lock().unwrap().insert(key, stage);
        self.changes.job("ns", build.job);
        self.did(format!(
            "archive {} {} {}",
            build.job,
            build.number,
            stage.as_str()
        ))
    }

    async fn record_reported(
        &self,
        target: &ReportTarget,
        record: &ReportRecord,
    ) -> Result<(), WorkloadError> {
        let failing = self
            .record_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(WorkloadError::Failed("the store is away".into()));
        }
        self.changes.job("ns", &target.job);
        let mut jobs = self.jobs.lock().unwrap();
        let Some((_, reported)) = jobs
            .get_mut(&target.job)
            .and_then(|j| j.builds.get_mut(&target.number))
        else {
            return Err(WorkloadError::Gone);
        };
        *reported = reported.union(record);
        Ok(())
    }
}

impl Commands for Memory {
    async fn archive_retention(&self, jobs: Option<Vec<(String, String)>>, _now: i64) {
        let jobs = jobs.map_or("every job".into(), |j| format!("{j:?}"));
        self.did(format!("retention of {jobs}")).ok();
    }

    async fn log_tail(&self, target: &ReportTarget, max_bytes: usize) -> Option<String> {
        let log = format!(
            "{}\nthe end of build {}\n",
            "x".repeat(max_bytes),
            target.number
        );
        Some(log[log.len() - max_bytes..].to_owned())
    }

    /// Every build failed one test, `pkg::flaky`, and passed `number` others.
    async fn test_results(&self, target: &ReportTarget) -> Option<TestResults> {
        let mut results = ResultsBuilder::new();
        let case = |name: &str, outcome| TestCase {
            classname: "pkg".into(),
            name: name.into(),
            outcome,
            ..TestCase::default()
        };
        results.case(case("flaky", Outcome::Failed));
        for n in 0..target.number {
            results.case(case(&format!("t{n}"), Outcome::Passed));
        }
        Some(results.finish())
    }

    async fn known_flaky(&self, _: &ReportTarget, results: &TestResults) -> Vec<String> {
        let failed = results.detailed.iter().filter(|c| c.outcome.is_failure());
        failed.map(TestCase::id).collect()
    }

    fn cron_jobs(&self) -> Vec<CronJob> {
        let jobs = self.jobs.lock().unwrap();
        jobs.iter()
            .filter_map(|(name, job)| {
                let (schedule, last_run) = job.cron.clone()?;
                Some(CronJob {
                    namespace: "ns".into(),
                    job: name.clone(),
                    schedule,
                    last_run,
                })
            })
            .collect()
    }

    async fn start_cron(&self, _: &str, job: &str, due: i64) -> Result<bool, WorkloadError> {
        {
            let mut jobs = self.jobs.lock().unwrap();
            let job = jobs.get_mut(job).expect("a job");
            let next = job.builds.keys().max().map_or(1, |n| n + 1);
            job.builds
                .insert(next, (BuildState::Queued, ReportRecord::default()));
            job.cron.as_mut().expect("a cron job").1 = Some(due);
        }
        self.did(format!("cron {job} {due}")).map(|()| true)
    }
}

/// Job `name` as its ConfigMap declares it, with `extra` lines under `- job:`.
fn declared(name: &str, extra: &str) -> Arc<LoadedJob> {
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: ns\n  labels: {{ci-job-spec: \"true\"}}\ndata:\n  job.yaml: |\n    - job:\n        name: {name}\n        git: {{url: 'https://github.com/o/r'}}\n{extra}"
    );
    let mut report = kubeci_spec::load("job.yaml", yaml.as_bytes(), &LoadOptions::default());
    Arc::new(report.jobs.remove(0))
}

fn memory(jobs: Vec<(&str, MemoryJob)>) -> Arc<Memory> {
    let memory = Memory::default();
    *memory.jobs.lock().unwrap() = jobs.into_iter().map(|(n, j)| (n.to_owned(), j)).collect();
    Arc::new(memory)
}

fn with_builds(loaded: Option<Arc<LoadedJob>>, declared: bool, states: &[BuildState]) -> MemoryJob {
    MemoryJob {
        loaded,
        declared,
        builds: states
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, (s.clone(), ReportRecord::default())))
            .collect(),
        cron: None,
        keep: BTreeSet::new(),
    }
}

fn scheduler(memory: &Arc<Memory>, reporter: Option<Arc<dyn Reporter>>) -> Scheduler<Memory> {
    Scheduler::new(
        memory.clone(),
        reporter,
        SchedulerSettings::default(),
        Arc::default(),
        Arc::new(Notify::new()),
    )
}

#[tokio::test]
async fn a_valid_job_releases_up_to_its_limit_an_invalid_or_deleted_one_drains_one_at_a_time() {
    use BuildState::{Queued, Running, Succeeded};
    let valid = declared(
        "valid",
        "        run_command: make\n        max_concurrency: 3\n",
    );
    let invalid = declared(
        "invalid",
        "        run_command: make\n        max_concurrency: many\n",
    );
    assert!(invalid.job.is_none(), "the declaration is invalid");
    let queue = [Running, Queued, Queued, Queued];
    let memory = memory(vec![
        ("valid", with_builds(Some(valid), true, &queue)),
        ("invalid", with_builds(Some(invalid), true, &queue)),
        ("deleted", with_builds(None, false, &queue)),
    ]);
    let scheduler = scheduler(&memory, None);
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done(),
        ["release valid 2", "release valid 3"],
        "the valid job fills its 3 slots; the others wait for their running build"
    );
    memory.set("invalid", 1, Succeeded);
    memory.set("deleted", 1, Succeeded);
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done()[2..],
        ["release deleted 2", "release invalid 2"],
        "one build each, not the whole queue"
    );
    scheduler.pass(NOW).await;
    assert_eq!(memory.done().len(), 4, "nothing more while those run");
}

#[tokio::test]
async fn retention_deletes_the_oldest_finished_builds_except_those_it_must_keep() {
    use BuildState::Succeeded;
    let job = declared(
        "demo",
        "        run_command: make\n        retention: {keep: 1}\n",
    );
    let mut demo = with_builds(
        Some(job),
        true,
        &[Succeeded, Succeeded, Succeeded, Succeeded],
    );
    demo.keep.insert(2);
    let memory = memory(vec![("demo", demo)]);
    scheduler(&memory, None).pass(NOW).await;
    assert_eq!(
        memory.done(),
        ["delete demo 1", "delete demo 3"],
        "build 2's request is still settling"
    );
}

#[tokio::test]
async fn a_deleted_job_keeps_its_builds_unless_told_to_cancel_them() {
    use BuildState::Running;
    let memory = memory(vec![("gone", with_builds(None, false, &[Running]))]);
    scheduler(&memory, None).pass(NOW).await;
    assert!(memory.done().is_empty(), "it finishes");
    let cancelling = Scheduler::new(
        memory.clone(),
        None,
        SchedulerSettings {
            cancel_when_deleted: true,
            ..SchedulerSettings::default()
        },
        Arc::default(),
        Arc::new(Notify::new()),
    );
    cancelling.pass(NOW).await;
    assert_eq!(memory.done(), ["stop gone 1"]);
    assert_eq!(
        memory.state("gone", 1),
        Some(BuildState::Aborted {
            by: Some(crate::plan::JOB_DELETED.into())
        })
    );
}

#[tokio::test]
async fn cron_starts_one_build_per_due_time() {
    let job = declared("nightly", "        run_command: make\n");
    let mut nightly = with_builds(Some(job), true, &[]);
    // Every minute; the last run two minutes ago.
    let minute = NOW - NOW.rem_euclid(60);
    nightly.cron = Some(("* * * * *".into(), Some(minute - 120)));
    let memory = memory(vec![("nightly", nightly)]);
    let scheduler = scheduler(&memory, None);
    scheduler.pass(NOW).await;
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done(),
        [format!("cron nightly {minute}"), "release nightly 1".into()],
        "the missed runs collapse into one; the second pass finds it done"
    );
    scheduler.pass(NOW + 60).await;
    assert_eq!(memory.done()[2], format!("cron nightly {}", minute + 60));
}

/// Passes until `done` holds (at most 10 s): report tasks run on their own.
async fn pass_until(scheduler: &Scheduler<Memory>, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        scheduler.pass(NOW).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_state_is_reported_once_then_recorded_even_while_the_view_lags() {
    use CommitState::{Pending, Success};
    let job = declared(
        "demo",
        "        run_command: make\n        retention: {ttl: 30s}\n",
    );
    let memory = memory(vec![(
        "demo",
        with_builds(Some(job), true, &[BuildState::Running]),
    )]);
    let receiver = Arc::new(Receiver::default());
    let scheduler = scheduler(&memory, Some(receiver.clone()));
    memory.lagging.store(true, Ordering::SeqCst);
    pass_until(&scheduler, "pending recorded", || {
        memory.reported("demo", 1) == [Pending]
    })
    .await;
    for _ in 0..5 {
        scheduler.pass(NOW).await;
    }
    assert_eq!(
        receiver.states(),
        [(1, Pending)],
        "sent once, though the view does not show it recorded (a receiver without \
         `running` is told `pending` of a running build)"
    );
    memory.lagging.store(false, Ordering::SeqCst);
    memory.set("demo", 1, BuildState::Succeeded);
    pass_until(&scheduler, "the build deleted", || {
        memory.state("demo", 1).is_none()
    })
    .await;
    assert_eq!(
        receiver.states(),
        [(1, Pending), (1, Success)],
        "the final state reported once, and only then retention deleted the build"
    );
}

#[tokio::test]
async fn a_failed_report_is_sent_again_a_failed_record_is_only_recorded_again() {
    let job = declared("demo", "        run_command: make\n");
    let memory = memory(vec![(
        "demo",
        with_builds(Some(job), true, &[BuildState::Succeeded]),
    )]);
    let receiver = Arc::new(Receiver::default());
    receiver.failures.store(1, Ordering::SeqCst);
    memory.record_failures.store(2, Ordering::SeqCst);
    let counters = Arc::new(Counters::default());
    let scheduler = Scheduler::new(
        memory.clone(),
        Some(receiver.clone() as Arc<dyn Reporter>),
        SchedulerSettings::default(),
        counters,
        Arc::new(Notify::new()),
    );
    pass_until(&scheduler, "success recorded", || {
        memory.reported("demo", 1) == [CommitState::Success]
    })
    .await;
    assert_eq!(
        receiver.states(),
        [(1, CommitState::Success)],
        "delivered once: after its failure, not again for the failed records"
    );
    assert_eq!(memory.record_failures.load(Ordering::SeqCst), 0);
}

mod archiving;
mod check_runs;
mod focus;
mod receiver;
mod reporters;
mod superseding;

use receiver::{Receiver, RECEIVER};
