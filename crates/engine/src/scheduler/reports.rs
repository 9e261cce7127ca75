//! The report queue: which report each build owes next, which are in flight, which wait
//! for a retry — a plain state machine over explicit instants, driven by the scheduler.
//!
//! A report is sent, then recorded on the build (through the workload). Once sent, it is
//! never sent again from here: until the workload's view shows it recorded (a watch cache
//! lags behind its own writes), the queue remembers it; if recording it failed, the next
//! step for that build is recording it again, not sending it again. A record that
//! succeeded is not repeated while the view lags: the workload writes a union, so no later
//! write takes it back.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::JobKey;
use crate::build::BuildState;
use crate::report::{self, CommitState, Receipt, Reported};

/// A build: (namespace, job, number).
pub(crate) type BuildKey = (String, String, u64);

/// The next thing owed for a build's reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send `state`, then record it with what is known: `before`, what was reported.
    Send {
        state: CommitState,
        description: String,
        before: Reported,
        /// A send of this build failed here before: it may have arrived.
        failed_before: bool,
    },
    /// Record these reports: they were sent, but the build does not show them.
    Record(Reported),
}

#[derive(Debug, Default)]
struct Entry {
    /// What this replica sent that the workload's view did not show recorded yet.
    sent: Reported,
    /// A send failed (without an answer, it may have arrived).
    send_failed: bool,
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
    /// The reporter reports `running` (see [`report::next_report`]).
    running: bool,
    /// The pass under way; entries not looked at in it (their build is gone) are dropped.
    pass: u64,
}

impl ReportQueue {
    /// A queue for a reporter that reports `running`, or not.
    pub(crate) fn new(running: bool) -> ReportQueue {
        ReportQueue {
            running,
            ..ReportQueue::default()
        }
    }

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

    /// What the build's reports look like with what was sent but not yet seen recorded.
    pub(crate) fn known(
        &self,
        (namespace, job, number): (&str, &str, u64),
        recorded: &Reported,
    ) -> Reported {
        let entry = self
            .owed
            .get(namespace)
            .and_then(|jobs| jobs.get(job))
            .and_then(|builds| builds.get(&number));
        match entry {
            Some(entry) => recorded.union(&entry.sent),
            None => recorded.clone(),
        }
    }

    /// A new pass begins: [`ReportQueue::end_pass`] drops what it did not look at.
    pub(crate) fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// Drops the entries of builds the pass did not see (deleted) of the jobs it looked at
    /// (`only`, or every job), except those in flight.
    pub(crate) fn end_pass(&mut self, only: Option<&BTreeSet<JobKey>>) {
        let pass = self.pass;
        for (namespace, jobs) in self.owed.iter_mut() {
            for (job, builds) in jobs.iter_mut() {
                let looked_at =
                    only.is_none_or(|only| only.contains(&(namespace.clone(), job.clone())));
                if looked_at {
                    builds.retain(|_, e| e.in_flight || e.pass == pass);
                }
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
        recorded: &Reported,
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
                let (state, description) =
                    report::next_report(state, &recorded.states, self.running)?;
                let key = (namespace.to_owned(), job.to_owned(), number);
                let entry = self.entry(&key);
                entry.in_flight = true;
                entry.pass = pass;
                return Some(Step::Send {
                    state,
                    description,
                    before: recorded.clone(),
                    failed_before: false,
                });
            }
        };
        entry.pass = pass;
        if recorded.includes(&entry.sent) {
            entry.sent = Reported::default();
        }
        if entry.in_flight || entry.not_before.is_some_and(|t| t > now) {
            return None;
        }
        let known = recorded.union(&entry.sent);
        let step = if entry.record_owed {
            Some(Step::Record(known))
        } else {
            let running = self.running;
            report::next_report(state, &known.states, running).map(|(state, description)| {
                Step::Send {
                    state,
                    description,
                    before: known,
                    failed_before: entry.send_failed,
                }
            })
        };
        match step {
            Some(_) => entry.in_flight = true,
            None if entry.attempts == 0 && entry.sent == Reported::default() => {
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

    /// `state` was sent for build `key`, leaving `receipt`: never send it again from
    /// here; what to record now.
    pub(crate) fn sent(
        &mut self,
        key: &BuildKey,
        state: CommitState,
        receipt: Receipt,
        before: &Reported,
    ) -> Reported {
        let entry = self.entry(key);
        let delivered = Reported {
            states: vec![state],
            check_run: receipt.check_run,
        };
        entry.sent = entry.sent.union(&delivered);
        entry.send_failed = false;
        entry.record_owed = true;
        before.union(&entry.sent)
    }

    /// A send for build `key` failed: the next one may find it arrived.
    pub(crate) fn send_failed(&mut self, key: &BuildKey) {
        self.entry(key).send_failed = true;
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

    fn states(states: &[CommitState]) -> Reported {
        Reported {
            states: states.to_vec(),
            check_run: None,
        }
    }

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
        let nothing = Reported::default();
        let Some(Step::Send { state, before, .. }) =
            queue.take(at(&key()), &BuildState::Succeeded, &nothing, now)
        else {
            panic!("a finished build owes its final report");
        };
        assert_eq!((state, &before), (Success, &nothing));
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &nothing, now),
            None,
            "nothing while it is in flight"
        );
        let receipt = Receipt { check_run: Some(7) };
        let record = queue.sent(&key(), Success, receipt, &before);
        assert_eq!(record, Reported::parse(Some("success,check-run=7")));
        queue.failed(&key(), Duration::from_secs(1), now);
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &nothing, now),
            None,
            "recording waits for its retry"
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            queue.take(
                at(&key()),
                &BuildState::Succeeded,
                &states(&[Pending]),
                later
            ),
            Some(Step::Record(Reported::parse(Some(
                "pending,success,check-run=7"
            )))),
            "recorded again, with what the build already shows"
        );
        queue.done(&key());
        assert_eq!(
            queue.take(at(&key()), &BuildState::Succeeded, &nothing, later),
            None,
            "recorded: a view that lags makes it neither send nor record again"
        );
        assert_eq!(
            queue.known(at(&key()), &nothing),
            Reported::parse(Some("success,check-run=7")),
            "known while unseen"
        );
        assert_eq!(
            queue.take(
                at(&key()),
                &BuildState::Succeeded,
                &Reported::parse(Some("success,check-run=7")),
                later
            ),
            None
        );
        assert_eq!(queue.len(), 0, "forgotten once the view shows it");
    }

    #[test]
    fn builds_gone_are_forgotten_unless_in_flight() {
        let mut queue = ReportQueue::default();
        let now = Instant::now();
        let other: BuildKey = ("ns".into(), "demo".into(), 2);
        let nothing = Reported::default();
        queue.begin_pass();
        queue.take(at(&key()), &BuildState::Running, &nothing, now);
        queue.take(at(&other), &BuildState::Running, &nothing, now);
        queue.failed(&other, Duration::from_secs(5), now);
        queue.begin_pass();
        let elsewhere = BTreeSet::from([("ns".to_owned(), "other".to_owned())]);
        queue.end_pass(Some(&elsewhere));
        assert_eq!(
            queue.len(),
            2,
            "a pass that did not look at the job forgets none"
        );
        queue.begin_pass();
        queue.end_pass(None);
        assert_eq!(queue.len(), 1, "the one in flight stays");
        assert!(queue
            .take(at(&other), &BuildState::Running, &nothing, now)
            .is_some());
    }

    #[test]
    fn a_send_that_failed_is_flagged_on_the_next_one_until_one_succeeds() {
        let mut queue = ReportQueue::new(true);
        let now = Instant::now();
        let nothing = Reported::default();
        queue.take(at(&key()), &BuildState::Queued, &nothing, now);
        queue.send_failed(&key());
        queue.failed(&key(), Duration::ZERO, now);
        let Some(Step::Send { failed_before, .. }) =
            queue.take(at(&key()), &BuildState::Queued, &nothing, now)
        else {
            panic!("sent again");
        };
        assert!(failed_before, "it may have arrived");
        let record = queue.sent(&key(), Pending, Receipt { check_run: Some(3) }, &nothing);
        queue.done(&key());
        let Some(Step::Send {
            state,
            before,
            failed_before,
            ..
        }) = queue.take(at(&key()), &BuildState::Running, &record, now)
        else {
            panic!("the next state is owed");
        };
        assert_eq!(
            (state, before.check_run, failed_before),
            (CommitState::Running, Some(3), false)
        );
    }

    #[test]
    fn record_retries_back_off_to_ten_seconds() {
        assert_eq!(record_retry_delay(0), Duration::from_millis(200));
        assert_eq!(record_retry_delay(2), Duration::from_millis(800));
        assert_eq!(record_retry_delay(30), Duration::from_secs(10));
    }
}
