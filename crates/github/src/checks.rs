//! What a request from GitHub's checks UI asks of kubeci, decided over data: a re-run of
//! one check run or of a whole suite, and the "Approve and build" button of a check run
//! waiting for approval. Each returns its actions with its reasons, as the other
//! decisions do.

use kubeci_render::Trigger;

use crate::decide::{
    check_name, head_key, policy, pr_build, short, trust, Action, Decision, JobRef, Membership,
};
use crate::event::PullRequestInfo;

/// The identifier of the "Approve and build" button.
pub const APPROVE: &str = "approve";

/// The `external_id` of the check run of `job` waiting for approval.
pub fn approval_external_id(namespace: &str, job: &str) -> String {
    format!("approval:{namespace}/{job}")
}

/// Whether `sender` is trusted by `job`: an admin, a whitelisted user, or a member of a
/// whitelisted organisation.
fn trusts(job: &JobRef, sender: &str, members: &dyn Membership) -> bool {
    policy(job.job)
        .pull_request(sender, &[], |org| members.is_member(org, sender))
        .is_trusted()
}

/// A re-run, asked by `sender` (delivery `delivery`), of the check run named `name` (or of
/// every check of the suite, `None`) on `head`, the head of `pr`. Each job asked for
/// builds the head again — if it is still the pull request's current head, and the pull
/// request is trusted or `sender` is trusted by the job (only they may re-run an
/// untrusted pull request). The delivery's id keys the builds: its redelivery is the same.
pub fn on_rerun(
    pr: &PullRequestInfo,
    head: &str,
    name: Option<&str>,
    sender: &str,
    delivery: &str,
    jobs: &[JobRef],
    members: &dyn Membership,
) -> Decision {
    let mut decision = Decision::default();
    if !pr.open || pr.head_sha != head {
        decision.reasons.push(format!(
            "{} is not the current head of open pull request #{}: nothing to re-run",
            short(head),
            pr.number
        ));
        return decision;
    }
    let asked = jobs
        .iter()
        .filter(|j| j.job.pull_requests_enabled())
        .filter(|j| name.is_none_or(|n| check_name(j.job) == n));
    for job in asked {
        let pr_trusted = trust(job.job, pr, members).is_trusted();
        if pr_trusted || trusts(job, sender, members) {
            let key = format!("rerun:{delivery}");
            decision
                .actions
                .push(pr_build(job, pr, Trigger::Comment, key, sender));
            decision.note(job, format!("re-run by {sender}"));
        } else {
            decision.note(
                job,
                format!(
                    "{sender} may not re-run an untrusted pull request: an admin approves it first"
                ),
            );
        }
    }
    if decision.reasons.is_empty() {
        decision
            .reasons
            .push("no job of this repository reports that check".into());
    }
    decision
}

/// The button `identifier` of a check run waiting for approval, clicked by `sender` on
/// `head` of `pr`: "Approve and build" by an admin of a job approves the pull request
/// (the `ok-to-test` label, as the comment does) and builds its head; by anyone else it
/// changes nothing, and says why.
pub fn on_requested_action(
    identifier: &str,
    pr: &PullRequestInfo,
    head: &str,
    sender: &str,
    jobs: &[JobRef],
) -> Decision {
    let mut decision = Decision::default();
    if identifier != APPROVE {
        decision
            .reasons
            .push(format!("the button `{identifier}` is not kubeci's"));
        return decision;
    }
    if !pr.open || pr.head_sha != head {
        decision.reasons.push(format!(
            "{} is no longer the head of open pull request #{}: nothing approved",
            short(head),
            pr.number
        ));
        return decision;
    }
    for job in jobs.iter().filter(|j| j.job.pull_requests_enabled()) {
        if policy(job.job).is_admin(sender) {
            if !decision.actions.contains(&Action::Approve) {
                decision.actions.push(Action::Approve);
            }
            decision
                .actions
                .push(pr_build(job, pr, Trigger::Comment, head_key(pr), sender));
            decision.note(job, format!("approved by admin {sender}"));
        } else {
            decision.note(job, format!("{sender} is not an admin: nothing changed"));
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeci_spec::{LoadOptions, LoadedJob};

    fn job(extra: &str) -> LoadedJob {
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: ns\n  labels: {{ci-job-spec: \"true\"}}\ndata:\n  job.yaml: |\n    - job:\n        name: demo\n        git: {{url: 'https://github.com/o/r'}}\n        run_command: make\n        ghprb:\n          enabled: true\n          admin_users: [boss]\n          whitelisted_users: [friend]\n{extra}"
        );
        kubeci_spec::load("job.yaml", yaml.as_bytes(), &LoadOptions::default())
            .jobs
            .remove(0)
    }

    fn pr(author: &str) -> PullRequestInfo {
        PullRequestInfo {
            number: 7,
            author: author.into(),
            title: "change".into(),
            body: String::new(),
            labels: Vec::new(),
            draft: false,
            head_sha: "a".repeat(40),
            head_ref: "topic".into(),
            base_ref: "main".into(),
            html_url: String::new(),
            open: true,
        }
    }

    fn no_orgs(_: &str, _: &str) -> bool {
        false
    }

    fn keys(decision: &Decision) -> Vec<String> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Build { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_trusted_pull_request_is_re_run_by_anyone_an_untrusted_one_by_the_trusted_only() {
        let loaded = job("");
        let jobs = [JobRef {
            namespace: "ns",
            job: loaded.job.as_ref().unwrap(),
        }];
        let head = "a".repeat(40);
        let rerun = |pr: &PullRequestInfo, sender: &str, name: Option<&str>| {
            on_rerun(pr, &head, name, sender, "d-1", &jobs, &no_orgs)
        };
        assert_eq!(
            keys(&rerun(&pr("friend"), "someone", Some("kubeci/demo"))),
            ["rerun:d-1"]
        );
        assert_eq!(
            keys(&rerun(&pr("friend"), "someone", None)),
            ["rerun:d-1"],
            "the suite"
        );
        assert!(keys(&rerun(&pr("friend"), "someone", Some("kubeci/other"))).is_empty());
        let refused = rerun(&pr("stranger"), "stranger", Some("kubeci/demo"));
        assert!(keys(&refused).is_empty());
        assert!(refused.reasons[0].contains("may not re-run an untrusted pull request"));
        assert_eq!(keys(&rerun(&pr("stranger"), "friend", None)), ["rerun:d-1"]);
        let moved = on_rerun(
            &pr("friend"),
            &"b".repeat(40),
            None,
            "friend",
            "d",
            &jobs,
            &no_orgs,
        );
        assert!(keys(&moved).is_empty());
        assert!(
            moved.reasons[0].contains("not the current head"),
            "{:?}",
            moved.reasons
        );
    }

    #[test]
    fn check_run_and_check_suite_deliveries_are_read() {
        let repository = r#""repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"}, "sender": {"login": "boss"}"#;
        let check_run = format!(
            r#"{{"action": "requested_action", "check_run": {{"id": 42, "name": "kubeci/demo", "head_sha": "abc", "external_id": "approval:ns/demo", "status": "completed", "pull_requests": [{{"number": 7, "head": {{"sha": "abc"}}}}]}}, "requested_action": {{"identifier": "approve"}}, {repository}}}"#
        );
        let Ok(crate::Event::Checks {
            action,
            head_sha,
            check_run: Some(run),
            requested_action,
            pull_requests,
            sender,
            ..
        }) = crate::parse("check_run", check_run.as_bytes())
        else {
            panic!("a check_run event");
        };
        assert_eq!(
            (
                action.as_str(),
                head_sha.as_str(),
                run.id,
                run.name.as_str()
            ),
            ("requested_action", "abc", 42, "kubeci/demo")
        );
        assert_eq!(run.external_id, "approval:ns/demo");
        assert_eq!(
            (requested_action.as_deref(), pull_requests, sender.as_str()),
            (Some("approve"), vec![7], "boss")
        );
        let suite = format!(
            r#"{{"action": "rerequested", "check_suite": {{"id": 9, "head_sha": "abc", "head_branch": null, "pull_requests": []}}, {repository}}}"#
        );
        let Ok(crate::Event::Checks {
            check_run: None,
            pull_requests,
            ..
        }) = crate::parse("check_suite", suite.as_bytes())
        else {
            panic!("a check_suite event");
        };
        assert!(pull_requests.is_empty());
        let missing = crate::parse("check_run", br#"{"action": "rerequested"}"#).unwrap_err();
        assert!(missing.to_string().contains("check_run"), "{missing}");
    }

    #[test]
    fn approve_and_build_approves_for_an_admin_and_changes_nothing_for_others() {
        let loaded = job("");
        let jobs = [JobRef {
            namespace: "ns",
            job: loaded.job.as_ref().unwrap(),
        }];
        let head = "a".repeat(40);
        let approved = on_requested_action(APPROVE, &pr("stranger"), &head, "boss", &jobs);
        assert_eq!(approved.actions[0], Action::Approve);
        assert_eq!(
            keys(&approved),
            [format!("pr:7:{head}")],
            "the head's one build"
        );
        for clicker in ["stranger", "friend"] {
            let refused = on_requested_action(APPROVE, &pr("stranger"), &head, clicker, &jobs);
            assert!(refused.actions.is_empty(), "{clicker}");
            assert!(refused.reasons[0].contains("is not an admin: nothing changed"));
        }
        let other = on_requested_action("deploy", &pr("stranger"), &head, "boss", &jobs);
        assert!(other.actions.is_empty());
    }
}
