//! A fake GitHub REST API on loopback, with the calls kubeci makes: pull requests,
//! organisation membership, commit statuses, comments and labels. It keeps what it is
//! told, checks the token, and can answer with rate limits and errors.

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
    /// (repo, number) → (author, body).
    comments: BTreeMap<(String, u64), Vec<(String, String)>>,
    /// Answers to give instead of serving: (status, headers).
    /// What the next requests get: a fault, or `None` to be served.
    faults: VecDeque<Option<Fault>>,
    /// (method, path) of every request.
    requests: Vec<(String, String)>,
    bot: String,
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
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = state.lock().expect("lock");
    let path = parts.uri.path().to_owned();
    state
        .requests
        .push((parts.method.to_string(), path.clone()));
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
        return Ok(response);
    }
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", state.token));
    if !authorized {
        return Ok(reply(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        ));
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match parts.method {
        Method::GET => get(&state, &segments, &parts.uri),
        Method::POST => post(&mut state, &segments, &body),
        _ => not_found(),
    })
}

/// What a GET reads.
fn get(state: &State, segments: &[&str], uri: &axum::http::Uri) -> Response<Body> {
    match segments {
        ["repos", owner, name, "pulls"] => {
            let repo = repo_key(owner, name);
            let open: Vec<Value> = state
                .pulls
                .iter()
                .filter(|((r, _), pr)| *r == repo && pr["state"] == "open")
                .map(|(_, pr)| pr.clone())
                .collect();
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
        _ => not_found(),
    }
}

/// What a POST writes.
fn post(state: &mut State, segments: &[&str], body: &Value) -> Response<Body> {
    match segments {
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

    /// The comments on `number`: (author, body).
    pub fn comments(&self, repo: &str, number: u64) -> Vec<(String, String)> {
        self.state()
            .comments
            .get(&(repo.to_ascii_lowercase(), number))
            .cloned()
            .unwrap_or_default()
    }

    /// (method, path) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state().requests.clone()
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
}

/// An answer given instead of serving a request: status and headers.
type Fault = (u16, Vec<(String, String)>);

impl FakeGitHub {
    /// Forgets the faults not given yet.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.serving.abort();
    }
}
