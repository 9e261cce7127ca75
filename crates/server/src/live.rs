//! Following a running build: its log as Server-Sent Events for the build page, and the
//! bound on how many follow one build at once.

use crate::ansi;
use crate::api::bad_build_path;
use crate::{error, now, AppState};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use kubeci_engine::api::{Backend, LogOptions, LogStream};
use kubeci_render::log_line::{LineSplitter, LINE_LIMIT};
use serde_json::json;
use std::sync::Arc;

/// Who follows which build's log: one count per build.
#[derive(Default)]
pub(crate) struct Followers(
    std::sync::Mutex<std::collections::HashMap<(String, String, u64), usize>>,
);

/// A follower's place, given back when its stream ends.
pub(crate) struct FollowerSlot {
    followers: Arc<Followers>,
    build: (String, String, u64),
}

impl Followers {
    /// A place among the followers of `build`, if fewer than `limit` hold one.
    pub(crate) fn join(
        self: &Arc<Self>,
        build: (String, String, u64),
        limit: usize,
    ) -> Option<FollowerSlot> {
        let mut counts = self.0.lock().expect("the followers lock");
        let count = counts.entry(build.clone()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(FollowerSlot {
            followers: Arc::clone(self),
            build,
        })
    }
}

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        let mut counts = self.followers.0.lock().expect("the followers lock");
        if let Some(count) = counts.get_mut(&self.build) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.build);
            }
        }
    }
}

/// The answer to one follower too many.
pub(crate) fn too_many_followers(
    namespace: &str,
    name: &str,
    number: u64,
    limit: usize,
) -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too-many-followers",
        format!(
            "build {number} of {namespace}/{name} has {limit} followers, the most kubeci serves: read the log without following, or try again later"
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    response
}

/// How long a follower's stream may stay quiet before a keep-alive comment (`:`, which
/// `EventSource` ignores) is sent, so proxies do not close it while a build prints nothing.
pub(crate) const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// `…/builds/{n}/events`: the build's log as Server-Sent Events, one line each, from the
/// start — its data is the line's time (RFC 3339, empty when unknown), a newline, and the
/// line rendered as escaped HTML; an `end` event with the final state when the build ends.
/// A follower that goes away drops the stream, and with it the log's and its place.
pub(crate) async fn build_events<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let limit = state.limits.log_followers_per_build;
    let build = (namespace.clone(), name.clone(), number);
    let Some(slot) = state.followers.join(build, limit) else {
        return too_many_followers(&namespace, &name, number, limit);
    };
    let options = LogOptions {
        follow: true,
        timestamps: true,
    };
    let log = match state.backend.log(&namespace, &name, number, options).await {
        Ok(log) => log,
        Err(e) => return error(StatusCode::NOT_FOUND, "log-not-found", e.to_string()),
    };
    let end = end_event(Arc::clone(&state.backend), namespace, name, number);
    let events = line_events(log, slot)
        .chain(futures_util::stream::once(end))
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The log's lines as events; the follower's `slot` is held while they are.
fn line_events(log: LogStream, slot: FollowerSlot) -> impl Stream<Item = Event> + Send {
    let log = log.map(move |chunk| {
        let _ = &slot;
        chunk
    });
    // Lines were cut where they were written; this bound (room for a time and the cut
    // mark) keeps a follower's buffer small whatever the stream holds, and only the bytes
    // of each new chunk are searched for the next newline.
    let splitter = LineSplitter::new(LINE_LIMIT + 128);
    log.scan(splitter, |splitter, chunk| {
        let mut events = Vec::new();
        if let Ok(chunk) = chunk {
            splitter.push(&chunk, &mut |line| events.push(line_event(&line)));
        }
        std::future::ready(Some(events))
    })
    .flat_map(futures_util::stream::iter)
}

/// One log line's event: its time (empty when unknown), a newline, and its HTML.
fn line_event(line: &[u8]) -> Event {
    let line = String::from_utf8_lossy(line);
    let (at, text) = kubeci_engine::api::split_stamp(&line);
    let at = at.map_or_else(String::new, |at| at.to_string());
    Event::default().data(format!("{at}\n{}", ansi::line_to_html(text)))
}

/// The `end` event: what the page shows of a finished build (state, message, times,
/// duration, commit), so it follows the end without a reload.
async fn end_event<B: Backend>(
    backend: Arc<B>,
    namespace: String,
    name: String,
    number: u64,
) -> Event {
    // The log ends a moment before the engine records the build's end: wait for it, a
    // little (the backend has no way to say when it has).
    let mut build = None;
    for _ in 0..50 {
        build = backend
            .build(&namespace, &name, number)
            .await
            .ok()
            .flatten();
        if build.as_ref().is_none_or(|b| b.state.is_finished()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let end = match &build {
        Some(b) => json!({
            "state": b.state,
            "message": b.message,
            "started_at": b.started_at,
            "finished_at": b.finished_at,
            "duration": b.duration(now()),
            "commit": b.commit,
        }),
        None => json!({"state": "unknown"}),
    };
    Event::default().event("end").data(end.to_string())
}
