//! Watches: events from a resourceVersion, bookmarks, label and field selectors, the
//! initial list (sendInitialEvents), timeouts; in JSON, or for Jobs and pods in protobuf
//! when asked for (`Accept: application/vnd.kubernetes.protobuf;stream=watch`), as the API
//! server sends them (the fields kubeci may read only: `kubeci_build::record::protobuf`).

use super::*;
use crate::resources::RESOURCES;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ApiError, Change, ChangeKind};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Response, StatusCode};
use kubeci_build::record::protobuf::{self, encode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How a watch's events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// A JSON object per line.
    Json,
    /// Length-prefixed `WatchEvent` messages.
    Protobuf,
}

impl Encoding {
    /// What `headers` ask for a watch of `resource`: protobuf for Jobs and pods, else JSON
    /// when the client takes it (a real API server encodes every built-in kind; the fake,
    /// the kinds kubeci watches so).
    pub(super) fn asked(headers: &HeaderMap, resource: usize) -> Result<Encoding, ApiError> {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !accept.contains(protobuf::MEDIA_TYPE) {
            return Ok(Encoding::Json);
        }
        match RESOURCES[resource].kind {
            "Job" | "Pod" => Ok(Encoding::Protobuf),
            _ if accept.contains("json") || accept.contains("*/*") => Ok(Encoding::Json),
            kind => Err(ApiError::new(
                406,
                "NotAcceptable",
                format!("the fake API server encodes no {kind} in protobuf"),
            )),
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }

    /// An event of `kind` carrying `object`, one of `resource`.
    fn event(self, resource: usize, kind: &str, object: &Value) -> Bytes {
        match self {
            Encoding::Json => {
                let mut line = json!({"type": kind, "object": object}).to_string();
                line.push('\n');
                Bytes::from(line)
            }
            Encoding::Protobuf => {
                let rt = &RESOURCES[resource];
                let message = match rt.kind {
                    "Pod" => encode::pod(&decoded(object)),
                    _ => encode::job(&decoded(object)),
                };
                let object = encode::enveloped(&rt.api_version(), rt.kind, &message);
                Bytes::from(encode::watch_frame(kind, &object))
            }
        }
    }

    fn bookmark(self, resource: usize, rv: u64, initial_end: bool) -> Bytes {
        let rt = &RESOURCES[resource];
        match self {
            Encoding::Json => {
                let mut metadata = json!({"resourceVersion": rv.to_string()});
                if initial_end {
                    metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                }
                self.event(
                    resource,
                    "BOOKMARK",
                    &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata}),
                )
            }
            Encoding::Protobuf => {
                let message = encode::bookmark(&rv.to_string(), initial_end);
                let object = encode::enveloped(&rt.api_version(), rt.kind, &message);
                Bytes::from(encode::watch_frame("BOOKMARK", &object))
            }
        }
    }

    /// An ERROR event carrying `error`.
    pub(crate) fn error(self, error: &ApiError) -> Bytes {
        match self {
            Encoding::Json => {
                let mut line = json!({"type": "ERROR", "object": error.status()}).to_string();
                line.push('\n');
                Bytes::from(line)
            }
            Encoding::Protobuf => {
                let message = encode::status(error.code, error.reason, &error.message);
                let object = encode::enveloped("v1", "Status", &message);
                Bytes::from(encode::watch_frame("ERROR", &object))
            }
        }
    }
}

/// A stored Job or pod as its Kubernetes type (a default one if the store holds something
/// else, which only a test writing such an object would see).
fn decoded<T: serde::de::DeserializeOwned + Default>(object: &Value) -> T {
    T::deserialize(object).unwrap_or_else(|error| {
        tracing::warn!(%error, "the fake API server cannot encode an object in protobuf");
        T::default()
    })
}

fn streaming(encoding: Encoding, receiver: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Reply {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, encoding.content_type())
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(ReceiverStream::new(receiver)))
        .expect("a valid response")
}

pub(super) fn watch(
    shared: &Arc<Shared>,
    encoding: Encoding,
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
                    let _ = sender.try_send(Ok(encoding.error(&gone)));
                    return Ok(streaming(encoding, receiver));
                }
            }
        }
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let stream = WatchStream {
        encoding,
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
    Ok(streaming(encoding, receiver))
}

/// The event a filtered watch sees for a change: objects entering the selection are
/// ADDED, those leaving it DELETED.
fn filtered(
    encoding: Encoding,
    resource: usize,
    change: &Change,
    selected: &impl Fn(&Value) -> bool,
) -> Option<Bytes> {
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
    Some(encoding.event(resource, kind, &change.object))
}

/// One watch's stream of events to its client.
struct WatchStream<S> {
    encoding: Encoding,
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
            if !self
                .send(self.encoding.event(self.resource, "ADDED", object))
                .await
            {
                return;
            }
        }
        let end_of_initial = self.encoding.bookmark(self.resource, start_rv, true);
        if self.send_initial && !self.send(end_of_initial).await {
            return;
        }
        let mut last_rv = start_rv;
        for change in backlog.iter().filter(|c| c.key.0 == self.resource) {
            if let Some(bytes) = filtered(self.encoding, self.resource, change, &self.selected) {
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
                        if let Some(bytes) = filtered(self.encoding, self.resource, &change, &self.selected) {
                            if !self.send(bytes).await {
                                return;
                            }
                        }
                    }
                    Ok(change) => last_rv = last_rv.max(change.rv),
                    Err(_) => return,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.send(self.encoding.bookmark(self.resource, last_rv, false)).await {
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
