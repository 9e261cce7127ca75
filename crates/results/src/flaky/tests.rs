use super::*;
use crate::model::{Outcome, ResultsBuilder, TestCase};
use crate::summary::{summarize, MAX_LISTED_IDS};

/// The test the histories below are about.
const T: &str = "pkg::test_it";

fn case(name: &str, outcome: Outcome) -> TestCase {
    TestCase {
        classname: "pkg".into(),
        name: name.into(),
        outcome,
        ..TestCase::default()
    }
}

/// A build's results where `T` is as `letter` says: `F` failed, `E` errored, `R` passed
/// on a rerun, `P` passed, `S` skipped, `A` absent, `C` absent from lists that were cut
/// (more failures than a list holds); beside another test that passed.
fn results(letter: char) -> TestResults {
    let mut builder = ResultsBuilder::new();
    builder.case(case("other", Outcome::Passed));
    let outcome = match letter {
        'F' => Outcome::Failed,
        'E' => Outcome::Errored,
        'R' => Outcome::Flaky,
        'P' => Outcome::Passed,
        'S' => Outcome::Skipped,
        'A' => return builder.finish(),
        'C' => {
            for n in 0..=MAX_LISTED_IDS {
                builder.case(case(&format!("broken{n}"), Outcome::Failed));
            }
            return builder.finish();
        }
        other => panic!("no such letter: {other}"),
    };
    builder.case(case("test_it", outcome));
    builder.finish()
}

struct Build {
    number: u64,
    commit: String,
    on_default_branch: bool,
    tests: Option<TestsInBuild>,
}

/// Builds newest first, one a letter (as [`results`] reads it, or `-`: no test results),
/// numbered down to 1, each of its own commit `cN`.
fn builds(on_default_branch: bool, letters: &str) -> Vec<Build> {
    let count = letters.chars().count() as u64;
    letters
        .chars()
        .zip((1..=count).rev())
        .map(|(letter, number)| Build {
            number,
            commit: format!("c{number}"),
            on_default_branch,
            tests: (letter != '-').then(|| summarize(&results(letter))),
        })
        .collect()
}

fn main_branch(letters: &str) -> Vec<Build> {
    builds(true, letters)
}

fn pull_requests(letters: &str) -> Vec<Build> {
    builds(false, letters)
}

fn points(builds: &[Build]) -> Vec<HistoryPoint<'_>> {
    builds
        .iter()
        .map(|build| HistoryPoint {
            number: build.number,
            commit: Some(&build.commit),
            on_default_branch: build.on_default_branch,
            tests: build.tests.as_ref(),
        })
        .collect()
}

fn judged(builds: &[Build]) -> Option<FlakyReason> {
    judge(T, &points(builds))
}

#[test]
fn a_history_gives_the_test_s_status_in_each_build() {
    let job = pull_requests("FERPSAC-");
    let statuses: Vec<(u64, TestStatus)> = history(T, &points(&job))
        .into_iter()
        .map(|point| (point.number, point.status))
        .collect();
    use TestStatus::*;
    assert_eq!(
        statuses,
        [
            (8, Failed),
            (7, Failed),
            (6, Flaky),
            (5, NotFailing),
            (4, NotFailing),
            (3, NotFailing),
            (2, Unknown),
            (1, Unknown),
        ]
    );
}

#[test]
fn a_test_that_passed_on_a_rerun_is_flaky() {
    let job = pull_requests("PRP");
    assert_eq!(judged(&job), Some(FlakyReason::PassedOnRerun { build: 2 }));
    assert_eq!(judged(&pull_requests("PPP")), None);
    let mut another_test = pull_requests("PPP");
    another_test[1].tests = Some(summarize(&{
        let mut builder = ResultsBuilder::new();
        builder.case(case("test_it", Outcome::Passed));
        builder.case(case("other", Outcome::Flaky));
        builder.finish()
    }));
    assert_eq!(judged(&another_test), None, "another test's rerun");
}

#[test]
fn a_rerun_counts_within_the_newest_builds_with_results_only() {
    let at_the_edge = format!("{}R", "P".repeat(EVIDENCE_BUILDS - 1));
    assert_eq!(
        judged(&pull_requests(&at_the_edge)),
        Some(FlakyReason::PassedOnRerun { build: 1 })
    );
    let past_it = format!("{}R", "P".repeat(EVIDENCE_BUILDS));
    assert_eq!(judged(&pull_requests(&past_it)), None);
    let behind_builds_without_results = format!("{}{}R", "-".repeat(500), "P".repeat(10));
    assert_eq!(
        judged(&pull_requests(&behind_builds_without_results)),
        Some(FlakyReason::PassedOnRerun { build: 1 }),
        "builds without results are skipped"
    );
}

/// Builds from letters where builds `a` and `b` built the same commit.
fn with_same_commit(letters: &str, a: u64, b: u64) -> Vec<Build> {
    let mut job = pull_requests(letters);
    for build in &mut job {
        if build.number == b {
            build.commit = format!("c{a}");
        }
    }
    job
}

#[test]
fn a_test_that_failed_and_did_not_fail_on_the_same_commit_is_flaky() {
    let same_commit = |failed, not_failed, commit: &str| FlakyReason::SameCommit {
        failed,
        not_failed,
        commit: commit.into(),
    };
    assert_eq!(
        judged(&with_same_commit("PFP", 2, 1)),
        Some(same_commit(2, 1, "c2"))
    );
    assert_eq!(
        judged(&with_same_commit("PFP", 3, 2)),
        Some(same_commit(2, 3, "c3")),
        "the pass may come after the failure"
    );
    assert_eq!(
        judged(&with_same_commit("FEP", 3, 1)),
        Some(same_commit(3, 1, "c3")),
        "the newest failure that has a twin"
    );
    assert_eq!(
        judged(&with_same_commit("F-P", 3, 1)),
        Some(same_commit(3, 1, "c3")),
        "a build without results between them is skipped"
    );
}

#[test]
fn a_failure_fixed_by_another_commit_or_repeated_on_the_same_one_is_not_flaky() {
    assert_eq!(judged(&pull_requests("PFP")), None, "failed once, fixed");
    assert_eq!(judged(&pull_requests("FFFFPPP")), None, "broken since");
    assert_eq!(
        judged(&with_same_commit("FFP", 3, 2)),
        None,
        "failed again on a rerun"
    );
    assert_eq!(
        judged(&with_same_commit("F-P", 3, 2)),
        None,
        "its twin has no test results"
    );
    assert_eq!(
        judged(&with_same_commit("FCP", 3, 2)),
        None,
        "its twin's lists were cut: it may have failed there"
    );
    let mut no_commits = pull_requests("FP");
    let mut history = points(&no_commits);
    for point in &mut history {
        point.commit = None;
    }
    assert_eq!(judge(T, &history), None, "commits unknown");
    no_commits[0].commit = "c1".into();
    assert!(judged(&no_commits).is_some());
}

#[test]
fn a_test_that_flips_on_the_default_branch_is_flaky() {
    assert_eq!(
        judged(&main_branch("FPFPF")),
        Some(FlakyReason::Flips { flips: 4, runs: 5 })
    );
    assert_eq!(
        judged(&main_branch("F-PCFPEP")),
        Some(FlakyReason::Flips { flips: 5, runs: 6 }),
        "builds without results or with cut lists are skipped"
    );
    let runs = |flips: usize, runs: usize| {
        // Ends passing, as the runs before it.
        let flipping: String = (0..=flips)
            .map(|at| {
                if (flips - at).is_multiple_of(2) {
                    'P'
                } else {
                    'F'
                }
            })
            .collect();
        main_branch(&format!("{flipping}{}", "P".repeat(runs - flips - 1)))
    };
    assert_eq!(
        judged(&runs(5, 45)),
        Some(FlakyReason::Flips { flips: 5, runs: 45 }),
        "5 flips over 44 changes: 11 %"
    );
    assert_eq!(judged(&runs(4, 45)), None, "4 flips over 44 changes: 9 %");
}

#[test]
fn a_break_a_fix_or_a_second_break_on_the_default_branch_is_not_flaky() {
    assert_eq!(judged(&main_branch("FFFFFPPPPP")), None, "broken since");
    assert_eq!(judged(&main_branch("PPFFPP")), None, "broken, fixed");
    assert_eq!(judged(&main_branch("FPFP")), None, "three flips");
    assert_eq!(
        judged(&pull_requests("FPFPF")),
        None,
        "pull requests are not the default branch"
    );
    let long_ago = format!("{}FPFPF", "P".repeat(FLIP_RUNS));
    assert_eq!(judged(&main_branch(&long_ago)), None, "flips long ago");
}

#[test]
fn a_test_is_judged_over_a_thousand_builds() {
    // 940 pull requests where it passed, then 60 builds of the default branch where it
    // failed every other time: the flips are found behind all of them.
    let mut job = pull_requests(&"P".repeat(940));
    let flipping = main_branch(&"FP".repeat(30));
    job.extend(flipping.into_iter().map(|mut build| {
        build.commit = format!("main{}", build.number);
        build
    }));
    for (build, number) in job.iter_mut().zip((1..=1_000).rev()) {
        build.number = number;
    }
    let history_points = points(&job);
    assert_eq!(history_points.len(), 1_000);
    assert_eq!(
        judge(T, &history_points),
        Some(FlakyReason::Flips {
            flips: FLIP_RUNS as u32 - 1,
            runs: FLIP_RUNS as u32
        })
    );
    assert_eq!(judge("pkg::other", &history_points), None);
    let statuses = history(T, &history_points);
    assert_eq!(statuses.len(), 1_000);
    assert_eq!(statuses[940].status, TestStatus::Failed);
}

#[test]
fn a_reason_is_one_sentence_for_the_page_and_tagged_data_for_the_api() {
    let reasons = [
        FlakyReason::PassedOnRerun { build: 41 },
        FlakyReason::SameCommit {
            failed: 42,
            not_failed: 41,
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
        },
        FlakyReason::Flips { flips: 6, runs: 50 },
    ];
    let sentences: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    assert_eq!(
        sentences,
        [
            "It failed, then passed on a rerun within build #41.",
            "It failed in build #42 and did not fail in build #41, both of commit 0123456789ab.",
            "It flipped between failing and not failing 6 times in its last 50 runs on the \
             default branch.",
        ]
    );
    let json = serde_json::to_string(&reasons[0]).unwrap();
    assert_eq!(json, r#"{"rule":"passed_on_rerun","build":41}"#);
    for reason in reasons {
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(serde_json::from_str::<FlakyReason>(&json).unwrap(), reason);
    }
}

fn ids(found: &[KnownFlaky]) -> Vec<&str> {
    found.iter().map(|flaky| flaky.id.as_str()).collect()
}

#[test]
fn a_build_s_failures_known_flaky_by_the_builds_before_it() {
    let this_build = {
        let mut builder = ResultsBuilder::new();
        builder.case(case("test_it", Outcome::Failed));
        builder.case(case("broken", Outcome::Errored));
        builder.case(case("test_it", Outcome::Failed));
        builder.case(case("passing", Outcome::Passed));
        builder.finish()
    };
    let job = pull_requests("PRPP");
    let found = known_flaky(5, Some("c5"), &this_build, &points(&job));
    assert_eq!(ids(&found), [T], "once, and not the test that broke");
    assert_eq!(found[0].reason, FlakyReason::PassedOnRerun { build: 3 });

    let steady = pull_requests("FPPP");
    assert!(known_flaky(5, Some("c5"), &this_build, &points(&steady)).is_empty());
}

#[test]
fn a_failure_on_a_commit_that_passed_before_is_known_flaky() {
    let this_build = results('F');
    let job = pull_requests("PP");
    let history_points = points(&job);
    assert_eq!(
        known_flaky(3, Some("c2"), &this_build, &history_points)
            .first()
            .map(|flaky| flaky.reason.clone()),
        Some(FlakyReason::SameCommit {
            failed: 3,
            not_failed: 2,
            commit: "c2".into()
        })
    );
    assert!(
        known_flaky(3, Some("c3"), &this_build, &history_points).is_empty(),
        "another commit passed: a real break"
    );
    assert!(known_flaky(3, None, &this_build, &history_points).is_empty());
    let long_ago = pull_requests(&"P".repeat(EVIDENCE_BUILDS + 1));
    let count = long_ago.len() as u64;
    assert!(
        known_flaky(count + 1, Some("c1"), &this_build, &points(&long_ago)).is_empty(),
        "a pass of the same commit more than EVIDENCE_BUILDS builds before"
    );
    assert!(!known_flaky(count + 1, Some("c2"), &this_build, &points(&long_ago)).is_empty());
    let cut = pull_requests("C");
    assert!(
        known_flaky(3, Some("c1"), &this_build, &points(&cut)).is_empty(),
        "it may have failed in the build of the same commit"
    );
}

#[test]
fn a_build_is_not_excused_by_its_own_failure_nor_by_later_builds() {
    // Newest first: a later build (6) where it passed on a rerun, this build (5) where it
    // failed, then the builds before: with this build they flip four times, without it three.
    let this_build = results('F');
    let mut job = main_branch("RFPFPF");
    job[0].on_default_branch = false;
    let history_points = points(&job);
    assert!(
        judge(T, &history_points[1..]).is_some(),
        "its own failure would make the fourth flip"
    );
    assert!(known_flaky(5, Some("c5"), &this_build, &history_points).is_empty());
    assert_eq!(
        ids(&known_flaky(7, Some("c7"), &this_build, &history_points)),
        [T],
        "a build after them all"
    );
}

#[test]
fn the_failures_judged_are_bounded() {
    let mut builder = ResultsBuilder::new();
    for n in 0..MAX_JUDGED_FAILURES + 1 {
        builder.case(case(&format!("t{n}"), Outcome::Failed));
    }
    let this_build = builder.finish();
    let mut before = ResultsBuilder::new();
    for n in 0..MAX_JUDGED_FAILURES + 1 {
        before.case(case(&format!("t{n}"), Outcome::Passed));
    }
    let before = summarize(&before.finish());
    let history_points = [HistoryPoint {
        number: 1,
        commit: Some("c"),
        on_default_branch: false,
        tests: Some(&before),
    }];
    let found = known_flaky(2, Some("c"), &this_build, &history_points);
    assert_eq!(found.len(), MAX_JUDGED_FAILURES);
    assert_eq!(found[0].id, "pkg::t0");
}
