//! Leader election over a `coordination.k8s.io` Lease: who does the work that must happen
//! once (reporting, cron, queue release, retention). Every replica still takes requests.

/// A Lease as leader election reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// Last renewal, milliseconds since the epoch.
    pub renewed_at_ms: Option<i64>,
    pub duration_ms: i64,
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

pub fn decide(lease: &LeaseRecord, me: &str, now_ms: i64) -> LeaseDecision {
    match lease.holder.as_deref() {
        Some(holder) if holder == me => LeaseDecision::Renew,
        Some(holder) if !holder.is_empty() => {
            let expired = lease
                .renewed_at_ms
                .is_none_or(|at| now_ms - at > lease.duration_ms);
            if expired {
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

    #[test]
    fn a_lease_is_renewed_by_its_holder_and_taken_only_once_expired() {
        let lease = LeaseRecord {
            holder: Some("a".into()),
            renewed_at_ms: Some(10_000),
            duration_ms: 15_000,
        };
        assert_eq!(decide(&lease, "a", 20_000), LeaseDecision::Renew);
        assert_eq!(decide(&lease, "b", 20_000), LeaseDecision::Follow);
        assert_eq!(decide(&lease, "b", 25_001), LeaseDecision::Take);
        let released = LeaseRecord {
            holder: None,
            ..lease.clone()
        };
        assert_eq!(decide(&released, "b", 11_000), LeaseDecision::Take);
        let never_renewed = LeaseRecord {
            renewed_at_ms: None,
            ..lease
        };
        assert_eq!(decide(&never_renewed, "b", 0), LeaseDecision::Take);
    }
}
