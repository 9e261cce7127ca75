//! What a request from GitHub's checks UI asks of kubeci, decided over data: a re-run of
//! one check run or of a whole suite, and the "Approve and build" button of a check run
//! waiting for approval. Each returns its actions with its reasons, as the other
//! decisions do.

use kubeci_build::{BuildRequest, Trigger};

use crate::decide::{
    approve, builds_pushes_to, check_name, policy, pr_build, short, trust, Action, Decision, Facts,
    JobRef,
};
use crate::event::PullRequestInfo;

/// The identifier of the "Approve and build" button.
pub const APPROVE: &str = "approve";

/// The `external_id` of the check run of `job` waiting for an approval of pull request
/// `number` (named there because GitHub leaves a fork's pull requests out of check
/// payloads).
pub fn approval_external_id(namespace: &str, job: &str, number: u64) -> String {
    format!("approval:{namespace}/{job}#{number}")
}

/// A build kubeci made of the head a checks delivery is about, as its own records show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastBuild {
    pub namespace: String,
    pub job: String,
    pub pull_request: Option<u64>,
    pub trigger: Option<Trigger>,
    /// It ended failed, in error, or aborted.
    pub failed: bool,
}

/// The pull request a checks delivery is about when GitHub does not say — it lists only
/// the repository's own pull requests, never a fork's: the one the approval check run
/// names, else the one kubeci built this head for.
pub fn pull_request_of(external_id: Option<&str>, past: &[PastBuild]) -> Option<u64> {
    external_id
        .and_then(waiting_job)
        .map(|(_, _, number)| number)
        .or_else(|| past.iter().find_map(|b| b.pull_request))
}

/// The job (namespace, name) and pull request an approval check run waits for, from its
/// `external_id` (see [`approval_external_id`]).
pub fn waiting_job(external_id: &str) -> Option<(&str, &str, u64)> {
    let (job, number) = external_id.strip_prefix("approval:")?.rsplit_once('#')?;
    let (namespace, name) = job.split_once('/')?;
    Some((namespace, name, number.parse().ok()?))
}

/// The jobs among `jobs` a re-run asks for: the one whose check run is named `name` (among
/// `of_repository`, the jobs of the repository, see [`check_name`]), or for a suite
/// (`None`) those whose last build of the head failed — GitHub sends one
/// `check_suite rerequested` for both "Re-run failed checks" and "Re-run all checks" —
/// or every one when none failed. True when only the failed ones were taken.
fn asked<'j, 'a>(
    jobs: &'j [JobRef<'a>],
    of_repository: &[JobRef],
    name: Option<&str>,
    past: &[PastBuild],
) -> (Vec<&'j JobRef<'a>>, bool) {
    let named: Vec<&JobRef> = jobs
        .iter()
        .filter(|j| name.is_none_or(|n| check_name(j, of_repository) == n))
        .collect();
    if name.is_some() {
        return (named, false);
    }
    let last_failed = |job: &JobRef| {
        past.iter()
            .find(|b| b.namespace == job.namespace && b.job == job.job.name)
            .is_some_and(|b| b.failed)
    };
    let failed: Vec<&JobRef> = named.iter().copied().filter(|j| last_failed(j)).collect();
    if failed.is_empty() {
        (named, false)
    } else {
        (failed, true)
    }
}

/// Says who re-ran a job, and whether as one of the suite's failed checks.
fn rerun_note(sender: &str, only_failed: bool) -> String {
    if only_failed {
        format!("re-run by {sender} (the suite's failed checks)")
    } else {
        format!("re-run by {sender}")
    }
}

/// Whether `sender` is trusted by `job`: an admin, a whitelisted user, or a member of a
/// whitelisted organisation.
fn trusts(job: &JobRef, sender: &str, facts: &dyn Facts) -> bool {
    policy(job.job)
        .pull_request(sender, None, |org| facts.is_member(org, sender))
        .is_trusted()
}

/// What a re-run is about: the check run named `name` (or the suite, `None`) on `head`,
/// asked by `sender` in delivery `delivery`, and what kubeci built of that head before
/// (newest first).
#[derive(Debug, Clone, Copy)]
pub struct Rerun<'a> {
    pub head: &'a str,
    pub name: Option<&'a str>,
    pub sender: &'a str,
    pub delivery: &'a str,
    pub past: &'a [PastBuild],
}

/// A re-run of a check of pull request `pr` (see [`asked`] for which jobs). Each job asked
/// for builds the head again — if it is still the pull request's current head, and the
/// pull request is trusted or the sender is trusted by the job (only they may re-run an
/// untrusted pull request). The delivery's id keys the builds: its redelivery is the same.
pub fn on_rerun(
    pr: &PullRequestInfo,
    rerun: Rerun,
    jobs: &[JobRef],
    facts: &dyn Facts,
) -> Decision {
    let Rerun {
        head,
        name,
        sender,
        delivery,
        past,
    } = rerun;
    let mut decision = Decision::default();
    if !pr.open || pr.head_sha != head {
        decision.reasons.push(format!(
            "{} is not the current head of open pull request #{}: nothing to re-run",
            short(head),
            pr.number
        ));
        return decision;
    }
    let building: Vec<JobRef> = jobs
        .iter()
        .filter(|j| j.job.pull_requests_enabled())
        .copied()
        .collect();
    let (asked, only_failed) = asked(&building, jobs, name, past);
    for job in asked {
        let pr_trusted = trust(job, pr, facts).is_trusted();
        if pr_trusted || trusts(job, sender, facts) {
            let key = format!("rerun:{delivery}");
            decision
                .actions
                .push(pr_build(job, pr, Trigger::Comment, key, sender));
            decision.note(job, rerun_note(sender, only_failed));
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

/// A re-run of a check of a head no pull request names: a push's. A job builds the head
/// again only if kubeci built it as a push before (so a fork's commit is never built as a
/// push of the branch name its payload gives) and the job builds pushes to `branch`.
pub fn on_push_rerun(branch: Option<&str>, rerun: Rerun, jobs: &[JobRef]) -> Decision {
    let mut decision = Decision::default();
    let (asked, only_failed) = asked(jobs, jobs, rerun.name, rerun.past);
    for job in asked {
        let pushed = rerun.past.iter().any(|b| {
            b.namespace == job.namespace
                && b.job == job.job.name
                && b.trigger == Some(Trigger::Push)
        });
        if !pushed {
            decision.note(
                job,
                format!(
                    "never built {} as a push: nothing to re-run",
                    short(rerun.head)
                ),
            );
            continue;
        }
        let Some(branch) = branch.filter(|b| builds_pushes_to(job.job, b)) else {
            let branch = branch.unwrap_or("a branch GitHub did not name");
            decision.note(job, format!("does not build pushes to {branch}"));
            continue;
        };
        decision.actions.push(Action::Build {
            namespace: job.namespace.to_owned(),
            job: job.job.name.clone(),
            key: format!("rerun:{}", rerun.delivery),
            request: BuildRequest {
                number: 0,
                trigger: Trigger::Push,
                commit: Some(rerun.head.to_owned()),
                git_ref: None,
                branch: Some(branch.to_owned()),
                pull_request: None,
                requested_by: Some(format!("github:{}", rerun.sender)),
            },
        });
        decision.note(job, rerun_note(rerun.sender, only_failed));
    }
    if decision.reasons.is_empty() {
        decision
            .reasons
            .push("no job of this repository reports that check".into());
    }
    decision
}

/// The button `identifier` of the check run `external_id` waiting for approval, clicked by
/// `sender` on `head` of `pr`. "Approve and build" approves the head for the one job that
/// check run waits for, if `sender` is an admin of that job, and builds it; by anyone else
/// it changes nothing, and says why. Other jobs' check runs wait for their own admins.
pub fn on_requested_action(
    identifier: &str,
    external_id: &str,
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
    let clicked = waiting_job(external_id).and_then(|(namespace, name, number)| {
        jobs.iter().find(|j| {
            number == pr.number
                && j.namespace == namespace
                && j.job.name == name
                && j.job.pull_requests_enabled()
        })
    });
    let Some(job) = clicked else {
        decision.reasons.push(format!(
            "this check run (`{external_id}`) waits for no job of pull request #{} that kubeci builds: nothing approved",
            pr.number
        ));
        return decision;
    };
    if policy(job.job).is_admin(sender) {
        approve(&mut decision, job, pr, sender);
    } else {
        decision.note(
            job,
            format!("{sender} is not an admin of this job: nothing changed"),
        );
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

    fn rerun<'a>(head: &'a str, name: Option<&'a str>, sender: &'a str) -> Rerun<'a> {
        Rerun {
            head,
            name,
            sender,
            delivery: "d-1",
            past: &[],
        }
    }

    fn past(job: &str, trigger: Trigger, failed: bool) -> PastBuild {
        PastBuild {
            namespace: "ns".into(),
            job: job.into(),
            pull_request: (trigger != Trigger::Push).then_some(7),
            trigger: Some(trigger),
            failed,
        }
    }

    #[test]
    fn a_trusted_pull_request_is_re_run_by_anyone_an_untrusted_one_by_the_trusted_only() {
        let loaded = job("");
        let jobs = [JobRef {
            namespace: "ns",
            job: loaded.job.as_ref().unwrap(),
        }];
        let head = "a".repeat(40);
        let on = |pr: &PullRequestInfo, sender: &str, name: Option<&str>| {
            on_rerun(pr, rerun(&head, name, sender), &jobs, &no_orgs)
        };
        assert_eq!(
            keys(&on(&pr("friend"), "someone", Some("kubeci/demo"))),
            ["rerun:d-1"]
        );
        assert_eq!(
            keys(&on(&pr("friend"), "someone", None)),
            ["rerun:d-1"],
            "the suite"
        );
        assert!(keys(&on(&pr("friend"), "someone", Some("kubeci/other"))).is_empty());
        let refused = on(&pr("stranger"), "stranger", Some("kubeci/demo"));
        assert!(keys(&refused).is_empty());
        assert!(refused.reasons[0].contains("may not re-run an untrusted pull request"));
        assert_eq!(keys(&on(&pr("stranger"), "friend", None)), ["rerun:d-1"]);
        let moved = on_rerun(
            &pr("friend"),
            rerun(&"b".repeat(40), None, "friend"),
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

    fn two_jobs() -> (LoadedJob, LoadedJob) {
        let mut other = job("");
        other.job.as_mut().unwrap().name = "lint".into();
        (job(""), other)
    }

    fn built(decision: &Decision) -> Vec<String> {
        decision
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Build { job, .. } => Some(job.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_suite_re_run_rebuilds_the_failed_checks_only_or_all_when_none_failed() {
        let (demo, lint) = two_jobs();
        let jobs = [
            JobRef {
                namespace: "ns",
                job: demo.job.as_ref().unwrap(),
            },
            JobRef {
                namespace: "ns",
                job: lint.job.as_ref().unwrap(),
            },
        ];
        let head = "a".repeat(40);
        let on = |past: &[PastBuild], name: Option<&str>| {
            let asked = Rerun {
                past,
                ..rerun(&head, name, "friend")
            };
            on_rerun(&pr("friend"), asked, &jobs, &no_orgs)
        };
        // lint's newest build of the head failed; an older one of demo failed but its
        // newest succeeded.
        let history = [
            past("lint", Trigger::PullRequest, true),
            past("demo", Trigger::Comment, false),
            past("demo", Trigger::PullRequest, true),
        ];
        let failed_only = on(&history, None);
        assert_eq!(built(&failed_only), ["lint"]);
        assert!(failed_only.reasons[0].contains("the suite's failed checks"));
        let green = [past("lint", Trigger::PullRequest, false)];
        assert_eq!(
            built(&on(&green, None)),
            ["demo", "lint"],
            "none failed: all"
        );
        assert_eq!(
            built(&on(&history, Some("kubeci/demo"))),
            ["demo"],
            "one check run's re-run is that one, failed or not"
        );
    }

    #[test]
    fn a_push_is_re_run_only_where_kubeci_built_it_as_a_push_of_a_branch_the_job_builds() {
        let loaded = job("        triggers: {push: {branches: [main]}}\n");
        let jobs = [JobRef {
            namespace: "ns",
            job: loaded.job.as_ref().unwrap(),
        }];
        let head = "c".repeat(40);
        let pushed = [past("demo", Trigger::Push, true)];
        let on = |branch: Option<&str>, past: &[PastBuild]| {
            let asked = Rerun {
                past,
                ..rerun(&head, Some("kubeci/demo"), "friend")
            };
            on_push_rerun(branch, asked, &jobs)
        };
        let again = on(Some("main"), &pushed);
        let Some(Action::Build { key, request, .. }) = again.actions.first() else {
            panic!("a build: {:?}", again.reasons);
        };
        assert_eq!(key, "rerun:d-1");
        assert_eq!(request.trigger, Trigger::Push);
        assert_eq!(request.commit.as_deref(), Some(head.as_str()));
        assert_eq!(request.branch.as_deref(), Some("main"));
        let from_a_fork = on(Some("main"), &[past("demo", Trigger::PullRequest, true)]);
        assert!(from_a_fork.actions.is_empty());
        assert!(
            from_a_fork.reasons[0].contains("never built"),
            "{:?}",
            from_a_fork.reasons
        );
        let elsewhere = on(Some("topic"), &pushed);
        assert!(elsewhere.actions.is_empty());
        assert!(elsewhere.reasons[0].contains("does not build pushes to topic"));
        assert!(on(None, &pushed).actions.is_empty());
    }

    #[test]
    fn a_forks_pull_request_is_found_from_the_approval_check_run_or_kubecis_builds() {
        let waiting = approval_external_id("ns", "demo", 12);
        assert_eq!(pull_request_of(Some(&waiting), &[]), Some(12));
        let built = [past("demo", Trigger::Comment, false)];
        assert_eq!(pull_request_of(Some("ns/demo/3"), &built), Some(7));
        assert_eq!(pull_request_of(None, &built), Some(7));
        assert_eq!(pull_request_of(Some("approval:ns/demo"), &[]), None);
        assert_eq!(
            pull_request_of(None, &[past("demo", Trigger::Push, false)]),
            None
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
    fn approve_and_build_approves_the_clicked_job_alone_for_its_own_admin() {
        let (deploy, mut evil) = two_jobs();
        let evil_job = evil.job.as_mut().unwrap();
        evil_job.name = "evil".into();
        evil_job.ghprb.as_mut().unwrap().admin_users =
            kubeci_spec::model::NameList(vec!["mallory".to_owned()]);
        let jobs = [
            JobRef {
                namespace: "team-b",
                job: deploy.job.as_ref().unwrap(),
            },
            JobRef {
                namespace: "team-a",
                job: evil.job.as_ref().unwrap(),
            },
        ];
        let head = "a".repeat(40);
        let deploys_run = approval_external_id("team-b", "demo", 7);
        let evils_run = approval_external_id("team-a", "evil", 7);
        let click = |run: &str, clicker: &str| {
            on_requested_action(APPROVE, run, &pr("stranger"), &head, clicker, &jobs)
        };
        let approved = click(&deploys_run, "boss");
        assert_eq!(
            approved.actions[0],
            Action::Approve(crate::decide::Approved {
                namespace: "team-b".into(),
                job: "demo".into(),
                pull_request: 7,
                head: head.clone(),
                by: "boss".into(),
            })
        );
        assert_eq!(
            keys(&approved),
            [format!("pr:7:{head}")],
            "the head's one build"
        );
        assert_eq!(built(&approved), ["demo"]);
        assert_eq!(approved.reasons.len(), 1, "{:?}", approved.reasons);
        assert!(approved.reasons[0].starts_with("team-b/demo: approved by admin boss"));
        for clicker in ["stranger", "friend", "mallory"] {
            let refused = click(&deploys_run, clicker);
            assert!(refused.actions.is_empty(), "{clicker}");
            assert_eq!(
                refused.reasons,
                [format!(
                    "team-b/demo: {clicker} is not an admin of this job: nothing changed"
                )],
                "the answer names the clicked job alone"
            );
        }
        let own = click(&evils_run, "mallory");
        assert_eq!(built(&own), ["evil"], "mallory approves her own job only");
        let elsewhere = click(&approval_external_id("team-b", "demo", 8), "boss");
        assert!(elsewhere.actions.is_empty(), "another pull request's run");
        let other = on_requested_action(
            "deploy",
            &deploys_run,
            &pr("stranger"),
            &head,
            "boss",
            &jobs,
        );
        assert!(other.actions.is_empty());
    }
}
