//! A fake GitHub REST API on loopback, with the calls kubeci makes: pull requests,
//! organisation membership, commit statuses, comments and labels, and those Prow makes
//! besides ([`prow`]). It keeps what it is told, records every call, checks the token — a
//! personal one, or as a GitHub App ([`app`]) the App's JWTs and its installations'
//! tokens — and can answer with rate limits and errors.

mod app;
mod checks;
mod prow;

pub use app::make_app_key;
pub use checks::FakeCheckRun;
pub use prow::GitHubCall;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A commit status as posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedStatus {
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: String,
}

#[derive(Default)]
struct State {
    token: String,
    /// (repo, number) → the pull request's JSON.
    pulls: BTreeMap<(String, u64), Value>,
    members: BTreeSet<(String, String)>,
    statuses: Vec<PostedStatus>,
    check_runs: Vec<FakeCheckRun>,
    /// (repo, number) → (author, body).
    comments: BTreeMap<(String, u64), Vec<(String, String)>>,
    /// What the next requests get: a fault, or `None` to be served.
    faults: VecDeque<Option<Fault>>,
    /// Every request, in order.
    requests: Vec<GitHubCall>,
    /// (repo, branch) → the branch's head.
    branches: BTreeMap<(String, String), String>,
    bot: String,
    /// Set when it stands for a GitHub App's view of GitHub.
    app: Option<app::AppSide>,
    /// How many more requests are served before the rest are held (`None`: all are).
    serve_before_holding: Option<usize>,
    /// Requests held now.
    held: usize,
    /// Held requests are done, their answers lost.
    do_held: bool,
    /// Wakes held requests when they are let go.
    let_go: Arc<tokio::sync::Notify>,
    /// How many times held requests were let go.
    let_go_count: u64,
}

/// The fake GitHub; it stops when dropped.
pub struct FakeGitHub {
    state: Arc<Mutex<State>>,
    address: SocketAddr,
    serving: JoinHandle<()>,
}

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(if body.is_null() {
            String::new()
        } else {
            body.to_string()
        }))
        .expect("a valid response")
}

/// GitHub's owner and repository names ignore case.
fn repo_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_ascii_lowercase()
}

fn not_found() -> Response<Body> {
    reply(StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
}

fn query(uri: &axum::http::Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One page of `items` as `?per_page=&page=` ask.
fn page(uri: &axum::http::Uri, items: Vec<Value>) -> Value {
    let per_page: usize = query(uri, "per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query(uri, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    Value::Array(
        items
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect(),
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20) // 50 annotations of up to 128 KiB each
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some((let_go, count, done)) = held(&state) {
        if done {
            // Done, then its answer lost.
            respond(&mut state.lock().expect("lock"), &parts, &body);
        }
        // Created before the check, so a `let_go` right after it still wakes it.
        let notified = let_go.notified();
        if state.lock().expect("lock").let_go_count == count {
            notified.await;
        }
        state.lock().expect("lock").held -= 1;
        return Ok(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"message": "held, then let go"}),
        ));
    }
    Ok(respond(&mut state.lock().expect("lock"), &parts, &body))
}

/// Serves one request as GitHub would (or with a fault to give).
fn respond(state: &mut State, parts: &axum::http::request::Parts, body: &Value) -> Response<Body> {
    let path = parts.uri.path().to_owned();
    state.requests.push(GitHubCall::of(parts));
    if let Some(Some((status, headers))) = state.faults.pop_front() {
        let mut response = reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            json!({"message": "injected fault"}),
        );
        for (name, value) in headers {
            response.headers_mut().insert(
                header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        return response;
    }
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .unwrap_or("")
        .to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if state.app.is_some() {
        if let Some(answer) = as_the_app(state, &parts.method, &segments, &credential) {
            return answer;
        }
        if let Some(refusal) = installation_refusal(state, &segments, &credential) {
            return refusal;
        }
        let installation = state
            .app
            .as_ref()
            .and_then(|a| a.token_installation(&credential).ok());
        let mut response = serve(state, parts, &segments, body);
        if let Some(installation) = installation {
            let left = state.app.as_mut().expect("an App").spend(installation);
            response
                .headers_mut()
                .insert("x-ratelimit-remaining", left.into());
        }
        return response;
    } else if credential != state.token {
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        );
    } else if segments.get(3) == Some(&"check-runs") && parts.method != Method::GET {
        // Only Apps write check runs.
        return reply(
            StatusCode::FORBIDDEN,
            json!({"message": "Resource not accessible by personal access token"}),
        );
    }
    serve(state, parts, &segments, body)
}

/// Whether this request is held (see [`FakeGitHub::hold_after`]): what lets it go, how
/// many times requests were let go before, and whether it is done before being held.
fn held(state: &Mutex<State>) -> Option<(Arc<tokio::sync::Notify>, u64, bool)> {
    let mut state = state.lock().expect("lock");
    match state.serve_before_holding.as_mut() {
        Some(0) => {
            state.held += 1;
            Some((state.let_go.clone(), state.let_go_count, state.do_held))
        }
        Some(left) => {
            *left -= 1;
            None
        }
        None => None,
    }
}

fn serve(
    state: &mut State,
    parts: &axum::http::request::Parts,
    segments: &[&str],
    body: &Value,
) -> Response<Body> {
    match parts.method {
        Method::GET => get(state, segments, &parts.uri),
        Method::POST => post(state, segments, body),
        Method::PATCH => patch(state, segments, body),
        _ => not_found(),
    }
}

fn unprocessable(why: String) -> Response<Body> {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Validation Failed", "errors": [why]}),
    )
}

/// What a PATCH changes.
fn patch(state: &mut State, segments: &[&str], body: &Value) -> Response<Body> {
    match segments {
        ["repos", owner, name, "check-runs", id] => {
            let repo = format!("{owner}/{name}");
            let id = id.parse().unwrap_or(0);
            match checks::update(&mut state.check_runs, &repo, id, body) {
                Some(Ok(run)) => reply(StatusCode::OK, run),
                Some(Err(why)) => unprocessable(why),
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// The App's own calls (authenticated with its JWT): an installation's look-up, a new
/// installation token. `None` for any other call.
fn as_the_app(
    state: &mut State,
    method: &Method,
    segments: &[&str],
    jwt: &str,
) -> Option<Response<Body>> {
    let app = state.app.as_mut().expect("an App");
    let account = match (method, segments) {
        (&Method::GET, ["repos", owner, _, "installation"] | ["orgs", owner, "installation"]) => {
            Some(owner.to_ascii_lowercase())
        }
        (&Method::POST, ["app", "installations", _, "access_tokens"]) => None,
        _ => return None,
    };
    if let Err(why) = app.verify(jwt) {
        app.refused_jwts.push(why.clone());
        return Some(reply(StatusCode::UNAUTHORIZED, json!({ "message": why })));
    }
    if let Some(account) = account {
        return Some(match app.installations.get(&account) {
            Some(id) => reply(
                StatusCode::OK,
                json!({"id": id, "account": {"login": account}, "app_id": app.id}),
            ),
            None => not_found(),
        });
    }
    let id: u64 = segments[2].parse().unwrap_or(0);
    if !app.installations.values().any(|i| *i == id) {
        return Some(not_found());
    }
    let (token, expires) = app.make_token(id);
    let expires_at = jiff::Timestamp::from_second(expires).expect("a time");
    Some(reply(
        StatusCode::CREATED,
        json!({"token": token, "expires_at": expires_at.to_string()}),
    ))
}

/// Why an App's installation token may not make this call, if it may not: unknown or
/// expired (401), or another installation's (403, as GitHub answers).
fn installation_refusal(state: &State, segments: &[&str], token: &str) -> Option<Response<Body>> {
    let app = state.app.as_ref().expect("an App");
    let installation = match app.token_installation(token) {
        Ok(installation) => installation,
        Err(why) => return Some(reply(StatusCode::UNAUTHORIZED, json!({ "message": why }))),
    };
    let account = match segments {
        ["repos", owner, ..] | ["orgs", owner, ..] => owner.to_ascii_lowercase(),
        _ => return None,
    };
    (app.installations.get(&account) != Some(&installation)).then(|| {
        reply(
            StatusCode::FORBIDDEN,
            json!({"message": "Resource not accessible by integration"}),
        )
    })
}

/// What a GET reads.
fn get(state: &State, segments: &[&str], uri: &axum::http::Uri) -> Response<Body> {
    match segments {
        ["repos", owner, name, "pulls"] => {
            let repo = repo_key(owner, name);
            let mut open: Vec<Value> = state
                .pulls
                .iter()
                .filter(|((r, _), pr)| *r == repo && pr["state"] == "open")
                .map(|(_, pr)| pr.clone())
                .collect();
            // Newest (by number) first when asked, as GitHub's `direction=desc`.
            if query(uri, "direction").as_deref() == Some("desc") {
                open.reverse();
            }
            reply(StatusCode::OK, page(uri, open))
        }
        ["repos", owner, name, "pulls", number] => {
            let key = (repo_key(owner, name), number.parse().unwrap_or(0));
            match state.pulls.get(&key) {
                Some(pr) => reply(StatusCode::OK, pr.clone()),
                None => not_found(),
            }
        }
        ["orgs", org, "members", login] => {
            let key = (org.to_ascii_lowercase(), login.to_ascii_lowercase());
            if state.members.contains(&key) {
                reply(StatusCode::NO_CONTENT, Value::Null)
            } else {
                not_found()
            }
        }
        ["repos", owner, name, "commits", sha, "statuses"] => {
            let repo = repo_key(owner, name);
            let found: Vec<Value> = state
                .statuses
                .iter()
                .rev()
                .filter(|s| s.repo.eq_ignore_ascii_case(&repo) && s.sha == *sha)
                .map(
                    |s| json!({"state": s.state, "context": s.context, "target_url": s.target_url}),
                )
                .collect();
            reply(StatusCode::OK, page(uri, found))
        }
        ["repos", owner, name, "check-runs", id, "annotations"] => {
            checks::annotations(&state.check_runs, &format!("{owner}/{name}"), id)
                .map_or_else(not_found, |all| reply(StatusCode::OK, page(uri, all)))
        }
        ["repos", owner, name, "commits", _, "check-runs"]
        | ["repos", owner, name, "check-runs", _] => {
            let repo = format!("{owner}/{name}");
            let check_name = query(uri, "check_name");
            checks::get(&state.check_runs, &repo, segments, check_name.as_deref())
                .map_or_else(not_found, |found| reply(StatusCode::OK, found))
        }
        ["repos", owner, name, "issues", number, "comments"] => {
            let key = (repo_key(owner, name), number.parse().unwrap_or(0));
            let found: Vec<Value> = state
                .comments
                .get(&key)
                .into_iter()
                .flatten()
                .map(|(user, body)| json!({"user": {"login": user}, "body": body}))
                .collect();
            reply(StatusCode::OK, page(uri, found))
        }
        _ => prow::get(state, segments),
    }
}

/// What a POST writes.
fn post(state: &mut State, segments: &[&str], body: &Value) -> Response<Body> {
    match segments {
        ["repos", owner, name, "check-runs"] => {
            let repo = format!("{owner}/{name}");
            match checks::create(&mut state.check_runs, &repo, body) {
                Ok(run) => reply(StatusCode::CREATED, run),
                Err(why) => unprocessable(why),
            }
        }
        ["repos", owner, name, "statuses", sha] => {
            let text = |key: &str| body[key].as_str().unwrap_or("").to_owned();
            let status = PostedStatus {
                repo: format!("{owner}/{name}"),
                sha: (*sha).to_owned(),
                state: text("state"),
                context: text("context"),
                description: text("description"),
                target_url: text("target_url"),
            };
            state.statuses.push(status);
            reply(StatusCode::CREATED, json!({"state": body["state"]}))
        }
        ["repos", owner, name, "issues", number, "comments"] => {
            let key = (repo_key(owner, name), number.parse().unwrap_or(0));
            let bot = state.bot.clone();
            let text = body["body"].as_str().unwrap_or("").to_owned();
            state.comments.entry(key).or_default().push((bot, text));
            reply(StatusCode::CREATED, json!({}))
        }
        ["repos", owner, name, "issues", number, "labels"] => {
            let key = (repo_key(owner, name), number.parse().unwrap_or(0));
            match state.pulls.get_mut(&key) {
                Some(pr) => {
                    let labels = pr["labels"].as_array_mut().expect("labels");
                    for label in body["labels"].as_array().into_iter().flatten() {
                        if !labels.iter().any(|l| l["name"] == *label) {
                            labels.push(json!({"name": label}));
                        }
                    }
                    reply(StatusCode::OK, pr["labels"].clone())
                }
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

impl FakeGitHub {
    /// Starts on a free loopback port; requests must carry `Bearer <token>`; comments
    /// posted are by `bot`.
    pub async fn start(token: &str, bot: &str) -> FakeGitHub {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            bot: bot.to_owned(),
            ..State::default()
        }));
        let handler_state = state.clone();
        let serving = tokio::spawn(crate::accept_loop(listener, move |request| {
            handle(handler_state.clone(), request)
        }));
        FakeGitHub {
            state,
            address,
            serving,
        }
    }

    /// The API's base URL, for `--github-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("lock")
    }

    /// Adds or replaces an open pull request of `repo` (`owner/name`) from its JSON (as
    /// in a `pull_request` webhook payload).
    pub fn set_pull_request(&self, repo: &str, pull_request: Value) {
        let mut pull_request = pull_request;
        let number = pull_request["number"].as_u64().expect("a number");
        if pull_request["state"].is_null() {
            pull_request["state"] = "open".into();
        }
        self.state()
            .pulls
            .insert((repo.to_ascii_lowercase(), number), pull_request);
    }

    pub fn pull_request(&self, repo: &str, number: u64) -> Option<Value> {
        self.state()
            .pulls
            .get(&(repo.to_ascii_lowercase(), number))
            .cloned()
    }

    pub fn add_member(&self, org: &str, login: &str) {
        self.state()
            .members
            .insert((org.to_ascii_lowercase(), login.to_ascii_lowercase()));
    }

    /// A comment by someone else than the bot.
    pub fn add_comment(&self, repo: &str, number: u64, author: &str, body: &str) {
        self.state()
            .comments
            .entry((repo.to_ascii_lowercase(), number))
            .or_default()
            .push((author.to_owned(), body.to_owned()));
    }

    pub fn statuses(&self) -> Vec<PostedStatus> {
        self.state().statuses.clone()
    }

    /// Serves `count` more requests, then holds every later one unanswered (kubeci is
    /// stopped between two of its calls) until [`FakeGitHub::let_go`].
    pub fn hold_after(&self, count: usize) {
        let mut state = self.state();
        state.serve_before_holding = Some(count);
        state.do_held = false;
    }

    /// As [`FakeGitHub::hold_after`], but the held requests are done first: their answers
    /// are lost (the network failed, or kubeci stopped, between GitHub doing a call and
    /// kubeci hearing of it).
    pub fn lose_answers_after(&self, count: usize) {
        let mut state = self.state();
        state.serve_before_holding = Some(count);
        state.do_held = true;
    }

    /// How many requests are held now.
    pub fn held(&self) -> usize {
        self.state().held
    }

    /// Answers the held requests `503` without doing them (their caller is gone), and
    /// serves every request from now on.
    pub fn let_go(&self) {
        let mut state = self.state();
        state.serve_before_holding = None;
        state.let_go_count += 1;
        state.let_go.notify_waiters();
    }

    /// Every check run created, in order.
    pub fn check_runs(&self) -> Vec<FakeCheckRun> {
        self.state().check_runs.clone()
    }

    /// The comments on `number`: (author, body).
    pub fn comments(&self, repo: &str, number: u64) -> Vec<(String, String)> {
        self.state()
            .comments
            .get(&(repo.to_ascii_lowercase(), number))
            .cloned()
            .unwrap_or_default()
    }

    /// The next `count` requests are answered `status` with `headers` (a rate limit:
    /// 403 with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`, or 429 with
    /// `Retry-After`).
    pub fn fail_next(&self, count: usize, status: u16, headers: &[(&str, &str)]) {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut state = self.state();
        for _ in 0..count {
            state.faults.push_back(Some((status, headers.clone())));
        }
    }

    /// The next `count` requests are served as usual (before the faults queued after).
    pub fn serve_next(&self, count: usize) {
        let mut state = self.state();
        for _ in 0..count {
            state.faults.push_back(None);
        }
    }

    /// Forgets the faults not given yet.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }
}

/// An answer given instead of serving a request: status and headers.
type Fault = (u16, Vec<(String, String)>);

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
