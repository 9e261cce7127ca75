//! The HTTP surface: `app(backend)` serves health, readiness and the REST API.
//!
//! Thin: every answer comes from the [`Backend`]; this crate only maps HTTP to it and
//! checks who may act.

use std::sync::Arc;

pub mod ansi;
mod listen;
pub mod pages;
pub mod session;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kubeci_engine::api::{
    Backend, CancelError, Delivery, LogError, NoWebhooks, TriggerError, TriggerRequest, Triggered,
    Webhooks,
};
use kubeci_render::BuildRequest;
use serde_json::json;

pub use listen::serve;

/// Who may start builds.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The bearer token of actions; it also signs sessions and forms. `None` disables
    /// actions (the API stays readable).
    pub token: Option<String>,
    /// The header in which an authenticating proxy in front of kubeci names the user
    /// (e.g. `X-Forwarded-User`); `None`: no proxy is trusted.
    pub user_header: Option<axum::http::HeaderName>,
    /// The users named by `user_header` who may act.
    pub allowed_users: Vec<String>,
    /// Session cookies are marked `Secure` (sent over HTTPS only): the server is reached
    /// over HTTPS (`--base-url https://…`).
    pub secure_cookies: bool,
}

impl Access {
    /// The attributes of kubeci's cookies.
    fn cookie_attributes(&self) -> &'static str {
        if self.secure_cookies {
            "HttpOnly; SameSite=Strict; Path=/; Secure"
        } else {
            "HttpOnly; SameSite=Strict; Path=/"
        }
    }
}

/// What the authenticating proxy's header says about who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProxyUser {
    /// No proxy is trusted, or the header is absent or empty.
    Absent,
    Allowed(String),
    NotAllowed(String),
    /// The header came more than once, or not as text: no one is taken from it (a proxy
    /// appending to a client's own header would otherwise let the client choose).
    Ambiguous,
}

fn proxy_user(access: &Access, headers: &HeaderMap) -> ProxyUser {
    let Some(name) = access.user_header.as_ref() else {
        return ProxyUser::Absent;
    };
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return ProxyUser::Absent;
    };
    if values.next().is_some() {
        return ProxyUser::Ambiguous;
    }
    let Ok(user) = first.to_str() else {
        return ProxyUser::Ambiguous;
    };
    let user = user.trim();
    if user.is_empty() {
        ProxyUser::Absent
    } else if access.allowed_users.iter().any(|u| u == user) {
        ProxyUser::Allowed(user.to_owned())
    } else {
        ProxyUser::NotAllowed(user.to_owned())
    }
}

/// Whether a browser sent this request from another site: `Sec-Fetch-Site` says anything
/// but `same-origin` (or `none`: typed by the user), or `Origin` names another host than
/// the one the request was sent to. A proxy's user header is sent along with whatever a
/// page of another site makes the browser send, so such a request acts for no one.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(',').next())
        .map(str::trim);
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    match (origin_host, host) {
        (Some(origin), Some(host)) => !origin.eq_ignore_ascii_case(host),
        _ => true,
    }
}

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

/// Who follows which build's log: one count per build.
#[derive(Default)]
struct Followers(std::sync::Mutex<std::collections::HashMap<(String, String, u64), usize>>);

/// A follower's place, given back when its stream ends.
struct FollowerSlot {
    followers: Arc<Followers>,
    build: (String, String, u64),
}

impl Followers {
    /// A place among the followers of `build`, if fewer than `limit` hold one.
    fn join(self: &Arc<Self>, build: (String, String, u64), limit: usize) -> Option<FollowerSlot> {
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
fn too_many_followers(namespace: &str, name: &str, number: u64, limit: usize) -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "too-many-followers",
        format!(
            "build {number} of {namespace}/{name} has {limit} followers, the most kubeci serves: read the log without following, or try again later"
        ),
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("10"),
    );
    response
}

struct AppState<B> {
    backend: Arc<B>,
    limits: Limits,
    followers: Arc<Followers>,
    access: Access,
    webhooks: Arc<dyn Webhooks>,
    /// KiB of webhook bodies that may be held at once ([`DELIVERY_BUDGET`]).
    delivery_budget: tokio::sync::Semaphore,
}

/// `POST /hooks/github`: the delivery's headers and body, handed to the webhooks. A
/// delivery without a usable signature is refused before its body is read; a body is read
/// once, its signature checked as it arrives, and bodies being read together hold at most
/// [`DELIVERY_BUDGET`] bytes (others wait their turn), so forged deliveries cannot take
/// kubeci's memory.
async fn github_hook<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    request: axum::extract::Request,
) -> Response {
    use futures_util::StreamExt;
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let head = Delivery {
        event: header("x-github-event"),
        id: header("x-github-delivery"),
        signature: header("x-hub-signature-256"),
        body: Vec::new(),
        verified: false,
    };
    let answer = |answer: kubeci_engine::api::DeliveryAnswer| {
        (
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(answer.body),
        )
            .into_response()
    };
    let mut check = match state.webhooks.check_body(&head) {
        Ok(check) => check,
        Err(refusal) => return answer(refusal),
    };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("a webhook delivery is at most {MAX_DELIVERY} bytes (GitHub's own limit)"),
        )
    };
    let declared = header("content-length").and_then(|l| l.parse::<usize>().ok());
    if declared.is_some_and(|l| l > MAX_DELIVERY) {
        return too_large();
    }
    let size = declared.unwrap_or(MAX_DELIVERY);
    let permits = u32::try_from(size.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let Ok(_budget) = state.delivery_budget.acquire_many(permits).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "kubeci is stopping",
        );
    };
    let mut bytes: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return error(
                StatusCode::BAD_REQUEST,
                "body-unreadable",
                "the delivery's body could not be read",
            );
        };
        if bytes.len() + chunk.len() > size.min(MAX_DELIVERY) {
            return too_large();
        }
        if let Some(check) = check.as_mut() {
            check.update(&chunk);
        }
        bytes.extend_from_slice(&chunk);
    }
    let verified = check.is_some_and(|check| check.finish());
    let delivery = Delivery {
        body: bytes,
        verified,
        ..head
    };
    answer(state.webhooks.deliver(delivery).await)
}

/// A JSON error with a stable shape: `{"error": {"code": "...", "message": "..."}}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// Compares secrets in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
            "/jobs/{namespace}/{name}/builds/{number}/events",
            get(build_events::<B>),
        )
        .route("/badges/{namespace}/{file}", get(badge::<B>))
        .route("/static/kubeci.js", get(script))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::<B>))
        .route("/api/v1/jobs", get(jobs::<B>))
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
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not-found", "no such API path") })
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(state)
}

async fn readyz<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
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

async fn jobs<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    Json(json!({"items": state.backend.jobs()})).into_response()
}

/// Pages allow no script, frame or foreign resource: whatever a log or a job carries
/// stays text.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'";

/// The pages' one script: the live log.
const SCRIPT: &str = include_str!("static/kubeci.js");

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `…/builds/{n}/events`: the build's log as Server-Sent Events, one rendered line each,
/// from the start; an `end` event with the final state when the build step ends.
async fn build_events<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> Response {
    use futures_util::StreamExt;
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let limit = state.limits.log_followers_per_build;
    let build = (namespace.clone(), name.clone(), number);
    let Some(slot) = state.followers.join(build, limit) else {
        return too_many_followers(&namespace, &name, number, limit);
    };
    let stream = match state.backend.log(&namespace, &name, number, true).await {
        Ok(stream) => stream,
        Err(e) => return error(StatusCode::NOT_FOUND, "log-not-found", e.to_string()),
    };
    // The place is held while the stream is.
    let stream = stream.map(move |chunk| {
        let _ = &slot;
        chunk
    });
    let lines = stream
        .scan(Vec::<u8>::new(), |pending, chunk| {
            let Ok(chunk) = chunk else {
                return std::future::ready(Some(Vec::new()));
            };
            pending.extend_from_slice(&chunk);
            let mut events = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                events.push(format!("data: {}\n\n", ansi::line_to_html(&line)));
            }
            std::future::ready(Some(events))
        })
        .flat_map(futures_util::stream::iter);
    let backend = Arc::clone(&state.backend);
    let end = futures_util::stream::once(async move {
        // The log ends a moment before the engine records the build's end: wait for it,
        // a little.
        let mut build = None;
        for _ in 0..50 {
            build = backend
                .builds(&namespace, &name)
                .and_then(|builds| builds.into_iter().find(|b| b.number == number));
            if build
                .as_ref()
                .is_none_or(|b| !matches!(b.state, "queued" | "pending" | "running"))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // What the page shows of a finished build, so it follows the end without a reload.
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
        format!("event: end\ndata: {end}\n\n")
    });
    let body = lines
        .chain(end)
        .map(|event| Ok::<_, std::convert::Infallible>(Bytes::from(event)));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from_stream(body))
        .expect("a valid response")
}

fn page(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

fn not_found_page(what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::layout(
            "Not found",
            &format!("<h1>Not found</h1><p>{}</p>", ansi::escape(what)),
        ),
    )
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `/`: the jobs, with each one's last build.
async fn jobs_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let mut latest = state.backend.latest_builds();
    let jobs: Vec<_> = state
        .backend
        .jobs()
        .into_iter()
        .map(|job| {
            let last = job
                .name
                .clone()
                .and_then(|name| latest.remove(&(job.namespace.clone(), name)));
            (job, last)
        })
        .collect();
    let query = query.map(|Query(q)| q.q).unwrap_or_default();
    page(StatusCode::OK, pages::jobs(&jobs, &query))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The CSRF token of the request's signed-in session, if it has one: a session cookie
/// from `/login`, or the session cookie of an allowed user named by the authenticating
/// proxy (issued by the pages, see [`page_session`]).
fn signed_in(access: &Access, headers: &HeaderMap) -> Option<String> {
    let token = access.token.as_deref()?;
    let cookies = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match proxy_user(access, headers) {
        ProxyUser::Allowed(user) => {
            let session = session::cookie(cookies, session::PROXY_COOKIE)?;
            session::valid_for_user(token, &user, session, now())
                .then(|| session::csrf(token, session))
        }
        ProxyUser::Absent => {
            let session = session::from_cookie_header(cookies)?;
            session::valid(token, session, now()).then(|| session::csrf(token, session))
        }
        ProxyUser::NotAllowed(_) | ProxyUser::Ambiguous => None,
    }
}

/// The CSRF token a page's forms carry, and the cookie to set with the page: an allowed
/// proxy user without a session of their own gets one, so their forms' token is this
/// session's, never a constant of their name.
fn page_session(access: &Access, headers: &HeaderMap) -> (Option<String>, Option<String>) {
    if let Some(csrf) = signed_in(access, headers) {
        return (Some(csrf), None);
    }
    let (Some(token), ProxyUser::Allowed(user)) =
        (access.token.as_deref(), proxy_user(access, headers))
    else {
        return (None, None);
    };
    let mut nonce = [0u8; 16];
    if getrandom::fill(&mut nonce).is_err() {
        return (None, None);
    }
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let session = session::issue_for_user(token, &user, now(), &nonce);
    let cookie = format!(
        "{}={session}; {}; Max-Age={}",
        session::PROXY_COOKIE,
        access.cookie_attributes(),
        session::LIFETIME
    );
    (Some(session::csrf(token, &session)), Some(cookie))
}

/// `response` with `cookie` set, if there is one.
fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
    if let Some(cookie) = cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Who sent a form (`ui` for a session signed in with the token, else the proxy's user),
/// or the page saying why it may not act: it needs a signed-in session or an allowed
/// proxy user with their session, the session's CSRF token in the form, and no sign of
/// coming from another site.
fn form_actor(access: &Access, headers: &HeaderMap, csrf: &str) -> Result<String, Box<Response>> {
    let forbidden = |why: &str| {
        Box::new(page(
            StatusCode::FORBIDDEN,
            pages::layout("Forbidden", &format!("<h1>Forbidden</h1><p>{why}</p>")),
        ))
    };
    if access.token.is_none() {
        return Err(forbidden(
            "Actions need the server to be given a token (--token-file).",
        ));
    }
    if cross_site(headers) {
        return Err(forbidden("This form was sent from another site."));
    }
    let who = match proxy_user(access, headers) {
        ProxyUser::Allowed(user) => user,
        ProxyUser::NotAllowed(user) => {
            return Err(forbidden(&format!(
                "{} may look but not act: ask for them to be added to kubeci's allowed users.",
                ansi::escape(&user)
            )))
        }
        ProxyUser::Ambiguous => {
            return Err(forbidden(
                "The authenticating proxy's user header came more than once.",
            ))
        }
        ProxyUser::Absent => "ui".to_owned(),
    };
    match signed_in(access, headers) {
        None => Err(Box::new(page(
            StatusCode::UNAUTHORIZED,
            pages::login("/", Some("Sign in first.")),
        ))),
        Some(expected) if !constant_time_eq(csrf.as_bytes(), expected.as_bytes()) => {
            Err(forbidden("This form did not come from kubeci's own page (its CSRF token is missing or wrong)."))
        }
        Some(_) => Ok(who),
    }
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(query: Result<Query<LoginQuery>, QueryRejection>) -> Response {
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    page(
        StatusCode::OK,
        pages::login(session::safe_next(&next), None),
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: the token for a session cookie (HttpOnly, SameSite=Strict).
async fn login<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let form = match form {
        Ok(axum::Form(form)) => form,
        Err(rejection) => {
            return page(
                rejection.status(),
                pages::login("/", Some("The form could not be read.")),
            )
        }
    };
    let next = session::safe_next(&form.next);
    let Some(token) = state.access.token.as_deref() else {
        return page(
            StatusCode::FORBIDDEN,
            pages::login(
                next,
                Some("This kubeci has no token: actions are disabled."),
            ),
        );
    };
    if !constant_time_eq(form.token.trim().as_bytes(), token.as_bytes()) {
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login(next, Some("That is not the server's token.")),
        );
    }
    let cookie = format!(
        "{}={}; {}; Max-Age={}",
        session::COOKIE,
        session::issue(token, now()),
        state.access.cookie_attributes(),
        session::LIFETIME
    );
    let mut response = see_other(next);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("a valid cookie"));
    response
}

/// `POST /logout`: the session cookie is cleared (sessions are stateless: the cookie is
/// all there is).
async fn logout<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
    let cookie = format!(
        "{}=; {}; Max-Age=0",
        session::COOKIE,
        state.access.cookie_attributes()
    );
    let mut response = see_other("/");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie.parse().expect("a valid cookie"));
    response
}

#[derive(serde::Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /jobs/{ns}/{name}/build`: "Build now".
async fn build_now<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.map(|axum::Form(f)| f.csrf).unwrap_or_default();
    let who = match form_actor(&state.access, &headers, &csrf) {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let request = TriggerRequest {
        namespace: namespace.clone(),
        name: name.clone(),
        build: BuildRequest {
            requested_by: Some(who),
            ..BuildRequest::manual(0)
        },
        key: None,
    };
    started_page(&namespace, &name, state.backend.trigger(request).await)
}

/// Where a form that started a build leads: the build's page, or why it did not start.
fn started_page(namespace: &str, name: &str, result: Result<Triggered, TriggerError>) -> Response {
    match result {
        Ok(Triggered { build, .. }) => see_other(&format!(
            "/jobs/{}/{}/builds/{}",
            pages::urlencode(namespace),
            pages::urlencode(name),
            build.number
        )),
        Err(e) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::layout(
                "Not started",
                &format!(
                    "<h1>Not started</h1><p>{}</p>",
                    ansi::escape(&e.to_string())
                ),
            ),
        ),
    }
}

/// A build's form (rebuild, cancel): the build it names and who sent it, or the page
/// saying why it may not act.
fn build_form(
    access: &Access,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: &HeaderMap,
    form: Result<axum::Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Result<(String, String, u64, String), Box<Response>> {
    let Ok(Path((namespace, name, number))) = path else {
        return Err(Box::new(not_found_page(
            "A build number is a whole number.",
        )));
    };
    let csrf = form.map(|axum::Form(f)| f.csrf).unwrap_or_default();
    let who = form_actor(access, headers, &csrf)?;
    Ok((namespace, name, number, who))
}

/// `POST …/builds/{n}/rebuild` from the build page.
async fn rebuild_now<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (namespace, name, number, who) = match build_form(&state.access, path, &headers, form) {
        Ok(target) => target,
        Err(refused) => return *refused,
    };
    match rebuild_request(&*state.backend, &namespace, &name, number, &who) {
        Some(request) => started_page(&namespace, &name, state.backend.trigger(request).await),
        None => not_found_page(&format!("Job {namespace}/{name} has no build {number}.")),
    }
}

/// `POST …/builds/{n}/cancel` from the build page.
async fn cancel_now<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: HeaderMap,
    form: Result<axum::Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let (namespace, name, number, who) = match build_form(&state.access, path, &headers, form) {
        Ok(target) => target,
        Err(refused) => return *refused,
    };
    let _ = state.backend.cancel(&namespace, &name, number, &who).await;
    see_other(&format!(
        "/jobs/{}/{}/builds/{number}",
        pages::urlencode(&namespace),
        pages::urlencode(&name)
    ))
}

async fn job_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(declared) = state.backend.declaration(&namespace, &name) else {
        return not_found_page(&format!("There is no job {namespace}/{name}."));
    };
    let builds = state.backend.builds(&namespace, &name).unwrap_or_default();
    let (csrf, cookie) = page_session(&state.access, &headers);
    with_cookie(
        page(
            StatusCode::OK,
            pages::job(&declared, &builds, csrf.as_deref()),
        ),
        cookie,
    )
}

async fn build_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return not_found_page("A build number is a whole number.");
    };
    let Some(build) = state.backend.build(&namespace, &name, number).await else {
        return not_found_page(&format!(
            "There is no build {number} of {namespace}/{name}."
        ));
    };
    let tail = match state.backend.log(&namespace, &name, number, false).await {
        Ok(stream) => log_tail(stream, PAGE_LOG_TAIL).await,
        Err(_) => LogTail::default(),
    };
    let web = state
        .backend
        .declaration(&namespace, &name)
        .and_then(|d| pages::repository_web(&d.job.as_ref()?.git.url));
    let (csrf, cookie) = page_session(&state.access, &headers);
    with_cookie(
        page(
            StatusCode::OK,
            pages::build(
                &namespace,
                &name,
                &build,
                &pages::LogShown {
                    text: &String::from_utf8_lossy(&tail.text),
                    skipped_bytes: tail.skipped_bytes,
                },
                web.as_deref(),
                csrf.as_deref(),
            ),
        ),
        cookie,
    )
}

/// How much of a log's end the build page shows; the whole log is a link away (the API
/// streams it). A page view then holds at most this much of any log, however long.
const PAGE_LOG_TAIL: usize = 256 * 1024;

/// The end of a log, from its first whole line within the limit.
#[derive(Debug, Default, PartialEq)]
struct LogTail {
    text: Vec<u8>,
    /// How much of the log comes before `text`.
    skipped_bytes: u64,
}

/// Reads `stream` to its end keeping only its last `limit` bytes (whole lines).
async fn log_tail(mut stream: kubeci_engine::api::LogStream, limit: usize) -> LogTail {
    use futures_util::StreamExt;
    let mut chunks: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    let (mut held, mut skipped) = (0usize, 0u64);
    while let Some(Ok(chunk)) = stream.next().await {
        held += chunk.len();
        chunks.push_back(Bytes::from(chunk));
        while held > limit {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            let excess = held - limit;
            if front.len() <= excess {
                held -= front.len();
                skipped += front.len() as u64;
                chunks.pop_front();
            } else {
                let _ = front.split_to(excess);
                held -= excess;
                skipped += excess as u64;
            }
        }
    }
    let mut text: Vec<u8> = Vec::with_capacity(held);
    for chunk in chunks {
        text.extend_from_slice(&chunk);
    }
    // A cut line is dropped whole: the tail starts at a line.
    if skipped > 0 {
        let start = text
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |i| i + 1);
        text.drain(..start);
        skipped += start as u64;
    }
    LogTail {
        text,
        skipped_bytes: skipped,
    }
}

/// `/badges/{namespace}/{job}.svg`: the last build's state.
async fn badge<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, file)): Path<(String, String)>,
) -> Response {
    let Some(name) = file.strip_suffix(".svg") else {
        return not_found_page("Badges end in .svg.");
    };
    let Some(builds) = state.backend.builds(&namespace, name) else {
        return not_found_page(&format!("There is no job {namespace}/{name}."));
    };
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        pages::badge(name, builds.first().map(|b| b.state)),
    )
        .into_response()
}

/// `/metrics`: Prometheus' text format.
async fn metrics<B: Backend>(State(state): State<Arc<AppState<B>>>) -> Response {
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

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

fn bad_build_path() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad-build-number",
        "a build number is a whole number from 1 to 18446744073709551615, e.g. /builds/7, and the path's other segments UTF-8 text",
    )
}

/// The answer to a path whose segments are not text (a `%FF`).
fn bad_path() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad-path",
        "a path segment is not UTF-8 text once percent-decoded",
    )
}

fn job_not_found(namespace: &str, name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "job-not-found",
        format!("no job {namespace}/{name}"),
    )
}

/// The most builds one page holds, and how many when the request does not say.
pub const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 50;

#[derive(serde::Deserialize)]
struct PageQuery {
    /// Builds per page.
    limit: Option<usize>,
    /// Only builds numbered below this one (the `next` page of an earlier answer).
    before: Option<u64>,
}

/// `GET …/builds?limit=N&before=M`: newest first; `next` is the next page's URL, or null.
async fn builds<B: Backend>(
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
    let Some(builds) = state.backend.builds(&namespace, &name) else {
        return job_not_found(&namespace, &name);
    };
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    let mut items: Vec<_> = builds
        .into_iter()
        .filter(|b| page.before.is_none_or(|before| b.number < before))
        .take(limit + 1)
        .collect();
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        let last = items.last().map_or(0, |b| b.number);
        format!("/api/v1/jobs/{namespace}/{name}/builds?limit={limit}&before={last}")
    });
    Json(json!({"items": items, "next": next})).into_response()
}

async fn build<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    if let Some(build) = state.backend.build(&namespace, &name, number).await {
        return Json(build).into_response();
    }
    if state.backend.builds(&namespace, &name).is_none() {
        return job_not_found(&namespace, &name);
    }
    error(
        StatusCode::NOT_FOUND,
        "build-not-found",
        format!("no build {number} of job {namespace}/{name}"),
    )
}

/// Why an action is refused: (status, code, message).
type Refusal = (StatusCode, &'static str, &'static str);

/// Who is acting, or why they may not: an allowed user named by the authenticating
/// proxy, or a client with the bearer token.
fn authorize(access: &Access, headers: &HeaderMap) -> Result<String, Refusal> {
    match proxy_user(access, headers) {
        ProxyUser::Allowed(_) if cross_site(headers) => {
            return Err((
                StatusCode::FORBIDDEN,
                "cross-site",
                "a request from another site acts for no one: send it from kubeci's own pages or a client that is not a browser",
            ))
        }
        ProxyUser::Allowed(user) => return Ok(user),
        ProxyUser::NotAllowed(_) => {
            return Err((
                StatusCode::FORBIDDEN,
                "user-not-allowed",
                "the proxy's user is not on kubeci's allow-list",
            ))
        }
        ProxyUser::Ambiguous => {
            return Err((
                StatusCode::BAD_REQUEST,
                "ambiguous-user",
                "the proxy's user header came more than once or not as text",
            ))
        }
        ProxyUser::Absent => {}
    }
    let Some(token) = &access.token else {
        return Err((
            StatusCode::FORBIDDEN,
            "actions-disabled",
            "actions need the server to be given a token (--token-file)",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => {
            Ok("api".into())
        }
        Some(_) => Err((StatusCode::FORBIDDEN, "forbidden", "the token is not valid")),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`",
        )),
    }
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LENGTH: usize = 200;

async fn trigger<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name))) = path else {
        return bad_path();
    };
    let who = match authorize(&state.access, &headers) {
        Ok(who) => who,
        Err((status, code, message)) => return error(status, code, message),
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
    triggered(state.backend.trigger(request).await)
}

/// The API's answer to a trigger: 201 with a new build, 200 with the build an earlier
/// request with the same key started, or a JSON error.
fn triggered(result: Result<Triggered, TriggerError>) -> Response {
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
fn rebuild_request<B: Backend>(
    backend: &B,
    namespace: &str,
    name: &str,
    number: u64,
    who: &str,
) -> Option<TriggerRequest> {
    let recorded = backend.request(namespace, name, number)?;
    Some(TriggerRequest {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        build: BuildRequest {
            number: 0,
            trigger: kubeci_render::Trigger::Manual,
            requested_by: Some(format!("{who} (rebuild of #{number})")),
            ..recorded
        },
        key: None,
    })
}

/// `POST /api/v1/jobs/{ns}/{name}/builds/{n}/rebuild`: a new build of what build `n` built.
async fn rebuild<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let who = match authorize(&state.access, &headers) {
        Ok(who) => who,
        Err((status, code, message)) => return error(status, code, message),
    };
    match rebuild_request(&*state.backend, &namespace, &name, number, &who) {
        Some(request) => triggered(state.backend.trigger(request).await),
        None => error(
            StatusCode::NOT_FOUND,
            "build-not-found",
            format!("job {namespace}/{name} has no build {number}"),
        ),
    }
}

async fn cancel<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let who = match authorize(&state.access, &headers) {
        Ok(who) => who,
        Err((status, code, message)) => return error(status, code, message),
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
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

async fn log<B: Backend>(
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
            "follow is `true` or `false`",
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
        .log(&namespace, &name, number, query.follow)
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use kubeci_engine::api::{BuildView, JobView};
    use tower::ServiceExt;

    /// A backend with one job, `demo`, whose build 1 exists; it records who started what.
    #[derive(Default)]
    struct Fake {
        started: std::sync::Mutex<Vec<String>>,
    }

    impl Backend for Fake {
        fn ready(&self) -> bool {
            true
        }
        fn jobs(&self) -> Vec<JobView> {
            Vec::new()
        }
        fn builds(&self, _: &str, name: &str) -> Option<Vec<BuildView>> {
            (name == "demo").then(Vec::new)
        }
        async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
            if request.name != "demo" {
                return Err(TriggerError::NotFound {
                    namespace: request.namespace,
                    name: request.name,
                });
            }
            self.started
                .lock()
                .unwrap()
                .push(request.build.requested_by.clone().unwrap_or_default());
            Ok(Triggered {
                build: BuildView {
                    number: 1,
                    name: "demo-1".into(),
                    state: "pending",
                    message: None,
                    trigger: Some("manual".into()),
                    requested_by: request.build.requested_by,
                    commit: None,
                    pull_request: None,
                    spec_hash: None,
                    chart_version: None,
                    reported: Vec::new(),
                    log_url: None,
                    created_at: None,
                    started_at: None,
                    finished_at: None,
                },
                created: request.key.is_none(),
            })
        }
        async fn cancel(
            &self,
            namespace: &str,
            name: &str,
            number: u64,
            _: &str,
        ) -> Result<BuildView, CancelError> {
            Err(CancelError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
                number,
            })
        }
        fn request(&self, _: &str, name: &str, number: u64) -> Option<BuildRequest> {
            (name == "demo" && number == 1).then(|| BuildRequest::manual(1))
        }
        fn declaration(&self, _: &str, name: &str) -> Option<Arc<kubeci_spec::LoadedJob>> {
            let text = "- job:\n    name: demo\n    git:\n      url: https://example.com/demo.git\n    run_command: make\n";
            let report = kubeci_spec::load("demo.yaml", text.as_bytes(), &Default::default());
            (name == "demo").then(|| Arc::new(report.jobs.into_iter().next().unwrap()))
        }
        fn specs(&self, _: Option<&[String]>) -> Vec<(String, Arc<kubeci_spec::Job>)> {
            Vec::new()
        }
        async fn log(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: bool,
        ) -> Result<kubeci_engine::api::LogStream, LogError> {
            Err(LogError::NotFound("no log".into()))
        }
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn the_build_page_holds_only_the_end_of_a_long_log_from_a_whole_line() {
        let lines: Vec<Result<Vec<u8>, String>> = (0..10_000)
            .map(|i| Ok(format!("line {i:05}\n").into_bytes()))
            .collect();
        let stream: kubeci_engine::api::LogStream = Box::pin(futures_util::stream::iter(lines));
        let tail = log_tail(stream, 1000).await;
        let text = String::from_utf8(tail.text).unwrap();
        assert!(text.len() <= 1000, "{}", text.len());
        assert!(
            text.starts_with("line ") && text.ends_with("line 09999\n"),
            "{text}"
        );
        assert_eq!(tail.skipped_bytes as usize + text.len(), 10_000 * 11);
        let short: kubeci_engine::api::LogStream =
            Box::pin(futures_util::stream::iter(vec![Ok(b"a\nb\n".to_vec())]));
        assert_eq!(
            log_tail(short, 1000).await,
            LogTail {
                text: b"a\nb\n".to_vec(),
                skipped_bytes: 0
            }
        );
    }

    #[tokio::test]
    async fn actions_need_the_token() {
        let open = || {
            app(
                Arc::new(Fake::default()),
                Access {
                    token: Some("s3cret".into()),
                    ..Access::default()
                },
            )
        };
        let closed = app(Arc::new(Fake::default()), Access::default());
        let uri = "/api/v1/jobs/default/demo/builds";
        assert_eq!(
            call(closed, "POST", uri, Some("s3cret")).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(open(), "POST", uri, None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = call(open(), "POST", uri, Some("wrong")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
        let (status, body) = call(open(), "POST", uri, Some("s3cret")).await;
        assert_eq!(
            (
                status,
                body["number"].as_u64(),
                body["requested_by"].as_str()
            ),
            (StatusCode::CREATED, Some(1), Some("api"))
        );
        assert_eq!(
            call(
                open(),
                "POST",
                "/api/v1/jobs/default/demo/builds/1/cancel",
                None
            )
            .await
            .0,
            StatusCode::UNAUTHORIZED,
            "cancelling needs the token too"
        );
        let (status, body) = call(
            open(),
            "POST",
            "/api/v1/jobs/default/nope/builds",
            Some("s3cret"),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("job-not-found"))
        );
    }

    #[tokio::test]
    async fn reads_are_open_and_errors_have_one_shape() {
        let app = || app(Arc::new(Fake::default()), Access::default());
        assert_eq!(
            call(app(), "GET", "/api/v1/jobs", None).await.1,
            json!({"items": []})
        );
        assert_eq!(
            call(app(), "GET", "/api/v1/jobs/default/demo/builds", None)
                .await
                .0,
            StatusCode::OK
        );
        let (status, body) = call(app(), "GET", "/api/v1/jobs/default/other/builds", None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("job-not-found"))
        );
        assert_eq!(
            call(app(), "GET", "/nowhere", None).await.1["error"]["code"],
            "not-found"
        );
    }

    /// Sends `request`; (status, body as text).
    async fn send(app: Router, request: Request<Body>) -> (StatusCode, String) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Opens a job page as `user` of the proxy: (the session cookie it sets, the CSRF
    /// token in its forms).
    async fn proxy_session(app: Router, user: &str) -> (String, String) {
        let response = app
            .oneshot(as_user("GET", "/jobs/default/demo", user, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let set_cookie = response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            set_cookie.starts_with("kubeci_proxy_session="),
            "{set_cookie}"
        );
        assert!(
            set_cookie.contains("HttpOnly; SameSite=Strict"),
            "{set_cookie}"
        );
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let page = String::from_utf8_lossy(&bytes).into_owned();
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("a form with a CSRF token: {page}"))
            .to_owned();
        (cookie, csrf)
    }

    #[tokio::test]
    async fn a_proxy_user_acts_only_from_this_site_and_only_when_named_once() {
        let backend = Arc::new(Fake::default());
        let app = || {
            app(
                Arc::clone(&backend),
                Access {
                    token: Some("s3cret".into()),
                    user_header: Some(axum::http::HeaderName::from_static("x-forwarded-user")),
                    allowed_users: vec!["alice".into()],
                    ..Access::default()
                },
            )
        };
        let api = "/api/v1/jobs/default/demo/builds";
        let with = |headers: &[(&str, &str)]| {
            let mut request = as_user("POST", api, "alice", Some("a=b"));
            request
                .headers_mut()
                .insert(header::HOST, "ci.example.com".parse().unwrap());
            for (name, value) in headers {
                request.headers_mut().append(
                    axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            request
        };
        // What the reviewer sent: a form POST from another site, the proxy adding alice.
        for headers in [
            &[
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ][..],
            &[("origin", "http://evil.example")][..],
            &[("sec-fetch-site", "same-site")][..],
            &[("origin", "null")][..],
        ] {
            let (status, body) = send(app(), with(headers)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
            assert!(body.contains("\"cross-site\""), "{body}");
        }
        let (status, body) = send(app(), with(&[("x-forwarded-user", "mallory")])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "named twice: {body}");
        assert!(body.contains("ambiguous-user"), "{body}");
        assert!(
            backend.started.lock().unwrap().is_empty(),
            "nothing started"
        );
        for headers in [
            &[][..],
            &[
                ("origin", "https://ci.example.com"),
                ("sec-fetch-site", "same-origin"),
            ][..],
            &[("origin", "https://ci.example.com")][..],
        ] {
            let (status, body) = send(app(), with(headers)).await;
            assert_eq!(status, StatusCode::CREATED, "{headers:?}: {body}");
        }
    }

    #[tokio::test]
    async fn session_cookies_are_secure_when_the_server_is_reached_over_https() {
        for secure in [false, true] {
            let app = app(
                Arc::new(Fake::default()),
                Access {
                    token: Some("s3cret".into()),
                    secure_cookies: secure,
                    ..Access::default()
                },
            );
            let login = Request::builder()
                .method("POST")
                .uri("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("token=s3cret&next=/"))
                .unwrap();
            let response = app.oneshot(login).await.unwrap();
            let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
            assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
        }
    }

    fn as_user(method: &str, uri: &str, user: &str, form: Option<&str>) -> Request<Body> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("x-forwarded-user", user);
        match form {
            Some(form) => request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned())),
            None => request.body(Body::empty()),
        }
        .unwrap()
    }

    /// Webhooks that record the size of each body delivered to them.
    #[derive(Default)]
    struct Sizes(std::sync::Mutex<Vec<usize>>);

    impl Webhooks for Sizes {
        fn deliver(
            &self,
            delivery: Delivery,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = kubeci_engine::api::DeliveryAnswer> + Send + '_>,
        > {
            self.0.lock().unwrap().push(delivery.body.len());
            Box::pin(async {
                kubeci_engine::api::DeliveryAnswer {
                    status: 202,
                    body: json!({}),
                }
            })
        }
    }

    #[tokio::test]
    async fn a_delivery_without_a_usable_signature_is_refused_before_its_body_is_read() {
        // No webhook secret: every delivery is refused, and its body — here one that never
        // ends — is not waited for.
        let endless = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
        let request = Request::builder()
            .method("POST")
            .uri("/hooks/github")
            .header("x-github-event", "ping")
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body(Body::from_stream(endless))
            .unwrap();
        let app = app(Arc::new(Fake::default()), Access::default());
        let answered =
            tokio::time::timeout(std::time::Duration::from_secs(10), send(app, request)).await;
        let (status, body) = answered.expect("answered without reading the body");
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("no-webhook-secret"), "{body}");
    }

    #[tokio::test]
    async fn each_route_takes_bodies_up_to_its_own_limit() {
        let sizes = Arc::new(Sizes::default());
        let app = || {
            app_with_webhooks(
                Arc::new(Fake::default()),
                Access {
                    token: Some("s3cret".into()),
                    ..Access::default()
                },
                Arc::clone(&sizes) as Arc<dyn Webhooks>,
            )
        };
        let post = |uri: &str, body: Vec<u8>| {
            Request::builder()
                .method("POST")
                .uri(uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-github-event", "ping")
                .body(Body::from(body))
                .unwrap()
        };
        // A delivery far above the forms' limit is taken whole; above GitHub's, refused.
        let (status, _) = send(app(), post("/hooks/github", vec![b'x'; 1 << 20])).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _) = send(app(), post("/hooks/github", vec![b'x'; MAX_DELIVERY + 1])).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(*sizes.0.lock().unwrap(), [1 << 20]);

        // The right token padded past the forms' limit signs no one in.
        let padded = format!("token=s3cret&next=/&pad={}", "x".repeat(MAX_REQUEST));
        let response = app()
            .oneshot(post("/login", padded.into_bytes()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let (status, _) = send(app(), post("/login", b"token=s3cret&next=/".to_vec())).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "the same form, unpadded, signs in"
        );
    }

    #[tokio::test]
    async fn users_named_by_the_proxy_act_only_when_allowed_and_forms_carry_their_csrf() {
        let backend = Arc::new(Fake::default());
        let app = || {
            app(
                Arc::clone(&backend),
                Access {
                    token: Some("s3cret".into()),
                    user_header: Some(axum::http::HeaderName::from_static("x-forwarded-user")),
                    allowed_users: vec!["alice".into()],
                    ..Access::default()
                },
            )
        };
        let api = "/api/v1/jobs/default/demo/builds";
        let (status, body) = send(app(), as_user("POST", api, "mallory", None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("user-not-allowed"), "{body}");
        let (status, body) = send(app(), as_user("POST", api, "alice", None)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");

        // Alice's pages give her a session of her own; its CSRF token is in the forms.
        let (cookie, alice_csrf) = proxy_session(app(), "alice").await;
        let (other_cookie, other_csrf) = proxy_session(app(), "alice").await;
        assert_ne!(
            alice_csrf, other_csrf,
            "one CSRF token per session, not per user"
        );
        let form = format!("csrf={alice_csrf}");
        let build_form = "/jobs/default/demo/build";
        let with = |user: &str, form: Option<&str>, cookie: &str| {
            let mut request = as_user("POST", build_form, user, form);
            request
                .headers_mut()
                .insert(header::COOKIE, cookie.parse().unwrap());
            request
        };
        let (status, _) = send(app(), with("mallory", Some(&form), &cookie)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "another user with alice's form and cookie"
        );
        let (status, _) = send(app(), with("alice", Some("csrf=forged"), &cookie)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a forged form");
        let (status, _) = send(app(), with("alice", None, &cookie)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no form at all");
        let (status, _) = send(app(), with("alice", Some(&form), &other_cookie)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "another session's form");
        let constant = format!("csrf={}", session::csrf("s3cret", "user:alice"));
        let (status, _) = send(app(), with("alice", Some(&constant), &cookie)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "the old per-user constant");
        let (status, _) = send(app(), as_user("POST", build_form, "alice", Some(&form))).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the form without its session"
        );
        let (status, _) = send(app(), with("alice", Some(&form), &cookie)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let as_user = |method: &str, uri: &str, user: &str, form: Option<&str>| {
            let mut request = as_user(method, uri, user, form);
            request
                .headers_mut()
                .insert(header::COOKIE, cookie.parse().unwrap());
            request
        };
        let rebuild = "/jobs/default/demo/builds/1/rebuild";
        let (status, _) = send(app(), as_user("POST", rebuild, "alice", Some(&form))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (status, _) = send(
            app(),
            as_user(
                "POST",
                "/jobs/default/demo/builds/9/rebuild",
                "alice",
                Some(&form),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "no build 9 to rebuild");
        let (status, body) = send(
            app(),
            as_user(
                "POST",
                "/api/v1/jobs/default/demo/builds/1/rebuild",
                "mallory",
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            *backend.started.lock().unwrap(),
            ["alice", "alice", "alice (rebuild of #1)"],
            "only alice's requests started builds, under her name"
        );
        // Without the proxy's header, the token still works.
        assert_eq!(
            call(app(), "POST", api, Some("s3cret")).await.0,
            StatusCode::CREATED
        );
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[tokio::test]
    async fn signing_out_clears_the_session_and_signing_in_goes_only_to_this_server() {
        let app_for_tests = || {
            app(
                Arc::new(Fake::default()),
                Access {
                    token: Some("s3cret".into()),
                    ..Access::default()
                },
            )
        };
        let response = app_for_tests()
            .oneshot(Request::post("/logout").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[header::LOCATION], "/");
        let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            cookie.starts_with("kubeci_session=;") && cookie.contains("Max-Age=0"),
            "{cookie}"
        );

        // The open redirect found by the review: `%09` (a tab) made `/\t/evil.example/`,
        // which browsers follow to another host; a line break or NUL left no Location at all.
        for next in [
            "%2F%09%2Fevil.example%2F",
            "%2F%0A%2Fevil.example",
            "%2F%00",
            "%2F%0D",
        ] {
            let response = app_for_tests()
                .oneshot(
                    Request::post("/login")
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(Body::from(format!("token=s3cret&next={next}")))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
            assert_eq!(response.headers()[header::LOCATION], "/", "{next}");
        }
    }
}
