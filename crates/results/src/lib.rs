//! What a build leaves behind, as data (issue 30, docs/test-reports.md): the test cases its
//! reports name ([`TestCase`], [`Outcome`]), read from JUnit XML as the tools write it
//! ([`read_junit`]), the results of one build ([`TestResults`], made by a
//! [`ResultsBuilder`] one case at a time, in bounded memory), and their counts, in words
//! ([`counts_text`]); where a case's file is in the repository ([`repository_path`]); what a
//! job's index keeps of them ([`TestsInBuild`], [`summarize`]), and the flaky tests found
//! in a job's history ([`history`], [`judge`], [`known_flaky`]). Pure: the engines and the
//! server read and write files; this crate reads any `BufRead` and decides.

mod error;
mod flaky;
mod junit;
pub mod limits;
pub mod location;
mod model;
mod outputs;
mod repo_path;
mod summary;
mod text;

pub use repo_path::repository_path;
pub use text::{counts_text, known_flaky_failures};

pub use error::{JunitError, Position};
pub use flaky::{
    history, judge, known_flaky, BuildStatus, FlakyReason, HistoryPoint, KnownFlaky,
    EVIDENCE_BUILDS, FLIP_RUNS, MAX_FLIP_PERCENT, MAX_JUDGED_FAILURES, MIN_FLIPS,
};
pub use junit::{read_junit, JunitLimits};
pub use model::{
    CaseLine, Counts, Outcome, ReportFile, ResultsBuilder, TestCase, TestResults, CASE_LINE_BYTES,
    MAX_DETAILED_CASES, MAX_DETAIL_BYTES, MAX_LISTED_CASE_BYTES, MAX_TEXT_BYTES, RESULTS_VERSION,
    SHORT_TEXT_BYTES,
};
pub use outputs::{ArtifactFile, BuildOutputs, RefusedFile, OUTPUTS_VERSION};
pub use summary::{
    index_id, summarize, TestStatus, TestsInBuild, MAX_ID_BYTES, MAX_LISTED_BYTES, MAX_LISTED_IDS,
};
