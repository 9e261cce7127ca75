//! JUnit XML read as the tools write it (docs/test-reports.md, "Reading JUnit"), streaming:
//! each case is handed out when its `</testcase>` is read, so memory stays bounded whatever
//! the file's size.
//!
//! What is read, from whichever tool wrote it (Maven Surefire and Failsafe, pytest
//! `--junitxml`, go-junit-report and gotestsum, cargo-nextest, jest-junit, PHPUnit):
//!
//! - `<testsuites>` or `<testsuite>` at the root; suites nested in suites (PHPUnit), their
//!   names joined by ` / ` into [`TestCase::suite`];
//! - each `<testcase>`'s `name`, `classname` (PHPUnit's `class` when there is none),
//!   `time`, `file` and `line`;
//! - its outcome, from its children: `<failure>` → [`Outcome::Failed`], `<error>` →
//!   [`Outcome::Errored`], `<skipped>` → [`Outcome::Skipped`], only `<flakyFailure>` or
//!   `<flakyError>` (it passed when run again) → [`Outcome::Flaky`], `<rerunFailure>` and
//!   `<rerunError>` (it failed when run again too) as `<failure>` and `<error>`; none →
//!   [`Outcome::Passed`]. When several appear, the outcome that comes first in
//!   [`Outcome`]'s order wins (failed, errored, flaky, skipped), and the first child that
//!   gives it supplies the `message`, `type` and text (with its `<stackTrace>`); every
//!   flaky and rerun child counts in [`TestCase::reruns`];
//! - its `<system-out>` and `<system-err>`, also those inside its children, in the order
//!   they come, as [`TestCase::output`] of a case that did not pass;
//! - where it failed: [`crate::location`].
//!
//! Properties, suite-level output and attributes not named here are read past. Texts are
//! kept up to [`JunitLimits::max_text_bytes`] each; the rest of a text is read and
//! skipped, never buffered.

mod case;
mod parse;
mod source;
mod text;

pub(crate) use text::cut_to;

use std::io::BufRead;

use crate::error::JunitError;
use crate::model::{ReportFile, ResultsBuilder, TestCase, MAX_TEXT_BYTES};

#[cfg(doc)]
use crate::model::Outcome;

/// How much of a report is read: what keeps a huge or hostile file bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JunitLimits {
    /// Elements open at once (suites, a case, its failure, …).
    pub max_depth: usize,
    /// Cases read from one file; past it the rest is not read.
    pub max_cases: u64,
    /// Bytes kept of one text or attribute value (cut on a character boundary, `…` added).
    pub max_text_bytes: usize,
    /// Bytes of one tag with its attributes (a long `message="…"`); a longer one ends the
    /// reading. Texts between tags are not bounded by it: they are skipped past their limit.
    pub max_tag_bytes: usize,
}

impl Default for JunitLimits {
    /// 64 deep, 1,000,000 cases, [`MAX_TEXT_BYTES`] per text, 1 MiB per tag.
    fn default() -> Self {
        JunitLimits {
            max_depth: 64,
            max_cases: 1_000_000,
            max_text_bytes: MAX_TEXT_BYTES,
            max_tag_bytes: 1024 * 1024,
        }
    }
}

/// Reads the JUnit report `reader` (its path, relative to the build's `workdir`, is
/// `path`), handing each case to `on_case` as soon as it is read.
///
/// On an error the cases handed out before it stand: a file cut short gives the cases
/// before the cut and an error that says where.
pub fn read_junit<R: BufRead>(
    reader: R,
    path: &str,
    limits: &JunitLimits,
    on_case: &mut dyn FnMut(TestCase),
) -> Result<ReportFile, JunitError> {
    let cases = parse::Parser::new(reader, limits).run(on_case)?;
    Ok(ReportFile {
        path: path.to_string(),
        cases,
        error: None,
    })
}

impl ResultsBuilder {
    /// Reads the JUnit report `reader` (at `path`) into these results: its cases, and the
    /// file with the error that stopped its reading, if one did (the cases before it are
    /// kept). The file as recorded.
    pub fn read_junit<R: BufRead>(
        &mut self,
        reader: R,
        path: &str,
        limits: &JunitLimits,
    ) -> ReportFile {
        let mut cases = 0u64;
        let read = read_junit(reader, path, limits, &mut |case| {
            cases += 1;
            self.case(case);
        });
        let file = read.unwrap_or_else(|error| ReportFile {
            path: path.to_string(),
            cases,
            error: Some(error.to_string()),
        });
        self.file(file.clone());
        file
    }
}
