//! The fault-injecting proxy, in front of the fake API server here (in front of a real
//! cluster in the e2e scenarios): kube's client and reflector work through it unchanged,
//! and its faults — held requests, errors, dropped and expired watches, an outage — reach
//! them as the API server's own would.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kubeci_testkit::{ApiProxy, FakeApiServer};
use serde_json::json;

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": name}})).unwrap()
}

async fn client(proxy: &ApiProxy) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&proxy.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Retries a broken watch after 100 ms, every time: kube's default backoff grows to
/// 30 s over the errors this test injects.
struct Retry;

impl Iterator for Retry {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }
}

impl kube::runtime::utils::Backoff for Retry {
    fn reset(&mut self) {}
}

/// Polls `check` for up to 60 s (kube's client itself retries 5xx answers with backoff).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..6000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pass_through_and_are_recorded_with_their_verb() {
    let server = FakeApiServer::start().await;
    let proxy = ApiProxy::start(server.client().await, "default").await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&proxy).await);
    api.create(&PostParams::default(), &configmap("one"))
        .await
        .unwrap();
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        server.store().get(1, "default", "one").is_ok(),
        "it reached the server"
    );
    let seen: Vec<(String, String)> = proxy
        .gate()
        .requests()
        .into_iter()
        .map(|r| (r.verb, r.resource))
        .collect();
    assert_eq!(
        seen,
        [
            ("create".to_owned(), "configmaps".to_owned()),
            ("list".to_owned(), "configmaps".to_owned())
        ]
    );
    let missing = api.get("absent").await.unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.code == 404),
        "the API server's own errors come through: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_are_answered_503_or_served_on_release() {
    let server = FakeApiServer::start().await;
    let proxy = ApiProxy::start(server.client().await, "default").await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&proxy).await);
    proxy.gate().hold("create", "configmaps");
    let dropped = tokio::spawn({
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &configmap("dropped"))
                .await
        }
    });
    eventually("the create to be held", async || proxy.gate().held() == 1).await;
    proxy.gate().release(false);
    // The held request is answered 503 and never forwarded; kube's client retries a 503,
    // and the retry, no longer held, goes through.
    dropped.await.unwrap().unwrap();
    let creates = |requests: Vec<kubeci_testkit::RecordedRequest>| {
        requests.iter().filter(|r| r.verb == "create").count()
    };
    assert_eq!(creates(proxy.gate().requests()), 2, "held, then retried");
    assert_eq!(
        creates(server.requests()),
        1,
        "only the retry reached the server"
    );

    proxy.gate().hold("create", "configmaps");
    let served = tokio::spawn({
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &configmap("served"))
                .await
        }
    });
    eventually("the create to be held", async || proxy.gate().held() == 1).await;
    proxy.gate().release(true);
    served.await.unwrap().unwrap();
    assert!(server.store().get(1, "default", "served").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_survives_dropped_and_expired_watches_errors_and_an_outage() {
    let server = FakeApiServer::start().await;
    let direct: Api<ConfigMap> = Api::default_namespaced(server.client().await);
    let proxy = ApiProxy::start(server.client().await, "default").await;
    let api: Api<ConfigMap> = Api::default_namespaced(client(&proxy).await);
    let (store, writer) = reflector::store();
    tokio::spawn(futures_util::StreamExt::for_each(
        reflector(
            writer,
            watcher(api, watcher::Config::default()).backoff(Retry),
        ),
        |_| async {},
    ));
    store.wait_until_ready().await.unwrap();
    let names = || {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    };
    let relists = || {
        proxy
            .gate()
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .count()
    };

    // An expired resume (410 Gone) makes it list again.
    let lists = relists();
    proxy.gate().expire_watches(1);
    proxy.gate().drop_watches();
    direct
        .create(&PostParams::default(), &configmap("a"))
        .await
        .unwrap();
    eventually("a after an expired watch", async || names() == ["a"]).await;
    assert!(relists() > lists, "410 Gone made the reflector list again");

    // Errors, then a 2 s outage: it backs off and catches up.
    proxy.gate().fail_next(3, 500);
    proxy.gate().drop_watches();
    direct
        .create(&PostParams::default(), &configmap("b"))
        .await
        .unwrap();
    eventually("b after 500s", async || names() == ["a", "b"]).await;
    proxy.stop();
    direct
        .create(&PostParams::default(), &configmap("c"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        names(),
        ["a", "b"],
        "nothing seen while the API server is gone"
    );
    proxy.restart().await;
    eventually("c after the outage", async || names() == ["a", "b", "c"]).await;
}
