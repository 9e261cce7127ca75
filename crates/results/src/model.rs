//! The test results of one build.

use serde::{Deserialize, Serialize};

/// The version of [`TestResults`]' JSON (the archive's `tests.json`) this kubeci writes and
/// reads.
pub const RESULTS_VERSION: u32 = 1;

/// How many non-passing cases keep their message, details and output; past it a case keeps
/// its name and outcome only (a build that fails 100,000 tests still has a bounded record).
pub const MAX_DETAILED_CASES: usize = 1_000;

/// The most bytes of message, details and output kept for a whole build: past it, a case's
/// texts keep their first [`SHORT_TEXT_BYTES`] only, so a build failing a thousand tests
/// with huge outputs still reads in bounded memory (about 5 MiB of texts at most).
pub const MAX_DETAIL_BYTES: usize = 4 * 1024 * 1024;

/// What each text of a case keeps once [`MAX_DETAIL_BYTES`] are kept.
pub const SHORT_TEXT_BYTES: usize = 256;

/// How much of one message, details or output text is kept (bytes, cut on a character
/// boundary, with `…` added).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// How many bytes the list of every case ([`TestResults::cases`]) holds at most: each case
/// costs its id and [`CASE_LINE_BYTES`]. Past it a case is counted, not listed, and
/// [`TestResults::cases_cut`] says so: a suite's name is the id of each case of it that has
/// no class name, so a report of tiny cases in a long-named suite would otherwise hold a
/// copy of that name per case, and `tests.json` must stay readable (the archive reads no
/// object over 32 MiB). 16 MiB lists 200,000 cases with ids of 40 bytes.
pub const MAX_LISTED_CASE_BYTES: usize = 16 * 1024 * 1024;

/// What one listed case costs besides its id: its outcome and time, as JSON writes them.
pub const CASE_LINE_BYTES: usize = 48;

/// What became of one test case. Ordered as a page shows them: failures first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A `<failure>`: an assertion did not hold.
    Failed,
    /// An `<error>`: the test could not run to its end (a panic, an exception outside the
    /// assertion, a timeout).
    Errored,
    /// Passed after failing within the same run (`<flakyFailure>`, `<flakyError>`), as
    /// nextest and Surefire rerun it.
    Flaky,
    /// `<skipped>`.
    Skipped,
    #[default]
    Passed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failed => "failed",
            Outcome::Errored => "errored",
            Outcome::Flaky => "flaky",
            Outcome::Skipped => "skipped",
            Outcome::Passed => "passed",
        }
    }

    /// Failed or errored: the case counts against the build.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Errored)
    }
}

/// One test case as its report gives it, with the details of a case that did not pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestCase {
    /// The `<testsuite>` names from the outermost, joined by ` / ` (suites may nest).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub suite: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub classname: String,
    pub name: String,
    pub outcome: Outcome,
    /// Seconds, as the report's `time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// The `message` of its failure, error or skip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The failure's `type` (an exception class, `AssertionError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The failure's text (a stack trace, a diff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// Its `system-out` then `system-err`, for a case that did not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The source file and line the report (`file`, `line`) or its stack trace names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// How many times it failed before its outcome (`<flakyFailure>`, `<rerunFailure>`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reruns: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TestCase {
    /// The test's name across builds: `CLASSNAME::NAME` (or `SUITE::NAME` when the report
    /// gives no class name). History and flaky decisions key on it.
    pub fn id(&self) -> String {
        let scope = if self.classname.is_empty() {
            &self.suite
        } else {
            &self.classname
        };
        if scope.is_empty() {
            self.name.clone()
        } else {
            format!("{scope}::{}", self.name)
        }
    }
}

/// Every case of a build in a line: its id, outcome and time. A build's passing cases are
/// kept this way only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseLine {
    pub id: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
}

/// How many cases had each outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub errored: u64,
    pub flaky: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        let count = match outcome {
            Outcome::Passed => &mut self.passed,
            Outcome::Failed => &mut self.failed,
            Outcome::Errored => &mut self.errored,
            Outcome::Flaky => &mut self.flaky,
            Outcome::Skipped => &mut self.skipped,
        };
        *count = count.saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        [
            self.passed,
            self.failed,
            self.errored,
            self.flaky,
            self.skipped,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// Failed and errored cases.
    pub fn failures(&self) -> u64 {
        self.failed.saturating_add(self.errored)
    }
}

/// One report file the build declared and what came of reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportFile {
    /// Its path relative to the build's `workdir`.
    pub path: String,
    /// How many cases it gave.
    pub cases: u64,
    /// Why it gave no cases, or not all of them (it is not JUnit, it is cut short, it is
    /// over the limit): shown on the build's page beside its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A build's test results: the archive's `tests.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestResults {
    pub version: u32,
    pub counts: Counts,
    pub files: Vec<ReportFile>,
    /// The cases that did not pass, failures first, with their details (the first
    /// [`MAX_DETAILED_CASES`] of them).
    pub detailed: Vec<TestCase>,
    /// Every case, in report order, until [`MAX_LISTED_CASE_BYTES`].
    pub cases: Vec<CaseLine>,
    /// Cases past [`MAX_LISTED_CASE_BYTES`] were counted but not listed in `cases`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cases_cut: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Makes a build's [`TestResults`] one case at a time.
#[derive(Debug, Default)]
pub struct ResultsBuilder {
    results: TestResults,
    /// Bytes of message, details and output kept so far.
    detail_bytes: usize,
    /// Bytes the list of every case holds so far (see [`MAX_LISTED_CASE_BYTES`]).
    listed_bytes: usize,
}

impl ResultsBuilder {
    pub fn new() -> Self {
        ResultsBuilder {
            results: TestResults {
                version: RESULTS_VERSION,
                ..TestResults::default()
            },
            detail_bytes: 0,
            listed_bytes: 0,
        }
    }

    /// Adds one case: counted, listed within [`MAX_LISTED_CASE_BYTES`], and its details
    /// kept if it did not pass and fewer than [`MAX_DETAILED_CASES`] are kept yet.
    pub fn case(&mut self, case: TestCase) {
        self.results.counts.add(case.outcome);
        let id = case.id();
        let cost = id.len() + CASE_LINE_BYTES;
        if self.results.cases_cut || self.listed_bytes + cost > MAX_LISTED_CASE_BYTES {
            self.results.cases_cut = true;
        } else {
            self.listed_bytes += cost;
            self.results.cases.push(CaseLine {
                id,
                outcome: case.outcome,
                time: case.time,
            });
        }
        if case.outcome != Outcome::Passed && self.results.detailed.len() < MAX_DETAILED_CASES {
            let mut case = case;
            let short = self.detail_bytes >= MAX_DETAIL_BYTES;
            for text in [&mut case.message, &mut case.details, &mut case.output]
                .into_iter()
                .flatten()
            {
                if short && text.len() > SHORT_TEXT_BYTES {
                    *text = crate::junit::cut_to(text, SHORT_TEXT_BYTES);
                }
                self.detail_bytes += text.len();
            }
            self.results.detailed.push(case);
        }
    }

    /// Records a report file read (or not).
    pub fn file(&mut self, file: ReportFile) {
        self.results.files.push(file);
    }

    /// The results, non-passing cases failures first (stable: report order within an
    /// outcome).
    pub fn finish(mut self) -> TestResults {
        self.results.detailed.sort_by_key(|case| case.outcome);
        self.results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(classname: &str, name: &str, outcome: Outcome) -> TestCase {
        TestCase {
            classname: classname.into(),
            name: name.into(),
            outcome,
            ..TestCase::default()
        }
    }

    #[test]
    fn a_case_is_named_by_its_class_else_its_suite() {
        assert_eq!(
            case("pkg.Mod", "test_a", Outcome::Passed).id(),
            "pkg.Mod::test_a"
        );
        let mut in_suite = case("", "TestB", Outcome::Passed);
        in_suite.suite = "example.com/pkg".into();
        assert_eq!(in_suite.id(), "example.com/pkg::TestB");
        assert_eq!(case("", "bare", Outcome::Passed).id(), "bare");
    }

    #[test]
    fn failures_come_first_and_only_non_passing_cases_keep_details() {
        let mut builder = ResultsBuilder::new();
        builder.case(case("c", "skipped", Outcome::Skipped));
        builder.case(case("c", "passed", Outcome::Passed));
        builder.case(case("c", "errored", Outcome::Errored));
        builder.case(case("c", "failed", Outcome::Failed));
        let results = builder.finish();
        let detailed: Vec<_> = results.detailed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(detailed, ["failed", "errored", "skipped"]);
        assert_eq!(results.cases.len(), 4);
        assert_eq!(results.counts.total(), 4);
        assert_eq!(results.counts.failures(), 2);
    }

    #[test]
    fn past_the_builds_bound_of_texts_each_case_keeps_a_short_one() {
        let mut builder = ResultsBuilder::new();
        let huge = "x".repeat(MAX_TEXT_BYTES);
        for n in 0..MAX_DETAILED_CASES {
            let mut failed = case("c", &format!("t{n}"), Outcome::Failed);
            failed.details = Some(huge.clone());
            failed.output = Some(huge.clone());
            builder.case(failed);
        }
        let results = builder.finish();
        let kept: usize = (results.detailed.iter())
            .flat_map(|c| [&c.message, &c.details, &c.output])
            .flatten()
            .map(String::len)
            .sum();
        assert!(
            kept <= MAX_DETAIL_BYTES
                + 2 * MAX_TEXT_BYTES
                + MAX_DETAILED_CASES * 2 * (SHORT_TEXT_BYTES + 3),
            "{kept} bytes of texts kept"
        );
        let last = results.detailed.last().unwrap();
        assert!(
            last.details.as_ref().unwrap().ends_with('…'),
            "cut, and said so"
        );
        assert_eq!(
            results.detailed.len(),
            MAX_DETAILED_CASES,
            "every failure still listed"
        );
    }

    #[test]
    fn details_stop_at_the_bound_but_every_case_is_counted() {
        let mut builder = ResultsBuilder::new();
        for n in 0..MAX_DETAILED_CASES + 5 {
            builder.case(case("c", &format!("t{n}"), Outcome::Failed));
        }
        let results = builder.finish();
        assert_eq!(results.detailed.len(), MAX_DETAILED_CASES);
        assert_eq!(results.counts.failed, (MAX_DETAILED_CASES + 5) as u64);
    }

    #[test]
    fn results_read_back_as_written() {
        let mut builder = ResultsBuilder::new();
        let mut failed = case("c", "t", Outcome::Failed);
        failed.message = Some("expected 1, got 2".into());
        failed.line = Some(12);
        builder.case(failed);
        let results = builder.finish();
        let json = serde_json::to_string(&results).unwrap();
        assert!(json.contains(r#""outcome":"failed""#), "{json}");
        let back: TestResults = serde_json::from_str(&json).unwrap();
        assert_eq!(back, results);
    }
}
