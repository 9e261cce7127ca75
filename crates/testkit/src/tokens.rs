//! Service-account tokens as the fake API server issues and reviews them, as Kubernetes
//! does for bound tokens: a TokenRequest (`POST …/serviceaccounts/{name}/token`) gives a
//! token for its audiences, bound to a pod; a TokenReview (`POST
//! /apis/authentication.k8s.io/v1/tokenreviews`) of a token it issued says who it is —
//! the ServiceAccount, and the pod's name and uid in `extra` — only for one of its
//! audiences, before it expires, and while the pod it is bound to exists with that uid. A
//! token it did not issue is not authenticated. A token is bound only to a pod running as
//! its ServiceAccount (`spec.serviceAccountName`, `default` when empty), else `400
//! BadRequest` in kube-apiserver's words.
//!
//! A token is shaped as the real API server's: a JWT (`header.claims.signature`, each
//! base64url) whose claims are kube-apiserver's — `aud`, `exp`, `iat`, `nbf`, `iss`,
//! `jti`, `sub` and `kubernetes.io` (`namespace`, `serviceaccount`, and the `pod` it is
//! bound to; `node` by name once the pod names one) — so that whoever reads a token's
//! claims unverified, as kubeci does before it asks for a review, reads what it would in
//! a cluster (`tests/against_the_real_api_server/tokens.rs` compares them).
//!
//! Not reproduced: the signature — 256 random bytes, signed by nothing: the fake knows
//! its tokens by keeping them, so a token with made-up claims is refused however it is
//! signed, as a real one with a bad signature is; and the ServiceAccount's existence (the
//! fake has no ServiceAccount controller).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::store::{ApiError, Store};

const PODS: usize = 3;

/// The audience of a TokenRequest or TokenReview that names none: the API server's own.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

struct Issued {
    namespace: String,
    account: String,
    audiences: Vec<String>,
    /// The pod it is bound to: (name, uid).
    pod: Option<(String, String)>,
    expires: jiff::Timestamp,
}

/// The tokens issued so far.
#[derive(Default)]
pub struct Tokens {
    issued: HashMap<String, Issued>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system's random source");
    bytes
}

/// A JWT of `claims`, as kube-apiserver signs one (RS256), but with a random signature.
fn unsigned_jwt(claims: &Value) -> String {
    use base64::Engine as _;
    let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": "RS256", "kid": "kubeci-fake-api-server"});
    [
        base64url.encode(header.to_string()),
        base64url.encode(claims.to_string()),
        base64url.encode(random_bytes::<256>()),
    ]
    .join(".")
}

/// A random UUID (version 4), as a token's `jti`.
fn random_uuid() -> String {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The uid the fake gives ServiceAccount `account` of `namespace` (it keeps none).
fn account_uid(namespace: &str, account: &str) -> String {
    format!("fake-serviceaccount-uid-{namespace}-{account}")
}

fn audiences_of(spec: &Value) -> Vec<String> {
    let listed: Vec<String> = (spec["audiences"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if listed.is_empty() {
        vec![API_AUDIENCE.to_owned()]
    } else {
        listed
    }
}

impl Tokens {
    /// A TokenRequest for ServiceAccount `account` of `namespace`: the request with its
    /// `status` (the token and when it expires) filled in.
    pub fn request(
        &mut self,
        store: &Store,
        namespace: &str,
        account: &str,
        mut request: Value,
    ) -> Result<Value, ApiError> {
        let spec = &request["spec"];
        let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        if seconds < 600 {
            return Err(ApiError::new(
                422,
                "Invalid",
                "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: may not specify a duration less than 10 minutes",
            ));
        }
        let bound = &spec["boundObjectRef"];
        let pod = match bound["kind"].as_str() {
            None => None,
            Some("Pod") => {
                let name = bound["name"].as_str().unwrap_or_default();
                let found = store.get(PODS, namespace, name)?;
                // The fake admits pods without naming their account: `default`, as the
                // ServiceAccount admission plugin sets it.
                let runs_as = (found["spec"]["serviceAccountName"].as_str())
                    .filter(|name| !name.is_empty())
                    .unwrap_or("default");
                if runs_as != account {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
                    )));
                }
                let uid = found["metadata"]["uid"].as_str().unwrap_or_default();
                if bound["uid"].as_str().is_some_and(|asked| asked != uid) {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!("the UID in the bound object reference ({}) does not match the UID in record. The object might have been deleted and then recreated", bound["uid"]),
                    ));
                }
                let node = found["spec"]["nodeName"].as_str().unwrap_or_default();
                Some((name.to_owned(), uid.to_owned(), node.to_owned()))
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind a token to a {other}: the fake binds to pods only"
                )))
            }
        };
        // Whole seconds, as a JWT's times are.
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .expect("now is a time");
        let expires = now + jiff::SignedDuration::from_secs(seconds);
        let audiences = audiences_of(spec);
        let mut bound = json!({
            "namespace": namespace,
            "serviceaccount": {"name": account, "uid": account_uid(namespace, account)},
        });
        if let Some((name, uid, node)) = &pod {
            bound["pod"] = json!({"name": name, "uid": uid});
            if !node.is_empty() {
                // The real one adds the Node's uid too, when it finds the Node: the fake
                // has no Nodes.
                bound["node"] = json!({"name": node});
            }
        }
        let claims = json!({
            "aud": audiences,
            "exp": expires.as_second(),
            "iat": now.as_second(),
            "iss": API_AUDIENCE,
            "jti": random_uuid(),
            "kubernetes.io": bound,
            "nbf": now.as_second(),
            "sub": format!("system:serviceaccount:{namespace}:{account}"),
        });
        let token = unsigned_jwt(&claims);
        self.issued.insert(
            token.clone(),
            Issued {
                namespace: namespace.to_owned(),
                account: account.to_owned(),
                audiences,
                pod: pod.map(|(name, uid, _node)| (name, uid)),
                expires,
            },
        );
        request["status"] = json!({
            "token": token,
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        Ok(request)
    }

    /// A TokenReview: the review with its `status` filled in.
    pub fn review(&self, store: &Store, mut review: Value) -> Value {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let wanted = audiences_of(&review["spec"]);
        review["status"] = match self.who(store, token, &wanted) {
            Ok(status) => status,
            Err(error) => json!({"authenticated": false, "error": error}),
        };
        review
    }

    fn who(&self, store: &Store, token: &str, wanted: &[String]) -> Result<Value, String> {
        let issued = self
            .issued
            .get(token)
            .ok_or(if token.split('.').count() == 3 {
                // As kube-apiserver 1.35 answers a JWT whose signature is not its own.
                "[invalid bearer token, go-jose/go-jose: error in cryptographic primitive]"
            } else {
                "[invalid bearer token, square/go-jose: compact JWS format must have three parts]"
            })?;
        let audiences: Vec<&String> = wanted
            .iter()
            .filter(|a| issued.audiences.contains(a))
            .collect();
        if audiences.is_empty() {
            return Err(format!(
                "[invalid bearer token, token audiences {:?} is invalid for the target audiences {wanted:?}]",
                issued.audiences
            ));
        }
        if jiff::Timestamp::now() >= issued.expires {
            return Err("[invalid bearer token, service account token has expired]".into());
        }
        let namespace = &issued.namespace;
        let mut extra = json!({});
        if let Some((name, uid)) = &issued.pod {
            let live = store.get(PODS, namespace, name).ok();
            let live_uid = live.as_ref().and_then(|p| p["metadata"]["uid"].as_str());
            if live_uid != Some(uid.as_str()) {
                return Err(format!("[invalid bearer token, pod \"{name}\" (uid {uid}) is not found or has been deleted]"));
            }
            extra = json!({
                "authentication.kubernetes.io/pod-name": [name],
                "authentication.kubernetes.io/pod-uid": [uid],
            });
        }
        Ok(json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{namespace}:{}", issued.account),
                "uid": account_uid(namespace, &issued.account),
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
                "extra": extra,
            },
            "audiences": audiences,
        }))
    }
}
