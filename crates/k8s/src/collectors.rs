//! Build pods' collectors as the Kubernetes engine knows them (issue 30): a bearer token
//! is whatever the cluster's TokenReview (`authentication.k8s.io/v1`, audience
//! `kubeci-collect`) says it is — kubeci never reads a Secret, nor checks a signature
//! itself. Each answer is kept [`REVIEW_KEPT`] by the token's SHA-256 (never the token),
//! so a collector's many files cost one review; a token refused is kept refused as long,
//! so a flood of bad tokens costs the API server one review each at most per minute, and
//! at most [`REVIEWS_AT_ONCE`] reviews run at once. What a review says is only who: which
//! build and files it may send is decided over the pod and Job in the caches
//! (`kubeci_engine::collector`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kubeci_build::outputs::COLLECT_AUDIENCE;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_engine::collector::{CollectRefusal, CollectorIdentity};
use sha2::{Digest, Sha256};

use crate::Cluster;

/// How long a review's answer is kept: a collector hands over its build's files within
/// the pod's grace period (a minute); its pod is checked in the caches on every request.
pub const REVIEW_KEPT: Duration = Duration::from_secs(60);

/// Reviews asked of the API server at once; more wait.
pub const REVIEWS_AT_ONCE: usize = 8;

/// The most answers kept; past it, those expired go, then all.
const KEPT_AT_MOST: usize = 4_096;

/// The longest token reviewed (a projected token is about a kilobyte).
const LONGEST_TOKEN: usize = 16 * 1024;

type Answer = Result<CollectorIdentity, CollectRefusal>;

/// The answers kept, and the bound on reviews at once.
pub(crate) struct Reviews {
    kept: std::sync::Mutex<HashMap<[u8; 32], (Instant, Answer)>>,
    at_once: tokio::sync::Semaphore,
}

impl Default for Reviews {
    fn default() -> Self {
        Reviews {
            kept: Default::default(),
            at_once: tokio::sync::Semaphore::new(REVIEWS_AT_ONCE),
        }
    }
}

impl Reviews {
    fn kept(&self, key: &[u8; 32]) -> Option<Answer> {
        let kept = self.kept.lock().expect("the reviews lock");
        let (at, answer) = kept.get(key)?;
        (at.elapsed() < REVIEW_KEPT).then(|| answer.clone())
    }

    fn keep(&self, key: [u8; 32], answer: &Answer) {
        let mut kept = self.kept.lock().expect("the reviews lock");
        if kept.len() >= KEPT_AT_MOST {
            kept.retain(|_, (at, _)| at.elapsed() < REVIEW_KEPT);
            if kept.len() >= KEPT_AT_MOST {
                kept.clear();
            }
        }
        kept.insert(key, (Instant::now(), answer.clone()));
    }
}

impl Cluster {
    /// Who presents `token` as a collector: asked of the cluster, or as it answered
    /// within the last minute.
    pub(crate) async fn review_collector_token(&self, token: &str) -> Answer {
        if token.is_empty() || token.len() > LONGEST_TOKEN {
            return Err(CollectRefusal::new(
                401,
                "not-a-collector",
                "give the pod's kubeci-collect token: `Authorization: Bearer TOKEN`",
            ));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.reviews.kept(&key) {
            return answer;
        }
        let _turn = self.reviews.at_once.acquire().await.expect("never closed");
        if let Some(answer) = self.reviews.kept(&key) {
            return answer;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![COLLECT_AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let asked = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await;
        let answer = match asked {
            Ok(reviewed) => {
                let status = reviewed.status.unwrap_or_default();
                CollectorIdentity::of_review(&status)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot ask the cluster who a collector is (TokenReview)");
                // Not kept: the next request asks again.
                return Err(CollectRefusal::new(
                    503,
                    "cannot-review",
                    "the cluster cannot say who this is now: try again",
                ));
            }
        };
        self.reviews.keep(key, &answer);
        answer
    }

    /// Pod `who.pod` and the Job its controller reference names, from the caches.
    pub(crate) fn collector_objects(
        &self,
        who: &CollectorIdentity,
    ) -> (Option<Arc<BuildPod>>, Option<Arc<BuildJob>>) {
        let key = ObjectRef::new(&who.pod).within(&who.namespace);
        let pod = self.scopes.iter().find_map(|scope| scope.pods.get(&key));
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
