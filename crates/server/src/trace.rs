//! Each request in a span of its own: its `request_id` (counted from 1 in this process),
//! `method`, `path` and `route` (the pattern it matched), so every line logged while it is
//! answered — a delivery's decision, a build it started — says which request it was part
//! of. Nothing is logged per request by itself.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The longest path a span keeps: paths are anyone's, and a line should stay a line.
const MAX_LOGGED_PATH: usize = 200;

static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// Answers `request` through `next` inside its span.
pub(crate) async fn in_its_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        request_id = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed),
        method = %request.method(),
        path = logged_path(request.uri().path()),
        route = tracing::field::Empty,
    );
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        span.record("route", route.as_str());
    }
    next.run(request).instrument(span).await
}

/// `path` cut to at most [`MAX_LOGGED_PATH`] bytes (a URI's path is ASCII).
fn logged_path(path: &str) -> &str {
    let mut end = path.len().min(MAX_LOGGED_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_path_is_cut_short() {
        assert_eq!(logged_path("/api/v1/jobs"), "/api/v1/jobs");
        let long = format!("/{}", "a".repeat(1000));
        assert_eq!(logged_path(&long).len(), MAX_LOGGED_PATH);
        let wide = "é".repeat(200);
        assert!(logged_path(&wide).len() <= MAX_LOGGED_PATH);
    }
}
