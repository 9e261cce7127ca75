//! The engine's decisions over a job's builds: which queued builds to release, which
//! running builds a new one supersedes, which finished builds to delete, and which build
//! number comes next. Pure functions over [`BuildSummary`]s.

use crate::build::{BuildState, BuildSummary};

/// The queued builds to release now, oldest first, so that at most `max_concurrency`
/// builds are active (`None`: no limit).
pub fn builds_to_release(max_concurrency: Option<u32>, builds: &[BuildSummary]) -> Vec<u64> {
    let active = builds.iter().filter(|b| b.state.is_active()).count();
    let mut queued: Vec<u64> = builds
        .iter()
        .filter(|b| b.state == BuildState::Queued)
        .map(|b| b.number)
        .collect();
    queued.sort_unstable();
    let free = match max_concurrency {
        Some(max) => (max as usize).saturating_sub(active),
        None => queued.len(),
    };
    queued.into_iter().take(free).collect()
}

/// What a new build is about, to find the builds it supersedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    PullRequest(u64),
    Branch(String),
}

impl Subject {
    /// What `request` of `job` is about, if it supersedes anything: pull request and
    /// comment builds their pull request, pushes their branch (manual and cron builds
    /// never supersede); `None` also when the job turned `cancel_superseded` off.
    pub fn of(request: &kubeci_build::BuildRequest, job: &kubeci_spec::Job) -> Option<Subject> {
        use kubeci_build::Trigger;
        if !job.cancels_superseded() {
            return None;
        }
        match (request.trigger, &request.pull_request) {
            (Trigger::PullRequest | Trigger::Comment, Some(pr)) => {
                Some(Subject::PullRequest(pr.number))
            }
            (Trigger::Push, _) => request
                .branch
                .clone()
                .or_else(|| job.git.branch.clone())
                .map(Subject::Branch),
            _ => None,
        }
    }
}

/// The unfinished builds of the same pull request (or branch) older than `number`: with
/// `cancel_superseded`, a new push cancels them.
pub fn superseded_builds(subject: &Subject, number: u64, builds: &[BuildSummary]) -> Vec<u64> {
    builds
        .iter()
        .filter(|b| b.number < number && !b.state.is_finished())
        .filter(|b| match subject {
            Subject::PullRequest(pr) => b.pull_request == Some(*pr),
            Subject::Branch(branch) => {
                b.pull_request.is_none() && b.branch.as_deref() == Some(branch)
            }
        })
        .map(|b| b.number)
        .collect()
}

/// The finished builds to delete: beyond the newest `keep`, or finished more than `ttl`
/// seconds before `now`. A build whose final state is not yet reported is never deleted:
/// its Job is the record of what must still be reported.
pub fn builds_to_delete(
    keep: Option<u32>,
    ttl: Option<u64>,
    now: i64,
    builds: &[BuildSummary],
) -> Vec<u64> {
    let mut finished: Vec<&BuildSummary> =
        builds.iter().filter(|b| b.state.is_finished()).collect();
    finished.sort_by_key(|b| std::cmp::Reverse(b.number));
    let mut delete: Vec<u64> = finished
        .iter()
        .enumerate()
        .filter(|(rank, build)| {
            let beyond_keep = keep.is_some_and(|k| *rank >= k as usize);
            let expired =
                ttl.is_some_and(|ttl| build.finished_at.is_some_and(|at| now - at >= ttl as i64));
            (beyond_keep || expired) && build.fully_reported
        })
        .map(|(_, b)| b.number)
        .collect();
    delete.sort_unstable();
    delete
}

/// When the next of `builds`' finished builds reaches the age limit `ttl` (seconds) after
/// `now`, if one will: when [`builds_to_delete`] may next find one more to delete by age.
pub fn next_expiry(ttl: u64, now: i64, builds: &[BuildSummary]) -> Option<i64> {
    let ttl = i64::try_from(ttl).unwrap_or(i64::MAX);
    builds
        .iter()
        .filter(|b| b.state.is_finished())
        .filter_map(|b| b.finished_at?.checked_add(ttl))
        .filter(|expires| *expires > now)
        .min()
}

/// The next build number of a job: above both the persisted counter and every build still
/// present, so numbers never repeat, also after old Jobs were deleted or a counter update
/// was lost. A counter at the top of the range (written there by hand) stays there rather
/// than wrap to 0: that job's next request finds the build already numbered so.
pub fn next_build_number(counter: Option<u64>, builds: &[BuildSummary]) -> u64 {
    let highest = builds.iter().map(|b| b.number).max().unwrap_or(0);
    counter.unwrap_or(0).max(highest).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(number: u64, state: BuildState) -> BuildSummary {
        BuildSummary {
            number,
            state,
            pull_request: None,
            branch: Some("main".into()),
            fully_reported: true,
            finished_at: Some(1_000),
            settled: true,
            archived: Default::default(),
        }
    }

    fn failed() -> BuildState {
        BuildState::Failed {
            reason: "ExitCode".into(),
            message: "1".into(),
        }
    }

    #[test]
    fn queued_builds_are_released_in_order_within_the_limit() {
        let builds = [
            build(1, BuildState::Running),
            build(4, BuildState::Queued),
            build(3, BuildState::Queued),
            build(2, BuildState::Succeeded),
        ];
        assert_eq!(builds_to_release(Some(2), &builds), [3]);
        assert_eq!(builds_to_release(Some(1), &builds), Vec::<u64>::new());
        assert_eq!(builds_to_release(None, &builds), [3, 4]);
    }

    #[test]
    fn a_new_push_supersedes_older_unfinished_builds_of_the_same_subject() {
        let mut pr7 = build(5, BuildState::Running);
        pr7.pull_request = Some(7);
        let mut pr8 = build(6, BuildState::Queued);
        pr8.pull_request = Some(8);
        let mut pr7_done = build(3, BuildState::Succeeded);
        pr7_done.pull_request = Some(7);
        let builds = [pr7, pr8, pr7_done, build(4, BuildState::Running)];
        assert_eq!(superseded_builds(&Subject::PullRequest(7), 9, &builds), [5]);
        assert_eq!(
            superseded_builds(&Subject::Branch("main".into()), 9, &builds),
            [4]
        );
        assert_eq!(
            superseded_builds(&Subject::PullRequest(7), 5, &builds),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn retention_keeps_the_newest_and_anything_not_yet_reported() {
        let mut unreported = build(1, failed());
        unreported.fully_reported = false;
        let builds = [
            unreported,
            build(2, BuildState::Succeeded),
            build(3, failed()),
            build(4, BuildState::Succeeded),
            build(5, BuildState::Running),
        ];
        assert_eq!(builds_to_delete(Some(2), None, 2_000, &builds), [2]);
        assert_eq!(builds_to_delete(None, Some(500), 2_000, &builds), [2, 3, 4]);
        assert_eq!(
            builds_to_delete(None, Some(5_000), 2_000, &builds),
            Vec::<u64>::new()
        );
        assert_eq!(
            builds_to_delete(None, None, 2_000, &builds),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn build_numbers_never_repeat() {
        assert_eq!(next_build_number(None, &[]), 1);
        assert_eq!(
            next_build_number(Some(41), &[]),
            42,
            "old Jobs deleted: the counter remembers"
        );
        assert_eq!(
            next_build_number(Some(3), &[build(7, BuildState::Running)]),
            8,
            "a lost counter update"
        );
    }

    #[test]
    fn a_counter_written_to_the_top_of_the_range_neither_panics_nor_wraps_to_zero() {
        let top = build(u64::MAX, BuildState::Succeeded);
        assert_eq!(next_build_number(Some(u64::MAX), &[]), u64::MAX);
        assert_eq!(next_build_number(None, &[top]), u64::MAX);
    }
}
