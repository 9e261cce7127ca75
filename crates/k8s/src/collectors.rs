//! Build pods' collectors as the Kubernetes engine knows them (issue 30): a bearer token
//! is whatever the cluster's TokenReview (`authentication.k8s.io/v1`, audience
//! `kubeci-collect`) says it is — kubeci never reads a Secret, nor checks a signature
//! itself. Before a review, the token's unverified claims must name one of the build pods
//! in kubeci's caches, with its uid, for `kubeci-collect`, unexpired
//! ([`TokenClaims::screen`]): anything else is refused at no cost to the API server, and
//! the review must name the pod the claims do ([`TokenClaims::confirm`]). Each answer is
//! kept a minute by the token's SHA-256 (never the token), acceptances apart from
//! refusals ([`KeptReviews`]: no flood of refusals makes a collector's answer go), so a
//! collector's many files cost one review. At most [`REVIEWS_AT_ONCE`] reviews run at
//! once, at most [`REVIEWS_PER_NAMESPACE`] asked or waiting for the tokens of one
//! namespace (as their claims name it); a request waits at most [`REVIEW_TURN`] for its
//! turn and a review takes at most
//! [`REVIEW_DEADLINE`], else `503 cannot-review` (the collector tries again). What a
//! review says is only who: which build and files it may send is decided over the pod
//! and Job in the caches (`kubeci_engine::collector`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kubeci_build::outputs::COLLECT_AUDIENCE;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_engine::collector::{
    Answer, CollectRefusal, CollectorIdentity, KeptReviews, TokenClaims, TokenKey,
};
use sha2::{Digest, Sha256};

use crate::Cluster;

/// Reviews asked of the API server at once; more wait their turn, up to [`REVIEW_TURN`].
pub const REVIEWS_AT_ONCE: usize = 8;

/// Reviews one namespace's tokens (by what their claims name) may have asked or be
/// waiting for at once: half the turns, so one tenant's made-up tokens naming its own
/// pods never hold every turn while other namespaces' collectors wait.
pub const REVIEWS_PER_NAMESPACE: usize = REVIEWS_AT_ONCE / 2;

/// Reviews the tokens naming one pod may have asked or be waiting for at once: a
/// collector sends one file at a time, so made-up tokens naming a pod (which its own
/// build step, a pull request's code, can write) hold its own turns, not its namespace's.
pub const REVIEWS_PER_POD: usize = 2;

/// How long a request waits for its turn to ask for a review before it is answered
/// `503 cannot-review`: never an unbounded queue.
pub const REVIEW_TURN: Duration = Duration::from_secs(3);

/// How long the API server has to answer a review (else `503 cannot-review`).
pub const REVIEW_DEADLINE: Duration = Duration::from_secs(10);

/// The answers kept, and the bounds on reviews at once.
pub(crate) struct Reviews {
    kept: std::sync::Mutex<KeptReviews>,
    at_once: tokio::sync::Semaphore,
    /// Reviews asked or waiting, by the namespace and by the pod the tokens' claims name.
    by_namespace: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Default for Reviews {
    fn default() -> Self {
        Reviews {
            kept: Default::default(),
            at_once: tokio::sync::Semaphore::new(REVIEWS_AT_ONCE),
            by_namespace: Default::default(),
        }
    }
}

/// A token's place among the reviews asked or waiting — counted for the namespace and the
/// pod its claims name — given back when dropped.
struct InLine<'a> {
    reviews: &'a Reviews,
    keys: [String; 2],
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut counts = self.reviews.by_namespace.lock().expect("the reviews lock");
        for key in &self.keys {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

impl Reviews {
    /// A place for a review of a token naming pod `pod` of `namespace`, unless that
    /// namespace already has [`REVIEWS_PER_NAMESPACE`] asked or waiting, or that pod
    /// [`REVIEWS_PER_POD`].
    fn line_up(&self, namespace: &str, pod: &str) -> Option<InLine<'_>> {
        let mut counts = self.by_namespace.lock().expect("the reviews lock");
        // A namespace's name has no `/`: the two kinds of key never meet.
        let keys = [namespace.to_owned(), format!("{namespace}/{pod}")];
        let limits = [REVIEWS_PER_NAMESPACE, REVIEWS_PER_POD];
        let full = (keys.iter().zip(limits))
            .any(|(key, limit)| counts.get(key).is_some_and(|count| *count >= limit));
        if full {
            return None;
        }
        for key in &keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
        Some(InLine {
            reviews: self,
            keys,
        })
    }
}

fn cannot_review(why: &str) -> CollectRefusal {
    CollectRefusal::new(
        503,
        "cannot-review",
        format!("the cluster cannot say who this is now ({why}): try again"),
    )
}

impl Cluster {
    /// Who presents `token` as a collector: asked of the cluster, or as it answered
    /// within the last minute — if its claims make it worth asking.
    pub(crate) async fn review_collector_token(&self, token: &str) -> Answer {
        let claims = TokenClaims::read(token)?;
        let claimed = &claims.pod;
        let cached = self.cached_pod(&claimed.namespace, &claimed.pod);
        let now = jiff::Timestamp::now().as_second();
        claims.screen(now, cached.as_ref().and_then(|p| p.metadata.uid.as_deref()))?;
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.kept_review(&key) {
            return answer;
        }
        let Some(_in_line) = self.reviews.line_up(&claimed.namespace, &claimed.pod) else {
            return Err(cannot_review(
                "too many tokens of this namespace or pod to review at once",
            ));
        };
        let turn = tokio::time::timeout(REVIEW_TURN, self.reviews.at_once.acquire()).await;
        let Ok(_turn) = turn else {
            tracing::warn!(
                "a collector's token waited {REVIEW_TURN:?} for one of {REVIEWS_AT_ONCE} TokenReviews: answered 503"
            );
            return Err(cannot_review("too many tokens to review at once"));
        };
        if let Some(answer) = self.kept_review(&key) {
            return answer;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![COLLECT_AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let reviews = Api::<TokenReview>::all(self.client.clone());
        let asked = tokio::time::timeout(
            REVIEW_DEADLINE,
            reviews.create(&PostParams::default(), &review),
        )
        .await;
        // Neither failure is kept: the next request asks again.
        let answer = match asked {
            Ok(Ok(reviewed)) => {
                let status = reviewed.status.unwrap_or_default();
                claims.confirm(CollectorIdentity::of_review(&status))
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot ask the cluster who a collector is (TokenReview)");
                return Err(cannot_review("its TokenReview failed"));
            }
            Err(_) => {
                tracing::warn!("the cluster did not answer a collector's TokenReview within {REVIEW_DEADLINE:?}");
                return Err(cannot_review("its TokenReview took too long"));
            }
        };
        let live = |who: &CollectorIdentity| {
            let pod = self.cached_pod(&who.namespace, &who.pod);
            pod.is_some_and(|p| p.metadata.uid.as_deref() == Some(who.pod_uid.as_str()))
        };
        let mut kept = self.reviews.kept.lock().expect("the reviews lock");
        kept.keep(key, &answer, Instant::now(), live);
        answer
    }

    fn kept_review(&self, key: &TokenKey) -> Option<Answer> {
        let kept = self.reviews.kept.lock().expect("the reviews lock");
        kept.answer(key, Instant::now())
    }

    /// Build pod `name` of `namespace`, from the caches.
    fn cached_pod(&self, namespace: &str, name: &str) -> Option<Arc<BuildPod>> {
        self.scopes
            .iter()
            .find_map(|scope| scope.pods.get(namespace, name))
    }

    /// Pod `who.pod` and the Job its controller reference names, from the caches.
    pub(crate) fn collector_objects(
        &self,
        who: &CollectorIdentity,
    ) -> (Option<Arc<BuildPod>>, Option<Arc<BuildJob>>) {
        let pod = self.cached_pod(&who.namespace, &who.pod);
        let owner = (pod.as_ref())
            .and_then(|p| p.metadata.owner_references.as_ref())
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.controller == Some(true) && r.kind == "Job")
            })
            .map(|r| r.name.clone());
        let job = owner.and_then(|name| self.cached_job(&who.namespace, &name));
        (pod, job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_namespace_s_tokens_never_line_up_for_every_review_turn() {
        let reviews = Reviews::default();
        let mine: Vec<_> = (0..REVIEWS_PER_NAMESPACE)
            .map(|n| {
                reviews
                    .line_up("mallory", &format!("build-{n}"))
                    .expect("within its share")
            })
            .collect();
        assert!(
            reviews.line_up("mallory", "build-9").is_none(),
            "past its share"
        );
        let theirs: Vec<_> = (0..REVIEWS_AT_ONCE - REVIEWS_PER_NAMESPACE)
            .map(|n| {
                reviews
                    .line_up("team", &format!("build-{n}"))
                    .expect("the other half stays free")
            })
            .collect();
        drop(mine);
        assert!(
            reviews.line_up("mallory", "build-0").is_some(),
            "its places given back"
        );
        assert_eq!(theirs.len(), REVIEWS_AT_ONCE / 2);
    }

    /// A pull request's code can make up tokens naming its own pod (it knows the pod's
    /// name and uid): they hold that pod's turns, and its namespace's other builds still
    /// get theirs.
    #[test]
    fn tokens_naming_one_pod_hold_that_pod_s_turns_only() {
        let reviews = Reviews::default();
        let forged: Vec<_> = (0..REVIEWS_PER_POD)
            .map(|_| {
                reviews
                    .line_up("team", "pr-build")
                    .expect("within the pod's share")
            })
            .collect();
        assert!(
            reviews.line_up("team", "pr-build").is_none(),
            "past the pod's share"
        );
        assert!(
            reviews.line_up("team", "main-build").is_some(),
            "another build of the namespace"
        );
        drop(forged);
        assert!(reviews.line_up("team", "pr-build").is_some());
    }
}
