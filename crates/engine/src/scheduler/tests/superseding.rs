//! Superseded builds are cancelled through the workload.

use super::*;

#[tokio::test]
async fn superseded_builds_are_cancelled_through_the_workload() {
    use kubeci_build::{BuildRequest, PullRequest, Trigger};
    let job = declared("demo", "        run_command: make\n");
    let memory = memory(vec![(
        "demo",
        with_builds(Some(job.clone()), true, &[BuildState::Running]),
    )]);
    let summary = |number, pull_request| BuildSummary {
        number,
        state: BuildState::Running,
        pull_request,
        branch: None,
        fully_reported: true,
        finished_at: None,
        settled: true,
        archived: Default::default(),
    };
    let request = BuildRequest {
        trigger: Trigger::PullRequest,
        pull_request: Some(PullRequest {
            number: 7,
            author: None,
            source_branch: None,
            target_branch: None,
        }),
        ..BuildRequest::manual(3)
    };
    cancel_superseded(&*memory, &job, &request, || {
        vec![
            summary(1, Some(7)),
            summary(2, Some(8)),
            summary(3, Some(7)),
        ]
    })
    .await;
    assert_eq!(
        memory.done(),
        ["stop demo 1"],
        "the older build of PR 7 only"
    );
}
