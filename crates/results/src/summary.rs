//! What a job's archive index keeps of one build's test results ([`TestsInBuild`]): its
//! counts and the names of its failing and flaky cases, small enough to sit in every index
//! entry, so that a test's history over a job's last 1,000 builds is read from the index's
//! chunks, not from 1,000 `tests.json`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::model::{Counts, Outcome, TestResults};

/// How many ids one list of a [`TestsInBuild`] names at most (a build that fails more tests
/// than this is failing for a reason of its own; the index still records its counts).
pub const MAX_LISTED_IDS: usize = 50;

/// How long an id in a [`TestsInBuild`] is at most, in bytes: a longer one is cut on a
/// character boundary and ends with `…` and a hash of the whole id ([`index_id`]), so two
/// long ids that share their first bytes stay apart.
pub const MAX_ID_BYTES: usize = 256;

/// How many bytes of ids (as JSON writes them, escapes included) the two lists of one
/// [`TestsInBuild`] hold together at most: an index chunk of 100 builds stays under half a
/// megabyte even when every build fails fifty tests with long names (the chunk is read and
/// written again with every build).
pub const MAX_LISTED_BYTES: usize = 4 * 1024;

/// One build's test results as its job's index keeps them: the counts, and the ids
/// ([`index_id`] of [`crate::TestCase::id`]) of its failed or errored cases and of its
/// cases that passed on a rerun ([`Outcome::Flaky`]), each list sorted, without duplicates,
/// and bounded ([`MAX_LISTED_IDS`], [`MAX_LISTED_BYTES`]). `cut` says a list was not
/// complete; a case named in neither list then may have failed.
///
/// JSON: `{"counts":{…},"failed":["…"],"flaky":["…"],"cut":true}`, empty lists and a false
/// `cut` left out. Read back through the same bounds, whatever the JSON holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TestsInBuildJson")]
pub struct TestsInBuild {
    counts: Counts,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    flaky: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    cut: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// [`TestsInBuild`] as its JSON says, before the bounds are applied.
#[derive(Deserialize)]
struct TestsInBuildJson {
    #[serde(default)]
    counts: Counts,
    #[serde(default)]
    failed: Vec<String>,
    #[serde(default)]
    flaky: Vec<String>,
    #[serde(default)]
    cut: bool,
}

impl From<TestsInBuildJson> for TestsInBuild {
    fn from(json: TestsInBuildJson) -> Self {
        let mut lists = Lists::default();
        let failed = lists.list(json.failed.iter().map(String::as_str));
        let flaky = lists.list(json.flaky.iter().map(String::as_str));
        TestsInBuild {
            counts: json.counts,
            failed,
            flaky,
            cut: json.cut || lists.cut,
        }
    }
}

/// Fills the two lists of a [`TestsInBuild`] within their bounds.
#[derive(Default)]
struct Lists {
    bytes: usize,
    cut: bool,
}

impl Lists {
    /// The ids given, as index ids, first ones first until a bound is reached (then `cut`),
    /// duplicates dropped, sorted (so a look-up is a binary search).
    fn list<'a>(&mut self, ids: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut kept: Vec<String> = Vec::new();
        for id in ids {
            let key = index_id(id);
            if kept.iter().any(|listed| *listed == key) {
                continue;
            }
            let bytes = json_len(&key);
            if kept.len() == MAX_LISTED_IDS || self.bytes + bytes > MAX_LISTED_BYTES {
                self.cut = true;
                break;
            }
            self.bytes += bytes;
            kept.push(key.into_owned());
        }
        kept.sort_unstable();
        kept
    }
}

/// How many bytes `id` takes in a JSON string, at most (a control character is written as
/// `\u00XX`, a quote or a backslash escaped).
fn json_len(id: &str) -> usize {
    id.chars()
        .map(|c| match c {
            '"' | '\\' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// What the index keeps of a build's results: its counts, its failed or errored cases and
/// its cases that passed on a rerun, in report order until a bound is reached.
pub fn summarize(results: &TestResults) -> TestsInBuild {
    let mut lists = Lists::default();
    let failed = lists.list(
        results
            .cases
            .iter()
            .filter(|case| case.outcome.is_failure())
            .map(|case| case.id.as_str()),
    );
    let flaky = lists.list(
        results
            .cases
            .iter()
            .filter(|case| case.outcome == Outcome::Flaky)
            .map(|case| case.id.as_str()),
    );
    TestsInBuild {
        counts: results.counts,
        failed,
        flaky,
        cut: lists.cut || results.cases_cut,
    }
}

/// A test's id as a [`TestsInBuild`] names it: the id itself up to [`MAX_ID_BYTES`];
/// a longer one cut on a character boundary, then `…` and the 64-bit FNV-1a hash of the
/// whole id in 16 hex digits (a hash fixed for good: it is in archived indexes).
pub fn index_id(id: &str) -> Cow<'_, str> {
    if id.len() <= MAX_ID_BYTES {
        return Cow::Borrowed(id);
    }
    const MARK: &str = "…";
    let mut end = MAX_ID_BYTES - MARK.len() - 16;
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{MARK}{:016x}", &id[..end], fnv1a(id.as_bytes())))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a job's index tells of one test in one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// It failed or errored.
    Failed,
    /// It passed on a rerun within the build ([`Outcome::Flaky`]).
    Flaky,
    /// The build has test results, its lists are complete and do not name the test: it
    /// passed, was skipped, or was not in the build's reports at all — the index does not
    /// tell these apart (only the build's `tests.json` does).
    NotFailing,
    /// The build has no test results (none declared, none read, no case in them), or its
    /// lists were cut and do not name the test.
    Unknown,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Failed => "failed",
            TestStatus::Flaky => "flaky",
            TestStatus::NotFailing => "not_failing",
            TestStatus::Unknown => "unknown",
        }
    }
}

impl TestsInBuild {
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The index ids of its failed or errored cases, sorted.
    pub fn failed(&self) -> &[String] {
        &self.failed
    }

    /// The index ids of its cases that passed on a rerun, sorted.
    pub fn flaky(&self) -> &[String] {
        &self.flaky
    }

    /// A list was cut at a bound: a case named in neither list may have failed.
    pub fn cut(&self) -> bool {
        self.cut
    }

    /// What this build's entry tells of the test named `id` ([`crate::TestCase::id`]).
    pub fn status_of(&self, id: &str) -> TestStatus {
        self.status_of_key(&index_id(id))
    }

    /// [`Self::status_of`] for an id already made an [`index_id`]: two binary searches, no
    /// allocation.
    pub(crate) fn status_of_key(&self, key: &str) -> TestStatus {
        let named = |list: &[String]| list.binary_search_by(|id| id.as_str().cmp(key)).is_ok();
        if named(&self.failed) {
            TestStatus::Failed
        } else if named(&self.flaky) {
            TestStatus::Flaky
        } else if self.cut || self.counts.total() == 0 {
            TestStatus::Unknown
        } else {
            TestStatus::NotFailing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResultsBuilder, TestCase};

    fn results(cases: &[(&str, Outcome)]) -> TestResults {
        let mut builder = ResultsBuilder::new();
        for (name, outcome) in cases {
            builder.case(TestCase {
                classname: "pkg".into(),
                name: (*name).into(),
                outcome: *outcome,
                ..TestCase::default()
            });
        }
        builder.finish()
    }

    #[test]
    fn a_build_is_summarized_by_its_counts_and_its_failing_and_flaky_cases() {
        let summary = summarize(&results(&[
            ("b_failed", Outcome::Failed),
            ("passed", Outcome::Passed),
            ("a_errored", Outcome::Errored),
            ("rerun", Outcome::Flaky),
            ("skipped", Outcome::Skipped),
            ("b_failed", Outcome::Failed),
        ]));
        assert_eq!(summary.failed(), ["pkg::a_errored", "pkg::b_failed"]);
        assert_eq!(summary.flaky(), ["pkg::rerun"]);
        assert!(!summary.cut());
        assert_eq!(summary.counts().failures(), 3);
        assert_eq!(summary.status_of("pkg::b_failed"), TestStatus::Failed);
        assert_eq!(summary.status_of("pkg::a_errored"), TestStatus::Failed);
        assert_eq!(summary.status_of("pkg::rerun"), TestStatus::Flaky);
        for not_failing in ["pkg::passed", "pkg::skipped", "pkg::not_in_the_build"] {
            assert_eq!(summary.status_of(not_failing), TestStatus::NotFailing);
        }
    }

    #[test]
    fn its_json_is_small_and_reads_back() {
        let green = summarize(&results(&[("a", Outcome::Passed), ("b", Outcome::Passed)]));
        let json = serde_json::to_string(&green).unwrap();
        assert_eq!(
            json,
            r#"{"counts":{"passed":2,"failed":0,"errored":0,"flaky":0,"skipped":0}}"#
        );
        let red = summarize(&results(&[("a", Outcome::Failed), ("b", Outcome::Flaky)]));
        let json = serde_json::to_string(&red).unwrap();
        assert!(
            json.ends_with(r#""failed":["pkg::a"],"flaky":["pkg::b"]}"#),
            "{json}"
        );
        for summary in [green, red] {
            let json = serde_json::to_string(&summary).unwrap();
            assert_eq!(
                serde_json::from_str::<TestsInBuild>(&json).unwrap(),
                summary
            );
        }
    }

    #[test]
    fn many_failures_are_cut_and_an_unnamed_test_is_then_unknown() {
        let names: Vec<String> = (0..MAX_LISTED_IDS + 1)
            .map(|n| format!("t{n:03}"))
            .collect();
        let mut cases: Vec<(&str, Outcome)> = names
            .iter()
            .map(|n| (n.as_str(), Outcome::Failed))
            .collect();
        cases.push(("passed", Outcome::Passed));
        let summary = summarize(&results(&cases));
        assert_eq!(summary.failed().len(), MAX_LISTED_IDS);
        assert!(summary.cut());
        assert_eq!(summary.status_of("pkg::t000"), TestStatus::Failed);
        let last = format!("pkg::{}", names[MAX_LISTED_IDS]);
        assert_eq!(summary.status_of(&last), TestStatus::Unknown);
        assert_eq!(summary.status_of("pkg::passed"), TestStatus::Unknown);

        let exactly_full = summarize(&results(&cases[1..]));
        assert!(!exactly_full.cut());
        assert_eq!(
            exactly_full.status_of("pkg::passed"),
            TestStatus::NotFailing
        );
    }

    #[test]
    fn the_lists_hold_a_bounded_number_of_bytes() {
        let long: Vec<String> = (0..40)
            .map(|n| format!("{n:02}{}", "x".repeat(200)))
            .collect();
        let cases: Vec<(&str, Outcome)> =
            long.iter().map(|n| (n.as_str(), Outcome::Flaky)).collect();
        let summary = summarize(&results(&cases));
        let bytes: usize = summary.flaky().iter().map(String::len).sum();
        assert!(bytes <= MAX_LISTED_BYTES, "{bytes}");
        assert!(summary.flaky().len() < 40);
        assert!(summary.cut());
        assert!(serde_json::to_string(&summary).unwrap().len() < MAX_LISTED_BYTES + 400);

        let escaped: Vec<String> = (0..40)
            .map(|n| format!("{n:02}{}", "\u{1}".repeat(100)))
            .collect();
        let cases: Vec<(&str, Outcome)> = escaped
            .iter()
            .map(|n| (n.as_str(), Outcome::Failed))
            .collect();
        let summary = summarize(&results(&cases));
        let json = serde_json::to_string(&summary).unwrap();
        assert!(json.len() < MAX_LISTED_BYTES + 400, "{}", json.len());
        assert_eq!(
            summary.failed().len(),
            6,
            "six ids of 6 × 100 bytes as JSON"
        );
    }

    #[test]
    fn a_long_id_is_cut_on_a_character_boundary_and_stays_apart_from_its_neighbours() {
        let stem = "é".repeat(MAX_ID_BYTES);
        let (one, two) = (format!("{stem}1"), format!("{stem}2"));
        let (key_one, key_two) = (index_id(&one), index_id(&two));
        assert!(key_one.len() <= MAX_ID_BYTES, "{}", key_one.len());
        assert!(key_one.starts_with("éé") && key_one.contains('…'));
        assert_ne!(key_one, key_two);
        assert_eq!(index_id(&one), key_one, "the same id gives the same key");
        assert_eq!(index_id("pkg::short"), "pkg::short");
        assert_eq!(
            fnv1a(b"a"),
            0xaf63_dc4c_8601_ec8c,
            "FNV-1a's published value"
        );

        let summary = summarize(&results(&[(&one, Outcome::Failed)]));
        assert_eq!(
            summary.status_of(&format!("pkg::{one}")),
            TestStatus::Failed
        );
        assert_eq!(
            summary.status_of(&format!("pkg::{two}")),
            TestStatus::NotFailing
        );
    }

    #[test]
    fn a_build_without_cases_tells_nothing() {
        let empty = summarize(&results(&[]));
        assert_eq!(empty.status_of("pkg::a"), TestStatus::Unknown);
    }

    #[test]
    fn json_beyond_the_bounds_is_read_within_them() {
        let many: Vec<String> = (0..MAX_LISTED_IDS + 10).map(|n| format!("t{n}")).collect();
        let json = serde_json::json!({
            "counts": {"passed": 1, "failed": 60, "errored": 0, "flaky": 0, "skipped": 0},
            "failed": many,
            "flaky": ["b", "a", "b"],
        });
        let summary: TestsInBuild = serde_json::from_value(json).unwrap();
        assert_eq!(summary.failed().len(), MAX_LISTED_IDS);
        assert!(summary.cut());
        assert_eq!(summary.flaky(), ["a", "b"], "sorted, without duplicates");
        assert_eq!(summary.status_of("a"), TestStatus::Flaky);
    }
}
