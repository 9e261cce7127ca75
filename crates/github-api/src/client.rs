//! GitHub's REST API, the calls kubeci makes: pull requests, organisation membership
//! (cached), commit statuses, comments and labels — as a personal token's owner or as a
//! GitHub App's installation ([`crate::app`]). Rate limits are read from every answer:
//! `Retry-After`, or `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`; an App's are
//! kept per installation, as GitHub counts them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, StatusCode, Uri};
use kubeci_github::event::{parse_pull_request, PullRequestInfo};
use serde_json::{json, Value};

use crate::app::{self, App, InstallationToken, Installations, Scope};
use crate::GitHubError;

mod check_runs;

pub use check_runs::CheckRun;

/// Items asked for per page of a list: GitHub's largest page.
pub const PER_PAGE: usize = 100;

/// How long an organisation membership answer is believed.
pub const MEMBERSHIP_TTL: Duration = Duration::from_secs(600);

/// A client of one GitHub (github.com's API, or an Enterprise server's `/api/v3`).
pub struct GitHubClient {
    base: String,
    credentials: Credentials,
    client: kubeci_https::HttpsClient,
    timeout: Duration,
    memberships: Mutex<HashMap<(String, String), (bool, Instant)>>,
    /// The calls made and the rate limit left, for metrics and tests.
    stats: Mutex<Stats>,
}

/// Who the client calls GitHub as.
enum Credentials {
    Anonymous,
    Token(String),
    App(Box<AppCaller>),
}

/// A GitHub App and what it found of its installations.
struct AppCaller {
    app: App,
    installations: Installations,
}

/// What the client has seen of GitHub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls: u64,
    /// `X-RateLimit-Remaining` of the last answer.
    pub rate_limit_remaining: Option<u64>,
    /// An App's: `X-RateLimit-Remaining` of the last answer to each installation's token.
    pub rate_limit_by_installation: BTreeMap<u64, u64>,
    /// An App's: installation tokens made.
    pub tokens_made: u64,
}

/// A commit status as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub context: String,
    pub state: String,
    pub target_url: String,
}

/// A commit status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    pub state: &'a str,
    pub context: &'a str,
    pub description: &'a str,
    pub target_url: &'a str,
}

fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = number(header::RETRY_AFTER.as_str()) {
        return Some(Duration::from_secs(seconds));
    }
    if number("x-ratelimit-remaining") == Some(0) {
        let reset = number("x-ratelimit-reset")?;
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    None
}

impl GitHubClient {
    /// `base`: the API's URL (`https://api.github.com`, `https://ghe.example.com/api/v3`).
    pub fn new(base: &str, token: Option<String>) -> Result<GitHubClient, GitHubError> {
        Self::with(
            base,
            token.map_or(Credentials::Anonymous, Credentials::Token),
        )
    }

    /// A client that calls as `app`'s installation on the repository or organisation
    /// each call is about.
    pub fn with_app(base: &str, app: App) -> Result<GitHubClient, GitHubError> {
        let installations = Installations::default();
        Self::with(
            base,
            Credentials::App(Box::new(AppCaller { app, installations })),
        )
    }

    /// Whether it can call as someone (a token or an App): without, it only reads
    /// what is public.
    pub fn has_credentials(&self) -> bool {
        !matches!(self.credentials, Credentials::Anonymous)
    }

    /// Forgets which installation covers which repository (an App was installed,
    /// removed, or given other repositories).
    pub fn forget_installations(&self) {
        if let Credentials::App(caller) = &self.credentials {
            caller.installations.forget_scopes();
        }
    }

    fn with(base: &str, credentials: Credentials) -> Result<GitHubClient, GitHubError> {
        let parsed: Uri =
            base.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| GitHubError::InvalidUrl {
                    url: base.to_owned(),
                    reason: e.to_string(),
                })?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(GitHubError::InvalidUrl {
                url: base.to_owned(),
                reason: "it needs a scheme and a host".into(),
            });
        }
        Ok(GitHubClient {
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            client: kubeci_https::https_client().map_err(GitHubError::Client)?,
            timeout: Duration::from_secs(15),
            memberships: Mutex::default(),
            stats: Mutex::default(),
        })
    }

    /// The same client, waiting at most `timeout` for each answer (15 s unless told).
    pub fn with_timeout(self, timeout: Duration) -> GitHubClient {
        GitHubClient { timeout, ..self }
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().expect("lock").clone()
    }

    /// One call as the client's credentials; the JSON answer (`Null` for an empty one)
    /// and the status. As an App, a token GitHub refuses (`401`) is replaced and the call
    /// made once more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), GitHubError> {
        let (app, installations) = match &self.credentials {
            Credentials::Anonymous => return self.send(method, path, body, None, None).await,
            Credentials::Token(token) => {
                return self.send(method, path, body, Some(token), None).await
            }
            Credentials::App(caller) => (&caller.app, &caller.installations),
        };
        let scope = app::scope_of(path).ok_or_else(|| GitHubError::NoInstallation {
            call: format!("{method} {path}"),
            scope: "no repository or organisation".into(),
        })?;
        let installation = self.installation(app, installations, &scope).await?;
        let token = self.token(app, installations, installation, None).await?;
        let first = self
            .send(
                method.clone(),
                path,
                body.clone(),
                Some(&token.token),
                Some(installation),
            )
            .await;
        match first {
            Err(GitHubError::Refused { status: 401, .. }) => {
                let renewed = self
                    .token(app, installations, installation, Some(&token))
                    .await?;
                self.send(method, path, body, Some(&renewed.token), Some(installation))
                    .await
            }
            answer => answer,
        }
    }

    /// The installation of the App covering `scope`, looked up once.
    async fn installation(
        &self,
        app: &App,
        installations: &Installations,
        scope: &Scope,
    ) -> Result<u64, GitHubError> {
        let slot = installations.installation_slot(scope);
        let mut found = slot.lock().await;
        if let Some(id) = *found {
            return Ok(id);
        }
        let path = scope.installation_path();
        let jwt = app.jwt(jiff::Timestamp::now().as_second())?;
        let (status, value) = self
            .send(Method::GET, &path, None, Some(&jwt), None)
            .await?;
        let id = value["id"].as_u64().filter(|_| status.is_success());
        let id = id.ok_or_else(|| GitHubError::NoInstallation {
            call: format!("GET {path}"),
            scope: scope.to_string(),
        })?;
        *found = Some(id);
        Ok(id)
    }

    /// A usable token of `installation`: the one kept, unless it is `refused` or in its
    /// last minutes; else a new one.
    async fn token(
        &self,
        app: &App,
        installations: &Installations,
        installation: u64,
        refused: Option<&InstallationToken>,
    ) -> Result<InstallationToken, GitHubError> {
        let slot = installations.token_slot(installation);
        let mut kept = slot.lock().await;
        let now = jiff::Timestamp::now().as_second();
        if let Some(token) = kept.as_ref() {
            if Some(token) != refused && app::usable(token.expires_at, now) {
                return Ok(token.clone());
            }
        }
        let path = format!("/app/installations/{installation}/access_tokens");
        let jwt = app.jwt(now)?;
        let (status, value) = self
            .send(Method::POST, &path, None, Some(&jwt), None)
            .await?;
        let call = || format!("POST {path}");
        let token = value["token"].as_str().filter(|_| status.is_success());
        let expires_at = value["expires_at"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let (Some(token), Some(expires_at)) = (token, expires_at) else {
            return Err(GitHubError::Refused {
                call: call(),
                status: status.as_u16(),
                message: "no installation token in the answer".into(),
                retry_after: None,
            });
        };
        let token = InstallationToken {
            token: token.to_owned(),
            expires_at: expires_at.as_second(),
        };
        self.stats.lock().expect("lock").tokens_made += 1;
        *kept = Some(token.clone());
        Ok(token)
    }

    /// One more call, and the rate limit its answer's `headers` say is left (of
    /// `installation`'s, for an App).
    fn count_call(&self, headers: &hyper::HeaderMap, installation: Option<u64>) {
        let mut stats = self.stats.lock().expect("lock");
        stats.calls += 1;
        let left = headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if let Some(left) = left {
            stats.rate_limit_remaining = Some(left);
            if let Some(installation) = installation {
                stats.rate_limit_by_installation.insert(installation, left);
            }
        }
    }

    /// One request with `authorization` (a token or a JWT); `installation`: whose rate
    /// limit the answer tells.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        authorization: Option<&str>,
        installation: Option<u64>,
    ) -> Result<(StatusCode, Value), GitHubError> {
        let uri = format!("{}{path}", self.base);
        let mut request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header(header::USER_AGENT, "kubeci")
            .header("x-github-api-version", "2022-11-28");
        if let Some(token) = authorization {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        if !bytes.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request =
            request
                .body(Full::new(Bytes::from(bytes)))
                .map_err(|e| GitHubError::InvalidUrl {
                    url: uri.clone(),
                    reason: e.to_string(),
                })?;
        let network = |message: String| GitHubError::Unreachable {
            call: format!("{method} {path}"),
            message,
        };
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| network("no answer in time".into()))?
            .map_err(|e| network(e.to_string()))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        self.count_call(response.headers(), installation);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| network(e.to_string()))?
            .to_bytes();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let limited = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN && wait.is_some());
        if limited {
            return Err(GitHubError::RateLimited {
                call: format!("{method} {path}"),
                retry_after: wait.unwrap_or(Duration::from_secs(60)),
            });
        }
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok((status, value));
        }
        Err(GitHubError::Refused {
            call: format!("{method} {path}"),
            status: status.as_u16(),
            message: value["message"].as_str().unwrap_or("").to_owned(),
            retry_after: wait,
        })
    }

    async fn found(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, GitHubError> {
        match self.call(method.clone(), path, body).await? {
            (StatusCode::NOT_FOUND, _) => Err(GitHubError::Refused {
                call: format!("{method} {path}"),
                status: 404,
                message: "Not Found".into(),
                retry_after: None,
            }),
            (_, value) => Ok(value),
        }
    }

    pub async fn pull_request(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<PullRequestInfo, GitHubError> {
        let value = self
            .found(Method::GET, &format!("/repos/{repo}/pulls/{number}"), None)
            .await?;
        parse_pull_request(value).map_err(GitHubError::Decode)
    }

    /// The open pull requests of `repo` (`owner/name`), newest first, at most `max`; and
    /// whether there may be more.
    pub async fn open_pull_requests(
        &self,
        repo: &str,
        max: usize,
    ) -> Result<(Vec<PullRequestInfo>, bool), GitHubError> {
        let mut all = Vec::new();
        for page in 1.. {
            let value = self
                .found(
                    Method::GET,
                    &format!("/repos/{repo}/pulls?state=open&sort=created&direction=desc&per_page={PER_PAGE}&page={page}"),
                    None,
                )
                .await?;
            let items = value.as_array().cloned().unwrap_or_default();
            let count = items.len();
            for item in items {
                if all.len() == max {
                    return Ok((all, true));
                }
                all.push(parse_pull_request(item).map_err(GitHubError::Decode)?);
            }
            if count < PER_PAGE {
                break;
            }
            if all.len() == max {
                return Ok((all, true));
            }
        }
        Ok((all, false))
    }

    /// Whether `login` is a member of `org`, asked at most once per [`MEMBERSHIP_TTL`].
    pub async fn is_member(&self, org: &str, login: &str) -> Result<bool, GitHubError> {
        let key = (org.to_ascii_lowercase(), login.to_ascii_lowercase());
        if let Some((member, at)) = self.memberships.lock().expect("lock").get(&key) {
            if at.elapsed() < MEMBERSHIP_TTL {
                return Ok(*member);
            }
        }
        let (status, _) = self
            .call(Method::GET, &format!("/orgs/{org}/members/{login}"), None)
            .await?;
        let member = status == StatusCode::NO_CONTENT;
        self.memberships
            .lock()
            .expect("lock")
            .insert(key, (member, Instant::now()));
        Ok(member)
    }

    pub async fn post_status(
        &self,
        repo: &str,
        sha: &str,
        status: &Status<'_>,
    ) -> Result<(), GitHubError> {
        // GitHub refuses descriptions over 140 characters.
        let description: String = status.description.chars().take(140).collect();
        self.found(
            Method::POST,
            &format!("/repos/{repo}/statuses/{sha}"),
            Some(json!({
                "state": status.state,
                "context": status.context,
                "description": description,
                "target_url": status.target_url,
            })),
        )
        .await
        .map(|_| ())
    }

    /// The statuses on commit `sha`, newest first (as GitHub lists them).
    pub async fn statuses(&self, repo: &str, sha: &str) -> Result<Vec<CommitStatus>, GitHubError> {
        let value = self
            .found(
                Method::GET,
                &format!("/repos/{repo}/commits/{sha}/statuses?per_page=100"),
                None,
            )
            .await?;
        Ok(value
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
                CommitStatus {
                    context: text("context"),
                    state: text("state"),
                    target_url: text("target_url"),
                }
            })
            .collect())
    }

    /// The bodies of the comments on issue or pull request `number`, oldest first, from at
    /// most `max_pages` pages of [`PER_PAGE`].
    pub async fn comments(
        &self,
        repo: &str,
        number: u64,
        max_pages: usize,
    ) -> Result<Vec<String>, GitHubError> {
        let mut all = Vec::new();
        for page in 1..=max_pages {
            let value = self
                .found(
                    Method::GET,
                    &format!(
                        "/repos/{repo}/issues/{number}/comments?per_page={PER_PAGE}&page={page}"
                    ),
                    None,
                )
                .await?;
            let items = value.as_array().cloned().unwrap_or_default();
            let count = items.len();
            all.extend(
                items
                    .iter()
                    .filter_map(|c| c["body"].as_str().map(str::to_owned)),
            );
            if count < PER_PAGE {
                break;
            }
        }
        Ok(all)
    }

    pub async fn comment(&self, repo: &str, number: u64, body: &str) -> Result<(), GitHubError> {
        self.found(
            Method::POST,
            &format!("/repos/{repo}/issues/{number}/comments"),
            Some(json!({ "body": body })),
        )
        .await
        .map(|_| ())
    }

    pub async fn add_label(&self, repo: &str, number: u64, label: &str) -> Result<(), GitHubError> {
        self.found(
            Method::POST,
            &format!("/repos/{repo}/issues/{number}/labels"),
            Some(json!({ "labels": [label] })),
        )
        .await
        .map(|_| ())
    }
}
