//! The report queue: which report each build owes next, which are in flight, which wait
//! for a retry — a plain state machine over explicit instants, driven by the scheduler.
//!
//! A report is sent, then recorded on the build (through the workload). Once sent, it is
//! never sent again from here: until the workload's view shows it recorded (a watch cache
//! lags behind its own writes), the queue remembers it; if recording it failed, the next
//! step for that build is recording it again, not sending it again. A record that
//! succeeded is not repeated while the view lags: the workload writes a union, so no later
//! write takes it back.

use std::collections::HashMap;
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
    /// A record of `sent` is owed: it was not written yet, or its write failed.
    record_owed: bool,
    attempts: u32,
    not_before: Option<Instant>,
    in_flight: bool,
    /// The last pass that looked at it.
    pass: u64,
}

/// Entries by namespace, job and build number: looked up by `&str` on every pass, so a
/// pass over many builds allocates nothing for the builds that owe nothing.
#[derive(Debug, Default)]
pub(crate) struct ReportQueue {
    owed: HashMap<String, HashMap<String, HashMap<u64, Entry>>>,
    /// The pass under way; entries not looked at in it (their build is gone) are dropped.
    pass: u64,
}

/// `a`, and the states of `b` it lacks.
fn union(a: &[CommitState], b: &[CommitState]) -> Vec<CommitState> {
    let mut all = a.to_vec();
    all.extend(b.iter().filter(|s| !a.contains(s)));
    all
}

impl ReportQueue {
    fn get(&self, key: &BuildKey) -> Option<&Entry> {
        self.owed.get(&key.0)?.get(&key.1)?.get(&key.2)
    }

    fn get_mut(&mut self, key: &BuildKey) -> Option<&mut Entry> {
        self.owed.get_mut(&key.0)?.get_mut(&key.1)?.get_mut(&key.2)
    }

    fn entry(&mut self, key: &BuildKey) -> &mut Entry {
        self.owed
            .entry(key.0.clone())
            .or_default()
            .entry(key.1.clone())
            .or_default()
            .entry(key.2)
            .or_default()
    }

    fn remove(&mut self, key: &BuildKey) {
        if let Some(jobs) = self.owed.get_mut(&key.0) {
            if let Some(builds) = jobs.get_mut(&key.1) {
                builds.remove(&key.2);
            }
        }
    }

    /// What the build's reports look like with the states sent but not yet seen recorded.
    pub(crate) fn known(
        &self,
        (namespace, job, number): (&str, &str, u64),
        recorded: &[CommitState],
    ) -> Vec<CommitState> {
        let entry = self
            .owed
            .get(namespace)
            .and_then(|jobs| jobs.get(job))
            .and_then(|builds| builds.get(&number));
        match entry {
            Some(entry) => union(recorded, &entry.sent),
            None => recorded.to_vec(),
        }
    }

    /// A new pass begins: [`ReportQueue::end_pass`] drops what it did not look at.
    pub(crate) fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// Drops the entries of builds the pass did not see (deleted), except those in flight.
    pub(crate) fn end_pass(&mut self) {
        let pass = self.pass;
        for jobs in self.owed.values_mut() {
            for builds in jobs.values_mut() {
                builds.retain(|_, e| e.in_flight || e.pass == pass);
            }
            jobs.retain(|_, builds| !builds.is_empty());
        }
        self.owed.retain(|_, jobs| !jobs.is_empty());
    }

    /// The step owed for build `(namespace, job, number)` in `state` whose recorded reports
    /// are `recorded`, if one is owed and none is in flight or waiting for its retry; the
    /// build is in flight from then until [`ReportQueue::done`] or [`ReportQueue::failed`].
    pub(crate) fn take(
        &mut self,
        (namespace, job, number): (&str, &str, u64),
        state: &BuildState,
        recorded: &[CommitState],
        now: Instant,
    ) -> Option<Step> {
        let pass = self.pass;
        let existing = self
            .owed
            .get_mut(namespace)
            .and_then(|jobs| jobs.get_mut(job))
            .and_then(|builds| builds.get_mut(&number));
        let entry = match existing {
            Some(entry) => entry,
            // Nothing sent, failed or in flight: only a report owed makes an entry.
            None => {
                let (state, description) = report::next_report(state, recorded)?;
                let key = (namespace.to_owned(), job.to_owned(), number);
                let entry = self.entry(&key);
                entry.in_flight = true;
                entry.pass = pass;
                return Some(Step::Send {
                    state,
                    description,
                    record: union(recorded, &[state]),
                });
            }
        };
        entry.pass = pass;
        if entry.sent.iter().all(|s| recorded.contains(s)) {
            entry.sent.clear();
        }
        if entry.in_flight || entry.not_before.is_some_and(|t| t > now) {
            return None;
        }
        let known = union(recorded, &entry.sent);
        let step = if entry.record_owed {
            Some(Step::Record(known))
        } else {
            report::next_report(state, &known).map(|(state, description)| Step::Send {
                state,
                description,
                record: union(&known, &[state]),
            })
        };
        match step {
            Some(_) => entry.in_flight = true,
            None if entry.attempts == 0 && entry.sent.is_empty() => {
                let key = (namespace.to_owned(), job.to_owned(), number);
                self.remove(&key);
            }
            None => {}
        }
        step
    }

    /// Attempts made for build `key` so far (what its next backoff grows from).
    pub(crate) fn attempts(&self, key: &BuildKey) -> u32 {
        self.get(key).map_or(0, |e| e.attempts)
    }

    /// `state` was sent for build `key`: never send it again from here.
    pub(crate) fn sent(&mut self, key: &BuildKey, state: CommitState) {
        let entry = self.entry(key);
        if !entry.sent.contains(&state) {
            entry.sent.push(state);
        }
        entry.record_owed = true;
    }

    /// The step in flight for build `key` is over (sent and recorded).
    pub(crate) fn done(&mut self, key: &BuildKey) {
        if let Some(entry) = self.get_mut(key) {
            entry.in_flight = false;
            entry.record_owed = false;
            entry.attempts = 0;
            entry.not_before = None;
        }
    }

    /// The step in flight for build `key` failed: try again after `delay`.
    pub(crate) fn failed(&mut self, key: &BuildKey, delay: Duration, now: Instant) {
        let entry = self.entry(key);
        entry.in_flight = false;
        entry.attempts += 1;
        entry.not_before = Some(now + delay);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.owed
            .values()
            .flat_map(|jobs| jobs.values())
            .map(HashMap::len)
            .sum()
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

    fn at(key: &BuildKey) -> (&str, &str, u64) {
        (&key.0, &key.1, key.2)
    }

    #[test]
    fn a_sent_report_is_recorded_again_never_sent_again_until_the_view_shows_it() {
        let mut queue = ReportQueue::default();
        let now = Instant::now();
        let Some(Step::Send { state, record, .. }) =
            queue.take(at(&key()), &BuildState::Succeeded, &[], now)
        else {
            panic!("a finished build owes its final report");
        };
        assert_eq!((state, record.as_slice()), (Success, &[Success][..]));
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &[], now),
            None,
            "nothing while it is in flight"
        );
        queue.sent(&key(), Success);
        queue.failed(&key(), Duration::from_secs(1), now);
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &[], now),
            None,
            "recording waits for its retry"
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &[Pending], later),
            Some(Step::Record(vec![Pending, Success])),
            "recorded again, with what the build already shows"
        );
        queue.done(&key());
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &[], later),
            None,
            "recorded: a view that lags makes it neither send nor record again"
        );
        assert_eq!(
            queue.known(at(&key()), &[]),
            [Success],
            "known while unseen"
        );
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &[Success], later),
            None
        );
        assert_eq!(queue.len(), 0, "forgotten once the view shows it");
    }

    #[test]
    fn builds_gone_are_forgotten_unless_in_flight() {
        let mut queue = ReportQueue::default();
        let now = Instant::now();
        let other: BuildKey = ("ns".into(), "demo".into(), 2);
        queue.begin_pass();
        queue.take(at(&key()), &BuildState::Running, &[], now);
        queue.take(at(&other), &BuildState::Running, &[], now);
        queue.failed(&other, Duration::from_secs(5), now);
        queue.begin_pass();
        queue.end_pass();
        assert_eq!(queue.len(), 1, "the one in flight stays");
        assert!(queue
            .take(at(&other), &BuildState::Running, &[], now)
            .is_some());
    }

    #[test]
    fn record_retries_back_off_to_ten_seconds() {
        assert_eq!(record_retry_delay(0), Duration::from_millis(200));
        assert_eq!(record_retry_delay(2), Duration::from_millis(800));
        assert_eq!(record_retry_delay(30), Duration::from_secs(10));
    }
}
