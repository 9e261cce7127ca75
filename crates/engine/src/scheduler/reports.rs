//! The report queue: which report each build owes next, which are in flight, which wait
//! for a retry — a plain state machine over explicit instants, driven by the scheduler.
//!
//! A report is sent, then recorded on the build (through the workload). Once sent, it is
//! never sent again from here: until the workload's view shows it recorded (a watch cache
//! lags behind its own writes), the queue remembers it, and if recording it failed, the
//! next step for that build is recording it again, not sending it again.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::build::BuildState;
use crate::report::{self, CommitState};

/// A build: (namespace, job, number).
pub(crate) type BuildKey = (String, String, u64);

/// The next thing owed for a build's reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send `state`, then record `record` (what was recorded, and `state`).
    Send {
        state: CommitState,
        description: String,
        record: Vec<CommitState>,
    },
    /// Record these states: they were sent, but the build does not show them.
    Record(Vec<CommitState>),
}

#[derive(Debug, Default)]
struct Entry {
    /// States this replica sent that the workload's view did not show recorded yet.
    sent: Vec<CommitState>,
    attempts: u32,
    not_before: Option<Instant>,
    in_flight: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ReportQueue {
    owed: HashMap<BuildKey, Entry>,
}

/// `a`, and the states of `b` it lacks.
fn union(a: &[CommitState], b: &[CommitState]) -> Vec<CommitState> {
    let mut all = a.to_vec();
    all.extend(b.iter().filter(|s| !a.contains(s)));
    all
}

impl ReportQueue {
    /// What the build's reports look like with the states sent but not yet seen recorded.
    pub(crate) fn known(&self, key: &BuildKey, recorded: &[CommitState]) -> Vec<CommitState> {
        match self.owed.get(key) {
            Some(entry) => union(recorded, &entry.sent),
            None => recorded.to_vec(),
        }
    }

    /// The step owed for build `key` in `state` whose recorded reports are `recorded`, if
    /// one is owed and none is in flight or waiting for its retry; the build is in flight
    /// from then until [`ReportQueue::done`] or [`ReportQueue::failed`].
    pub(crate) fn take(
        &mut self,
        key: &BuildKey,
        state: &BuildState,
        recorded: &[CommitState],
        now: Instant,
    ) -> Option<Step> {
        let entry = self.owed.entry(key.clone()).or_default();
        if entry.sent.iter().all(|s| recorded.contains(s)) {
            entry.sent.clear();
        }
        if entry.in_flight || entry.not_before.is_some_and(|t| t > now) {
            return None;
        }
        let step = if entry.sent.is_empty() {
            report::next_report(state, recorded).map(|(state, description)| Step::Send {
                state,
                description,
                record: union(recorded, &[state]),
            })
        } else {
            Some(Step::Record(union(recorded, &entry.sent)))
        };
        match step {
            Some(_) => entry.in_flight = true,
            None if entry.attempts == 0 => {
                self.owed.remove(key);
            }
            None => {}
        }
        step
    }

    /// Attempts made for build `key` so far (what its next backoff grows from).
    pub(crate) fn attempts(&self, key: &BuildKey) -> u32 {
        self.owed.get(key).map_or(0, |e| e.attempts)
    }

    /// `state` was sent for build `key`: never send it again from here.
    pub(crate) fn sent(&mut self, key: &BuildKey, state: CommitState) {
        let entry = self.owed.entry(key.clone()).or_default();
        if !entry.sent.contains(&state) {
            entry.sent.push(state);
        }
    }

    /// The step in flight for build `key` is over (sent and recorded).
    pub(crate) fn done(&mut self, key: &BuildKey) {
        if let Some(entry) = self.owed.get_mut(key) {
            entry.in_flight = false;
            entry.attempts = 0;
            entry.not_before = None;
        }
    }

    /// The step in flight for build `key` failed: try again after `delay`.
    pub(crate) fn failed(&mut self, key: &BuildKey, delay: Duration, now: Instant) {
        let entry = self.owed.entry(key.clone()).or_default();
        entry.in_flight = false;
        entry.attempts += 1;
        entry.not_before = Some(now + delay);
    }

    /// Forgets the builds not in `seen` (deleted), except those with a step in flight.
    pub(crate) fn retain(&mut self, seen: &HashSet<BuildKey>) {
        self.owed
            .retain(|key, entry| entry.in_flight || seen.contains(key));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.owed.len()
    }
}

/// How long to wait before recording a sent report again after `attempts` failures:
/// 200 ms, doubling, at most 10 s (the API server is usually back soon).
pub(crate) fn record_retry_delay(attempts: u32) -> Duration {
    Duration::from_millis(200 << attempts.min(6)).min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommitState::{Pending, Success};

    fn key() -> BuildKey {
        ("ns".into(), "demo".into(), 1)
    }

    #[test]
    fn a_sent_report_is_recorded_again_never_sent_again_until_the_view_shows_it() {
        let mut queue = ReportQueue::default();
        let now = Instant::now();
        let Some(Step::Send { state, record, .. }) =
            queue.take(&key(), &BuildState::Succeeded, &[], now)
        else {
            panic!("a finished build owes its final report");
        };
        assert_eq!((state, record.as_slice()), (Success, &[Success][..]));
        assert_eq!(
            queue.take(&key(), &BuildState::Succeeded, &[], now),
            None,
            "nothing while it is in flight"
        );
        queue.sent(&key(), Success);
        queue.failed(&key(), Duration::from_secs(1), now);
        assert_eq!(
            queue.take(&key(), &BuildState::Succeeded, &[], now),
            None,
            "recording waits for its retry"
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            queue.take(&key(), &BuildState::Succeeded, &[Pending], later),
            Some(Step::Record(vec![Pending, Success])),
            "recorded again, with what the build already shows"
        );
        queue.done(&key());
        assert_eq!(
            queue.take(&key(), &BuildState::Succeeded, &[], later),
            Some(Step::Record(vec![Success])),
            "a view that lags (or a slower writer) does not make it send again"
        );
        queue.done(&key());
        assert_eq!(queue.known(&key(), &[]), [Success], "known while unseen");
        assert_eq!(
            queue.take(&key(), &BuildState::Succeeded, &[Success], later),
            None
        );
        assert_eq!(queue.len(), 0, "forgotten once the view shows it");
    }

    #[test]
    fn builds_gone_are_forgotten_unless_in_flight() {
        let mut queue = ReportQueue::default();
        let now = Instant::now();
        let other: BuildKey = ("ns".into(), "demo".into(), 2);
        queue.take(&key(), &BuildState::Running, &[], now);
        queue.take(&other, &BuildState::Running, &[], now);
        queue.failed(&other, Duration::from_secs(5), now);
        queue.retain(&HashSet::new());
        assert_eq!(queue.len(), 1, "the one in flight stays");
        assert!(queue.take(&other, &BuildState::Running, &[], now).is_some());
    }

    #[test]
    fn record_retries_back_off_to_ten_seconds() {
        assert_eq!(record_retry_delay(0), Duration::from_millis(200));
        assert_eq!(record_retry_delay(2), Duration::from_millis(800));
        assert_eq!(record_retry_delay(30), Duration::from_secs(10));
    }
}
