//! What the leader does to a job's builds on each pass: a pure plan over their summaries.

use crate::archive::Archived;
use crate::build::{BuildState, BuildSummary};
use crate::decide::{builds_to_delete, builds_to_release};

/// What is known of the job the builds belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPolicy {
    /// The job is still declared (a ConfigMap declares it, valid or not).
    pub declared: bool,
    /// Its declaration is valid: its limit and retention are known.
    pub valid: bool,
    pub max_concurrency: Option<u32>,
    pub keep: Option<u32>,
    /// Seconds a finished build is kept.
    pub ttl: Option<u64>,
    /// Cancel the unfinished builds of a job whose ConfigMap was deleted.
    pub cancel_when_deleted: bool,
    /// Why tenancy refuses the job (its Namespace does not allow it), when it does: its
    /// queued builds are stopped with this reason instead of drained.
    pub refused: Option<String>,
    /// Builds are archived (`--archive`): each is archived once it started and again once
    /// it ended, and retention deletes only builds archived whole.
    pub archiving: bool,
}

impl JobPolicy {
    /// The one rule for a job's policy: `loaded` is its declaration when one is known
    /// (valid or not); `declared`, whether a ConfigMap still declares it. A job whose
    /// declaration is invalid or gone keeps its builds, and its queue drains one at a time.
    pub fn of(
        loaded: Option<&kubeci_spec::LoadedJob>,
        declared: bool,
        cancel_when_deleted: bool,
    ) -> JobPolicy {
        let job = loaded.and_then(|l| l.job.as_ref());
        let retention = job.and_then(|j| j.retention.as_ref());
        JobPolicy {
            declared: declared || loaded.is_some(),
            valid: job.is_some(),
            max_concurrency: job.and_then(|j| j.max_concurrency),
            keep: retention.and_then(|r| r.keep),
            ttl: retention
                .and_then(|r| r.ttl.as_deref())
                .and_then(|t| kubeci_spec::duration::parse_duration(t).ok()),
            cancel_when_deleted,
            refused: loaded.and_then(kubeci_spec::tenancy::refusal),
            archiving: false,
        }
    }
}

/// One thing to do to a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Its pod cannot start and the pending deadline passed: stop it with Kubernetes' reason.
    Fail {
        number: u64,
        reason: String,
        message: String,
    },
    /// Cancel it (its job is gone).
    Cancel { number: u64, by: String },
    /// Release it from the queue (un-suspend its Job).
    Release(u64),
    /// Delete its Job (retention).
    Delete(u64),
    /// Archive it: its first record (`Archived::First`) or all of it
    /// (`Archived::Complete`).
    Archive { number: u64, stage: Archived },
}

impl Action {
    /// The build it acts on.
    pub fn number(&self) -> u64 {
        match self {
            Action::Fail { number, .. } | Action::Cancel { number, .. } => *number,
            Action::Release(number) | Action::Delete(number) => *number,
            Action::Archive { number, .. } => *number,
        }
    }

    /// What it does, as a log says it.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Fail { .. } => "fail",
            Action::Cancel { .. } => "cancel",
            Action::Release(_) => "release",
            Action::Delete(_) => "delete",
            Action::Archive { .. } => "archive",
        }
    }

    /// What it did, as a log says it once done.
    pub fn done(&self) -> &'static str {
        match self {
            Action::Fail { .. } => "failed the build",
            Action::Cancel { .. } => "stopped the build",
            Action::Release(_) => "released the build from the queue",
            Action::Delete(_) => "deleted the build (retention)",
            Action::Archive {
                stage: Archived::Complete,
                ..
            } => "archived the build",
            Action::Archive { .. } => "archived the build's first record",
        }
    }
}

/// Who cancels the builds of deleted jobs.
pub const JOB_DELETED: &str = "kubeci (the job's ConfigMap was deleted)";

/// Who stops the queued builds of a job its Namespace no longer allows, and why.
pub fn refused_by(reason: &str) -> String {
    format!("kubeci (refused: {reason})")
}

/// How far `build` should be archived now, when further than it is: all of it once it
/// ended, Kubernetes is done with it and its end is reported (so its record is final);
/// its first record once it started (or ended, not yet settled or reported).
pub fn archive_stage(build: &BuildSummary) -> Option<Archived> {
    let due = if build.state.is_finished() && build.settled && build.fully_reported {
        Archived::Complete
    } else if build.state == BuildState::Queued {
        Archived::No
    } else {
        Archived::First
    };
    (due > build.archived).then_some(due)
}

fn archive_action(build: &BuildSummary) -> Option<Action> {
    Some(Action::Archive {
        number: build.number,
        stage: archive_stage(build)?,
    })
}

pub fn plan(policy: &JobPolicy, builds: &[BuildSummary], now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    if policy.archiving {
        actions.extend(builds.iter().filter_map(archive_action));
    }
    for build in builds {
        if let (BuildState::Error { reason, message }, false) = (&build.state, build.settled) {
            actions.push(Action::Fail {
                number: build.number,
                reason: reason.clone(),
                message: message.clone(),
            });
        }
    }
    if !policy.declared {
        if policy.cancel_when_deleted {
            actions.extend(builds.iter().filter(|b| !b.state.is_finished()).map(|b| {
                Action::Cancel {
                    number: b.number,
                    by: JOB_DELETED.into(),
                }
            }));
            return actions;
        }
        // Its limit is unknown now: the queue drains one build at a time. Nothing is
        // deleted without a retention policy.
        actions.extend(
            builds_to_release(Some(1), builds)
                .into_iter()
                .map(Action::Release),
        );
        return actions;
    }
    if let (false, Some(reason)) = (policy.valid, &policy.refused) {
        // Its Namespace no longer allows it: what waits never starts (a running build,
        // whose pod exists, finishes), and nothing is deleted.
        actions.extend(
            builds
                .iter()
                .filter(|b| b.state == BuildState::Queued)
                .map(|b| Action::Cancel {
                    number: b.number,
                    by: refused_by(reason),
                }),
        );
        return actions;
    }
    if !policy.valid {
        // Declared, but its ConfigMap became invalid: as for a deleted job, its limit is
        // unknown, so the queue drains one build at a time, and nothing is deleted.
        actions.extend(
            builds_to_release(Some(1), builds)
                .into_iter()
                .map(Action::Release),
        );
        return actions;
    }
    actions.extend(
        builds_to_release(policy.max_concurrency, builds)
            .into_iter()
            .map(Action::Release),
    );
    // With an archive, only what it holds whole may go.
    let archived_whole = |number: &u64| {
        !policy.archiving
            || builds
                .iter()
                .any(|b| b.number == *number && b.archived == Archived::Complete)
    };
    actions.extend(
        builds_to_delete(policy.keep, policy.ttl, now, builds)
            .into_iter()
            .filter(archived_whole)
            .map(Action::Delete),
    );
    actions
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Build `number` in `state`, reported, not archived, finished at 0.
    pub(crate) fn build(number: u64, state: BuildState, settled: bool) -> BuildSummary {
        BuildSummary {
            number,
            state,
            pull_request: None,
            branch: None,
            fully_reported: true,
            finished_at: Some(0),
            settled,
            archived: Archived::No,
        }
    }

    /// A valid job's policy: one build at a time, one kept.
    pub(crate) fn policy() -> JobPolicy {
        JobPolicy {
            declared: true,
            valid: true,
            max_concurrency: Some(1),
            keep: Some(1),
            ttl: None,
            cancel_when_deleted: false,
            refused: None,
            archiving: false,
        }
    }

    fn stuck() -> BuildState {
        BuildState::Error {
            reason: "CreateContainerConfigError".into(),
            message: "secret \"x\" not found".into(),
        }
    }

    #[test]
    fn a_stuck_build_is_failed_and_frees_its_slot() {
        let builds = [
            build(3, BuildState::Queued, false),
            build(2, stuck(), false),
            build(1, BuildState::Succeeded, true),
        ];
        assert_eq!(
            plan(&policy(), &builds, 100),
            [
                Action::Fail {
                    number: 2,
                    reason: "CreateContainerConfigError".into(),
                    message: "secret \"x\" not found".into()
                },
                Action::Release(3),
                Action::Delete(1),
            ]
        );
        let already_failed = [build(2, stuck(), true)];
        assert_eq!(plan(&policy(), &already_failed, 100), []);
    }

    #[test]
    fn builds_of_a_deleted_job_finish_or_are_cancelled_by_option() {
        let builds = [
            build(3, BuildState::Queued, false),
            build(2, BuildState::Running, false),
            build(1, BuildState::Succeeded, true),
        ];
        let gone = JobPolicy {
            declared: false,
            ..policy()
        };
        assert_eq!(
            plan(&gone, &builds, 100),
            [],
            "the running one finishes first"
        );
        assert_eq!(
            plan(&gone, &builds[..1], 100),
            [Action::Release(3)],
            "then the queue drains"
        );
        let cancelling = JobPolicy {
            cancel_when_deleted: true,
            ..gone
        };
        assert_eq!(
            plan(&cancelling, &builds, 100),
            [
                Action::Cancel {
                    number: 3,
                    by: JOB_DELETED.into()
                },
                Action::Cancel {
                    number: 2,
                    by: JOB_DELETED.into()
                },
            ]
        );
    }

    #[test]
    fn a_job_whose_configmap_became_invalid_drains_its_queue_one_build_at_a_time() {
        let queued = [
            build(4, BuildState::Queued, false),
            build(3, BuildState::Queued, false),
            build(2, BuildState::Queued, false),
            build(1, BuildState::Succeeded, true),
        ];
        let invalid = JobPolicy {
            valid: false,
            max_concurrency: None,
            keep: None,
            ..policy()
        };
        assert_eq!(plan(&invalid, &queued, 100), [Action::Release(2)]);
        let running = [
            build(3, BuildState::Queued, false),
            build(2, BuildState::Running, false),
        ];
        assert!(plan(&invalid, &running, 100).is_empty(), "one at a time");
    }

    #[test]
    fn a_job_its_namespace_no_longer_allows_stops_its_queue_and_lets_running_builds_finish() {
        let builds = [
            build(4, BuildState::Queued, false),
            build(3, BuildState::Queued, false),
            build(2, BuildState::Running, false),
            build(1, BuildState::Succeeded, true),
        ];
        let reason = "namespace team-a does not allow ServiceAccount deployer";
        let refused = JobPolicy {
            valid: false,
            refused: Some(reason.into()),
            ..policy()
        };
        let by = "kubeci (refused: namespace team-a does not allow ServiceAccount deployer)";
        assert_eq!(
            plan(&refused, &builds, 100),
            [
                Action::Cancel {
                    number: 4,
                    by: by.into()
                },
                Action::Cancel {
                    number: 3,
                    by: by.into()
                },
            ]
        );
    }

    fn archived(mut summary: BuildSummary, archived: Archived) -> BuildSummary {
        summary.archived = archived;
        summary
    }

    #[test]
    fn a_build_is_archived_first_once_it_started_and_whole_once_it_ended_settled_and_reported() {
        let cases = [
            (build(1, BuildState::Queued, false), None),
            (
                build(1, BuildState::Pending { message: None }, false),
                Some(Archived::First),
            ),
            (build(1, BuildState::Running, false), Some(Archived::First)),
            (
                archived(build(1, BuildState::Running, false), Archived::First),
                None,
            ),
            (build(1, stuck(), false), Some(Archived::First)),
            (
                BuildSummary {
                    fully_reported: false,
                    ..build(1, BuildState::Succeeded, true)
                },
                Some(Archived::First),
            ),
            (
                build(1, BuildState::Succeeded, true),
                Some(Archived::Complete),
            ),
            (
                archived(build(1, BuildState::Succeeded, true), Archived::First),
                Some(Archived::Complete),
            ),
            (
                build(1, BuildState::Aborted { by: None }, true),
                Some(Archived::Complete),
            ),
            (
                archived(build(1, BuildState::Succeeded, true), Archived::Complete),
                None,
            ),
        ];
        for (summary, due) in cases {
            assert_eq!(archive_stage(&summary), due, "{summary:?}");
        }
    }

    #[test]
    fn with_an_archive_every_build_is_archived_and_retention_deletes_only_whole_ones() {
        let builds = [
            build(6, BuildState::Queued, false),
            build(5, BuildState::Running, false),
            archived(build(4, BuildState::Succeeded, true), Archived::First),
            archived(build(3, BuildState::Succeeded, true), Archived::Complete),
            build(2, BuildState::Succeeded, true),
            archived(build(1, BuildState::Succeeded, true), Archived::Complete),
        ];
        let archiving = JobPolicy {
            archiving: true,
            max_concurrency: None,
            keep: Some(0),
            ..policy()
        };
        let archive = |number, stage| Action::Archive { number, stage };
        assert_eq!(
            plan(&archiving, &builds, 100),
            [
                archive(5, Archived::First),
                archive(4, Archived::Complete),
                archive(2, Archived::Complete),
                Action::Release(6),
                Action::Delete(1),
                Action::Delete(3),
            ]
        );
        let not_archiving = JobPolicy {
            archiving: false,
            ..archiving.clone()
        };
        let deleted: Vec<Action> = plan(&not_archiving, &builds, 100);
        assert_eq!(
            deleted,
            [
                Action::Release(6),
                Action::Delete(1),
                Action::Delete(2),
                Action::Delete(3),
                Action::Delete(4),
            ],
            "without an archive, nothing is archived and retention is as before"
        );
        let gone = JobPolicy {
            declared: false,
            cancel_when_deleted: true,
            ..archiving
        };
        assert_eq!(
            plan(&gone, &builds[..2], 100),
            [
                archive(5, Archived::First),
                Action::Cancel {
                    number: 6,
                    by: JOB_DELETED.into()
                },
                Action::Cancel {
                    number: 5,
                    by: JOB_DELETED.into()
                },
            ],
            "the builds of a deleted job are archived too"
        );
    }
}
