//! The pages' HTTP side: handlers that ask the backend and render with [`crate::pages`],
//! sign-in and sign-out, and the forms that start, rebuild and cancel builds.

use crate::api::rebuild_request;
use crate::auth::{self, page_session, proxy_user, with_cookie, FormActor, ProxyUser};
use crate::pages::{self, Chrome, JobRow, JobsQuery};
use crate::session;
use crate::{now, same_secret, AppState};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kubeci_build::BuildRequest;
use kubeci_engine::api::{
    Backend, JobView, LogOptions, PageRequest, TriggerError, TriggerRequest, Triggered,
};
use kubeci_engine::archive::ArchiveErrorKind;
use std::sync::Arc;

/// Pages allow no script, style, frame or foreign resource but kubeci's own: whatever a
/// log or a job carries stays text.
pub(crate) const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'";

/// The pages' one script: live times, the live build page and its log tools.
pub(crate) const SCRIPT: &str = include_str!("static/kubeci.js");

/// A static file of the pages, cached for an hour (its URL changes with kubeci's version).
fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn script() -> Response {
    static_file("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", pages::STYLE)
}

pub(crate) fn page(status: StatusCode, html: String) -> Response {
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

pub(crate) fn not_found_page(what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        pages::not_found(&Chrome::default(), what),
    )
}

/// The header of a page for this request (who is signed in, the namespaces, the one
/// shown), and the session cookie to set with it, if any.
pub(crate) fn chrome<B: Backend>(
    state: &AppState<B>,
    headers: &HeaderMap,
    here: String,
    namespace: Option<&str>,
) -> (Chrome, Option<String>) {
    let (csrf, cookie) = page_session(&state.access, headers);
    let user = match proxy_user(&state.access, headers) {
        ProxyUser::Allowed(user) => Some(user),
        _ => None,
    };
    let chrome = Chrome {
        user,
        signed_in: csrf.is_some(),
        csrf,
        namespaces: state.backend.namespaces(),
        namespace: namespace.filter(|n| !n.is_empty()).map(str::to_owned),
        here,
        archive_behind: state.backend.archive_behind(),
    };
    (chrome, cookie)
}

/// `/`: the jobs, filtered and a page at a time, each with its last builds. The filter
/// reads the declarations (and, for the state filter only, each job's last state); views
/// are built for the jobs shown alone, so a page costs little more at 10,000 jobs.
pub(crate) async fn jobs_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    query: Result<Query<JobsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let declared = state.backend.declared_jobs();
    let any = !declared.is_empty();
    let latest = if query.state.is_empty() {
        Default::default()
    } else {
        state.backend.latest_states()
    };
    let last_state =
        |job: &kubeci_spec::LoadedJob| latest.get(&job.namespace, job.name.as_deref()?);
    let wants = query.matcher();
    let mut matching: Vec<_> = declared
        .iter()
        .filter(|job| wants(job, last_state(job)))
        .collect();
    matching.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let total = matching.len();
    let shown: Vec<JobView> = matching
        .into_iter()
        .skip(query.skipped())
        .take(pages::PAGE_SIZE)
        .map(|loaded| JobView::of(loaded))
        .collect();
    let keys: Vec<(String, String)> = shown
        .iter()
        .filter_map(|j| Some((j.namespace.clone(), j.name.clone()?)))
        .collect();
    let mut recent = state.backend.recent_builds(&keys, pages::STRIP).await;
    let rows: Vec<JobRow> = shown
        .into_iter()
        .map(|job| {
            let recent = job
                .name
                .as_ref()
                .and_then(|name| recent.remove(&(job.namespace.clone(), name.clone())))
                .unwrap_or_default();
            JobRow { job, recent }
        })
        .collect();
    let (chrome, cookie) = chrome(&state, &headers, "/".into(), Some(&query.namespace));
    with_cookie(
        page(
            StatusCode::OK,
            pages::jobs(&rows, total, any, &query, &chrome),
        ),
        cookie,
    )
}

pub(crate) fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    next: String,
}

pub(crate) async fn login_page(query: Result<Query<LoginQuery>, QueryRejection>) -> Response {
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    page(
        StatusCode::OK,
        pages::login(session::safe_next(&next), None),
    )
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: the token for a session cookie (HttpOnly, SameSite=Strict), unique by a
/// random nonce; like every form, refused when sent from another site.
pub(crate) async fn login<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    headers: HeaderMap,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if auth::cross_site(&headers) {
        return page(
            StatusCode::FORBIDDEN,
            pages::login("/", Some("This form was sent from another site.")),
        );
    }
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
    if !same_secret(form.token.trim(), token) {
        return page(
            StatusCode::UNAUTHORIZED,
            pages::login(next, Some("That is not the server's token.")),
        );
    }
    let Some(nonce) = auth::nonce() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::login(next, Some("No session can be made now: try again.")),
        );
    };
    let cookie = format!(
        "{}={}; {}; Max-Age={}",
        session::COOKIE,
        session::issue(token, now(), &nonce),
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
/// all there is). A form like the others: from this site, with the session's CSRF token
/// (a page of another site could sign the user out — issue 27 finding 4).
pub(crate) async fn logout<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    _signed_in: FormActor,
) -> Response {
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
pub(crate) struct ActionForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// `POST /jobs/{ns}/{name}/build`: "Build now".
pub(crate) async fn build_now<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, name)): Path<(String, String)>,
    FormActor(who): FormActor,
) -> Response {
    let request = TriggerRequest {
        namespace: namespace.clone(),
        name: name.clone(),
        build: BuildRequest {
            requested_by: Some(who),
            ..BuildRequest::manual(0)
        },
        key: None,
    };
    started_page(
        &namespace,
        &name,
        crate::api::start(&*state.backend, request).await,
    )
}

/// Where a form that started a build leads: the build's page, or why it did not start.
pub(crate) fn started_page(
    namespace: &str,
    name: &str,
    result: Result<Triggered, TriggerError>,
) -> Response {
    match result {
        Ok(Triggered { build, .. }) => see_other(&format!(
            "/jobs/{}/{}/builds/{}",
            pages::urlencode(namespace),
            pages::urlencode(name),
            build.number
        )),
        Err(e) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::problem("Not started", &e.to_string()),
        ),
    }
}

/// `POST …/builds/{n}/rebuild` from the build page.
pub(crate) async fn rebuild_now<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    FormActor(who): FormActor,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return not_found_page("A build number is a whole number.");
    };
    match rebuild_request(&*state.backend, &namespace, &name, number, &who).await {
        Some(request) => started_page(
            &namespace,
            &name,
            crate::api::start(&*state.backend, request).await,
        ),
        None => not_found_page(&format!("Job {namespace}/{name} has no build {number}.")),
    }
}

/// `POST …/builds/{n}/cancel` from the build page.
pub(crate) async fn cancel_now<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    FormActor(who): FormActor,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return not_found_page("A build number is a whole number.");
    };
    let _ = state.backend.cancel(&namespace, &name, number, &who).await;
    see_other(&format!(
        "/jobs/{}/{}/builds/{number}",
        pages::urlencode(&namespace),
        pages::urlencode(&name)
    ))
}

/// `?before=N` on a job's page: its builds numbered below N.
#[derive(serde::Deserialize, Default)]
pub(crate) struct BuildsBefore {
    before: Option<u64>,
}

pub(crate) async fn job_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<BuildsBefore>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let before = query.map(|Query(q)| q.before).unwrap_or_default();
    let here = format!(
        "/jobs/{}/{}",
        pages::urlencode(&namespace),
        pages::urlencode(&name)
    );
    let (chrome, cookie) = chrome(&state, &headers, here, Some(&namespace));
    let Some(declared) = state.backend.declaration(&namespace, &name) else {
        return page(
            StatusCode::NOT_FOUND,
            pages::not_found(&chrome, &format!("There is no job {namespace}/{name}.")),
        );
    };
    let request = PageRequest {
        before,
        limit: crate::api::DEFAULT_PAGE,
    };
    let builds = state.backend.builds_page(&namespace, &name, request).await;
    let builds = builds.unwrap_or_default();
    let cannot_build = state.backend.cannot_build(&declared);
    with_cookie(
        page(
            StatusCode::OK,
            pages::job(&declared, &builds, cannot_build.as_deref(), &chrome),
        ),
        cookie,
    )
}

pub(crate) async fn build_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return not_found_page("A build number is a whole number.");
    };
    let here = format!(
        "/jobs/{}/{}/builds/{number}",
        pages::urlencode(&namespace),
        pages::urlencode(&name)
    );
    let (chrome, cookie) = chrome(&state, &headers, here, Some(&namespace));
    let build = match state.backend.build(&namespace, &name, number).await {
        Ok(Some(build)) => build,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                pages::not_found(
                    &chrome,
                    &format!("There is no build {number} of {namespace}/{name}."),
                ),
            )
        }
        Err(e) => {
            let status = match e.kind {
                ArchiveErrorKind::BadObject => StatusCode::BAD_GATEWAY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let what = format!("{namespace}/{name} #{number}");
            return page(
                status,
                pages::archive_unreadable(&chrome, &what, &e.message),
            );
        }
    };
    // With each line's time, which the page shows on demand.
    let options = LogOptions {
        follow: false,
        timestamps: true,
    };
    let tail = match state.backend.log(&namespace, &name, number, options).await {
        Ok(stream) => log_tail(stream, PAGE_LOG_TAIL).await,
        Err(_) => LogTail::default(),
    };
    let web = state
        .backend
        .declaration(&namespace, &name)
        .and_then(|d| pages::repository_web(&d.job.as_ref()?.git.url));
    let shown = pages::LogShown {
        text: &String::from_utf8_lossy(&tail.text),
        skipped_bytes: tail.skipped_bytes,
        skipped_lines: tail.skipped_lines,
    };
    let left = match build.state.is_finished() {
        true => crate::ui_outputs::sections(&state, &namespace, &name, number).await,
        false => Arc::default(),
    };
    let shown_page = pages::BuildPage {
        namespace: &namespace,
        job: &name,
        build: &build,
        shown: &shown,
        web: web.as_deref(),
        engine: state.backend.kind(),
        left: &left,
    };
    with_cookie(
        page(StatusCode::OK, pages::build(&shown_page, &chrome)),
        cookie,
    )
}

/// How much of a log's end the build page shows; the whole log is a link away (the API
/// streams it). A page view then holds at most this much of any log, however long.
pub(crate) const PAGE_LOG_TAIL: usize = 256 * 1024;

/// The end of a log, from its first whole line within the limit.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct LogTail {
    pub(crate) text: Vec<u8>,
    /// How much of the log comes before `text`, in bytes and in lines.
    pub(crate) skipped_bytes: u64,
    pub(crate) skipped_lines: u64,
}

/// Reads `stream` to its end keeping only its last `limit` bytes (whole lines).
pub(crate) async fn log_tail(mut stream: kubeci_engine::api::LogStream, limit: usize) -> LogTail {
    use futures_util::StreamExt;
    let mut chunks: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    let (mut held, mut skipped, mut skipped_lines) = (0usize, 0u64, 0u64);
    let lines_in = |bytes: &[u8]| bytes.iter().filter(|b| **b == b'\n').count() as u64;
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
                skipped_lines += lines_in(front);
                chunks.pop_front();
            } else {
                skipped_lines += lines_in(&front.split_to(excess));
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
        skipped_lines += lines_in(&text[..start]);
        text.drain(..start);
        skipped += start as u64;
    }
    LogTail {
        text,
        skipped_bytes: skipped,
        skipped_lines,
    }
}

/// `/badges/{namespace}/{job}.svg`: the last build's state.
pub(crate) async fn badge<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, file)): Path<(String, String)>,
) -> Response {
    let Some(name) = file.strip_suffix(".svg") else {
        return not_found_page("Badges end in .svg.");
    };
    let newest = PageRequest {
        before: None,
        limit: 1,
    };
    let Some(builds) = state.backend.builds_page(&namespace, name, newest).await else {
        return not_found_page(&format!("There is no job {namespace}/{name}."));
    };
    let builds = builds.builds;
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
