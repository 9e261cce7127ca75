//! How the watches read their first list: streamed by the watch itself where the API
//! server can (`sendInitialEvents`, its WatchList feature, on by default since Kubernetes
//! 1.32), else in pages. Streamed, objects arrive one at a time from the API server's watch
//! cache, so no page of 500 objects is ever held as text: with 10,000 finished builds and
//! their pods, the pages were kubeci's peak memory, which glibc keeps (BENCHMARKS.md, "the
//! real API server"). client-go's watch-list client makes the same choice.

use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::watcher;
use tokio::sync::OnceCell;

/// A selector no Lease matches: the probe's watch has nothing to list.
const NOTHING: &str = "kubeci.io/probe=none";

/// The annotation of the bookmark that ends a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// How long the probe waits for that bookmark.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// Whether the watches stream their first list: asked of the API server once, by the first
/// watch that starts.
pub(crate) struct InitialLists {
    probe: Api<Lease>,
    streamed: OnceCell<bool>,
}

impl InitialLists {
    /// Probes with a watch of `probe`'s Leases, which kubeci may watch (its ledgers).
    pub(crate) fn new(probe: Api<Lease>) -> InitialLists {
        InitialLists {
            probe,
            streamed: OnceCell::new(),
        }
    }

    /// Whether the API server streams first lists (asked once).
    pub(crate) async fn streamed(&self) -> bool {
        *self
            .streamed
            .get_or_init(|| async {
                let streamed = streams_initial_lists(&self.probe).await;
                tracing::info!(streamed, "how the watches read their first list");
                streamed
            })
            .await
    }

    /// `config`, its first list streamed if the API server can.
    pub(crate) async fn config(&self, config: watcher::Config) -> watcher::Config {
        if self.streamed().await {
            config.streaming_lists()
        } else {
            config
        }
    }
}

/// Whether the API server streams a watch's initial list: a watch asking for it is
/// answered with the bookmark that ends the initial events. One without the feature
/// refuses the request, or (before 1.27) ignores the parameter and sends no such bookmark.
pub(crate) async fn streams_initial_lists(api: &Api<Lease>) -> bool {
    let params = WatchParams::streaming_lists()
        .labels(NOTHING)
        .timeout(PROBE_WAIT.as_secs() as u32);
    let Ok(stream) = api.watch(&params, "0").await else {
        return false;
    };
    let mut stream = pin!(stream);
    let ended = async {
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    let end = bookmark.metadata.annotations.get(INITIAL_EVENTS_END);
                    if end.is_some_and(|v| v == "true") {
                        return true;
                    }
                }
                Ok(WatchEvent::Error(_)) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        false
    };
    tokio::time::timeout(PROBE_WAIT, ended)
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn an_api_server_that_streams_initial_lists_is_told_apart_from_one_that_refuses() {
        let fake = kubeci_testkit::FakeApiServer::start().await;
        let api = Api::<Lease>::namespaced(fake.client().await, "default");
        assert!(streams_initial_lists(&api).await, "the fake streams them");

        // An API server without the WatchList feature refuses the parameter.
        let app = axum::Router::new().fallback(|| async {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Invalid","code":422,"message":"sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"}"#,
            )
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = kube::Config::new(url.parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api = Api::<Lease>::namespaced(client, "default");
        assert!(!streams_initial_lists(&api).await);
        let lists = InitialLists::new(api);
        let config = lists.config(watcher::Config::default()).await;
        assert_eq!(
            config.initial_list_strategy,
            watcher::InitialListStrategy::ListWatch,
            "paged lists"
        );
    }
}
