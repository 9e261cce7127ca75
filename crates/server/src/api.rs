//! The JSON API (`/api/v1/…`), health, readiness, metrics and the OpenAPI document: every
//! answer from the backend, every refusal the JSON error the document describes.

use crate::auth::ApiActor;
use crate::live::too_many_followers;
use crate::{error, AppState};
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kubeci_build::BuildRequest;
use kubeci_engine::api::{
    ArchiveError, Backend, CancelError, JobView, LogError, LogOptions, PageRequest, TriggerError,
    TriggerRequest, Triggered,
};
use kubeci_engine::archive::ArchiveErrorKind;
use serde_json::json;
use std::sync::Arc;

pub(crate) async fn readyz<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    if state.backend.ready() {
        "ok".into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "the caches are not synced yet",
        )
    }
}

pub(crate) async fn jobs<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    Json(json!({"items": state.backend.jobs()})).into_response()
}

/// `/api/v1/jobs/{ns}/{name}`: one job, with every finding about its spec (also as
/// `kubeci lint` prints it) and its `job.yaml` as written.
pub(crate) async fn job<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name))) = path else {
        return bad_path();
    };
    let Some(declared) = state.backend.declaration(&namespace, &name) else {
        return job_not_found(&namespace, &name);
    };
    let diagnostics: Vec<serde_json::Value> = declared
        .diagnostics
        .iter()
        .map(|d| {
            let mut found = serde_json::to_value(d).unwrap_or_default();
            found["rendered"] = crate::pages::shown_diagnostic(d).into();
            found
        })
        .collect();
    let mut job = serde_json::to_value(JobView::of(&declared)).unwrap_or_default();
    job["diagnostics"] = diagnostics.into();
    job["job_yaml"] = kubeci_spec::giturl::redact_credentials(&declared.source).into();
    job["cannot_build"] = state.backend.cannot_build(&declared).into();
    Json(job).into_response()
}

/// `/metrics`: Prometheus' text format.
pub(crate) async fn metrics<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    let mut families = state.backend.metrics();
    families.extend(state.webhooks.metrics());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        kubeci_engine::metrics::render(&families),
    )
        .into_response()
}

/// The API's OpenAPI document (the tests check the answers against it).
pub const OPENAPI: &str = include_str!("openapi.json");

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) fn bad_build_path() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad-build-number",
        "a build number is a whole number from 1 to 18446744073709551615, e.g. /builds/7, and the path's other segments UTF-8 text",
    )
}

/// The answer to a path whose segments are not text (a `%FF`).
pub(crate) fn bad_path() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad-path",
        "a path segment is not UTF-8 text once percent-decoded",
    )
}

pub(crate) fn job_not_found(namespace: &str, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "job-not-found",
        format!("no job {namespace}/{name}"),
    )
}

/// The most builds one page holds, and how many when the request does not say.
pub const MAX_PAGE: usize = 500;
pub(crate) const DEFAULT_PAGE: usize = 50;

#[derive(serde::Deserialize)]
pub(crate) struct PageQuery {
    /// Builds per page.
    limit: Option<usize>,
    /// Only builds numbered below this one (the `next` page of an earlier answer).
    before: Option<u64>,
}

/// `GET …/builds?limit=N&before=M`: newest first; `next` is the next page's URL, or null.
pub(crate) async fn builds<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let Ok(Path((namespace, name))) = path else {
        return bad_path();
    };
    let page = match query {
        Ok(Query(page))
            if page.limit.is_none_or(|l| (1..=MAX_PAGE).contains(&l))
                && page.before.is_none_or(|b| b >= 1) =>
        {
            page
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-query",
                format!("limit is a whole number from 1 to {MAX_PAGE}, before one from 1"),
            )
        }
    };
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    let request = PageRequest {
        before: page.before,
        limit,
    };
    let Some(page) = state.backend.builds_page(&namespace, &name, request).await else {
        return job_not_found(&namespace, &name);
    };
    let next = page.more.then(|| {
        let last = page.builds.last().map_or(0, |b| b.number);
        format!("/api/v1/jobs/{namespace}/{name}/builds?limit={limit}&before={last}")
    });
    let mut answer = json!({"items": page.builds, "next": next});
    if let Some(error) = page.archive_error {
        answer["archive_error"] = json!(error);
    }
    Json(answer).into_response()
}

pub(crate) async fn build<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    match state.backend.build(&namespace, &name, number).await {
        Ok(Some(build)) => Json(build).into_response(),
        Ok(None) => build_not_found(&state, &namespace, &name, number).await,
        Err(e) => archive_failed(&e),
    }
}

/// The answer for a build that is not there: its job is not either, or only the build.
pub(crate) async fn build_not_found<B: Backend>(
    state: &AppState<B>,
    namespace: &str,
    name: &str,
    number: u64,
) -> Response {
    let newest = PageRequest {
        before: None,
        limit: 1,
    };
    if (state.backend.builds_page(namespace, name, newest).await).is_none() {
        return job_not_found(namespace, name);
    }
    error(
        StatusCode::NOT_FOUND,
        "build-not-found",
        format!("no build {number} of job {namespace}/{name}"),
    )
}

/// The answer when a build's archive cannot be read: 502 when an object is not what
/// kubeci writes (that build only), 503 when the store cannot be reached now.
pub(crate) fn archive_failed(e: &ArchiveError) -> Response {
    match e.kind {
        ArchiveErrorKind::BadObject => {
            error(StatusCode::BAD_GATEWAY, "archive-unreadable", e.to_string())
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "archive-unavailable",
            e.to_string(),
        ),
    }
}

/// The longest `Idempotency-Key` accepted.
pub(crate) const MAX_KEY_LENGTH: usize = 200;

pub(crate) async fn trigger<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    ApiActor(who): ApiActor,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name))) = path else {
        return bad_path();
    };
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key))
            if !key.is_empty()
                && key.len() <= MAX_KEY_LENGTH
                && key.bytes().all(|b| (0x20..=0x7e).contains(&b)) =>
        {
            Some(format!("api:{key}"))
        }
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad-idempotency-key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"),
            )
        }
    };
    let request = TriggerRequest {
        namespace,
        name,
        build: BuildRequest {
            requested_by: Some(who),
            ..BuildRequest::manual(0)
        },
        key,
    };
    triggered(start(&*state.backend, request).await)
}

/// Asks `backend` for the build `request` wants; logs one it started (not one an earlier
/// request with the same key had started).
pub(crate) async fn start<B: Backend>(
    backend: &B,
    request: TriggerRequest,
) -> Result<Triggered, TriggerError> {
    let (namespace, job) = (request.namespace.clone(), request.name.clone());
    let requested_by = request.build.requested_by.clone();
    let result = backend.trigger(request).await;
    if let Ok(Triggered {
        build,
        created: true,
    }) = &result
    {
        tracing::info!(
            namespace,
            job,
            build = build.number,
            requested_by,
            "build requested"
        );
    }
    result
}

/// The API's answer to a trigger: 201 with a new build, 200 with the build an earlier
/// request with the same key started, or a JSON error.
pub(crate) fn triggered(result: Result<Triggered, TriggerError>) -> Response {
    match result {
        Ok(Triggered {
            build,
            created: true,
        }) => (StatusCode::CREATED, Json(build)).into_response(),
        Ok(Triggered { build, .. }) => (StatusCode::OK, Json(build)).into_response(),
        Err(e @ TriggerError::NotFound { .. }) => {
            error(StatusCode::NOT_FOUND, "job-not-found", e.to_string())
        }
        Err(e @ TriggerError::Invalid { .. }) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "job-invalid",
            e.to_string(),
        ),
        Err(e @ TriggerError::Gone { .. }) => error(StatusCode::GONE, "build-gone", e.to_string()),
        Err(e @ TriggerError::Backend(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-failed",
            e.to_string(),
        ),
    }
}

/// The request that builds again what build `number` built (the same branch or ref,
/// commit and pull request), asked for by `who`; `None` when there is no such build.
pub(crate) async fn rebuild_request<B: Backend>(
    backend: &B,
    namespace: &str,
    name: &str,
    number: u64,
    who: &str,
) -> Option<TriggerRequest> {
    let recorded = backend.request(namespace, name, number).await?;
    Some(TriggerRequest {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        build: BuildRequest {
            number: 0,
            trigger: kubeci_build::Trigger::Manual,
            requested_by: Some(format!("{who} (rebuild of #{number})")),
            ..recorded
        },
        key: None,
    })
}

/// `POST /api/v1/jobs/{ns}/{name}/builds/{n}/rebuild`: a new build of what build `n` built.
pub(crate) async fn rebuild<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    ApiActor(who): ApiActor,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    match rebuild_request(&*state.backend, &namespace, &name, number, &who).await {
        Some(request) => triggered(start(&*state.backend, request).await),
        None => error(
            StatusCode::NOT_FOUND,
            "build-not-found",
            format!("job {namespace}/{name} has no build {number}"),
        ),
    }
}

pub(crate) async fn cancel<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    ApiActor(who): ApiActor,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    match state.backend.cancel(&namespace, &name, number, &who).await {
        Ok(build) => Json(build).into_response(),
        Err(e @ CancelError::NotFound { .. }) => {
            error(StatusCode::NOT_FOUND, "build-not-found", e.to_string())
        }
        Err(e @ CancelError::Finished { .. }) => {
            error(StatusCode::CONFLICT, "build-finished", e.to_string())
        }
        Err(e @ CancelError::Backend(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-failed",
            e.to_string(),
        ),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    timestamps: bool,
}

pub(crate) async fn log<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad-query",
            "follow and timestamps are `true` or `false`",
        );
    };
    let limit = state.limits.log_followers_per_build;
    let slot = if query.follow {
        let build = (namespace.clone(), name.clone(), number);
        match state.followers.join(build, limit) {
            Some(slot) => Some(slot),
            None => return too_many_followers(&namespace, &name, number, limit),
        }
    } else {
        None
    };
    match state
        .backend
        .log(
            &namespace,
            &name,
            number,
            LogOptions {
                follow: query.follow,
                timestamps: query.timestamps,
            },
        )
        .await
    {
        Ok(stream) => {
            // A follower's place is held while its stream is.
            let stream = futures_util::StreamExt::map(stream, move |chunk| {
                let _ = &slot;
                chunk
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header("x-content-type-options", "nosniff")
                .body(Body::from_stream(stream))
                .expect("a valid response")
        }
        Err(e @ LogError::NotFound(_)) => {
            error(StatusCode::NOT_FOUND, "log-not-found", e.to_string())
        }
        Err(e @ LogError::Backend(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-failed",
            e.to_string(),
        ),
        Err(LogError::Archive(e)) => archive_failed(&e),
    }
}
