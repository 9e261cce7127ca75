//! A job's ledger: the facts about its builds that no single Job can hold, kept in the
//! annotations of one Lease per job and updated with optimistic concurrency — the last
//! build number, the last cron run, and the recent build requests by key.
//!
//! A request is recorded (with the number it was given) before its Job is created. So a
//! retried request with the same key gets the same build instead of a second one, and a
//! request whose creator died before creating the Job is still built: the leader creates
//! the Jobs of entries still marked pending after a grace period ("healing").

use std::collections::BTreeMap;

use kubeci_build::BuildRequest;
use serde::{Deserialize, Serialize};

use crate::approval::Approval;
use crate::build::BuildSummary;
use crate::decide::next_build_number;

pub const LAST_BUILD_NUMBER: &str = "kubeci.io/last-build-number";
pub const LAST_CRON_RUN: &str = "kubeci.io/last-cron-run";
pub const REQUESTS: &str = "kubeci.io/requests";
pub const APPROVALS: &str = "kubeci.io/approvals";

/// How long a request key is remembered, so a retry within it starts nothing new: three
/// days, as long as GitHub lets a webhook delivery be redelivered, so a replayed delivery
/// (its key names the pull request head or push it is about) starts nothing, even after
/// retention deleted the build it started.
pub const KEY_RETENTION: i64 = 3 * 24 * 3600;
/// How long an entry may stay pending before the leader creates its Job: the time its own
/// creator normally needs.
pub const HEAL_GRACE: i64 = 5;
/// A pending entry older than this is abandoned rather than built (a build nobody expects
/// any more).
pub const HEAL_WINDOW: i64 = 600;
/// At most this many entries are kept (the oldest settled ones go first).
pub const MAX_ENTRIES: usize = 200;

/// One build request as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub number: u64,
    /// When it was recorded (seconds since the epoch).
    pub at: i64,
    /// The request, while its Job is not known to exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<BuildRequest>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub last_number: Option<u64>,
    pub last_cron_run: Option<i64>,
    pub entries: Vec<Entry>,
    /// Admins' approvals of pull request heads for this job.
    pub approvals: Vec<Approval>,
}

/// The number a request was given, and whether it is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub number: u64,
    /// False when the key was seen before: the request is a retry.
    pub fresh: bool,
}

impl Ledger {
    /// Reads a ledger from a Lease's annotations. Unreadable values count as absent (the
    /// build number stays safe: it is also above every build present).
    pub fn read(annotations: &BTreeMap<String, String>) -> Ledger {
        Ledger {
            last_number: annotations
                .get(LAST_BUILD_NUMBER)
                .and_then(|n| n.parse().ok()),
            last_cron_run: annotations.get(LAST_CRON_RUN).and_then(|n| n.parse().ok()),
            entries: annotations
                .get(REQUESTS)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
            approvals: annotations
                .get(APPROVALS)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
        }
    }

    /// Writes the ledger into a Lease's annotations.
    pub fn write(&self, annotations: &mut BTreeMap<String, String>) {
        let mut set = |key: &str, value: Option<String>| match value {
            Some(value) => {
                annotations.insert(key.to_owned(), value);
            }
            None => {
                annotations.remove(key);
            }
        };
        set(LAST_BUILD_NUMBER, self.last_number.map(|n| n.to_string()));
        set(LAST_CRON_RUN, self.last_cron_run.map(|n| n.to_string()));
        set(
            REQUESTS,
            Some(serde_json::to_string(&self.entries).expect("entries serialize")),
        );
        set(
            APPROVALS,
            (!self.approvals.is_empty())
                .then(|| serde_json::to_string(&self.approvals).expect("approvals serialize")),
        );
    }

    pub fn find(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Gives the request with `key` its build number: the one recorded for the key, or the
    /// next one, recorded with the request (`request(number)`) as pending.
    pub fn allocate(
        &mut self,
        key: &str,
        present: &[BuildSummary],
        now: i64,
        request: impl FnOnce(u64) -> BuildRequest,
    ) -> Allocation {
        if let Some(entry) = self.find(key) {
            return Allocation {
                number: entry.number,
                fresh: false,
            };
        }
        let number = next_build_number(self.last_number, present);
        self.last_number = Some(number);
        self.entries.push(Entry {
            key: key.to_owned(),
            number,
            at: now,
            pending: Some(request(number)),
        });
        self.prune(now);
        Allocation {
            number,
            fresh: true,
        }
    }

    /// Numbers the next build above `floor` (the highest number the archive holds): the
    /// ledger's counter is raised to it, never lowered.
    pub fn raise_to(&mut self, floor: Option<u64>) {
        self.last_number = self.last_number.max(floor);
    }

    fn prune(&mut self, now: i64) {
        self.entries
            .retain(|e| e.pending.is_some() || now - e.at < KEY_RETENTION);
        while self.entries.len() > MAX_ENTRIES {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.pending.is_none())
                .min_by_key(|(_, e)| e.at)
                .or_else(|| self.entries.iter().enumerate().min_by_key(|(_, e)| e.at))
                .map(|(i, _)| i)
                .expect("more than MAX_ENTRIES entries");
            self.entries.remove(oldest);
        }
    }

    /// Marks the entries whose Job exists as done, abandons pending entries older than
    /// [`HEAL_WINDOW`] and forgets expired keys. Returns the abandoned entries and whether
    /// the ledger changed (and must be written).
    pub fn settle(&mut self, exists: impl Fn(u64) -> bool, now: i64) -> (Vec<Entry>, bool) {
        let before = self.clone();
        let mut abandoned = Vec::new();
        for entry in &mut self.entries {
            if entry.pending.is_none() {
                continue;
            }
            if exists(entry.number) {
                entry.pending = None;
            } else if now - entry.at > HEAL_WINDOW {
                abandoned.push(entry.clone());
                entry.pending = None;
            }
        }
        self.prune(now);
        let changed = *self != before;
        (abandoned, changed)
    }

    /// The pending requests whose Job should exist by now and does not.
    pub fn to_heal(&self, exists: impl Fn(u64) -> bool, now: i64) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                e.pending.is_some()
                    && now - e.at >= HEAL_GRACE
                    && now - e.at <= HEAL_WINDOW
                    && !exists(e.number)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::BuildState;

    fn present(number: u64) -> BuildSummary {
        BuildSummary {
            number,
            state: BuildState::Running,
            pull_request: None,
            branch: None,
            fully_reported: true,
            finished_at: None,
            settled: false,
            archived: Default::default(),
        }
    }

    #[test]
    fn numbers_go_above_what_the_archive_holds_and_the_counter_never_goes_down() {
        let mut ledger = Ledger::default();
        ledger.raise_to(Some(40));
        let first = ledger.allocate("a", &[], 100, BuildRequest::manual);
        assert_eq!(first.number, 41, "every Job gone, the archive holds 1..=40");
        ledger.raise_to(Some(7));
        ledger.raise_to(None);
        let next = ledger.allocate("b", &[], 101, BuildRequest::manual);
        assert_eq!(next.number, 42);
    }

    #[test]
    fn a_retried_request_gets_the_same_build() {
        let mut ledger = Ledger::default();
        let first = ledger.allocate("delivery-1", &[], 100, BuildRequest::manual);
        assert_eq!(
            first,
            Allocation {
                number: 1,
                fresh: true
            }
        );
        let retry = ledger.allocate("delivery-1", &[], 101, BuildRequest::manual);
        assert_eq!(
            retry,
            Allocation {
                number: 1,
                fresh: false
            }
        );
        let other = ledger.allocate("delivery-2", &[present(7)], 102, BuildRequest::manual);
        assert_eq!(
            other.number, 8,
            "above every build present, as numbering always is"
        );
        assert_eq!(ledger.last_number, Some(8));
    }

    #[test]
    fn it_round_trips_through_annotations_and_survives_garbage() {
        let mut ledger = Ledger {
            last_cron_run: Some(1_000),
            ..Ledger::default()
        };
        ledger.allocate("k", &[], 100, BuildRequest::manual);
        crate::approval::record(
            &mut ledger.approvals,
            Approval {
                pull_request: 7,
                head: "abc".into(),
                by: "boss".into(),
                at: 100,
            },
            100,
        );
        let mut annotations = BTreeMap::new();
        ledger.write(&mut annotations);
        assert_eq!(Ledger::read(&annotations), ledger);
        annotations.insert(REQUESTS.into(), "{not json".into());
        let damaged = Ledger::read(&annotations);
        assert_eq!(damaged.last_number, Some(1));
        assert!(damaged.entries.is_empty());
    }

    #[test]
    fn pending_requests_are_healed_after_the_grace_and_abandoned_after_the_window() {
        let mut ledger = Ledger::default();
        ledger.allocate("a", &[], 1_000, BuildRequest::manual);
        ledger.allocate("b", &[], 1_000, BuildRequest::manual);
        let none_exist = |_: u64| false;
        assert!(
            ledger
                .to_heal(none_exist, 1_000 + HEAL_GRACE - 1)
                .is_empty(),
            "their creators get time to finish"
        );
        let due: Vec<u64> = ledger
            .to_heal(none_exist, 1_000 + HEAL_GRACE)
            .iter()
            .map(|e| e.number)
            .collect();
        assert_eq!(due, [1, 2]);

        let (abandoned, changed) = ledger.settle(|n| n == 1, 1_010);
        assert!(abandoned.is_empty());
        assert!(changed, "build 1's Job exists: its entry is done");
        assert_eq!(
            ledger
                .to_heal(none_exist, 1_010)
                .iter()
                .map(|e| e.number)
                .collect::<Vec<_>>(),
            [2],
            "a done entry is never built again, even once its Job is deleted"
        );
        let (abandoned, _) = ledger.settle(|_| false, 1_000 + HEAL_WINDOW + 1);
        assert_eq!(abandoned.len(), 1);
        assert!(ledger.to_heal(none_exist, 1_000 + HEAL_WINDOW).is_empty());
        assert!(
            !ledger.allocate("a", &[], 1_700, BuildRequest::manual).fresh,
            "the key is still remembered"
        );
        ledger.settle(|_| true, 1_000 + KEY_RETENTION + 1);
        assert!(ledger.entries.is_empty(), "expired keys are forgotten");
        assert_eq!(
            ledger
                .allocate("a", &[], 1_000 + KEY_RETENTION + 2, BuildRequest::manual)
                .number,
            3,
            "numbers go on"
        );
    }

    #[test]
    fn the_ledger_stays_bounded() {
        let mut ledger = Ledger::default();
        for i in 0..(MAX_ENTRIES as i64 + 50) {
            ledger.allocate(&format!("k{i}"), &[], i, BuildRequest::manual);
            ledger.settle(|_| true, i);
        }
        assert_eq!(ledger.entries.len(), MAX_ENTRIES);
        assert_eq!(ledger.entries[0].key, "k50", "the oldest went first");
    }
}
