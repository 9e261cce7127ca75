//! The cluster's answers about collectors' tokens, kept a while by a key of the token
//! (its SHA-256: never the token) so that a collector's many files cost one review —
//! accepted answers apart from refusals (issue 30, finding O1 of docs/security.md). A
//! flood of refused tokens fills and empties the refusals alone; accepted answers are
//! only those of build pods kubeci holds now, a few tokens each, so nothing a stranger
//! sends makes a real collector's answer go.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{CollectRefusal, CollectorIdentity};

/// How long an answer is kept: a collector hands over its build's files within the pod's
/// grace period (a minute); its pod is checked in the caches on every request.
pub const REVIEW_KEPT: Duration = Duration::from_secs(60);

/// The most refusals kept; past it, those expired go, then all refusals.
pub const REFUSALS_KEPT_AT_MOST: usize = 4_096;

/// The most accepted tokens kept per pod (the kubelet renews a pod's token; a tenant may
/// ask for more); past it, the pod's oldest goes.
pub const TOKENS_KEPT_PER_POD: usize = 4;

/// A key of a token: its SHA-256.
pub type TokenKey = [u8; 32];

/// What the cluster said of a token.
pub type Answer = Result<CollectorIdentity, CollectRefusal>;

/// The answers kept.
#[derive(Debug, Default)]
pub struct KeptReviews {
    accepted: HashMap<TokenKey, (Instant, CollectorIdentity)>,
    refused: HashMap<TokenKey, (Instant, CollectRefusal)>,
}

impl KeptReviews {
    /// The answer kept for `key`, if it was given within [`REVIEW_KEPT`] of `now`.
    pub fn answer(&self, key: &TokenKey, now: Instant) -> Option<Answer> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < REVIEW_KEPT;
        if let Some((at, who)) = self.accepted.get(key) {
            return fresh(at).then(|| Ok(who.clone()));
        }
        let (at, refusal) = self.refused.get(key)?;
        fresh(at).then(|| Err(refusal.clone()))
    }

    /// Keeps `answer` for `key`, given at `now`. An acceptance first lets go of those of
    /// pods no longer `live` (not in kubeci's caches) or expired, and of the pod's oldest
    /// past [`TOKENS_KEPT_PER_POD`]; a refusal, past [`REFUSALS_KEPT_AT_MOST`], of the
    /// refusals expired, then of all refusals — never of an acceptance.
    pub fn keep(
        &mut self,
        key: TokenKey,
        answer: &Answer,
        now: Instant,
        live: impl Fn(&CollectorIdentity) -> bool,
    ) {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < REVIEW_KEPT;
        match answer {
            Ok(who) => {
                self.refused.remove(&key);
                self.accepted
                    .retain(|_, (at, kept)| fresh(at) && live(kept));
                let mut same_pod: Vec<(Instant, TokenKey)> = (self.accepted.iter())
                    .filter(|(k, (_, kept))| kept == who && **k != key)
                    .map(|(k, (at, _))| (*at, *k))
                    .collect();
                same_pod.sort();
                let over = (same_pod.len() + 1).saturating_sub(TOKENS_KEPT_PER_POD);
                for (_, oldest) in same_pod.into_iter().take(over) {
                    self.accepted.remove(&oldest);
                }
                self.accepted.insert(key, (now, who.clone()));
            }
            Err(refusal) => {
                self.accepted.remove(&key);
                if self.refused.len() >= REFUSALS_KEPT_AT_MOST {
                    self.refused.retain(|_, (at, _)| fresh(at));
                    if self.refused.len() >= REFUSALS_KEPT_AT_MOST {
                        self.refused.clear();
                    }
                }
                self.refused.insert(key, (now, refusal.clone()));
            }
        }
    }

    /// How many acceptances and refusals are kept.
    pub fn counts(&self) -> (usize, usize) {
        (self.accepted.len(), self.refused.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> CollectorIdentity {
        CollectorIdentity {
            namespace: "team".into(),
            pod: name.into(),
            pod_uid: format!("{name}-uid"),
        }
    }

    fn key(n: usize) -> TokenKey {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(n as u64).to_be_bytes());
        key
    }

    fn refusal() -> CollectRefusal {
        CollectRefusal::new(401, "not-a-collector", "not issued")
    }

    #[test]
    fn a_flood_of_refusals_never_lets_a_collector_s_answer_go() {
        let mut kept = KeptReviews::default();
        let start = Instant::now();
        kept.keep(key(0), &Ok(pod("web-1")), start, |_| true);
        for n in 1..=3 * REFUSALS_KEPT_AT_MOST {
            kept.keep(key(n), &Err(refusal()), start, |_| true);
        }
        assert_eq!(kept.answer(&key(0), start), Some(Ok(pod("web-1"))));
        let (accepted, refused) = kept.counts();
        assert_eq!(accepted, 1);
        assert!(refused <= REFUSALS_KEPT_AT_MOST, "{refused}");
        // A refusal kept is answered as kept, while it is fresh.
        let last = key(3 * REFUSALS_KEPT_AT_MOST);
        assert_eq!(kept.answer(&last, start), Some(Err(refusal())));
        assert_eq!(kept.answer(&last, start + REVIEW_KEPT), None);
    }

    #[test]
    fn acceptances_are_bounded_by_the_live_pods_a_few_tokens_each() {
        let mut kept = KeptReviews::default();
        let start = Instant::now();
        for n in 0..10 {
            kept.keep(key(n), &Ok(pod("web-1")), start, |_| true);
        }
        assert_eq!(kept.counts().0, TOKENS_KEPT_PER_POD);
        // The newest are kept.
        assert_eq!(kept.answer(&key(9), start), Some(Ok(pod("web-1"))));
        assert_eq!(kept.answer(&key(0), start), None);
        // A pod gone from the caches takes its tokens with it at the next acceptance.
        kept.keep(key(100), &Ok(pod("web-2")), start, |who| who.pod == "web-2");
        assert_eq!(kept.counts().0, 1);
        // An expired acceptance goes too, and is not answered meanwhile.
        let later = start + REVIEW_KEPT;
        assert_eq!(kept.answer(&key(100), later), None);
        kept.keep(key(101), &Ok(pod("web-3")), later, |_| true);
        assert_eq!(kept.counts().0, 1);
    }

    #[test]
    fn a_token_answered_again_keeps_only_its_newest_answer() {
        let mut kept = KeptReviews::default();
        let now = Instant::now();
        kept.keep(key(1), &Err(refusal()), now, |_| true);
        kept.keep(key(1), &Ok(pod("web-1")), now, |_| true);
        assert_eq!(kept.counts(), (1, 0));
        kept.keep(key(1), &Err(refusal()), now, |_| true);
        assert_eq!(kept.counts(), (0, 1));
        assert_eq!(kept.answer(&key(1), now), Some(Err(refusal())));
    }
}
