//! One `<testcase>` as it is read: its attributes, the child that decides its outcome, its
//! reruns and output; then the [`TestCase`] it makes.

use crate::location::{find_line_in, find_location};
use crate::model::{Outcome, TestCase};

use super::text::TextBuf;

/// A child of `<testcase>` that says how it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Failure,
    Error,
    Skipped,
    /// `<flakyFailure>`, `<flakyError>`: a run that failed before one passed.
    Flaky,
    /// `<rerunFailure>`: a rerun that failed too.
    RerunFailure,
    /// `<rerunError>`.
    RerunError,
}

impl Verdict {
    pub(crate) fn of(name: &[u8]) -> Option<Verdict> {
        Some(match name {
            b"failure" => Verdict::Failure,
            b"error" => Verdict::Error,
            b"skipped" => Verdict::Skipped,
            b"flakyFailure" | b"flakyError" => Verdict::Flaky,
            b"rerunFailure" => Verdict::RerunFailure,
            b"rerunError" => Verdict::RerunError,
            _ => return None,
        })
    }

    fn outcome(self) -> Outcome {
        match self {
            Verdict::Failure | Verdict::RerunFailure => Outcome::Failed,
            Verdict::Error | Verdict::RerunError => Outcome::Errored,
            Verdict::Skipped => Outcome::Skipped,
            Verdict::Flaky => Outcome::Flaky,
        }
    }

    /// One more run of the case that did not pass (it was run again after it).
    fn is_rerun(self) -> bool {
        matches!(
            self,
            Verdict::Flaky | Verdict::RerunFailure | Verdict::RerunError
        )
    }
}

/// The child that decides the case's outcome so far, with its message and text.
struct Decided {
    outcome: Outcome,
    message: Option<String>,
    kind: Option<String>,
    details: TextBuf,
}

/// A `<testcase>` being read.
pub(crate) struct CaseDraft {
    case: TestCase,
    decided: Option<Decided>,
    output: TextBuf,
    text_limit: usize,
}

impl CaseDraft {
    /// A case with its attributes (already cut to the text limit).
    pub(crate) fn new(case: TestCase, text_limit: usize) -> Self {
        CaseDraft {
            case,
            decided: None,
            output: TextBuf::new(text_limit),
            text_limit,
        }
    }

    /// A child like `<failure message=… type=…>` opens. The case takes the outcome that
    /// comes first in [`Outcome`]'s order (failed, errored, flaky, skipped) among its
    /// children, the first such child's when several give it. Whether this child is now
    /// the deciding one (its text is then its details).
    pub(crate) fn verdict(
        &mut self,
        verdict: Verdict,
        message: Option<String>,
        kind: Option<String>,
    ) -> bool {
        if verdict.is_rerun() {
            self.case.reruns = self.case.reruns.saturating_add(1);
        }
        let outcome = verdict.outcome();
        if self.decided.as_ref().is_some_and(|d| d.outcome <= outcome) {
            return false;
        }
        self.decided = Some(Decided {
            outcome,
            message: message.filter(|m| !m.is_empty()),
            kind: kind.filter(|k| !k.is_empty()),
            details: TextBuf::new(self.text_limit),
        });
        true
    }

    /// Where the deciding child's text goes.
    pub(crate) fn details(&mut self) -> Option<&mut TextBuf> {
        self.decided.as_mut().map(|d| &mut d.details)
    }

    /// Where its `<system-out>` and `<system-err>` go.
    pub(crate) fn output(&mut self) -> &mut TextBuf {
        &mut self.output
    }

    /// The case as read. Its file and line come from its `file` and `line` attributes, else
    /// from the first location in its failure text ([`find_location`]).
    pub(crate) fn finish(self) -> TestCase {
        let mut case = self.case;
        let Some(decided) = self.decided else {
            return case;
        };
        case.outcome = decided.outcome;
        case.message = decided.message;
        case.kind = decided.kind;
        case.details = Some(decided.details.finish()).filter(|d| !d.is_empty());
        case.output = Some(self.output.finish()).filter(|o| !o.trim().is_empty());
        let texts = [&case.details, &case.message, &case.output];
        let texts = texts.iter().filter_map(|t| t.as_deref());
        match case.file.as_deref() {
            Some(file) if case.line.is_none() => {
                case.line = texts.clone().find_map(|t| find_line_in(t, file));
            }
            Some(_) => {}
            None => {
                if let Some(found) = texts.clone().find_map(find_location) {
                    case.file = Some(found.file);
                    case.line = Some(found.line);
                }
            }
        }
        case
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> CaseDraft {
        CaseDraft::new(
            TestCase {
                name: "t".into(),
                ..TestCase::default()
            },
            1024,
        )
    }

    #[test]
    fn the_first_outcome_in_outcomes_order_decides() {
        let mut case = draft();
        assert!(case.verdict(Verdict::Skipped, Some("later".into()), None));
        assert!(case.verdict(Verdict::Failure, Some("first failure".into()), None));
        assert!(!case.verdict(Verdict::Failure, Some("second failure".into()), None));
        assert!(!case.verdict(Verdict::Error, Some("an error".into()), None));
        assert!(!case.verdict(Verdict::RerunFailure, Some("rerun".into()), None));
        let case = case.finish();
        assert_eq!(case.outcome, Outcome::Failed);
        assert_eq!(case.message.as_deref(), Some("first failure"));
        assert_eq!(case.reruns, 1);
    }

    #[test]
    fn only_flaky_runs_make_a_flaky_case() {
        let mut case = draft();
        assert!(case.verdict(Verdict::Flaky, Some("run 1".into()), None));
        assert!(!case.verdict(Verdict::Flaky, Some("run 2".into()), None));
        let case = case.finish();
        assert_eq!((case.outcome, case.reruns), (Outcome::Flaky, 2));
        assert_eq!(case.message.as_deref(), Some("run 1"));
        let mut passed = draft();
        passed.output().push("printed");
        let passed = passed.finish();
        assert_eq!((passed.outcome, passed.output), (Outcome::Passed, None));
    }

    #[test]
    fn a_file_attribute_takes_its_line_from_the_text() {
        let mut case = draft();
        case.case.file = Some("src/x.test.js".into());
        case.verdict(Verdict::Failure, None, None);
        case.details()
            .unwrap()
            .push("at helper (src/util.js:3:1)\nat Object.<anonymous> (/w/src/x.test.js:9:17)");
        let case = case.finish();
        assert_eq!(case.file.as_deref(), Some("src/x.test.js"));
        assert_eq!(case.line, Some(9));
    }
}
