//! With an archive, the pass archives each build as it starts and as it ends, through the
//! workload, retention deletes only what is archived whole, and a store that is down
//! leaves the builds counted as pending until it is back.

use super::*;

fn archiving(memory: &Arc<Memory>, status: &Arc<ArchiveStatus>) -> Scheduler<Memory> {
    Scheduler::new(
        memory.clone(),
        None,
        SchedulerSettings {
            archiving: Some(status.clone()),
            ..SchedulerSettings::default()
        },
        Arc::default(),
        Arc::new(Notify::new()),
    )
}

#[tokio::test]
async fn builds_are_archived_as_they_start_and_end_and_retention_waits_for_the_archive() {
    use BuildState::{Running, Succeeded};
    let job = declared(
        "demo",
        "        run_command: make\n        retention: {keep: 1}\n",
    );
    let memory = memory(vec![(
        "demo",
        with_builds(Some(job), true, &[Succeeded, Succeeded, Running]),
    )]);
    let status = Arc::new(ArchiveStatus::default());
    let scheduler = archiving(&memory, &status);

    memory.archive_down.store(true, Ordering::SeqCst);
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done(),
        ["retention of every job"],
        "nothing archived, nothing deleted; the first pass sweeps the archive's retention"
    );
    assert_eq!(
        status.pending(),
        3,
        "builds 1, 2 and 3 are still to archive"
    );
    assert_eq!(
        status.behind().as_deref(),
        Some("the archive is unreachable")
    );

    memory.archive_down.store(false, Ordering::SeqCst);
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done()[1..],
        [
            "archive demo 1 complete",
            "archive demo 2 complete",
            "archive demo 3 first",
            "retention of [(\"ns\", \"demo\")]",
        ],
        "the archive's retention for the job a build of which was archived whole"
    );
    assert_eq!((status.pending(), status.behind()), (0, None));
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done()[5..],
        ["delete demo 1"],
        "once archived whole, retention deletes the build beyond the newest one"
    );
    memory.set("demo", 3, Succeeded);
    scheduler.pass(NOW).await;
    assert_eq!(
        memory.done()[6..],
        [
            "archive demo 3 complete",
            "delete demo 2",
            "retention of [(\"ns\", \"demo\")]"
        ]
    );
}

#[tokio::test]
async fn a_store_that_is_away_costs_a_pass_a_few_calls_not_one_per_build() {
    let job = declared("demo", "        run_command: make\n");
    let ended = vec![BuildState::Succeeded; 10];
    let memory = memory(vec![("demo", with_builds(Some(job), true, &ended))]);
    let status = Arc::new(ArchiveStatus::default());
    let scheduler = archiving(&memory, &status);
    memory.archive_down.store(true, Ordering::SeqCst);
    scheduler.pass(NOW).await;
    assert_eq!(memory.archive_calls.load(Ordering::SeqCst), 3);
    assert_eq!(status.pending(), 10, "every build is still to archive");
    memory.archive_down.store(false, Ordering::SeqCst);
    scheduler.pass(NOW).await;
    assert_eq!(status.pending(), 0);
    let archived = memory
        .done()
        .into_iter()
        .filter(|d| d.starts_with("archive demo"));
    assert_eq!(archived.count(), 10, "all archived once the store is back");
}

#[tokio::test]
async fn without_an_archive_nothing_is_archived() {
    let job = declared("demo", "        run_command: make\n");
    let memory = memory(vec![(
        "demo",
        with_builds(Some(job), true, &[BuildState::Succeeded]),
    )]);
    scheduler(&memory, None).pass(NOW).await;
    assert_eq!(memory.done(), [] as [&str; 0]);
}
