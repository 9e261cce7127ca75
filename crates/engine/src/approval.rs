//! Admins' approvals of pull requests from people a job does not trust. An approval
//! belongs to one job and one head: it lets that job build that commit of that pull
//! request, and nothing else — another job's admin, a label, or a later push approves
//! nothing here. Approvals are kept with the job's other records (the Kubernetes engine's
//! ledger Lease, the local engine's database), so they survive restarts and hand-overs.

use serde::{Deserialize, Serialize};

/// How long an approval is kept: a pull request head waits for its builds and re-runs
/// this long at most.
pub const APPROVAL_RETENTION: i64 = 30 * 24 * 3600;
/// At most this many approvals are kept per job (the oldest go first): a job's ledger is
/// one object, and annotations are bounded.
pub const MAX_APPROVALS: usize = 100;
/// How far ahead of this replica's clock an approval's time may be (another replica's
/// clock): one further ahead was not written by kubeci, and counts for nothing.
pub const CLOCK_SKEW: i64 = 300;

/// Whether an approval given `at` still counts `now`.
fn current(at: i64, now: i64) -> bool {
    now - at < APPROVAL_RETENTION && at <= now + CLOCK_SKEW
}

/// One admin's approval of one head of a pull request, for the job it is recorded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub pull_request: u64,
    /// The commit approved: a later push needs an approval of its own.
    pub head: String,
    /// The admin's login.
    pub by: String,
    /// When it was given (seconds since the epoch).
    pub at: i64,
}

/// Adds `approval` to `approvals` (replacing an approval of the same head), then forgets
/// the expired ones and the oldest beyond [`MAX_APPROVALS`]. Returns whether anything
/// changed.
pub fn record(approvals: &mut Vec<Approval>, approval: Approval, now: i64) -> bool {
    let before = approvals.clone();
    approvals.retain(|a| !(a.pull_request == approval.pull_request && a.head == approval.head));
    approvals.push(approval);
    approvals.retain(|a| current(a.at, now));
    approvals.sort_by_key(|a| std::cmp::Reverse(a.at));
    approvals.truncate(MAX_APPROVALS);
    *approvals != before
}

/// Who approved `head` of pull request `pull_request`, if anyone did and the approval
/// still counts `now` (within its retention, not dated in the future).
pub fn approver<'a>(
    approvals: &'a [Approval],
    pull_request: u64,
    head: &str,
    now: i64,
) -> Option<&'a str> {
    approvals
        .iter()
        .filter(|a| current(a.at, now))
        .find(|a| a.pull_request == pull_request && a.head == head)
        .map(|a| a.by.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(pull_request: u64, head: &str, by: &str, at: i64) -> Approval {
        Approval {
            pull_request,
            head: head.into(),
            by: by.into(),
            at,
        }
    }

    #[test]
    fn an_approval_is_of_one_head_of_one_pull_request() {
        let mut approvals = Vec::new();
        assert!(record(&mut approvals, approval(7, "aaa", "boss", 100), 100));
        assert_eq!(approver(&approvals, 7, "aaa", 100), Some("boss"));
        assert_eq!(approver(&approvals, 7, "bbb", 100), None, "a later push");
        assert_eq!(
            approver(&approvals, 8, "aaa", 100),
            None,
            "another pull request"
        );
        assert!(
            record(&mut approvals, approval(7, "aaa", "chief", 200), 200),
            "approved again by someone else"
        );
        assert_eq!(approvals.len(), 1);
        assert_eq!(approver(&approvals, 7, "aaa", 200), Some("chief"));
    }

    #[test]
    fn approvals_expire_and_are_bounded() {
        let mut approvals = Vec::new();
        for n in 0..(MAX_APPROVALS as u64 + 10) {
            record(&mut approvals, approval(n, "h", "boss", n as i64), n as i64);
        }
        assert_eq!(approvals.len(), MAX_APPROVALS);
        let now = MAX_APPROVALS as i64 + 10;
        assert_eq!(
            approver(&approvals, 0, "h", now),
            None,
            "the oldest went first"
        );
        assert!(approver(&approvals, MAX_APPROVALS as u64 + 9, "h", now).is_some());
        let later = APPROVAL_RETENTION + 50;
        record(&mut approvals, approval(1_000, "h", "boss", later), later);
        assert!(approvals.iter().all(|a| later - a.at < APPROVAL_RETENTION));
        assert!(approver(&approvals, 1_000, "h", later).is_some());
    }

    #[test]
    fn an_expired_or_future_dated_approval_counts_for_nothing() {
        // As read from a ledger someone else wrote: nothing recorded it through `record`.
        let old = [approval(7, "h", "boss", 0)];
        assert_eq!(approver(&old, 7, "h", APPROVAL_RETENTION * 10), None);
        let forged = vec![approval(7, "h", "boss", i64::MAX / 2)];
        assert_eq!(approver(&forged, 7, "h", 1_000), None);
        let mut approvals = forged;
        record(&mut approvals, approval(8, "x", "boss", 1_000), 1_000);
        assert_eq!(
            approvals.len(),
            1,
            "pruned when the next approval is recorded"
        );
    }
}
