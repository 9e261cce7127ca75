//! Approvals belong to one job and one head: the review's attacks of one team's admin on
//! another team's job, decided over data. Jobs `team-a/evil` (admin mallory) and
//! `team-b/deploy` (admin boss) both build the same repository; a stranger opens a pull
//! request.

use kubeci_github::checks::{self, APPROVE};
use kubeci_github::decide::{self, Action, Approved, Facts, JobRef};
use kubeci_github::event::PullRequestInfo;
use kubeci_spec::{Job, LoadOptions};

fn job(name: &str, admin: &str) -> Job {
    let yaml = format!(
        "- job:\n    name: {name}\n    git:\n      url: https://github.com/victim/repo.git\n    run_command: make\n    ghprb:\n      enabled: true\n      admin_users: [{admin}]\n"
    );
    let report = kubeci_spec::load("job.yaml", yaml.as_bytes(), &LoadOptions::default());
    Job::clone(report.jobs[0].job.as_deref().expect("a valid job"))
}

const HEAD: &str = "1111111111111111111111111111111111111111";
const PUSHED: &str = "2222222222222222222222222222222222222222";

fn pr(head: &str, labels: &[&str]) -> PullRequestInfo {
    PullRequestInfo {
        number: 7,
        author: "stranger".into(),
        title: "a change".into(),
        body: String::new(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        draft: false,
        head_sha: head.into(),
        head_ref: "topic".into(),
        base_ref: "main".into(),
        html_url: String::new(),
        open: true,
    }
}

/// Approvals recorded: (namespace, job, head, by), all of pull request 7.
#[derive(Default)]
struct Recorded(Vec<(&'static str, &'static str, &'static str, &'static str)>);

impl Facts for Recorded {
    fn is_member(&self, _: &str, _: &str) -> bool {
        false
    }

    fn approver(&self, namespace: &str, job: &str, number: u64, head: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, j, h, _)| number == 7 && *n == namespace && *j == job && *h == head)
            .map(|(_, _, _, by)| *by)
    }
}

fn built(decision: &decide::Decision) -> Vec<String> {
    decision
        .builds()
        .map(|a| match a {
            Action::Build { namespace, job, .. } => format!("{namespace}/{job}"),
            _ => unreachable!(),
        })
        .collect()
}

fn approved(decision: &decide::Decision) -> Vec<String> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Approve(Approved {
                namespace,
                job,
                head,
                by,
                ..
            }) => Some(format!("{namespace}/{job}@{head} by {by}")),
            _ => None,
        })
        .collect()
}

fn with_jobs(test: impl FnOnce(&[JobRef])) {
    let (evil, deploy) = (job("evil", "mallory"), job("deploy", "boss"));
    let jobs = [
        JobRef {
            namespace: "team-a",
            job: &evil,
        },
        JobRef {
            namespace: "team-b",
            job: &deploy,
        },
    ];
    test(&jobs);
}

#[test]
fn an_admins_comment_approves_their_own_jobs_head_and_no_other_job() {
    with_jobs(|jobs| {
        let decision = decide::on_comment(
            "created",
            &pr(HEAD, &[]),
            1,
            "mallory",
            "ok to test",
            Some("kubeci-bot"),
            jobs,
            &Recorded::default(),
        );
        assert_eq!(built(&decision), ["team-a/evil"]);
        assert_eq!(
            approved(&decision),
            [format!("team-a/evil@{HEAD} by mallory")]
        );
        assert!(
            decision.reasons.iter().any(
                |r| r == "team-b/deploy: mallory is not an admin of this job: approval ignored"
            ),
            "{:?}",
            decision.reasons
        );
    });
}

#[test]
fn the_ok_to_test_label_approves_only_the_jobs_whose_admin_added_it() {
    with_jobs(|jobs| {
        // kubeci's own label, added for team-a's admin, and a label added by someone on no
        // list at all: nothing is approved or built.
        for sender in ["kubeci-bot", "nobody", "stranger"] {
            let decision = decide::on_labeled(Some("ok-to-test"), &pr(HEAD, &[]), sender, jobs);
            assert!(decision.actions.is_empty(), "{sender}: {decision:?}");
        }
        let by_mallory = decide::on_labeled(Some("ok-to-test"), &pr(HEAD, &[]), "mallory", jobs);
        assert_eq!(built(&by_mallory), ["team-a/evil"]);
        let by_boss = decide::on_labeled(Some("ok-to-test"), &pr(HEAD, &[]), "boss", jobs);
        assert_eq!(built(&by_boss), ["team-b/deploy"]);
        assert_eq!(
            approved(&by_boss),
            [format!("team-b/deploy@{HEAD} by boss")]
        );
        let other = decide::on_labeled(Some("lgtm"), &pr(HEAD, &[]), "boss", jobs);
        assert!(other.actions.is_empty());
    });
}

#[test]
fn a_label_on_the_pull_request_trusts_no_job_and_an_approval_trusts_its_job_and_head_only() {
    with_jobs(|jobs| {
        let labelled = decide::on_pull_request(
            "synchronize",
            &pr(HEAD, &["ok-to-test"]),
            "stranger",
            jobs,
            &Recorded::default(),
        );
        assert!(built(&labelled).is_empty(), "{:?}", labelled.reasons);
        let mallory_approved = Recorded(vec![("team-a", "evil", HEAD, "mallory")]);
        let redelivered = decide::on_pull_request(
            "opened",
            &pr(HEAD, &[]),
            "stranger",
            jobs,
            &mallory_approved,
        );
        assert_eq!(built(&redelivered), ["team-a/evil"]);
        let Some(Action::AskForApproval { waiting, .. }) = redelivered
            .actions
            .iter()
            .find(|a| matches!(a, Action::AskForApproval { .. }))
        else {
            panic!("team-b still waits: {redelivered:?}");
        };
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].job, "deploy");
        // A later push waits again, for every job.
        let pushed = decide::on_pull_request(
            "synchronize",
            &pr(PUSHED, &["ok-to-test"]),
            "stranger",
            jobs,
            &Recorded(vec![
                ("team-a", "evil", HEAD, "mallory"),
                ("team-b", "deploy", HEAD, "boss"),
            ]),
        );
        assert!(built(&pushed).is_empty(), "{:?}", pushed.reasons);
        // An approval given by someone who is not (or no longer) the job's admin counts
        // for nothing.
        let forged = Recorded(vec![("team-b", "deploy", HEAD, "mallory")]);
        let decision = decide::on_pull_request("opened", &pr(HEAD, &[]), "stranger", jobs, &forged);
        assert!(built(&decision).is_empty());
    });
}

#[test]
fn the_author_may_retest_the_jobs_whose_admin_approved_the_head_only() {
    with_jobs(|jobs| {
        let decision = decide::on_comment(
            "created",
            &pr(HEAD, &["ok-to-test"]),
            2,
            "stranger",
            "/retest",
            None,
            jobs,
            &Recorded(vec![("team-a", "evil", HEAD, "mallory")]),
        );
        assert_eq!(built(&decision), ["team-a/evil"]);
    });
}

#[test]
fn approve_and_build_on_another_teams_check_run_changes_nothing() {
    with_jobs(|jobs| {
        let team_b_run = checks::approval_external_id("team-b", "deploy", 7);
        let decision = checks::on_requested_action(
            APPROVE,
            &team_b_run,
            &pr(HEAD, &[]),
            HEAD,
            "mallory",
            jobs,
        );
        assert!(decision.actions.is_empty(), "{decision:?}");
        assert_eq!(
            decision.reasons,
            ["team-b/deploy: mallory is not an admin of this job: nothing changed"]
        );
        let rerun = checks::Rerun {
            head: HEAD,
            name: Some("kubeci/deploy"),
            sender: "mallory",
            delivery: "d-1",
            past: &[],
        };
        let decision = checks::on_rerun(&pr(HEAD, &[]), rerun, jobs, &Recorded::default());
        assert!(built(&decision).is_empty(), "a re-run is no approval");
    });
}
