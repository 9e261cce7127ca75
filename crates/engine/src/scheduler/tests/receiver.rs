//! A reporter for the scheduler's tests that writes down what it was told.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use kubeci_results::Counts;

use crate::report::{CommitState, Receipt, Report, ReportError, ReportTarget, Reporter, Reporting};

/// What a [`Receiver`] was told in one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Got {
    pub(super) number: u64,
    pub(super) state: CommitState,
    pub(super) check_run: Option<u64>,
    pub(super) may_have_been_sent: bool,
    pub(super) log_tail: Option<String>,
    /// The counts of the test results it carried, and the tests known flaky.
    pub(super) tests: Option<(Counts, Vec<String>)>,
}

/// A receiver of reports named `name`: what it got, failing the first `failures` calls
/// and every call while `refusing` (counted in `refused`); with `creates`, like a check
/// run: its first report makes an object (`100 + number`).
pub(super) struct Receiver {
    pub(super) name: &'static str,
    pub(super) got: Mutex<Vec<Got>>,
    pub(super) failures: AtomicU32,
    pub(super) refusing: AtomicBool,
    pub(super) refused: AtomicU32,
    pub(super) creates: bool,
}

impl Default for Receiver {
    fn default() -> Receiver {
        Receiver::named(RECEIVER)
    }
}

/// The name of a [`Receiver::default`].
pub(super) const RECEIVER: &str = "receiver";

impl Receiver {
    pub(super) fn named(name: &'static str) -> Receiver {
        Receiver {
            name,
            got: Mutex::default(),
            failures: AtomicU32::new(0),
            refusing: AtomicBool::new(false),
            refused: AtomicU32::new(0),
            creates: false,
        }
    }

    pub(super) fn states(&self) -> Vec<(u64, CommitState)> {
        let got = self.got.lock().unwrap();
        got.iter().map(|g| (g.number, g.state)).collect()
    }
}

impl Reporter for Receiver {
    fn name(&self) -> &str {
        self.name
    }

    fn wants(&self, target: &ReportTarget) -> bool {
        target.commit.is_some()
    }

    fn creates_on_first_report(&self) -> bool {
        self.creates
    }

    fn wants_log_tail(&self) -> bool {
        self.creates
    }

    fn wants_tests(&self) -> bool {
        self.creates
    }

    fn reports_running(&self) -> bool {
        self.creates
    }

    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        Box::pin(async move {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing || self.refusing.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(ReportError {
                    message: "503 from the receiver".into(),
                    retryable: true,
                    retry_after: None,
                });
            }
            let number = report.target.number;
            self.got.lock().unwrap().push(Got {
                number,
                state: report.state,
                check_run: report.before.check_run,
                may_have_been_sent: report.may_have_been_sent,
                log_tail: report.log_tail.map(str::to_owned),
                tests: report
                    .tests
                    .map(|t| (t.counts, report.known_flaky.to_vec())),
            });
            let check_run = self
                .creates
                .then(|| report.before.check_run.unwrap_or(100 + number));
            Ok(Receipt { check_run })
        })
    }
}
