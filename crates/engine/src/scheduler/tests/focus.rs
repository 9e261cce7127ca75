//! A workload that follows its changes is asked, after a first whole pass, only for the
//! jobs that changed or still have something to do: a job whose builds all ended and were
//! reported is left alone until it changes.

use super::*;

fn jobs(names: &[&str]) -> Option<BTreeSet<JobKey>> {
    Some(
        names
            .iter()
            .map(|n| ("ns".to_owned(), (*n).to_owned()))
            .collect(),
    )
}

#[tokio::test]
async fn passes_leave_a_job_at_rest_alone_until_it_changes() {
    use BuildState::{Running, Succeeded};
    let job = |name| declared(name, "        run_command: make\n");
    let memory = memory(vec![
        ("idle", with_builds(Some(job("idle")), true, &[Succeeded])),
        ("busy", with_builds(Some(job("busy")), true, &[Running])),
    ]);
    memory.follows.store(true, Ordering::SeqCst);
    let scheduler = scheduler(&memory, None);

    scheduler.pass(NOW).await;
    scheduler.pass(NOW + 1).await;
    memory.set("idle", 2, BuildState::Queued);
    scheduler.pass(NOW + 2).await;
    scheduler.pass(NOW + 3).await;
    memory.set("busy", 1, Succeeded);
    scheduler.pass(NOW + 4).await;
    scheduler.pass(NOW + 5).await;

    let asked = memory.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![
            None,
            jobs(&["busy"]),
            jobs(&["busy", "idle"]),
            // Its new build was released: it changed again, and runs.
            jobs(&["busy", "idle"]),
            jobs(&["busy", "idle"]),
            jobs(&["idle"]),
        ]
    );
    assert_eq!(memory.done(), vec!["release idle 2"]);
}
