//! Watches: events from a resourceVersion, bookmarks, label and field selectors, the
//! initial list (sendInitialEvents), timeouts.

use super::*;
use crate::resources::RESOURCES;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ApiError, Change, ChangeKind};
use axum::body::{Body, Bytes};
use axum::http::{header, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn watch_event(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(resource: usize, rv: u64, initial_end: bool) -> Bytes {
    let rt = &RESOURCES[resource];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_event(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
    )
}

fn streaming(receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Reply {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(ReceiverStream::new(receiver)))
        .expect("a valid response")
}

pub(super) fn watch(
    shared: &Arc<Shared>,
    resource: usize,
    namespace: Option<&str>,
    labels: LabelSelector,
    fields: FieldSelector,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let requested = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let send_initial = query
        .get("sendInitialEvents")
        .is_some_and(|v| query_bool(v));
    if send_initial && !shared.watch_list {
        return Err(ApiError::unprocessable(
            "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        ));
    }
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| query_bool(v));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let namespace = namespace.map(str::to_owned);
    let selected = move |object: &Value| {
        labels.matches(object)
            && fields.matches(object)
            && namespace.as_deref().is_none_or(|ns| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(ns)
            })
    };
    let (changes, initial, backlog, start_rv) = {
        let store = shared.store.lock().expect("lock");
        let receiver = store.subscribe();
        let rv = store.resource_version();
        if send_initial || requested.is_empty() || requested == "0" {
            (receiver, store.current(resource, None), Vec::new(), rv)
        } else {
            let from: u64 = requested.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {requested}"))
            })?;
            match store.history_since(from) {
                Ok(backlog) => (receiver, Vec::new(), backlog, rv),
                Err(gone) => {
                    // As the API server does: a 200 stream whose one event is the error.
                    let (sender, receiver) = mpsc::channel(1);
                    let _ = sender.try_send(Ok(watch_event("ERROR", &gone.status())));
                    return Ok(streaming(receiver));
                }
            }
        }
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let stream = WatchStream {
        resource,
        selected,
        changes,
        send_initial,
        bookmarks,
        timeout,
        epoch: shared.gate.watch_epoch(),
        interval: shared.bookmark_interval,
        sender,
    };
    tokio::spawn(stream.run(initial, backlog, start_rv));
    Ok(streaming(receiver))
}

/// The event a filtered watch sees for a change: objects entering the selection are
/// ADDED, those leaving it DELETED.
fn filtered(change: &Change, selected: &impl Fn(&Value) -> bool) -> Option<Bytes> {
    let now_selected = selected(&change.object);
    let was_selected = change.old.as_ref().is_some_and(|o| selected(o));
    let kind = match change.kind {
        ChangeKind::Added if now_selected => "ADDED",
        ChangeKind::Deleted if was_selected || now_selected => "DELETED",
        ChangeKind::Modified => match (was_selected, now_selected) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
        _ => return None,
    };
    Some(watch_event(kind, &change.object))
}

/// One watch's stream of events to its client.
struct WatchStream<S> {
    resource: usize,
    selected: S,
    changes: tokio::sync::broadcast::Receiver<Arc<Change>>,
    send_initial: bool,
    bookmarks: bool,
    timeout: Option<Duration>,
    epoch: tokio_util::sync::CancellationToken,
    interval: Duration,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl<S: Fn(&Value) -> bool> WatchStream<S> {
    /// Sends the `initial` objects (and the bookmark that ends them, when asked for), the
    /// `backlog` of changes since the requested version, then the changes as they come.
    async fn run(mut self, initial: Vec<Arc<Value>>, backlog: Vec<Arc<Change>>, start_rv: u64) {
        for object in initial.iter().filter(|o| (self.selected)(o)) {
            if !self.send(watch_event("ADDED", object)).await {
                return;
            }
        }
        let end_of_initial = bookmark(self.resource, start_rv, true);
        if self.send_initial && !self.send(end_of_initial).await {
            return;
        }
        let mut last_rv = start_rv;
        for change in backlog.iter().filter(|c| c.key.0 == self.resource) {
            if let Some(bytes) = filtered(change, &self.selected) {
                if !self.send(bytes).await {
                    return;
                }
            }
            last_rv = last_rv.max(change.rv);
        }
        self.follow(last_rv).await;
    }

    /// The changes after `last_rv`, bookmarks when asked for, until the watch times out,
    /// its client goes, or the gate drops it.
    async fn follow(&mut self, mut last_rv: u64) {
        let timeout = self.timeout;
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.tick().await;
        let epoch = self.epoch.clone();
        loop {
            tokio::select! {
                received = self.changes.recv() => match received {
                    Ok(change) if change.key.0 == self.resource && change.rv > last_rv => {
                        last_rv = change.rv;
                        if let Some(bytes) = filtered(&change, &self.selected) {
                            if !self.send(bytes).await {
                                return;
                            }
                        }
                    }
                    Ok(change) => last_rv = last_rv.max(change.rv),
                    Err(_) => return,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.send(bookmark(self.resource, last_rv, false)).await {
                        return;
                    }
                }
                () = &mut deadline => return,
                () = epoch.cancelled() => {
                    // Dropped as a broken connection would be, not ended cleanly.
                    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "watch dropped");
                    let _ = self.sender.send(Err(reset)).await;
                    return;
                }
            }
        }
    }

    /// Whether the client still takes events.
    async fn send(&self, bytes: Bytes) -> bool {
        self.sender.send(Ok(bytes)).await.is_ok()
    }
}
