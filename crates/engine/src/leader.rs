//! Leader election over a `coordination.k8s.io` Lease: who does the work that must happen
//! once (reporting, cron, queue release, retention). Every replica still takes requests.
//!
//! A Lease's `renewTime` is written by its holder's clock, which may be minutes from this
//! replica's. So a follower never compares it with its own time: as client-go's
//! leaderelection does, it notes when it saw the Lease's record change, by its own
//! monotonic clock ([`Observed`]), and judges the Lease expired only once the Lease's
//! duration has passed on that clock with no change seen.

use std::time::{Duration, Instant};

/// A Lease as leader election reads it. Two reads with the same record mean the holder
/// did not renew in between: every renewal writes a new `renewTime`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// Last renewal, milliseconds since the epoch by the holder's clock: compared with
    /// the previous read only, never with this replica's clock.
    pub renewed_at_ms: Option<i64>,
    pub duration_ms: i64,
}

impl LeaseRecord {
    fn duration(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.duration_ms).unwrap_or(0))
    }
}

/// The Lease's record as this replica last read it, and when (its own monotonic clock)
/// it first read that record: the caller keeps it between reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub record: LeaseRecord,
    pub seen_at: Instant,
}

impl Observed {
    /// The observation after reading `record` at `now`: the same record keeps the time
    /// it was first seen; a changed one — or the first read, as this replica cannot know
    /// how long ago the holder renewed — is seen now.
    ///
    /// The record (holder, `renewTime`, duration) is compared, not the resourceVersion:
    /// that also changes with writes that renew nothing (a label, an annotation, `kubectl
    /// apply`'s managed fields), which would keep a dead holder's Lease alive.
    pub fn update(previous: Option<Observed>, record: LeaseRecord, now: Instant) -> Observed {
        match previous {
            Some(seen) if seen.record == record => seen,
            _ => Observed {
                record,
                seen_at: now,
            },
        }
    }
}

/// What a replica does with the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// It holds the Lease: renew it and lead.
    Renew,
    /// Free or expired: take it (a compare-and-swap; losing the race means following).
    Take,
    /// Someone else holds it.
    Follow,
}

/// Renew a Lease `me` holds; take one nobody holds, or whose record has not changed for
/// its duration by this replica's clock (`now`, the clock of `observed.seen_at`);
/// otherwise follow.
pub fn decide(observed: &Observed, me: &str, now: Instant) -> LeaseDecision {
    let lease = &observed.record;
    match lease.holder.as_deref() {
        Some(holder) if holder == me => LeaseDecision::Renew,
        Some(holder) if !holder.is_empty() => {
            if now.saturating_duration_since(observed.seen_at) > lease.duration() {
                LeaseDecision::Take
            } else {
                LeaseDecision::Follow
            }
        }
        _ => LeaseDecision::Take,
    }
}

/// Whether a replica taking the lead must allow for a leader before it still having report
/// calls under way, given the Lease as it found it (`None`: there was none) and whether it
/// led already. Not when there was no Lease, or its holder gave it back (a stopping
/// leader does so only once its reports ended), or it renews its own lead; yes when it
/// takes the Lease from a holder that let it expire — a crash, or its own identity from
/// an earlier process.
pub fn predecessor_may_be_reporting(found: Option<&LeaseRecord>, me: &str, leading: bool) -> bool {
    match found
        .and_then(|lease| lease.holder.as_deref())
        .filter(|holder| !holder.is_empty())
    {
        None => false,
        Some(holder) => !(holder == me && leading),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lease_taken_from_a_holder_that_let_it_expire_leaves_reports_possibly_under_way() {
        let held_by = |holder: Option<&str>| LeaseRecord {
            holder: holder.map(str::to_owned),
            renewed_at_ms: Some(0),
            duration_ms: 15_000,
        };
        assert!(!predecessor_may_be_reporting(None, "b", false), "no Lease");
        assert!(
            !predecessor_may_be_reporting(Some(&held_by(None)), "b", false),
            "given back"
        );
        assert!(!predecessor_may_be_reporting(
            Some(&held_by(Some(""))),
            "b",
            false
        ));
        assert!(
            predecessor_may_be_reporting(Some(&held_by(Some("a"))), "b", false),
            "expired"
        );
        assert!(
            predecessor_may_be_reporting(Some(&held_by(Some("b"))), "b", false),
            "an earlier process of the same name"
        );
        assert!(
            !predecessor_may_be_reporting(Some(&held_by(Some("b"))), "b", true),
            "renewed"
        );
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn held_by(holder: &str, renewed_at_ms: i64) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            renewed_at_ms: Some(renewed_at_ms),
            duration_ms: 15_000,
        }
    }

    /// What follower `b` decides at each of its reads: `(record read, seconds on b's
    /// clock since its first read)`.
    fn follow(reads: &[(LeaseRecord, u64)]) -> Vec<LeaseDecision> {
        let start = Instant::now();
        let mut observed = None;
        reads
            .iter()
            .map(|(record, at)| {
                let now = start + SECOND * u32::try_from(*at).unwrap();
                let seen = Observed::update(observed.take(), record.clone(), now);
                let decision = decide(&seen, "b", now);
                observed = Some(seen);
                decision
            })
            .collect()
    }

    #[test]
    fn a_holder_whose_clock_is_behind_keeps_the_lease_while_it_renews() {
        // `a` renews every 5 s, its clock an hour behind b's: its renewTime, by b's
        // clock, lies far in the past. Compared with b's clock it looked expired at once.
        let hour_ago = 1_700_000_000_000 - 3_600_000;
        let reads: Vec<_> = (0..10)
            .map(|i| (held_by("a", hour_ago + i * 5_000), 5 * i.unsigned_abs()))
            .collect();
        assert_eq!(follow(&reads), vec![LeaseDecision::Follow; 10]);
    }

    #[test]
    fn a_holder_whose_clock_is_ahead_loses_the_lease_a_duration_after_its_last_renewal() {
        // `a`'s clock is an hour ahead: its renewTime lies in b's future, which by b's
        // clock kept the Lease held for an hour after `a` stopped renewing.
        let ahead = 1_700_000_000_000 + 3_600_000;
        let last = held_by("a", ahead + 5_000);
        let reads = [
            (held_by("a", ahead), 0),
            (last.clone(), 5),
            (last.clone(), 10),
            (last.clone(), 20),
            (last.clone(), 21),
        ];
        use LeaseDecision::{Follow, Take};
        assert_eq!(follow(&reads), [Follow, Follow, Follow, Follow, Take]);
    }

    #[test]
    fn a_replica_that_just_started_waits_a_full_duration_before_taking_a_held_lease() {
        // The record was last written long ago by any clock, but b cannot know how long
        // ago by its own: its first sight counts as a change.
        let stale = held_by("a", 0);
        let reads = [(stale.clone(), 0), (stale.clone(), 15), (stale, 16)];
        use LeaseDecision::{Follow, Take};
        assert_eq!(follow(&reads), [Follow, Follow, Take]);
    }

    #[test]
    fn a_lease_given_back_or_never_held_is_taken_at_once() {
        let given_back = LeaseRecord {
            holder: None,
            ..held_by("a", 1_700_000_000_000)
        };
        let emptied = LeaseRecord {
            holder: Some(String::new()),
            ..given_back.clone()
        };
        assert_eq!(follow(&[(given_back, 0)]), [LeaseDecision::Take]);
        assert_eq!(follow(&[(emptied, 0)]), [LeaseDecision::Take]);
    }

    #[test]
    fn the_holder_renews_its_lease_whatever_the_clocks_say() {
        let now = Instant::now();
        let mine = Observed::update(None, held_by("b", 0), now);
        assert_eq!(decide(&mine, "b", now), LeaseDecision::Renew);
        assert_eq!(
            decide(&mine, "b", now + SECOND * 3_600),
            LeaseDecision::Renew
        );
        // Taken over by another replica: b sees the change and follows.
        let taken = Observed::update(Some(mine), held_by("c", 0), now + SECOND * 3_600);
        assert_eq!(taken.seen_at, now + SECOND * 3_600);
        assert_eq!(
            decide(&taken, "b", now + SECOND * 3_610),
            LeaseDecision::Follow
        );
    }

    #[test]
    fn an_unchanged_record_keeps_the_time_it_was_first_seen() {
        let now = Instant::now();
        let first = Observed::update(None, held_by("a", 5), now);
        let again = Observed::update(Some(first.clone()), held_by("a", 5), now + SECOND * 9);
        assert_eq!(again.seen_at, now);
        let renewed = Observed::update(Some(again), held_by("a", 6), now + SECOND * 10);
        assert_eq!(renewed.seen_at, now + SECOND * 10);
        let longer = LeaseRecord {
            duration_ms: 30_000,
            ..held_by("a", 6)
        };
        assert_eq!(
            Observed::update(Some(renewed), longer, now + SECOND * 11).seen_at,
            now + SECOND * 11
        );
    }
}
