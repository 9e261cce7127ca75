//! Issue 30, finding O1 (docs/security.md): a flood of made-up bearer tokens on
//! `/internal/v1/outputs/…` costs the API server no TokenReview, and a real collector's
//! files are taken as before; when reviews pile up, a request waits a bounded time and is
//! answered `503 cannot-review`, never queued without end.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use kubeci_build::BuildRef;
use serde_json::{json, Value};

use crate::archive_kubernetes_served::Store;
use crate::collect_kubernetes::{done, held, put, running_build, serve, DECLARED};
use crate::common::cluster::TestCluster;
use crate::common::serve::Kubeci;

/// A JWT of `claims` signed by no one (a random-looking signature of RS256's size).
fn forged_jwt(claims: &Value) -> String {
    let base64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": "RS256", "kid": "forged"});
    [
        base64url.encode(header.to_string()),
        base64url.encode(claims.to_string()),
        base64url.encode([0x5a; 256]),
    ]
    .join(".")
}

fn now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_secs()).unwrap()
}

/// A bound token's claims as kube-apiserver writes them: for `audience`, expiring at
/// `exp`, bound to pod `name` (`uid`) of `namespace`; `n` makes it unique.
fn claims(n: usize, audience: &str, exp: i64, namespace: &str, name: &str, uid: &str) -> Value {
    json!({"aud": [audience], "exp": exp, "iat": exp - 600, "nbf": exp - 600,
        "iss": "https://kubernetes.default.svc.cluster.local", "jti": format!("made-up-{n}"),
        "sub": format!("system:serviceaccount:{namespace}:default"),
        "kubernetes.io": {"namespace": namespace, "pod": {"name": name, "uid": uid},
                          "serviceaccount": {"name": "default", "uid": "made-up"}}})
}

/// The `n`th made-up token of a flood: none can be a build pod's collector's, and each
/// is a different string — garbage, not a JWT's claims, another audience, expired, a pod
/// kubeci does not run, the build pod's name with another uid or in another namespace.
fn made_up(n: usize, namespace: &str, pod: &str, uid: &str) -> String {
    let fresh = now() + 600;
    let collect = "kubeci-collect";
    match n % 7 {
        0 => format!("made-up-token-{n}"),
        1 => format!("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.{n}"),
        2 => forged_jwt(&claims(
            n,
            "https://kubernetes.default.svc",
            fresh,
            namespace,
            pod,
            uid,
        )),
        3 => forged_jwt(&claims(n, collect, now() - 3_600, namespace, pod, uid)),
        4 => forged_jwt(&claims(
            n,
            collect,
            fresh,
            namespace,
            &format!("no-such-pod-{n}"),
            uid,
        )),
        5 => forged_jwt(&claims(
            n,
            collect,
            fresh,
            namespace,
            pod,
            &format!("uid-{n}"),
        )),
        _ => forged_jwt(&claims(n, collect, fresh, "kube-system", pod, uid)),
    }
}

/// TokenReviews kubeci asked of the API server so far (through the test's proxy).
fn reviews(cluster: &TestCluster) -> usize {
    let requests = cluster.proxy.gate().requests();
    (requests.iter())
        .filter(|r| r.resource == "tokenreviews")
        .count()
}

/// `count` requests with tokens from `tokens`, on `threads` threads; their answers.
async fn sent(
    kubeci: &Kubeci,
    count: usize,
    threads: usize,
    tokens: impl Fn(usize) -> String + Send + Sync + Clone + 'static,
) -> Vec<(u16, String)> {
    let mut senders = Vec::new();
    for thread in 0..threads {
        let (port, tokens) = (kubeci.port, tokens.clone());
        senders.push(tokio::task::spawn_blocking(move || {
            let kubeci = Kubeci::probe(port);
            (thread..count)
                .step_by(threads)
                .map(|n| put(&kubeci, &tokens(n), "artifacts", "dist/flood.txt", b"x"))
                .collect::<Vec<_>>()
        }));
    }
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await.unwrap());
    }
    answers
}

/// The number of distinct made-up tokens of the flood: more answers than kubeci kept
/// before it let all of them go, a real collector's with them.
const FLOOD: usize = 4_500;

// Long on purpose: one story — a collector at work, a flood, forgeries, a review jam.
/// A collector hands over its build's files while strangers send thousands of made-up
/// tokens and pile up reviews: the made-up tokens are refused without a review, forged
/// tokens that name the build pod cost one review each, a request waits a bounded time
/// for its review, and the collector's files are all taken, its token reviewed once.
async fn a_flood_of_made_up_tokens_costs_no_review_and_the_collector_keeps_its_files(
    cluster: TestCluster,
) {
    let store = Store::for_cluster(&cluster);
    let holder = cluster.job_yaml("holder", "sleep 600", DECLARED);
    cluster.apply("holder", &holder).await;
    let kubeci = serve(&cluster, &store);
    let (pod, collect) = running_build(&cluster, &kubeci, "holder").await;
    let (name, uid) = (
        pod.metadata.name.clone().unwrap(),
        pod.metadata.uid.clone().unwrap(),
    );
    let ns = cluster.namespace.clone();
    // Once kubeci's caches hold the pod (a refusal before is not kept).
    let (port, first) = (kubeci.port, collect.clone());
    cluster
        .until_blocking("the collector's first file to be taken", move || {
            put(
                &Kubeci::probe(port),
                &first,
                "artifacts",
                "dist/a.txt",
                b"a",
            )
            .0 == 201
        })
        .await;
    let reviewed = reviews(&cluster);

    // The flood: every made-up token refused, and none reviewed.
    let (flood_ns, flood_pod, flood_uid) = (ns.clone(), name.clone(), uid.clone());
    let answers = sent(&kubeci, FLOOD, 4, move |n| {
        made_up(n, &flood_ns, &flood_pod, &flood_uid)
    })
    .await;
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(
            answer,
            &(401, "not-a-collector".to_owned()),
            "made-up token {n}"
        );
    }
    assert_eq!(
        reviews(&cluster),
        reviewed,
        "TokenReviews for {FLOOD} made-up tokens"
    );
    // The collector's token is still known: its next file costs no review.
    assert_eq!(
        put(&kubeci, &collect, "artifacts", "dist/b.txt", b"b").0,
        201
    );
    assert_eq!(
        reviews(&cluster),
        reviewed,
        "the collector's token reviewed again"
    );

    // Forged tokens whose claims name the build pod and its uid are reviewed (kubeci
    // does not check signatures), each once however often it comes, and refused.
    let forged = {
        let (ns, name, uid) = (ns.clone(), name.clone(), uid.clone());
        move |n: usize| forged_jwt(&claims(n, "kubeci-collect", now() + 600, &ns, &name, &uid))
    };
    // Each sent twice in a row, on one thread: the second well within the minute its
    // refusal is kept, however slow a loaded machine makes the reviews.
    let answers = sent(&kubeci, 40, 1, {
        let forged = forged.clone();
        move |n| forged(n / 2)
    })
    .await;
    assert!(
        answers
            .iter()
            .all(|a| a == &(401, "not-a-collector".to_owned())),
        "{answers:?}"
    );
    // 40 requests, 20 tokens: 20 reviews (without the cache, 40). Under load on the real
    // control plane a review may be counted once or twice more: kube's clients (kubeci's,
    // and the test proxy's to the API server) retry a request answered 429, 503 or 504.
    let forged_reviews = reviews(&cluster) - reviewed;
    assert!(
        (20..=22).contains(&forged_reviews),
        "{forged_reviews} TokenReviews for 20 forged tokens sent twice each"
    );
    let reviewed = reviewed + forged_reviews - 20;

    // A review jam: the API server holds every review. The tokens naming one pod take at
    // most two turns (the rest stay for other builds and namespaces): two requests take
    // two turns; the third naming that pod is answered 503 at once, asking for no
    // review; the two are answered 503 once their reviews outlast their deadline.
    let gate = cluster.proxy.gate();
    gate.hold("create", "tokenreviews");
    let port = kubeci.port;
    let jammed: Vec<_> = (100..102)
        .map(|n| {
            let token = forged(n);
            tokio::task::spawn_blocking(move || {
                put(&Kubeci::probe(port), &token, "artifacts", "dist/x", b"x")
            })
        })
        .collect();
    cluster
        .until("two reviews held", async || gate.held() == 2)
        .await;
    let late = forged(102);
    let third = tokio::task::spawn_blocking(move || {
        put(&Kubeci::probe(port), &late, "artifacts", "dist/x", b"x")
    });
    assert_eq!(
        third.await.unwrap(),
        (503, "cannot-review".to_owned()),
        "the third"
    );
    for answer in jammed {
        assert_eq!(
            answer.await.unwrap(),
            (503, "cannot-review".to_owned()),
            "a held review"
        );
    }
    assert_eq!(gate.held(), 2, "the third asked for no review");
    gate.release(false);

    // The collector, reviewed once in all, hands over its last file and is done; every
    // file it sent is the build's.
    assert_eq!(
        put(&kubeci, &collect, "artifacts", "dist/c.txt", b"c").0,
        201
    );
    assert_eq!(done(&kubeci, &collect).0, 200);
    let at = BuildRef {
        namespace: &ns,
        job: "holder",
        number: 1,
    };
    let files: Vec<String> = (held(&store, at).await.into_iter())
        .map(|(path, _)| path)
        .collect();
    assert_eq!(files, ["dist/a.txt", "dist/b.txt", "dist/c.txt"]);
    assert_eq!(reviews(&cluster), reviewed + 20 + 2);
    drop(kubeci);
    cluster.finish().await;
}

on_both!(
    a_flood_of_made_up_tokens_costs_no_review_and_the_collector_keeps_its_files,
    s3
);
