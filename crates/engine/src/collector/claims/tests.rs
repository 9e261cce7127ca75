use super::*;
use serde_json::{json, Value};

const NOW: i64 = 1_796_614_075;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwt(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "kid": "8-HdhpCW9W_QS4ii-ylJCJftI45SC_0dn5GM4A_kfEA"});
    let signature = [7u8; 256];
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(&signature)
    )
}

/// The claims of a token kube-apiserver 1.35 issued for a pod's projected volume.
fn real_claims() -> Value {
    json!({
        "aud": ["kubeci-collect"], "exp": NOW + 600, "iat": NOW,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": "dda54e98-5428-432e-abc9-0ee4b9079057",
        "kubernetes.io": {
            "namespace": "team",
            "node": {"name": "kubeci-node", "uid": "67b633ae-d8ee-4576-8f70-eb939eaa87cc"},
            "pod": {"name": "web-7-abcde", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "default", "uid": "e0670561-a755-487c-a6a5-2822c0b5efd9"},
        },
        "nbf": NOW, "sub": "system:serviceaccount:team:default",
    })
}

fn the_pod() -> CollectorIdentity {
    CollectorIdentity {
        namespace: "team".into(),
        pod: "web-7-abcde".into(),
        pod_uid: "pod-uid-1".into(),
    }
}

fn changed(change: impl Fn(&mut Value)) -> String {
    let mut claims = real_claims();
    change(&mut claims);
    jwt(&claims)
}

#[test]
fn a_bound_token_s_claims_are_read_without_its_signature_checked() {
    let claims = TokenClaims::read(&jwt(&real_claims())).unwrap();
    assert_eq!(
        claims,
        TokenClaims {
            audiences: vec!["kubeci-collect".into()],
            expires: NOW + 600,
            pod: the_pod(),
        }
    );
    assert_eq!(claims.screen(NOW, Some("pod-uid-1")), Ok(()));
    // One audience may be a string; a NumericDate may have a fraction.
    let one = TokenClaims::read(&changed(|c| {
        c["aud"] = json!("kubeci-collect");
        c["exp"] = json!(NOW as f64 + 0.5);
    }))
    .unwrap();
    assert_eq!((one.audiences.len(), one.expires), (1, NOW));
}

#[test]
fn what_is_not_a_jwt_with_a_pod_s_claims_is_refused_unreviewed() {
    let good = jwt(&real_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let not_tokens = [
        String::new(),
        "not-a-token".into(),
        "a.b".into(),
        format!("{good}.extra"),
        format!("{}.{}.", parts[0], parts[1]),
        format!("{}.{}=.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"not json"), parts[2]),
        format!("{}.{}.{}", b64(b"[1]"), parts[1], parts[2]),
        changed(|c| c["exp"] = json!("tomorrow")),
        changed(|c| c["aud"] = json!(null)),
        "x".repeat(LONGEST_TOKEN + 1),
    ];
    for token in not_tokens {
        let refused = TokenClaims::read(&token).unwrap_err();
        assert_eq!((refused.status, refused.code), (401, "not-a-collector"));
        assert!(
            refused
                .why
                .contains("not a Kubernetes ServiceAccount token"),
            "{refused:?}"
        );
    }
    // Not bound to a pod: a ServiceAccount's plain token, or one bound to a Secret.
    for unbound in [
        changed(|c| c["kubernetes.io"]["pod"] = json!(null)),
        changed(|c| {
            c.as_object_mut()
                .unwrap()
                .retain(|k, _| k != "kubernetes.io")
        }),
    ] {
        let refused = TokenClaims::read(&unbound).unwrap_err();
        assert_eq!(refused.status, 401);
        assert!(refused.why.contains("not bound to a pod"), "{refused:?}");
    }
}

#[test]
fn claims_for_another_audience_expired_or_of_no_build_pod_are_refused_unreviewed() {
    let screened = |token: String, now: i64, cached: Option<&str>| {
        TokenClaims::read(&token).unwrap().screen(now, cached)
    };
    let refused = |token: String, now: i64, cached: Option<&str>| {
        let refusal = screened(token, now, cached).unwrap_err();
        assert_eq!((refusal.status, refusal.code), (401, "not-a-collector"));
        refusal.why
    };
    let api = changed(|c| c["aud"] = json!(["https://kubernetes.default.svc.cluster.local"]));
    assert!(refused(api, NOW, Some("pod-uid-1")).contains("not kubeci-collect"));
    let expired = refused(jwt(&real_claims()), NOW + 600 + 61, Some("pod-uid-1"));
    assert!(expired.contains("expired at 2026-"), "{expired}");
    // Within a minute of its expiry (clocks differ), the cluster is asked.
    assert_eq!(
        screened(jwt(&real_claims()), NOW + 660, Some("pod-uid-1")),
        Ok(())
    );
    // A pod kubeci does not run, or another pod made since under that name.
    for cached in [None, Some("pod-uid-2")] {
        let why = refused(jwt(&real_claims()), NOW, cached);
        assert!(
            why.contains(
                "pod team/web-7-abcde (uid pod-uid-1), which is not a build pod kubeci runs"
            ),
            "{why}"
        );
    }
    // Names are quoted escaped, and cut.
    let hostile =
        changed(|c| c["kubernetes.io"]["pod"]["name"] = json!(format!("a\n{}", "b".repeat(400))));
    let why = refused(hostile, NOW, None);
    assert!(why.contains("team/a\\nbbb") && why.len() < 600, "{why}");
}

#[test]
fn a_review_must_name_the_pod_the_claims_name() {
    let claims = TokenClaims::read(&jwt(&real_claims())).unwrap();
    assert_eq!(claims.confirm(Ok(the_pod())), Ok(the_pod()));
    for other in [
        CollectorIdentity {
            pod_uid: "pod-uid-2".into(),
            ..the_pod()
        },
        CollectorIdentity {
            pod: "web-8-fghij".into(),
            ..the_pod()
        },
        CollectorIdentity {
            namespace: "other".into(),
            ..the_pod()
        },
    ] {
        let refused = claims.confirm(Ok(other)).unwrap_err();
        assert_eq!((refused.status, refused.code), (401, "not-a-collector"));
        assert!(
            refused.why.contains("not the pod its claims name"),
            "{refused:?}"
        );
    }
    // The review's own refusal is passed on.
    let refusal = CollectRefusal::new(401, "not-a-collector", "not issued");
    assert_eq!(claims.confirm(Err(refusal.clone())), Err(refusal));
}
