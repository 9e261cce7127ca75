//! What a build leaves behind, as data (issue 30, docs/test-reports.md): the test cases its
//! reports name ([`TestCase`], [`Outcome`]), read from JUnit XML as the tools write it
//! ([`read_junit`]), the results of one build ([`TestResults`], made by a
//! [`ResultsBuilder`] one case at a time, in bounded memory), and their counts. Pure: the
//! engines and the server read and write files; this crate reads any `BufRead` and decides.

mod error;
mod junit;
pub mod location;
mod model;

pub use error::{JunitError, Position};
pub use junit::{read_junit, JunitLimits};
pub use model::{
    CaseLine, Counts, Outcome, ReportFile, ResultsBuilder, TestCase, TestResults,
    MAX_DETAILED_CASES, MAX_TEXT_BYTES, RESULTS_VERSION,
};
