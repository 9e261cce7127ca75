//! Flaky tests found, not guessed (issue 30, docs/test-reports.md "Flaky tests"): a test's
//! history over a job's builds as the job's index tells it ([`history`]), whether that
//! history shows the test flaky and why ([`judge`]), and which failures of a build are known
//! flaky ([`known_flaky`]). Pure and cheap: judging one test over 1,000 builds allocates
//! nothing per build and takes microseconds.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{TestResults, MAX_DETAILED_CASES};
use crate::summary::{index_id, TestStatus, TestsInBuild};

/// How many of the newest builds with test results a failure on one commit and a pass on
/// the same commit, or a pass on a rerun, are looked for in: a test made stable stops being
/// called flaky once it has run this many builds without new evidence.
pub const EVIDENCE_BUILDS: usize = 100;

/// How many of a test's last runs on the default branch (builds whose results tell whether
/// it failed) its flips are counted over.
pub const FLIP_RUNS: usize = 50;

/// How many flips between failing and not failing on the default branch make a test flaky
/// at the least. A real break and its fix are two flips, a second real break a third: four
/// is a test that failed and went back to passing twice.
pub const MIN_FLIPS: u32 = 4;

/// …and the share of changes from one run to the next it must exceed, in percent (six
/// flips over 50 runs, 12 %, is flaky; five real breaks and fixes in 50 runs is rare).
pub const MAX_FLIP_PERCENT: u32 = 10;

/// One build of a job, as its index tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistoryPoint<'a> {
    pub number: u64,
    /// The commit it built.
    pub commit: Option<&'a str>,
    /// It built the job's default branch (not a pull request, not another branch).
    pub on_default_branch: bool,
    /// Its tests as its index entry keeps them; `None` when it has no test results.
    pub tests: Option<&'a TestsInBuild>,
}

/// A test's status in one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStatus {
    pub number: u64,
    pub status: TestStatus,
}

/// The test named `id` ([`crate::TestCase::id`]) in each build given, in their order.
pub fn history(id: &str, points: &[HistoryPoint<'_>]) -> Vec<BuildStatus> {
    let key = index_id(id);
    points
        .iter()
        .map(|point| BuildStatus {
            number: point.number,
            status: status(&key, point),
        })
        .collect()
}

fn status(key: &str, point: &HistoryPoint<'_>) -> TestStatus {
    point
        .tests
        .map_or(TestStatus::Unknown, |tests| tests.status_of_key(key))
}

/// Why a test is flaky, with the builds that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum FlakyReason {
    /// It failed on its first run within a build, then passed when run again there.
    PassedOnRerun { build: u64 },
    /// It failed in one build and not in another of the same commit.
    SameCommit {
        failed: u64,
        not_failed: u64,
        commit: String,
    },
    /// On the default branch it flipped between failing and not failing `flips` times over
    /// its last `runs` runs with results ([`MIN_FLIPS`], [`MAX_FLIP_PERCENT`]).
    Flips { flips: u32, runs: u32 },
}

impl fmt::Display for FlakyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlakyReason::PassedOnRerun { build } => {
                write!(
                    f,
                    "It failed, then passed on a rerun within build #{build}."
                )
            }
            FlakyReason::SameCommit {
                failed,
                not_failed,
                commit,
            } => {
                let short = commit.get(..12).unwrap_or(commit);
                write!(
                    f,
                    "It failed in build #{failed} and did not fail in build #{not_failed}, \
                     both of commit {short}."
                )
            }
            FlakyReason::Flips { flips, runs } => write!(
                f,
                "It flipped between failing and not failing {flips} times in its last {runs} \
                 runs on the default branch."
            ),
        }
    }
}

/// Whether the builds given, newest first, show the test named `id` flaky, and why. By
/// rule, in this order (the first that holds is the reason):
/// 1. it passed on a rerun within one of the newest [`EVIDENCE_BUILDS`] builds with test
///    results (the newest such build);
/// 2. among those builds it failed in one and did not fail in another of the same commit
///    (the newest failure that has such a twin);
/// 3. over its last [`FLIP_RUNS`] runs on the default branch whose results tell whether it
///    failed, it flipped between failing and not failing at least [`MIN_FLIPS`] times and
///    in more than [`MAX_FLIP_PERCENT`] % of the changes from one run to the next.
///
/// Builds without results, and builds whose cut lists do not name the test, are skipped.
/// A test failing in every build since some build is not flaky (a real break), nor one
/// that failed once and was fixed on another commit.
pub fn judge(id: &str, points: &[HistoryPoint<'_>]) -> Option<FlakyReason> {
    let key = index_id(id);
    // The evidence window on the stack: where in `points` each build with results is, and
    // the test's status there.
    let mut window = [(0usize, TestStatus::Unknown); EVIDENCE_BUILDS];
    let mut len = 0;
    for (at, point) in points.iter().enumerate() {
        if len == EVIDENCE_BUILDS {
            break;
        }
        if point.tests.is_some() {
            window[len] = (at, status(&key, point));
            len += 1;
        }
    }
    let window = &window[..len];
    passed_on_rerun(window, points)
        .or_else(|| same_commit(window, points))
        .or_else(|| flips(&key, points))
}

fn passed_on_rerun(
    window: &[(usize, TestStatus)],
    points: &[HistoryPoint<'_>],
) -> Option<FlakyReason> {
    window
        .iter()
        .find(|(_, status)| *status == TestStatus::Flaky)
        .map(|(at, _)| FlakyReason::PassedOnRerun {
            build: points[*at].number,
        })
}

fn did_not_fail(status: TestStatus) -> bool {
    matches!(status, TestStatus::NotFailing | TestStatus::Flaky)
}

fn same_commit(window: &[(usize, TestStatus)], points: &[HistoryPoint<'_>]) -> Option<FlakyReason> {
    window
        .iter()
        .filter(|(_, status)| *status == TestStatus::Failed)
        .find_map(|(failed_at, _)| {
            let failed = &points[*failed_at];
            let commit = failed.commit?;
            window
                .iter()
                .find(|(at, status)| did_not_fail(*status) && points[*at].commit == Some(commit))
                .map(|(not_failed_at, _)| FlakyReason::SameCommit {
                    failed: failed.number,
                    not_failed: points[*not_failed_at].number,
                    commit: commit.to_owned(),
                })
        })
}

fn flips(key: &str, points: &[HistoryPoint<'_>]) -> Option<FlakyReason> {
    let failing = points
        .iter()
        .filter(|point| point.on_default_branch)
        .filter_map(|point| match status(key, point) {
            TestStatus::Failed => Some(true),
            TestStatus::NotFailing | TestStatus::Flaky => Some(false),
            TestStatus::Unknown => None,
        })
        .take(FLIP_RUNS);
    let (mut runs, mut flips, mut previous) = (0u32, 0u32, None);
    for now in failing {
        runs += 1;
        if previous.is_some_and(|before| before != now) {
            flips += 1;
        }
        previous = Some(now);
    }
    let changes = runs.saturating_sub(1);
    (flips >= MIN_FLIPS && flips * 100 > MAX_FLIP_PERCENT * changes)
        .then_some(FlakyReason::Flips { flips, runs })
}

/// How many of a build's failed tests [`known_flaky`] judges at most (the first ones in
/// report order; as many as the build's page shows in detail).
pub const MAX_JUDGED_FAILURES: usize = MAX_DETAILED_CASES;

/// A failed test of a build that is known flaky.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownFlaky {
    pub id: String,
    pub reason: FlakyReason,
}

/// The failed or errored tests of build `number` (of `commit`, with these `results`) that
/// are known flaky, in report order: those [`judge`] finds flaky by the builds before it
/// (`points`, newest first; this build and any later one in them are left out, so a real
/// break in this build is not excused by itself), and those that did not fail in one of
/// the [`EVIDENCE_BUILDS`] builds with results before it of the same commit (a rerun).
pub fn known_flaky(
    number: u64,
    commit: Option<&str>,
    results: &TestResults,
    points: &[HistoryPoint<'_>],
) -> Vec<KnownFlaky> {
    let earlier: Vec<HistoryPoint<'_>> = points
        .iter()
        .filter(|point| point.number < number)
        .copied()
        .collect();
    // Only a test the earlier builds' lists name can be flaky by their history alone.
    let named: HashSet<&str> = earlier
        .iter()
        .filter_map(|point| point.tests)
        .flat_map(|tests| tests.failed().iter().chain(tests.flaky()))
        .map(String::as_str)
        .collect();
    let reruns: Vec<(u64, &TestsInBuild)> = earlier
        .iter()
        .filter_map(|point| Some((point.number, point.commit, point.tests?)))
        .take(EVIDENCE_BUILDS)
        .filter(|(_, built, _)| commit.is_some() && *built == commit)
        .map(|(number, _, tests)| (number, tests))
        .collect();
    let mut judged = HashSet::new();
    let mut found = Vec::new();
    for case in results
        .cases
        .iter()
        .filter(|case| case.outcome.is_failure())
    {
        if judged.len() == MAX_JUDGED_FAILURES {
            break;
        }
        if !judged.insert(case.id.as_str()) {
            continue;
        }
        let key = index_id(&case.id);
        let rerun = reruns
            .iter()
            .find(|(_, tests)| did_not_fail(tests.status_of_key(&key)))
            .map(|(not_failed, _)| FlakyReason::SameCommit {
                failed: number,
                not_failed: *not_failed,
                commit: commit.unwrap_or_default().to_owned(),
            });
        let reason = rerun.or_else(|| {
            named
                .contains(key.as_ref())
                .then(|| judge(&case.id, &earlier))
                .flatten()
        });
        if let Some(reason) = reason {
            found.push(KnownFlaky {
                id: case.id.clone(),
                reason,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests;
