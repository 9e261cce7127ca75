//! Who is asking, and whether they may act: the bearer token, the session cookie signed
//! with it, users named by an authenticating proxy (their own sessions), CSRF tokens of
//! the forms, and cross-site refusals.

use std::sync::Arc;

use crate::pages;
use crate::session;
use crate::ui::{page, ActionForm};
use crate::{error, now, same_secret, AppState};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use kubeci_engine::api::Backend;

/// Who acts through the JSON API ([`authorize`]). As an extractor it answers a refusal
/// itself (a JSON error), so a handler that takes one acts for someone.
pub(crate) struct ApiActor(pub String);

impl<B: Backend> FromRequestParts<Arc<AppState<B>>> for ApiActor {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState<B>>,
    ) -> Result<Self, Response> {
        authorize(&state.access, &parts.headers)
            .map(ApiActor)
            .map_err(|(status, code, message)| error(status, code, message))
    }
}

/// Who sent a form of kubeci's pages ([`form_actor`]). As an extractor it reads the
/// form's CSRF token and answers a refusal itself (a page); it takes the body, so it is a
/// handler's last argument.
pub(crate) struct FormActor(pub String);

impl<B: Backend> FromRequest<Arc<AppState<B>>> for FormActor {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<AppState<B>>) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let form = axum::Form::<ActionForm>::from_request(request, state).await;
        let csrf = form.map(|axum::Form(f)| f.csrf).unwrap_or_default();
        form_actor(&state.access, &headers, &csrf)
            .map(FormActor)
            .map_err(|refused| *refused)
    }
}

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
    pub(crate) fn cookie_attributes(&self) -> &'static str {
        if self.secure_cookies {
            "HttpOnly; SameSite=Strict; Path=/; Secure"
        } else {
            "HttpOnly; SameSite=Strict; Path=/"
        }
    }
}

/// What the authenticating proxy's header says about who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyUser {
    /// No proxy is trusted, or the header is absent or empty.
    Absent,
    Allowed(String),
    NotAllowed(String),
    /// The header came more than once, or not as text: no one is taken from it (a proxy
    /// appending to a client's own header would otherwise let the client choose).
    Ambiguous,
}

pub(crate) fn proxy_user(access: &Access, headers: &HeaderMap) -> ProxyUser {
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
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
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

/// The CSRF token of the request's signed-in session, if it has one: a session cookie
/// from `/login`, or the session cookie of an allowed user named by the authenticating
/// proxy (issued by the pages, see [`page_session`]).
pub(crate) fn signed_in(access: &Access, headers: &HeaderMap) -> Option<String> {
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
pub(crate) fn page_session(
    access: &Access,
    headers: &HeaderMap,
) -> (Option<String>, Option<String>) {
    if let Some(csrf) = signed_in(access, headers) {
        return (Some(csrf), None);
    }
    let (Some(token), ProxyUser::Allowed(user)) =
        (access.token.as_deref(), proxy_user(access, headers))
    else {
        return (None, None);
    };
    let Some(nonce) = nonce() else {
        return (None, None);
    };
    let session = session::issue_for_user(token, &user, now(), &nonce);
    let cookie = format!(
        "{}={session}; {}; Max-Age={}",
        session::PROXY_COOKIE,
        access.cookie_attributes(),
        session::LIFETIME
    );
    (Some(session::csrf(token, &session)), Some(cookie))
}

/// A new session's nonce: 128 random bits from the operating system's CSPRNG, in hex;
/// `None` if it cannot give them (no session is issued then).
pub(crate) fn nonce() -> Option<String> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).ok()?;
    Some(hex::encode(nonce))
}

/// `response` with `cookie` set, if there is one.
pub(crate) fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
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
            pages::problem("Forbidden", why),
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
                "{user} may look but not act: ask for them to be added to kubeci's allowed users."
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
        Some(expected) if !same_secret(csrf, &expected) => Err(forbidden(
            "This form did not come from kubeci's own page (its CSRF token is missing or wrong).",
        )),
        Some(_) => Ok(who),
    }
}

/// Why an action is refused: (status, code, message).
pub(crate) type Refusal = (StatusCode, &'static str, &'static str);

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
        Some(presented) if same_secret(presented, token) => Ok("api".into()),
        Some(_) => Err((StatusCode::FORBIDDEN, "forbidden", "the token is not valid")),
        None => Err((
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`",
        )),
    }
}
