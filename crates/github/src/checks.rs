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
mod tests;
