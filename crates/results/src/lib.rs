//! What a build leaves behind, as data (issue 30, docs/test-reports.md): the test cases its
//! reports name ([`TestCase`], [`Outcome`]), the results of one build
//! ([`TestResults`], made by a [`ResultsBuilder`] one case at a time, in bounded memory),
//! and their counts, in words ([`counts_text`]), and where a case's file is in the
//! repository ([`repository_path`]). Pure: the engines and the server read and write files;
//! this crate only decides.

mod location;
mod model;
mod text;

pub use location::repository_path;
pub use text::{counts_text, known_flaky_failures};

pub use model::{
    CaseLine, Counts, Outcome, ReportFile, ResultsBuilder, TestCase, TestResults,
    MAX_DETAILED_CASES, MAX_TEXT_BYTES, RESULTS_VERSION,
};
