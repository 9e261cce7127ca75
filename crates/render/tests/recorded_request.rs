//! A build's request can be read back from its Job: what a rebuild repeats.

use kubeci_build::{recorded_request, BuildRequest, PullRequest, Trigger};
use kubeci_render::{render, JobOrigin, RenderConfig};
use kubeci_spec::Job;

#[test]
fn a_rendered_jobs_annotations_give_back_its_request() {
    let job: Job = serde_json::from_value(serde_json::json!({
        "name": "api",
        "git": {"url": "git@github.com:org/api.git", "branch": "main"},
        "run_command": "make test",
    }))
    .unwrap();
    let origin = JobOrigin {
        namespace: "team".into(),
        spec_hash: "h".into(),
        chart_version: Some("1.2.0".into()),
    };
    let requests = [
        BuildRequest {
            number: 9,
            trigger: Trigger::PullRequest,
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            git_ref: Some("refs/pull/7/head".into()),
            branch: Some("main".into()),
            pull_request: Some(PullRequest {
                number: 7,
                author: Some("alice".into()),
                ..PullRequest::default()
            }),
            requested_by: None,
        },
        BuildRequest {
            trigger: Trigger::Push,
            branch: Some("release-1".into()),
            commit: Some("fedcba9876543210fedcba9876543210fedcba98".into()),
            ..BuildRequest::manual(10)
        },
        BuildRequest {
            requested_by: Some("bob".into()),
            // A manual build without a branch builds the job's: recorded as such.
            branch: Some("main".into()),
            ..BuildRequest::manual(11)
        },
    ];
    for request in requests {
        let rendered = render(&job, &origin, &request, &RenderConfig::default()).unwrap();
        let annotations = rendered.metadata.annotations.unwrap();
        assert_eq!(
            recorded_request(request.number, &annotations),
            request,
            "{annotations:?}"
        );
    }
}

#[test]
fn unknown_or_missing_annotations_read_as_a_manual_build_of_the_jobs_branch() {
    let annotations = [("kubeci.io/trigger".to_owned(), "telepathy".to_owned())]
        .into_iter()
        .collect();
    assert_eq!(recorded_request(4, &annotations), BuildRequest::manual(4));
}
