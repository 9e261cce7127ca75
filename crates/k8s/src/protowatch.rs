//! Watches of build Jobs and pods read in Kubernetes' protobuf encoding, their first list
//! streamed (`sendInitialEvents`), as kube's watcher events: the packed caches follow
//! these where the API server streams first lists (`crate::lists`).
//!
//! Why not kube's watcher: it reads JSON only, and encoding 10,000 Jobs as JSON takes the
//! API server ~2.4 s against ~0.4 s in protobuf; kubeci's start waits for that first list
//! (BENCHMARKS.md, "the real API server"). The records read are the same either way
//! (`kubeci_build::record::protobuf`).
//!
//! The protocol, as client-go's reflector speaks it: a watch with `sendInitialEvents=true`
//! sends every object (`InitApply`), then a bookmark annotated
//! `k8s.io/initial-events-end` (`InitDone`), then changes; a watch that ends is resumed
//! from the last resource version seen; one too old (an `ERROR` event of code 410) lists
//! again from the start.

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http_body_util::BodyExt;
use kube::core::Status;
use kube::runtime::watcher::{self, Event};
use kubeci_build::record::protobuf::{self, FromProtobuf, ProtobufError};

/// How long the API server keeps a watch open (kube's watcher asks the same).
const WATCH_SECONDS: u64 = 290;

/// How long a watch may send nothing (not even a bookmark, sent about every minute) before
/// it is taken for a lost connection.
const IDLE: Duration = Duration::from_secs(WATCH_SECONDS + 10);

/// The largest frame read: far above any object etcd stores (1.5 MiB by default).
const MAX_FRAME: usize = 64 << 20;

/// The watch events of the objects of `api` (a resource URL, as `Api::resource_url`
/// gives it) whose labels match `labels`.
pub(crate) fn watch<K>(
    client: kube::Client,
    url: String,
    labels: String,
) -> impl Stream<Item = watcher::Result<Event<K>>> + Send
where
    K: FromProtobuf + kube::Resource + Send + 'static,
{
    let watch = Watch::<K> {
        client,
        url,
        labels,
        phase: Phase::Listing,
        frames: None,
        kind: PhantomData,
    };
    futures_util::stream::unfold(watch, |mut watch| async move {
        let item = watch.step().await;
        Some((item, watch))
    })
}

enum Phase {
    /// The first list has not ended (or must be read again).
    Listing,
    /// Listed; following changes after this resource version.
    Watching { resource_version: String },
}

struct Watch<K> {
    client: kube::Client,
    url: String,
    labels: String,
    phase: Phase,
    frames: Option<Frames>,
    kind: PhantomData<fn() -> K>,
}

impl<K: FromProtobuf + kube::Resource> Watch<K> {
    /// The next event, or the error that stopped the watch (then retried on the next call).
    async fn step(&mut self) -> watcher::Result<Event<K>> {
        loop {
            let Some(frames) = self.frames.as_mut() else {
                let frames = self
                    .open()
                    .await
                    .map_err(watcher::Error::WatchStartFailed)?;
                self.frames = Some(frames);
                if matches!(self.phase, Phase::Listing) {
                    return Ok(Event::Init);
                }
                continue;
            };
            let frame = match tokio::time::timeout(IDLE, frames.next()).await {
                Ok(Some(Ok(frame))) => frame,
                // Ended by the API server: resumed (or listed again, if the list had not
                // ended).
                Ok(None) => {
                    self.frames = None;
                    continue;
                }
                Ok(Some(Err(error))) => {
                    self.frames = None;
                    return Err(watcher::Error::WatchFailed(kube::Error::ReadEvents(error)));
                }
                Err(_) => {
                    self.frames = None;
                    let idle = io::Error::new(io::ErrorKind::TimedOut, "the watch sent nothing");
                    return Err(watcher::Error::WatchFailed(kube::Error::ReadEvents(idle)));
                }
            };
            match self.event(&frame) {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(error) => {
                    if matches!(error, watcher::Error::WatchFailed(_)) {
                        // An event that cannot be read is skipped (as kube's watcher skips
                        // one it cannot parse); said, since the cache misses that change.
                        tracing::warn!(url = %self.url, %error, "a watch event could not be read");
                    }
                    return Err(error);
                }
            }
        }
    }

    /// What one frame says, if anything the caches need.
    fn event(&mut self, frame: &[u8]) -> watcher::Result<Option<Event<K>>> {
        let (kind, object) = protobuf::watch_event(frame).map_err(unreadable)?;
        match kind {
            "ADDED" | "MODIFIED" | "DELETED" => {
                let object = K::from_enveloped(object).map_err(unreadable)?;
                let listing = match &mut self.phase {
                    Phase::Listing => true,
                    Phase::Watching { resource_version } => {
                        if let Some(version) = &object.meta().resource_version {
                            resource_version.clone_from(version);
                        }
                        false
                    }
                };
                Ok(Some(match (kind, listing) {
                    ("DELETED", _) => Event::Delete(object),
                    (_, true) => Event::InitApply(object),
                    (_, false) => Event::Apply(object),
                }))
            }
            "BOOKMARK" => {
                let envelope = protobuf::envelope(object).map_err(unreadable)?;
                let bookmark = protobuf::bookmark(envelope.raw).map_err(unreadable)?;
                let listed = match &mut self.phase {
                    Phase::Listing => bookmark.initial_events_end,
                    Phase::Watching { resource_version } => {
                        *resource_version = bookmark.resource_version.clone();
                        false
                    }
                };
                if !listed {
                    return Ok(None);
                }
                self.phase = Phase::Watching {
                    resource_version: bookmark.resource_version,
                };
                Ok(Some(Event::InitDone))
            }
            "ERROR" => {
                let envelope = protobuf::envelope(object).map_err(unreadable)?;
                let status = protobuf::status(envelope.raw).map_err(unreadable)?;
                self.frames = None;
                if status.code == 410 {
                    // Too old a version to resume from: everything is listed again.
                    self.phase = Phase::Listing;
                }
                let status =
                    Status::failure(&status.message, &status.reason).with_code(status.code);
                Err(watcher::Error::WatchError(Box::new(status)))
            }
            other => Err(unreadable(io::Error::other(format!(
                "a watch event of unknown type {other:?}"
            )))),
        }
    }

    /// Starts the watch: with its first list streamed while listing, else from the
    /// resource version reached.
    async fn open(&mut self) -> Result<Frames, kube::Error> {
        let mut query = format!(
            "watch=true&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&labelSelector={}",
            query_value(&self.labels)
        );
        match &self.phase {
            // A consistent first list (no resourceVersion), as client-go's reflector asks.
            Phase::Listing => {
                query.push_str("&sendInitialEvents=true&resourceVersionMatch=NotOlderThan");
            }
            Phase::Watching { resource_version } => {
                query.push_str("&resourceVersion=");
                query.push_str(&query_value(resource_version));
            }
        }
        let request = http::Request::get(format!("{}?{query}", self.url))
            .header(
                http::header::ACCEPT,
                format!("{};stream=watch", protobuf::MEDIA_TYPE),
            )
            .body(kube::client::Body::empty())
            .map_err(kube::Error::HttpError)?;
        let response = self.client.send(request).await?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = response.into_body().collect().await?.to_bytes();
            return Err(kube::Error::Api(Box::new(error_status(
                status.as_u16(),
                &body,
            ))));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with(protobuf::MEDIA_TYPE) {
            let message = format!(
                "the API server answered a protobuf watch of {} in {content_type:?}",
                self.url
            );
            return Err(kube::Error::ReadEvents(io::Error::other(message)));
        }
        Ok(Frames {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }
}

fn unreadable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> watcher::Error {
    watcher::Error::WatchFailed(kube::Error::ReadEvents(io::Error::other(error)))
}

/// An error response's `Status`: protobuf (as asked for), JSON, or plain text.
fn error_status(code: u16, body: &[u8]) -> Status {
    let sent = protobuf::envelope(body).and_then(|envelope| protobuf::status(envelope.raw));
    match sent {
        Ok(status) => Status::failure(&status.message, &status.reason).with_code(code),
        Err(ProtobufError::NoMagic) => serde_json::from_slice::<Status>(body)
            .unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(body);
                Status::failure(text.trim(), "Failed to parse error data")
            })
            .with_code(code),
        Err(error) => {
            Status::failure(&error.to_string(), "Failed to parse error data").with_code(code)
        }
    }
}

/// `value` percent-encoded for a query string (a label selector holds `=`, `,`, `/`, `!`).
fn query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The frames of a protobuf watch stream: each a 4-byte big-endian length, then that many
/// bytes.
struct Frames {
    body: kube::client::Body,
    buffer: BytesMut,
}

impl Frames {
    /// The next frame; none when the stream ends cleanly between frames.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.buffer.len() >= 4 {
                let len =
                    u32::from_be_bytes(self.buffer[..4].try_into().expect("4 bytes")) as usize;
                if len > MAX_FRAME {
                    let message = format!("a watch frame of {len} bytes");
                    return Some(Err(io::Error::new(io::ErrorKind::InvalidData, message)));
                }
                if self.buffer.len() >= 4 + len {
                    self.buffer.advance(4);
                    return Some(Ok(self.buffer.split_to(len).freeze()));
                }
            }
            match self.body.frame().await {
                None if self.buffer.is_empty() => return None,
                None => {
                    let cut = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the watch ended inside a frame",
                    );
                    return Some(Err(cut));
                }
                Some(Err(error)) => return Some(Err(io::Error::other(error))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
