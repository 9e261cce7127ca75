//! Which jobs a pass looks at. A job is at rest when each of its builds has ended, been
//! settled, reported and (with an archive) archived whole, and the plan has nothing to do
//! to it: passes then leave it alone until one of its objects changes, its oldest kept
//! build reaches the job's age limit, or the next whole pass (every [`WHOLE_PASS_EVERY`],
//! and after a re-list or a change of any declaration). So an idle kubeci's work does not
//! grow with the finished builds it keeps, as Prow's plank skips finished ProwJobs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::workload::{Changes, JobKey};
use crate::build::BuildSummary;
use crate::decide;
use crate::plan::{Action, JobPolicy};

/// How often a pass looks at every job, at rest or not: what no event announces (a
/// change missed by a watch that was down) is acted on within this.
pub const WHOLE_PASS_EVERY: Duration = Duration::from_secs(300);

/// What a pass found of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rest {
    /// Something is left to do: the next pass looks at it again.
    Restless,
    /// Nothing is left to do until it changes, or until this time (seconds since the
    /// epoch), when a build of it reaches the job's age limit.
    Until(Option<i64>),
}

/// Whether a job whose `builds` a pass just planned `actions` for (`keep`: builds whose
/// request is still being settled) is at rest, at `now`.
pub(super) fn rest(
    policy: &JobPolicy,
    builds: &[BuildSummary],
    keep: &BTreeSet<u64>,
    actions: &[Action],
    now: i64,
) -> Rest {
    let done = |b: &BuildSummary| b.state.is_finished() && b.settled && b.fully_reported;
    if !actions.is_empty() || !keep.is_empty() || !builds.iter().all(done) {
        return Rest::Restless;
    }
    // Only a valid declaration's builds are deleted by age (`plan::plan`).
    let ttl = policy.ttl.filter(|_| policy.declared && policy.valid);
    Rest::Until(ttl.and_then(|ttl| decide::next_expiry(ttl, now, builds)))
}

/// The jobs that are not at rest, and when the ones at rest are due again.
#[derive(Debug, Default)]
pub(super) struct Focus {
    restless: BTreeSet<JobKey>,
    wake_at: BTreeMap<JobKey, i64>,
    /// When the last whole pass began; `None`: none since it took the lead.
    whole_at: Option<Instant>,
}

impl Focus {
    /// The jobs the pass at `now` (`at` on the monotonic clock) looks at after `changes`,
    /// or `None` for every job (the first pass, after [`Changes::Everything`], and every
    /// [`WHOLE_PASS_EVERY`]). What the pass finds is told back through [`Focus::found`].
    pub(super) fn jobs(
        &mut self,
        changes: Changes,
        now: i64,
        at: Instant,
    ) -> Option<BTreeSet<JobKey>> {
        let whole_due = self
            .whole_at
            .is_none_or(|last| at.duration_since(last) >= WHOLE_PASS_EVERY);
        let changed = match changes {
            Changes::Jobs(changed) if !whole_due => changed,
            _ => {
                self.restless.clear();
                self.wake_at.clear();
                self.whole_at = Some(at);
                return None;
            }
        };
        let mut jobs = std::mem::take(&mut self.restless);
        jobs.extend(changed);
        let due: Vec<JobKey> = self
            .wake_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.wake_at.remove(&key);
            jobs.insert(key);
        }
        Some(jobs)
    }

    /// What the pass found of job `key`.
    pub(super) fn found(&mut self, key: JobKey, rest: Rest) {
        match rest {
            Rest::Restless => {
                self.wake_at.remove(&key);
                self.restless.insert(key);
            }
            Rest::Until(Some(at)) => {
                self.wake_at.insert(key, at);
            }
            Rest::Until(None) => {
                self.wake_at.remove(&key);
            }
        }
    }

    /// Forgets everything: the next pass looks at every job (after losing the lead).
    pub(super) fn forget(&mut self) {
        *self = Focus::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::BuildState;

    fn key(job: &str) -> JobKey {
        ("ns".into(), job.into())
    }

    fn build(number: u64, state: BuildState, finished_at: Option<i64>) -> BuildSummary {
        BuildSummary {
            finished_at,
            ..crate::plan::tests::build(number, state, true)
        }
    }

    fn policy(ttl: Option<u64>) -> JobPolicy {
        JobPolicy {
            keep: None,
            ttl,
            ..crate::plan::tests::policy()
        }
    }

    fn changed(jobs: &[&str]) -> Changes {
        Changes::Jobs(jobs.iter().map(|j| key(j)).collect())
    }

    #[test]
    fn a_job_is_restless_while_a_build_runs_owes_a_report_or_the_plan_acts() {
        let ended = build(1, BuildState::Succeeded, Some(100));
        let none = BTreeSet::new();
        let p = policy(None);
        assert_eq!(
            rest(&p, std::slice::from_ref(&ended), &none, &[], 200),
            Rest::Until(None)
        );
        let running = build(2, BuildState::Running, None);
        assert_eq!(
            rest(&p, &[ended.clone(), running], &none, &[], 200),
            Rest::Restless
        );
        let unreported = BuildSummary {
            fully_reported: false,
            ..ended.clone()
        };
        assert_eq!(rest(&p, &[unreported], &none, &[], 200), Rest::Restless);
        let unsettled = BuildSummary {
            settled: false,
            ..ended.clone()
        };
        assert_eq!(rest(&p, &[unsettled], &none, &[], 200), Rest::Restless);
        let delete = [Action::Delete(1)];
        assert_eq!(
            rest(&p, std::slice::from_ref(&ended), &none, &delete, 200),
            Rest::Restless
        );
        let settling = BTreeSet::from([3]);
        assert_eq!(rest(&p, &[ended], &settling, &[], 200), Rest::Restless);
    }

    #[test]
    fn a_job_at_rest_is_due_again_when_its_oldest_build_reaches_the_age_limit() {
        let builds = [
            build(1, BuildState::Succeeded, Some(100)),
            build(2, BuildState::Succeeded, Some(150)),
        ];
        let none = BTreeSet::new();
        assert_eq!(
            rest(&policy(Some(60)), &builds, &none, &[], 120),
            Rest::Until(Some(160))
        );
        assert_eq!(
            rest(&policy(Some(60)), &builds, &none, &[], 170),
            Rest::Until(Some(210))
        );
        let invalid = JobPolicy {
            valid: false,
            ..policy(Some(60))
        };
        assert_eq!(rest(&invalid, &builds, &none, &[], 120), Rest::Until(None));
    }

    #[test]
    fn passes_look_at_restless_changed_and_due_jobs_and_at_every_job_now_and_then() {
        let start = Instant::now();
        let mut focus = Focus::default();
        assert_eq!(
            focus.jobs(changed(&["a"]), 0, start),
            None,
            "the first is whole"
        );
        focus.found(key("idle"), Rest::Until(None));
        focus.found(key("busy"), Rest::Restless);
        focus.found(key("aging"), Rest::Until(Some(50)));

        let second = focus.jobs(changed(&["edited"]), 10, start + Duration::from_secs(1));
        let expected: BTreeSet<JobKey> = [key("busy"), key("edited")].into();
        assert_eq!(second, Some(expected));
        focus.found(key("busy"), Rest::Until(None));
        focus.found(key("edited"), Rest::Until(None));

        let third = focus.jobs(changed(&[]), 20, start + Duration::from_secs(2));
        assert_eq!(third, Some(BTreeSet::new()), "nothing is left to do");
        let fourth = focus.jobs(changed(&[]), 50, start + Duration::from_secs(3));
        assert_eq!(
            fourth,
            Some([key("aging")].into()),
            "its build reached the limit"
        );
        focus.found(key("aging"), Rest::Until(None));
        assert_eq!(
            focus.jobs(changed(&[]), 60, start + Duration::from_secs(4)),
            Some(BTreeSet::new()),
            "looked at once when due"
        );

        assert_eq!(
            focus.jobs(Changes::Everything, 70, start + Duration::from_secs(5)),
            None
        );
        focus.found(key("busy"), Rest::Restless);
        let later = start + Duration::from_secs(5) + WHOLE_PASS_EVERY;
        assert_eq!(focus.jobs(changed(&[]), 80, later), None, "whole again");
        focus.forget();
        assert_eq!(
            focus.jobs(changed(&[]), 90, later),
            None,
            "whole after the lead"
        );
    }
}
