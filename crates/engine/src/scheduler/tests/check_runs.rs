//! The scheduler with a receiver that creates an object with a build's first report (a
//! GitHub check run): its id recorded and named in later reports, the grace after taking
//! the lead, and first reports that may have arrived.

use super::*;

/// A job with one build in `state`, and a receiver that creates an object (a check run)
/// with a build's first report.
fn one_build_for_a_creating_receiver(state: BuildState) -> (Arc<Memory>, Arc<Receiver>) {
    let job = declared("demo", "        run_command: make\n");
    let memory = memory(vec![("demo", with_builds(Some(job), true, &[state]))]);
    let receiver = Arc::new(Receiver {
        creates: true,
        ..Receiver::default()
    });
    (memory, receiver)
}

/// A receiver that creates an object with a build's first report (a check run) gets its
/// id back on every later report — also while the view lags behind the record — and the
/// end of the log with the final one.
#[tokio::test]
async fn a_created_check_run_is_recorded_and_named_in_every_later_report() {
    use CommitState::{Pending, Running, Success};
    let (memory, receiver) = one_build_for_a_creating_receiver(BuildState::Queued);
    let scheduler = scheduler(&memory, Some(receiver.clone()));
    pass_until(&scheduler, "pending recorded", || {
        memory.reported("demo", 1) == [Pending]
    })
    .await;
    assert_eq!(memory.recorded("demo", 1).of(RECEIVER).check_run, Some(101));
    memory.lagging.store(true, Ordering::SeqCst);
    memory.set("demo", 1, BuildState::Running);
    pass_until(&scheduler, "running sent", || receiver.states().len() == 2).await;
    memory.lagging.store(false, Ordering::SeqCst);
    memory.set("demo", 1, BuildState::Succeeded);
    pass_until(&scheduler, "success recorded", || {
        memory.reported("demo", 1) == [Pending, Running, Success]
    })
    .await;
    let got = receiver.got.lock().unwrap().clone();
    let seen: Vec<_> = got.iter().map(|g| (g.state, g.check_run)).collect();
    assert_eq!(
        seen,
        [(Pending, None), (Running, Some(101)), (Success, Some(101))],
        "created once, then named"
    );
    assert!(got.iter().all(|g| !g.may_have_been_sent));
    assert_eq!(got[0].log_tail, None);
    let tail = got[2].log_tail.as_deref().expect("the final report's log");
    assert!(tail.ends_with("the end of build 1\n"), "{tail}");
    assert_eq!(tail.len(), LOG_TAIL_BYTES);
}

/// A reporter that asks for the test results gets them (and the tests known flaky) with
/// the build's final report alone; one that does not ask gets none, and none are read.
#[tokio::test]
async fn a_final_report_carries_the_test_results_to_a_reporter_that_wants_them() {
    use CommitState::{Failure, Pending};
    let failed = BuildState::Failed {
        reason: "Error".into(),
        message: "exit code 1".into(),
    };
    let (memory, receiver) = one_build_for_a_creating_receiver(BuildState::Queued);
    let reporting = scheduler(&memory, Some(receiver.clone()));
    pass_until(&reporting, "pending recorded", || {
        memory.reported("demo", 1) == [Pending]
    })
    .await;
    memory.set("demo", 1, failed.clone());
    pass_until(&reporting, "failure recorded", || {
        memory.reported("demo", 1) == [Pending, Failure]
    })
    .await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got[0].tests, None, "not with a state before the end");
    let (counts, known_flaky) = got[1].tests.clone().expect("the final report's tests");
    assert_eq!((counts.passed, counts.failed), (1, 1));
    assert_eq!(known_flaky, ["pkg::flaky"]);

    let (memory, _) = one_build_for_a_creating_receiver(failed);
    let plain = Arc::new(Receiver::default());
    let plain_scheduler = scheduler(&memory, Some(plain.clone()));
    pass_until(&plain_scheduler, "failure recorded", || {
        memory.reported("demo", 1) == [Failure]
    })
    .await;
    let got = plain.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tests, None, "it did not ask for them");
}

/// A scheduler that took the lead, with a 60 s takeover grace, over one running build from
/// before its lead; `predecessor_may_be_reporting` as the election found it.
fn leading_after(
    predecessor_may_be_reporting: bool,
) -> (Arc<Receiver>, tokio::task::JoinHandle<()>) {
    let (memory, receiver) = one_build_for_a_creating_receiver(BuildState::Running);
    let settings = SchedulerSettings {
        takeover_grace: Duration::from_secs(60),
        ..SchedulerSettings::default()
    };
    let scheduler = Scheduler::new(
        memory.clone(),
        Some(receiver.clone() as Arc<dyn Reporter>),
        settings,
        Arc::default(),
        Arc::new(Notify::new()),
    );
    let turn = move || Turn::Lead {
        predecessor_may_be_reporting,
    };
    (
        receiver,
        tokio::spawn(scheduler.run(Duration::from_secs(1), turn)),
    )
}

/// After taking the lead from a leader that may still be reporting (its Lease expired),
/// a build from before waits out the grace (the old leader may still be creating its
/// check run), then its report says it may have been sent, so the receiver looks before
/// it creates.
#[tokio::test(start_paused = true)]
async fn after_taking_the_lead_builds_from_before_wait_then_may_have_been_reported() {
    let (receiver, leading) = leading_after(true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(receiver.states().is_empty(), "nothing within the grace");
    tokio::time::sleep(Duration::from_secs(40)).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].may_have_been_sent, "{got:?}");
    leading.abort();
}

/// Taking a Lease no one held, or one given back (a stopping leader gives it back once
/// its reports ended): builds from before are reported at once — still as possibly sent
/// (the leader before may have sent without recording).
#[tokio::test(start_paused = true)]
async fn after_a_lease_given_back_builds_from_before_are_reported_at_once() {
    let (receiver, leading) = leading_after(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "well within the grace: {got:?}");
    assert!(got[0].may_have_been_sent, "{got:?}");
    leading.abort();
}

/// A failed send may have arrived: the next attempt says so.
#[tokio::test]
async fn a_send_that_failed_is_retried_as_one_that_may_have_arrived() {
    let (memory, receiver) = one_build_for_a_creating_receiver(BuildState::Running);
    receiver.failures.store(1, Ordering::SeqCst);
    let scheduler = scheduler(&memory, Some(receiver.clone()));
    pass_until(&scheduler, "running recorded", || {
        memory.reported("demo", 1) == [CommitState::Running]
    })
    .await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].may_have_been_sent, "{got:?}");
}
