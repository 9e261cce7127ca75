//! A build's test results in words, as a check run's title, a commit status and a page say
//! them: `412 passed, 3 failed — 1 known flaky, 2 flaky (passed on rerun), 5 skipped`.
//!
//! Errored cases are said apart from failed ones (`3 failed, 1 errored`): a failure is an
//! assertion that did not hold, an error a test that could not run to its end (a setup
//! that broke, a timeout), and the reports keep them apart. A count of none is left out,
//! but for `passed`.

use std::collections::HashSet;

use crate::model::{Counts, TestResults};

/// How many of the build's failed or errored cases are known flaky: their
/// [`crate::TestCase::id`] is in `known_flaky`.
pub fn known_flaky_failures(results: &TestResults, known_flaky: &[String]) -> u64 {
    if known_flaky.is_empty() {
        return 0;
    }
    let known: HashSet<&str> = known_flaky.iter().map(String::as_str).collect();
    let flaky = results
        .cases
        .iter()
        .filter(|case| case.outcome.is_failure() && known.contains(case.id.as_str()));
    flaky.count() as u64
}

/// `counts` in words; `known_flaky` of the failures are known flaky. `no tests` when there
/// were none.
pub fn counts_text(counts: &Counts, known_flaky: u64) -> String {
    if counts.total() == 0 {
        return "no tests".into();
    }
    let mut parts = vec![format!("{} passed", counts.passed)];
    if counts.failed > 0 {
        parts.push(format!("{} failed", counts.failed));
    }
    if counts.errored > 0 {
        parts.push(format!("{} errored", counts.errored));
    }
    let known_flaky = known_flaky.min(counts.failures());
    if known_flaky > 0 {
        if let Some(last) = parts.last_mut() {
            last.push_str(&format!(" — {known_flaky} known flaky"));
        }
    }
    if counts.flaky > 0 {
        parts.push(format!("{} flaky (passed on rerun)", counts.flaky));
    }
    if counts.skipped > 0 {
        parts.push(format!("{} skipped", counts.skipped));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, ResultsBuilder, TestCase};

    fn counts(passed: u64, failed: u64, errored: u64, flaky: u64, skipped: u64) -> Counts {
        Counts {
            passed,
            failed,
            errored,
            flaky,
            skipped,
        }
    }

    #[test]
    fn counts_read_as_a_person_says_them() {
        assert_eq!(
            counts_text(&counts(412, 3, 0, 0, 5), 0),
            "412 passed, 3 failed, 5 skipped"
        );
        assert_eq!(
            counts_text(&counts(412, 3, 0, 0, 5), 1),
            "412 passed, 3 failed — 1 known flaky, 5 skipped"
        );
        assert_eq!(
            counts_text(&counts(10, 2, 1, 2, 0), 2),
            "10 passed, 2 failed, 1 errored — 2 known flaky, 2 flaky (passed on rerun)"
        );
        assert_eq!(counts_text(&counts(7, 0, 0, 0, 0), 0), "7 passed");
        assert_eq!(counts_text(&counts(0, 0, 0, 0, 0), 0), "no tests");
        assert_eq!(
            counts_text(&counts(1, 1, 0, 0, 0), 5),
            "1 passed, 1 failed — 1 known flaky",
            "never more known flaky than failures"
        );
    }

    #[test]
    fn known_flaky_counts_failed_and_errored_cases_by_id() {
        let mut builder = ResultsBuilder::new();
        for (name, outcome) in [
            ("a", Outcome::Failed),
            ("b", Outcome::Errored),
            ("c", Outcome::Failed),
            ("d", Outcome::Passed),
        ] {
            builder.case(TestCase {
                classname: "pkg".into(),
                name: name.into(),
                outcome,
                ..TestCase::default()
            });
        }
        let results = builder.finish();
        let known = ["pkg::a".to_owned(), "pkg::b".into(), "pkg::d".into()];
        assert_eq!(known_flaky_failures(&results, &known), 2, "d passed");
        assert_eq!(known_flaky_failures(&results, &[]), 0);
    }
}
