//! Two reporters: each is sent each state once and recorded under its own name, a failing
//! one is retried alone, and retention waits for both; a record of a kubeci from before
//! counts for every reporter.

use super::*;
use crate::report::Reporters;
use CommitState::{Pending, Success};

/// `github` and `webhook` as one reporter, as `kubeci serve` hands them over.
fn both(github: &Arc<Receiver>, webhook: &Arc<Receiver>) -> Option<Arc<dyn Reporter>> {
    let reporters: Vec<Arc<dyn Reporter>> = vec![github.clone(), webhook.clone()];
    Some(Arc::new(Reporters::new(reporters).expect("two names")))
}

fn one_queued_build_kept_a_minute() -> Arc<Memory> {
    let job = declared(
        "demo",
        "        run_command: make\n        retention: {ttl: 30s}\n",
    );
    memory(vec![(
        "demo",
        with_builds(Some(job), true, &[BuildState::Queued]),
    )])
}

#[tokio::test]
async fn a_failing_reporter_is_retried_alone_and_the_other_is_sent_each_state_once() {
    let memory = one_queued_build_kept_a_minute();
    let github = Arc::new(Receiver::named("github"));
    let webhook = Arc::new(Receiver::named("webhook"));
    webhook.refusing.store(true, Ordering::SeqCst);
    let scheduler = scheduler(&memory, both(&github, &webhook));
    pass_until(
        &scheduler,
        "github's pending recorded, the webhook refusing",
        || {
            memory.recorded_for("demo", 1, "github") == [Pending]
                && webhook.refused.load(Ordering::SeqCst) >= 1
        },
    )
    .await;
    webhook.refusing.store(false, Ordering::SeqCst);
    pass_until(&scheduler, "the webhook's pending recorded", || {
        memory.recorded_for("demo", 1, "webhook") == [Pending]
    })
    .await;

    webhook.refusing.store(true, Ordering::SeqCst);
    memory.set("demo", 1, BuildState::Succeeded);
    pass_until(
        &scheduler,
        "github's success recorded, the webhook refusing",
        || {
            memory.recorded_for("demo", 1, "github") == [Pending, Success]
                && webhook.refused.load(Ordering::SeqCst) >= 2
        },
    )
    .await;
    for _ in 0..5 {
        scheduler.pass(NOW).await;
    }
    assert!(
        memory.state("demo", 1).is_some(),
        "retention waits for the webhook's final state too"
    );
    assert_eq!(
        memory.recorded("demo", 1).format(),
        "github:pending,success;webhook:pending"
    );

    webhook.refusing.store(false, Ordering::SeqCst);
    pass_until(&scheduler, "the build deleted", || {
        memory.state("demo", 1).is_none()
    })
    .await;
    assert_eq!(
        github.states(),
        [(1, Pending), (1, Success)],
        "each state once, whatever the webhook did"
    );
    assert_eq!(
        webhook.states(),
        [(1, Pending), (1, Success)],
        "each state once it recovered"
    );
}

#[tokio::test]
async fn a_record_from_before_counts_for_every_reporter() {
    let memory = one_queued_build_kept_a_minute();
    memory
        .jobs
        .lock()
        .unwrap()
        .get_mut("demo")
        .unwrap()
        .builds
        .insert(
            1,
            (
                BuildState::Succeeded,
                ReportRecord::parse(Some("pending,success")),
            ),
        );
    let github = Arc::new(Receiver::named("github"));
    let webhook = Arc::new(Receiver::named("webhook"));
    let scheduler = scheduler(&memory, both(&github, &webhook));
    pass_until(&scheduler, "the build deleted", || {
        memory.state("demo", 1).is_none()
    })
    .await;
    assert_eq!(github.states(), [], "nothing sent again");
    assert_eq!(webhook.states(), []);
}

#[test]
fn reporters_need_names_of_their_own() {
    let named = |name| Arc::new(Receiver::named(name)) as Arc<dyn Reporter>;
    assert!(Reporters::new(vec![named("github"), named("webhook")]).is_ok());
    assert_eq!(
        Reporters::new(vec![named("webhook"), named("webhook")]).err(),
        Some(crate::report::ReportersError::SameName("webhook".into()))
    );
    assert!(Reporters::new(vec![named("web:hook")]).is_err());
}
