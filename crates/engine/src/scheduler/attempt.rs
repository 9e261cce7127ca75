//! One report step in flight, to one reporter: send (then record what that reporter was
//! sent), or record again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::in_flight::InFlightGuard;
use super::reports::{self, BuildKey, ReportQueue, Step};
use super::{Commands, Workload, WorkloadError, LOG_TAIL_BYTES};
use crate::build::BuildState;
use crate::report::{self, Report, ReportRecord, ReportTarget, Reported, Reporter};

/// One report step in flight: send (then record), or record again.
pub(super) struct ReportAttempt<W> {
    pub(super) key: BuildKey,
    pub(super) target: ReportTarget,
    pub(super) build: BuildState,
    pub(super) finished_at: Option<i64>,
    /// The build was created before this scheduler took the lead.
    pub(super) from_before: bool,
    pub(super) attempts: u32,
    pub(super) workload: Arc<W>,
    pub(super) reporter: Arc<dyn Reporter>,
    /// The reporter's own queue.
    pub(super) reports: Arc<Mutex<ReportQueue>>,
    pub(super) changed: Arc<Notify>,
    /// Counts it as under way until it ends.
    pub(super) _in_flight: InFlightGuard,
}

impl<W: Workload + Commands> ReportAttempt<W> {
    pub(super) async fn run(self, step: Step) {
        let record = match step {
            Step::Send {
                state,
                description,
                before,
                failed_before,
            } => match self.send(state, &description, &before, failed_before).await {
                Some(record) => record,
                None => return,
            },
            Step::Record(record) => record,
        };
        let record = ReportRecord::only(self.reporter.name(), record);
        match self.workload.record_reported(&self.target, &record).await {
            Ok(()) | Err(WorkloadError::Gone) => self.finish(None),
            Err(e) => {
                // Through an outage every build owing a record fails each try: say so for
                // the first tries, then every tenth.
                if self.attempts < 5 || self.attempts.is_multiple_of(10) {
                    tracing::warn!(error = %e, "reported the build, cannot record it yet");
                }
                self.finish(Some(reports::record_retry_delay(self.attempts)));
            }
        }
    }

    /// Sends `state`; what to record then, or `None` when it failed (and is retried).
    async fn send(
        &self,
        state: report::CommitState,
        description: &str,
        before: &Reported,
        failed_before: bool,
    ) -> Option<Reported> {
        let log_tail = if state.is_final() && self.reporter.wants_log_tail() {
            self.workload.log_tail(&self.target, LOG_TAIL_BYTES).await
        } else {
            None
        };
        let tests = if state.is_final() && self.reporter.wants_tests() {
            self.workload.test_results(&self.target).await
        } else {
            None
        };
        let known_flaky = match &tests {
            Some(results) if results.counts.failures() > 0 => {
                self.workload.known_flaky(&self.target, results).await
            }
            _ => Vec::new(),
        };
        let report = Report {
            target: &self.target,
            state,
            description,
            build: &self.build,
            finished_at: self.finished_at,
            before,
            may_have_been_sent: failed_before || self.from_before,
            log_tail: log_tail.as_deref(),
            tests: tests.as_ref(),
            known_flaky: &known_flaky,
        };
        match self.reporter.report(&report).await {
            Ok(receipt) => Some(self.queue().sent(&self.key, state, receipt, before)),
            Err(e) => {
                let delay = report::retry_delay(self.attempts, &e);
                let message = e.retry_after.map_or_else(
                    || e.message.clone(),
                    |after| format!("{} (retry after {} s)", e.message, after.as_secs()),
                );
                tracing::warn!(
                    error = %message,
                    retry_in_s = delay.as_secs(),
                    "cannot report the build's state: retrying"
                );
                self.queue().send_failed(&self.key);
                self.finish(Some(delay));
                None
            }
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, ReportQueue> {
        self.reports.lock().expect("the reports lock")
    }

    /// Ends the attempt: done, or to be retried after `retry`.
    fn finish(&self, retry: Option<Duration>) {
        match retry {
            None => self.queue().done(&self.key),
            Some(delay) => self
                .queue()
                .failed(&self.key, delay, tokio::time::Instant::now()),
        }
        self.changed.notify_one();
    }
}
