//! The HTTP surface of kubeci: one router for the JSON API, the pages, GitHub's webhooks,
//! metrics and health. Thin: every answer comes from the [`Backend`]; this crate maps HTTP
//! to it and checks who may act.
//!
//! - `api` — `/api/v1/…`, health, readiness, metrics, the OpenAPI document
//! - `ui` — the pages' handlers and forms; [`pages`] renders them (pure)
//! - `live` — a running build's log over Server-Sent Events, followers bounded
//! - `webhook` — `POST /hooks/github`
//! - `collect` — `/internal/v1/outputs/…`: a build pod's collector hands its files over
//! - `auth` — who may act: tokens, proxy users, CSRF, cross-site; the `ApiActor` and
//!   `FormActor` extractors; [`session`] — the signed session cookie
//! - [`ansi`] — log colours as HTML; [`serve`] — the listener with its read timeout
//! - `trace` — each request in a `tracing` span (its id, method, path and route)

use std::sync::Arc;

pub mod ansi;
mod api;
mod auth;
mod collect;
mod listen;
mod live;
mod outputs;
pub mod pages;
pub mod session;
mod trace;
mod ui;
mod ui_outputs;
mod webhook;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kubeci_engine::api::{Backend, NoWebhooks, Webhooks};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api::{
    build, builds, cancel, job, jobs, log, metrics, openapi, readyz, rebuild, trigger,
};
use crate::live::{build_events, Followers};
use crate::ui::{
    badge, build_now, build_page, cancel_now, job_page, jobs_page, login, login_page, logout,
    rebuild_now, script, stylesheet,
};
use crate::webhook::github_hook;
pub use auth::Access;
pub use listen::serve;

/// Bounds on what clients may hold at once.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Clients following one build's log at once (`?follow=true`, the live page); more
    /// are answered `503 too-many-followers`.
    pub log_followers_per_build: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            log_followers_per_build: 50,
        }
    }
}

struct AppState<B> {
    backend: Arc<B>,
    limits: Limits,
    followers: Arc<Followers>,
    access: Access,
    webhooks: Arc<dyn Webhooks>,
    /// KiB of webhook bodies that may be held at once ([`DELIVERY_BUDGET`]).
    delivery_budget: tokio::sync::Semaphore,
    /// The rendered test results and files of the builds viewed last.
    sections: ui_outputs::Sections,
}

/// A JSON error with a stable shape: `{"error": {"code": "...", "message": "..."}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// Whether a presented secret (the token, a session's MAC, a CSRF token) is the expected
/// one, compared in constant time (`subtle`): how long it takes does not tell where they
/// differ, only whether their lengths do.
fn same_secret(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The router of the kubeci server.
pub fn app<B: Backend>(backend: Arc<B>, access: Access) -> Router {
    app_with_webhooks(backend, access, Arc::new(NoWebhooks))
}

/// GitHub's limit on a webhook payload; a bigger body is refused with 413.
pub const MAX_DELIVERY: usize = 25 * 1024 * 1024;

/// How many bytes of webhook bodies kubeci reads at once: one of GitHub's largest and some
/// small ones; further deliveries wait (GitHub's own deliveries are rarely above 1 MB).
pub const DELIVERY_BUDGET: usize = 32 * 1024 * 1024;

/// The largest body of any other request (the sign-in and build forms are a few hundred
/// bytes; the API's actions have none).
pub const MAX_REQUEST: usize = 16 * 1024;

/// The router, with `webhooks` answering `POST /hooks/github`.
pub fn app_with_webhooks<B: Backend>(
    backend: Arc<B>,
    access: Access,
    webhooks: Arc<dyn Webhooks>,
) -> Router {
    app_with(backend, access, webhooks, Limits::default())
}

/// The router, with `webhooks` answering `POST /hooks/github` and these `limits`.
pub fn app_with<B: Backend>(
    backend: Arc<B>,
    access: Access,
    webhooks: Arc<dyn Webhooks>,
    limits: Limits,
) -> Router {
    let state = Arc::new(AppState {
        backend,
        limits,
        followers: Arc::default(),
        access,
        webhooks,
        delivery_budget: tokio::sync::Semaphore::new(DELIVERY_BUDGET / 1024),
        sections: ui_outputs::Sections::default(),
    });
    Router::new()
        .route("/hooks/github", post(github_hook::<B>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<B>))
        .route("/", get(jobs_page::<B>))
        .route("/jobs/{namespace}/{name}", get(job_page::<B>))
        .route("/login", get(login_page).post(login::<B>))
        .route("/logout", post(logout))
        .route("/jobs/{namespace}/{name}/build", post(build_now::<B>))
        .route(
            "/jobs/{namespace}/{name}/builds/{number}/cancel",
            post(cancel_now::<B>),
        )
        .route(
            "/jobs/{namespace}/{name}/builds/{number}/rebuild",
            post(rebuild_now::<B>),
        )
        .route(
            "/jobs/{namespace}/{name}/builds/{number}",
            get(build_page::<B>),
        )
        .route(
            "/jobs/{namespace}/{name}/tests/history",
            get(ui_outputs::test_history_page::<B>),
        )
        .route(
            "/jobs/{namespace}/{name}/builds/{number}/events",
            get(build_events::<B>),
        )
        .route("/badges/{namespace}/{file}", get(badge::<B>))
        .route("/static/kubeci.js", get(script))
        .route("/static/kubeci.css", get(stylesheet))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::<B>))
        .route("/api/v1/jobs", get(jobs::<B>))
        .route("/api/v1/jobs/{namespace}/{name}", get(job::<B>))
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds",
            get(builds::<B>).post(trigger::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}",
            get(build::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/cancel",
            post(cancel::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/rebuild",
            post(rebuild::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/log",
            get(log::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/tests",
            get(outputs::tests::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/tests/history",
            get(outputs::build_test_history::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/tests/history",
            get(outputs::job_test_history::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/artifacts",
            get(outputs::artifacts::<B>),
        )
        .route(
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/artifacts/{*path}",
            get(outputs::artifact::<B>),
        )
        .route(
            "/internal/v1/outputs/done",
            // Its body is read, bounded, once its token is known.
            post(collect::done::<B>),
        )
        .route(
            "/internal/v1/outputs/{kind}/{*path}",
            // Streamed to the archive, bounded there (a file's limit).
            put(collect::put_file::<B>).layer(DefaultBodyLimit::disable()),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not-found", "no such API path") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .layer(axum::middleware::from_fn(trace::in_its_span))
        .with_state(state)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
