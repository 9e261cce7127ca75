//! What a collector's token says of itself, read before the cluster is asked (issue 30,
//! finding O1 of docs/security.md). A bound ServiceAccount token is a JWT whose claims
//! name its audiences, its expiry and the pod it is bound to. kubeci does not check its
//! signature — the cluster's TokenReview stays the only authority on who presents it —
//! so the claims are only a cheap filter: a token whose claims could not be a build pod
//! collector's (not a JWT, another audience, expired, bound to no pod, or to a pod that is
//! not one of kubeci's build pods with that uid) is refused without costing the API
//! server a review; and a review's answer must name the pod the token claims.

use base64::Engine as _;
use serde::Deserialize;

use super::{CollectRefusal, CollectorIdentity};
use kubeci_build::outputs::COLLECT_AUDIENCE;

/// The longest token read (a projected token is about a kilobyte).
pub const LONGEST_TOKEN: usize = 16 * 1024;

/// How far past its `exp` a token is still reviewed: kubeci's clock and the API server's
/// may differ by this much.
pub const EXPIRY_LEEWAY_SECONDS: i64 = 60;

/// What a token claims, unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// `aud`: whom it is for.
    pub audiences: Vec<String>,
    /// `exp`, in seconds since the Unix epoch.
    pub expires: i64,
    /// `kubernetes.io`: the namespace, and the pod it is bound to (name and uid).
    pub pod: CollectorIdentity,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Named {
    name: String,
    uid: String,
}

#[derive(Deserialize)]
struct Bound {
    namespace: String,
    pod: Option<Named>,
}

#[derive(Deserialize)]
struct Claims {
    aud: Audiences,
    /// A JWT's NumericDate may have a fraction.
    exp: f64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: Option<Bound>,
}

fn not_a_collector(why: impl Into<String>) -> CollectRefusal {
    CollectRefusal::new(401, "not-a-collector", why)
}

fn not_a_token() -> CollectRefusal {
    not_a_collector(format!(
        "the token is not a Kubernetes ServiceAccount token (a JWT: header.claims.signature, \
         each base64url): give the pod's {COLLECT_AUDIENCE} token, `Authorization: Bearer TOKEN`"
    ))
}

impl TokenClaims {
    /// The claims of `token`, a JWT (`header.claims.signature`, each base64url without
    /// padding, the header and the claims JSON objects), its signature not checked.
    pub fn read(token: &str) -> Result<TokenClaims, CollectRefusal> {
        if token.is_empty() || token.len() > LONGEST_TOKEN {
            return Err(not_a_token());
        }
        let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(not_a_token());
        };
        let decoded = |part: &str| base64url.decode(part).ok().filter(|b| !b.is_empty());
        let (Some(header), Some(claims), Some(_)) =
            (decoded(header), decoded(claims), decoded(signature))
        else {
            return Err(not_a_token());
        };
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&header)
            .map_err(|_| not_a_token())?;
        let claims: Claims = serde_json::from_slice(&claims).map_err(|_| not_a_token())?;
        let audiences = match claims.aud {
            Audiences::One(one) => vec![one],
            Audiences::Many(many) => many,
        };
        let bound = claims.kubernetes.ok_or_else(not_bound)?;
        let pod = bound.pod.ok_or_else(not_bound)?;
        if !claims.exp.is_finite() {
            return Err(not_a_token());
        }
        Ok(TokenClaims {
            audiences,
            // Saturating: an `exp` past i64 is far future, one below far past.
            expires: claims.exp.floor() as i64,
            pod: CollectorIdentity {
                namespace: bound.namespace,
                pod: pod.name,
                pod_uid: pod.uid,
            },
        })
    }

    /// Whether a token of these claims is worth a TokenReview at `now` (seconds since the
    /// Unix epoch), the pod it names being `cached_pod_uid` in kubeci's build pod caches
    /// (its uid, or `None` if they hold no build pod of that name): for
    /// [`COLLECT_AUDIENCE`], not expired, bound to a build pod kubeci runs, that same pod
    /// (its uid: not one made again under that name). Otherwise why not (`401`).
    pub fn screen(&self, now: i64, cached_pod_uid: Option<&str>) -> Result<(), CollectRefusal> {
        if !self.audiences.iter().any(|a| a == COLLECT_AUDIENCE) {
            return Err(not_a_collector(format!(
                "the token is for {:?}, not {COLLECT_AUDIENCE}: give the pod's {COLLECT_AUDIENCE} token",
                self.audiences
            )));
        }
        if self.expires.saturating_add(EXPIRY_LEEWAY_SECONDS) < now {
            let expired = jiff::Timestamp::from_second(self.expires)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| self.expires.to_string());
            return Err(not_a_collector(format!(
                "the token expired at {expired}: a collector's token lives while its pod does"
            )));
        }
        let pod = &self.pod;
        if cached_pod_uid.is_none_or(|uid| uid != pod.pod_uid) {
            return Err(not_a_collector(format!(
                "the token is bound to pod {}/{} (uid {}), which is not a build pod kubeci runs: only a build's own pod may hand over its files",
                cut(&pod.namespace), cut(&pod.pod), cut(&pod.pod_uid)
            )));
        }
        Ok(())
    }

    /// Who the cluster's review says presented the token, if it is the pod these claims
    /// name; otherwise why not (`401`: the claims lie, which a token the cluster signed
    /// never does).
    pub fn confirm(
        &self,
        reviewed: Result<CollectorIdentity, CollectRefusal>,
    ) -> Result<CollectorIdentity, CollectRefusal> {
        let who = reviewed?;
        if who != self.pod {
            return Err(not_a_collector(format!(
                "the cluster says the token is pod {}/{}'s, not the pod its claims name",
                who.namespace, who.pod
            )));
        }
        Ok(who)
    }
}

fn not_bound() -> CollectRefusal {
    not_a_collector(
        "the token is not bound to a pod (a build pod's collector presents its own pod's token)",
    )
}

/// A claimed name, as a refusal quotes it: at most 253 characters, escaped.
fn cut(text: &str) -> String {
    let text: String = text.chars().take(253).collect();
    text.escape_default().to_string()
}

#[cfg(test)]
mod tests;
