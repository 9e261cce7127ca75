//! What a build left, as the API shows it (issue 30): its test results with the failures
//! its job's history shows flaky, and a test's history over the job's builds.

use kubeci_results::{FlakyReason, KnownFlaky, TestResults, TestStatus};
use serde::Serialize;

/// How many of a job's newest archived builds a test's history reads.
pub const HISTORY_BUILDS: usize = 1_000;

/// A build's test results and which of its failures are known flaky (`tests.json` and
/// `known_flaky`, one JSON object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildTests {
    #[serde(flatten)]
    pub results: TestResults,
    /// Its failed tests that the job's builds before it show flaky, each with why.
    pub known_flaky: Vec<KnownFlaky>,
}

/// One build in a test's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestInBuild {
    pub number: u64,
    pub status: TestStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<jiff::Timestamp>,
}

/// A test's history over a job's newest archived builds (at most [`HISTORY_BUILDS`]),
/// newest first, and whether it is flaky.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestHistory {
    /// The test's id (`CLASSNAME::NAME`).
    pub id: String,
    pub builds: Vec<TestInBuild>,
    /// Why the test is flaky, when its history shows it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaky: Option<FlakyReason>,
    /// [`TestHistory::flaky`] as one sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flaky_because: Option<String>,
}
