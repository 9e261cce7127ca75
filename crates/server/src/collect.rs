//! `/internal/v1/outputs/…`: a build pod's collector hands its build's files over (issue
//! 30, `kubeci collect`). Thin: the pod's bearer token goes to the backend, which asks the
//! cluster who it is and decides what it may write (`kubeci_engine::collector`); a file's
//! body is read only once that is settled, streamed to the archive as it comes.
//!
//! - `PUT /internal/v1/outputs/{reports|artifacts}/{path}`: one file (`201`);
//! - `POST /internal/v1/outputs/done`: all are sent, `{"refused": [{"path", "why"}]}` for
//!   those that were not (`200`, with what the build left). Its work goes on if the
//!   collector goes away: the build's files are committed once.
//!
//! Refusals are the API's JSON errors: `401` (who it is is not known; with
//! `WWW-Authenticate: Bearer`), `403` (not this pod, not this file), `404` (no such kind,
//! or an engine that takes no files), `409` (the build's files are all in), `413`, `503`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use kubeci_engine::api::{Backend, RefusedList};
use kubeci_engine::archive::{FileChunks, FileKind, StepReadError};
use kubeci_engine::collector::CollectRefusal;
use kubeci_results::RefusedFile;
use serde_json::json;

use crate::{error, AppState};

/// The largest `done` body: a thousand refusals with their paths and reasons.
pub const MAX_DONE_BODY: usize = 4 * 1024 * 1024;

fn refused(refusal: CollectRefusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = error(status, refusal.code, refusal.why);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The bearer token of the request, if it carries one.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let token = (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    token.map(str::to_owned)
}

fn no_token() -> Response {
    refused(CollectRefusal::new(
        401,
        "not-a-collector",
        "give the pod's kubeci-collect token: `Authorization: Bearer TOKEN`",
    ))
}

pub(crate) async fn put_file<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path((kind, path))) = path else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-path",
            "a file's path must be UTF-8",
        );
    };
    let kind = match kind.as_str() {
        "reports" => FileKind::Report,
        "artifacts" => FileKind::Artifact,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not-found",
                "a build's files are `reports` or `artifacts`",
            )
        }
    };
    let Some(token) = bearer(&headers) else {
        return no_token();
    };
    let bytes: FileChunks =
        Box::pin(body.into_data_stream().map(|piece| {
            piece.map_err(|e| StepReadError::Lost(format!("the request's body: {e}")))
        }));
    match state.backend.put_output(&token, kind, &path, bytes).await {
        Ok(size) => (
            StatusCode::CREATED,
            Json(json!({"kind": kind.dir(), "path": path, "size": size})),
        )
            .into_response(),
        Err(refusal) => refused(refusal),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct Done {
    #[serde(default)]
    refused: Vec<RefusedFile>,
}

pub(crate) async fn done<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return no_token();
    };
    // Read by the backend once it knows whose token this is: an unknown caller's body
    // is never waited for.
    let not_sent: RefusedList = Box::pin(async move {
        let bytes = axum::body::to_bytes(body, MAX_DONE_BODY).await;
        let bytes = bytes.map_err(|e| {
            CollectRefusal::new(
                400,
                "bad-body",
                format!("the body did not arrive whole (at most {MAX_DONE_BODY} bytes): {e}"),
            )
        })?;
        let done: Done = serde_json::from_slice(&bytes).map_err(|e| {
            CollectRefusal::new(
                400,
                "bad-body",
                format!("give `{{\"refused\": [{{\"path\": …, \"why\": …}}]}}`: {e}"),
            )
        })?;
        Ok(done.refused)
    });
    // Its own task: a collector that goes away (its pod's grace period over) does not
    // stop its build's files being committed.
    let backend = state.backend.clone();
    let committed = tokio::spawn(async move { backend.outputs_done(&token, not_sent).await }).await;
    match committed {
        Ok(Ok(outputs)) => Json(json!({
            "artifacts": outputs.artifacts.len(),
            "tests": outputs.tests.as_ref().map(|t| t.counts()),
            "refused": outputs.refused.len(),
        }))
        .into_response(),
        Ok(Err(refusal)) => refused(refusal),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "committing the build's files stopped",
        ),
    }
}
