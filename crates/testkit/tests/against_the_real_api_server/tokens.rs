//! Service-account tokens bound to a pod, as kubeci's collectors use them (issue 30).

use std::time::Duration;

use serde_json::{json, Value};

use super::{fake, Server};

/// Pod `holder` of `ns` (it runs `/bin/true`) and a TokenRequest's answer
/// for a `kubeci-collect` token bound to it: the pod's uid and the answer.
async fn holder_and_its_token(server: &Server, ns: &str) -> (String, Value) {
    let pod = json!({"metadata": {"name": "holder"}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "bash:5", "command": ["/bin/true"]}]}});
    let pod = server
        .json("POST", &format!("/api/v1/namespaces/{ns}/pods"), Some(pod))
        .await;
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["kubeci-collect"], "expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "holder", "uid": uid}}});
    let token_path = format!("/api/v1/namespaces/{ns}/serviceaccounts/default/token");
    let issued = server.json("POST", &token_path, Some(request)).await;
    (uid, issued)
}

/// What kubeci's collector relies on (issue 30): a token requested for an audience and
/// bound to a pod is reviewed as that pod's ServiceAccount, naming the pod and its uid —
/// for that audience only, and only while the pod lives; a token no one issued is nothing.
pub(super) async fn a_bound_token_is_reviewed_for_its_audience_while_its_pod_lives(
    server: &Server,
) -> Value {
    let ns = server.namespace().await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let (uid, issued) = holder_and_its_token(server, &ns).await;
    let token = issued["status"]["token"].as_str().unwrap().to_owned();
    let review = |token: &str, audience: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": token, "audiences": [audience]}})
    };
    let reviews = "/apis/authentication.k8s.io/v1/tokenreviews";
    let good = server
        .json("POST", reviews, Some(review(&token, "kubeci-collect")))
        .await;
    let user = &good["status"]["user"];
    let other_audience = server
        .json("POST", reviews, Some(review(&token, "another-service")))
        .await;
    let forged = server
        .json(
            "POST",
            reviews,
            Some(review("not-a-token", "kubeci-collect")),
        )
        .await;
    let delete = json!({"gracePeriodSeconds": 0});
    server
        .send("DELETE", &format!("{pods}/holder"), Some(delete))
        .await
        .unwrap();
    let mut after_deletion = Value::Null;
    for _ in 0..300 {
        after_deletion = server
            .json("POST", reviews, Some(review(&token, "kubeci-collect")))
            .await;
        if after_deletion["status"]["authenticated"] != true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    json!({
        "issued": token.len() > 20,
        "authenticated": good["status"]["authenticated"],
        "username": user["username"].as_str().map(|u| u.replace(&ns, "NS")),
        "pod-name": user["extra"]["authentication.kubernetes.io/pod-name"],
        "pod-uid is the pod's": user["extra"]["authentication.kubernetes.io/pod-uid"] == json!([uid]),
        "audiences": good["status"]["audiences"],
        "another audience": other_audience["status"]["authenticated"].as_bool().unwrap_or(false),
        "a token never issued": forged["status"]["authenticated"].as_bool().unwrap_or(false),
        "once its pod is deleted": after_deletion["status"]["authenticated"].as_bool().unwrap_or(false),
    })
}

/// The fake's answers of [`a_bound_token_is_reviewed_for_its_audience_while_its_pod_lives`],
/// in the fast lane (the real API server's are compared with them above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_reviews_the_bound_tokens_it_issued() {
    let seen = a_bound_token_is_reviewed_for_its_audience_while_its_pod_lives(&fake().await).await;
    assert_eq!(
        seen,
        json!({
            "issued": true,
            "authenticated": true,
            "username": "system:serviceaccount:NS:default",
            "pod-name": ["holder"],
            "pod-uid is the pod's": true,
            "audiences": ["kubeci-collect"],
            "another audience": false,
            "a token never issued": false,
            "once its pod is deleted": false,
        })
    );
}

/// A TokenRequest binds a ServiceAccount's token only to a pod running as that account
/// (`spec.serviceAccountName`, `default` when the pod names none): another account's is
/// refused, as kube-apiserver's `pkg/registry/core/serviceaccount/storage/token.go` does.
pub(super) async fn a_token_is_bound_only_to_a_pod_running_as_its_service_account(
    server: &Server,
) -> Value {
    let ns = server.namespace().await;
    server
        .json(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            Some(json!({"metadata": {"name": "other"}})),
        )
        .await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    for (name, account) in [("as-default", None), ("as-other", Some("other"))] {
        let mut spec = json!({"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "bash:5", "command": ["/bin/true"]}]});
        if let Some(account) = account {
            spec["serviceAccountName"] = json!(account);
        }
        server
            .json(
                "POST",
                &pods,
                Some(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await;
    }
    let bind = |account: &'static str, pod: &'static str| {
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{account}/token");
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["kubeci-collect"], "expirationSeconds": 600,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod}}});
        async move {
            match server.send("POST", &path, Some(request)).await {
                Ok(_) => json!("issued"),
                Err(status) => json!({"code": status["code"], "reason": status["reason"],
                                      "message": status["message"]}),
            }
        }
    };
    json!({
        "default to a pod running as default": bind("default", "as-default").await,
        "other to a pod running as other": bind("other", "as-other").await,
        "other to a pod running as default": bind("other", "as-default").await,
        "default to a pod running as other": bind("default", "as-other").await,
    })
}

/// The fake's answers of [`a_token_is_bound_only_to_a_pod_running_as_its_service_account`]
/// (those the real API server gives, compared above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_binds_a_token_only_to_a_pod_running_as_its_service_account() {
    let seen = a_token_is_bound_only_to_a_pod_running_as_its_service_account(&fake().await).await;
    let refused = |account: &str| {
        json!({"code": 400, "reason": "BadRequest", "message": format!(
            "cannot bind token for serviceaccount \"{account}\" to pod running with different serviceaccount name."
        )})
    };
    assert_eq!(
        seen,
        json!({
            "default to a pod running as default": "issued",
            "other to a pod running as other": "issued",
            "other to a pod running as default": refused("other"),
            "default to a pod running as other": refused("default"),
        })
    );
}

/// One part of a JWT, decoded (base64url without padding) and read as JSON.
fn jwt_part(part: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("a JWT part is base64url ({e}): {part}"));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// An object's keys, sorted, but `left_out`.
fn keys_of(object: &Value, left_out: &[&str]) -> Value {
    let mut keys: Vec<&String> = (object.as_object().into_iter().flat_map(|o| o.keys()))
        .filter(|key| !left_out.contains(&key.as_str()))
        .collect();
    keys.sort();
    json!(keys)
}

/// What kubeci reads of a collector's token before it asks for a review (issue 30,
/// finding O1): a bound token is a JWT (header, claims, signature) whose claims name its
/// audiences, its expiry and, under `kubernetes.io`, its namespace, ServiceAccount and pod
/// (name and uid). (`kubernetes.io.node`, there once the pod is scheduled, is left out:
/// when the real scheduler placed it is a race.)
pub(super) async fn a_bound_token_is_a_jwt_whose_claims_name_its_pod(server: &Server) -> Value {
    let ns = server.namespace().await;
    let (uid, issued) = holder_and_its_token(server, &ns).await;
    let token = issued["status"]["token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return json!({"a JWT's three parts": parts.len()});
    };
    let (header, claims) = (jwt_part(header), jwt_part(claims));
    let signed =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature);
    let bound = &claims["kubernetes.io"];
    let number = |key: &str| claims[key].as_i64().unwrap_or(-1);
    let expires = issued["status"]["expirationTimestamp"].as_str().unwrap();
    let expires: jiff::Timestamp = expires.parse().unwrap();
    json!({
        "header": keys_of(&header, &[]),
        "alg": header["alg"],
        "claims": keys_of(&claims, &[]),
        "kubernetes.io": keys_of(bound, &["node"]),
        "aud": claims["aud"],
        "iss": claims["iss"],
        "sub": claims["sub"].as_str().map(|s| s.replace(&ns, "NS")),
        "namespace is the pod's": bound["namespace"] == json!(ns),
        "pod": bound["pod"]["name"],
        "pod uid is the pod's": bound["pod"]["uid"] == json!(uid),
        "serviceaccount": bound["serviceaccount"]["name"],
        "serviceaccount has a uid": bound["serviceaccount"]["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "exp is iat + 600": number("exp") == number("iat") + 600,
        "nbf is iat": number("nbf") == number("iat"),
        "exp is status.expirationTimestamp": number("exp") == expires.as_second(),
        "a signature of 256 bytes": signed.map(|bytes| bytes.len() == 256).unwrap_or(false),
    })
}

/// The fake's claims of [`a_bound_token_is_a_jwt_whose_claims_name_its_pod`] (the real
/// API server's are compared with them above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_issues_jwts_whose_claims_name_their_pod() {
    let seen = a_bound_token_is_a_jwt_whose_claims_name_its_pod(&fake().await).await;
    assert_eq!(
        seen,
        json!({
            "header": ["alg", "kid"],
            "alg": "RS256",
            "claims": ["aud", "exp", "iat", "iss", "jti", "kubernetes.io", "nbf", "sub"],
            "kubernetes.io": ["namespace", "pod", "serviceaccount"],
            "aud": ["kubeci-collect"],
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:NS:default",
            "namespace is the pod's": true,
            "pod": "holder",
            "pod uid is the pod's": true,
            "serviceaccount": "default",
            "serviceaccount has a uid": true,
            "exp is iat + 600": true,
            "nbf is iat": true,
            "exp is status.expirationTimestamp": true,
            "a signature of 256 bytes": true,
        })
    );
}
