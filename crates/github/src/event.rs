//! GitHub webhook payloads, read into the few fields kubeci decides on. Unknown fields are
//! ignored; a missing field kubeci needs is an error naming it.

use serde::Deserialize;

/// A pull request as kubeci sees it (from a `pull_request` event, or asked of GitHub for a
/// comment, or listed by the resync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestInfo {
    pub number: u64,
    pub author: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub draft: bool,
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    pub html_url: String,
    /// Not closed (nor merged).
    pub open: bool,
}

/// The repository an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
    /// The URLs it is cloned from (https and ssh), for matching jobs' `git.url`.
    pub urls: Vec<String>,
}

impl Repository {
    pub fn owner_and_name(&self) -> (&str, &str) {
        self.full_name
            .split_once('/')
            .unwrap_or(("", &self.full_name))
    }
}

/// What a delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping,
    PullRequest {
        action: String,
        repository: Repository,
        pull_request: PullRequestInfo,
        sender: String,
        /// The label `labeled` added (or `unlabeled` removed).
        label: Option<String>,
    },
    /// A comment on an issue or a pull request (`issue_comment`).
    Comment {
        action: String,
        repository: Repository,
        /// The pull request's number; `None` for a comment on a plain issue.
        pull_request: Option<u64>,
        comment_id: u64,
        author: String,
        body: String,
    },
    Push {
        repository: Repository,
        git_ref: String,
        after: String,
        deleted: bool,
        sender: String,
    },
    /// A person asked something from GitHub's checks UI: `check_run` (a check run's
    /// "Re-run", or one of its buttons) or `check_suite` (re-run the whole suite).
    Checks {
        /// `rerequested` (re-run) or `requested_action` (a button), or another.
        action: String,
        repository: Repository,
        head_sha: String,
        /// The check run asked about; `None` for a whole suite.
        check_run: Option<CheckRunRef>,
        /// The button's identifier, for `requested_action`.
        requested_action: Option<String>,
        /// The pull requests whose head it is (the repository's own: GitHub leaves out
        /// those from forks).
        pull_requests: Vec<u64>,
        /// The branch the suite's head was pushed to, when GitHub says.
        head_branch: Option<String>,
        sender: String,
    },
    /// An event kubeci does not act on.
    Other(String),
}

/// A check run named in a `check_run` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRunRef {
    pub id: u64,
    pub name: String,
    pub external_id: String,
}

/// A payload that is not what GitHub sends for its event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {event} payload is not valid: {message}")]
pub struct EventError {
    pub event: String,
    pub message: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct RepositoryJson {
    full_name: String,
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
}

/// A pull request as GitHub's REST API and webhooks write it.
#[derive(Deserialize)]
pub struct PullRequestJson {
    number: u64,
    user: User,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    draft: bool,
    head: Branch,
    base: Branch,
    #[serde(default)]
    html_url: Option<String>,
    /// `open` or `closed`.
    #[serde(default)]
    state: Option<String>,
}

impl From<PullRequestJson> for PullRequestInfo {
    fn from(pr: PullRequestJson) -> Self {
        PullRequestInfo {
            number: pr.number,
            author: pr.user.login,
            title: pr.title.unwrap_or_default(),
            body: pr.body.unwrap_or_default(),
            labels: pr.labels.into_iter().map(|l| l.name).collect(),
            draft: pr.draft,
            head_sha: pr.head.sha,
            head_ref: pr.head.name,
            base_ref: pr.base.name,
            html_url: pr.html_url.unwrap_or_default(),
            open: pr.state.as_deref() != Some("closed"),
        }
    }
}

impl From<RepositoryJson> for Repository {
    fn from(repo: RepositoryJson) -> Self {
        Repository {
            full_name: repo.full_name,
            urls: [repo.clone_url, repo.ssh_url, repo.html_url]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    pull_request: PullRequestJson,
    repository: RepositoryJson,
    sender: User,
    /// The label added or removed, for `labeled` and `unlabeled`.
    #[serde(default)]
    label: Option<Label>,
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    user: User,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct CommentPayload {
    action: String,
    issue: Issue,
    comment: Comment,
    repository: RepositoryJson,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: RepositoryJson,
    sender: User,
}

#[derive(Deserialize)]
struct NumberOnly {
    number: u64,
}

#[derive(Deserialize)]
struct CheckRunJson {
    id: u64,
    name: String,
    head_sha: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    pull_requests: Vec<NumberOnly>,
    #[serde(default)]
    check_suite: Option<SuiteBranch>,
}

/// The suite of a check run, for its branch.
#[derive(Deserialize)]
struct SuiteBranch {
    #[serde(default)]
    head_branch: Option<String>,
}

#[derive(Deserialize)]
struct RequestedAction {
    identifier: String,
}

#[derive(Deserialize)]
struct CheckRunPayload {
    action: String,
    check_run: CheckRunJson,
    #[serde(default)]
    requested_action: Option<RequestedAction>,
    repository: RepositoryJson,
    sender: User,
}

#[derive(Deserialize)]
struct CheckSuiteJson {
    head_sha: String,
    #[serde(default)]
    head_branch: Option<String>,
    #[serde(default)]
    pull_requests: Vec<NumberOnly>,
}

#[derive(Deserialize)]
struct CheckSuitePayload {
    action: String,
    check_suite: CheckSuiteJson,
    repository: RepositoryJson,
    sender: User,
}

fn numbers(pull_requests: Vec<NumberOnly>) -> Vec<u64> {
    pull_requests.into_iter().map(|p| p.number).collect()
}

/// Reads a delivery of `event` (the `X-GitHub-Event` header).
pub fn parse(event: &str, body: &[u8]) -> Result<Event, EventError> {
    let invalid = |e: serde_json::Error| EventError {
        event: event.to_owned(),
        message: e.to_string(),
    };
    Ok(match event {
        "ping" => {
            serde_json::from_slice::<serde_json::Value>(body).map_err(invalid)?;
            Event::Ping
        }
        "pull_request" => {
            let p: PullRequestPayload = serde_json::from_slice(body).map_err(invalid)?;
            Event::PullRequest {
                action: p.action,
                repository: p.repository.into(),
                pull_request: p.pull_request.into(),
                sender: p.sender.login,
                label: p.label.map(|l| l.name),
            }
        }
        "issue_comment" => {
            let p: CommentPayload = serde_json::from_slice(body).map_err(invalid)?;
            Event::Comment {
                action: p.action,
                repository: p.repository.into(),
                pull_request: p.issue.pull_request.map(|_| p.issue.number),
                comment_id: p.comment.id,
                author: p.comment.user.login,
                body: p.comment.body.unwrap_or_default(),
            }
        }
        "push" => {
            let p: PushPayload = serde_json::from_slice(body).map_err(invalid)?;
            Event::Push {
                repository: p.repository.into(),
                git_ref: p.git_ref,
                after: p.after,
                deleted: p.deleted,
                sender: p.sender.login,
            }
        }
        "check_run" => {
            let p: CheckRunPayload = serde_json::from_slice(body).map_err(invalid)?;
            Event::Checks {
                action: p.action,
                repository: p.repository.into(),
                head_sha: p.check_run.head_sha,
                check_run: Some(CheckRunRef {
                    id: p.check_run.id,
                    name: p.check_run.name,
                    external_id: p.check_run.external_id.unwrap_or_default(),
                }),
                requested_action: p.requested_action.map(|a| a.identifier),
                pull_requests: numbers(p.check_run.pull_requests),
                head_branch: p.check_run.check_suite.and_then(|s| s.head_branch),
                sender: p.sender.login,
            }
        }
        "check_suite" => {
            let p: CheckSuitePayload = serde_json::from_slice(body).map_err(invalid)?;
            Event::Checks {
                action: p.action,
                repository: p.repository.into(),
                head_sha: p.check_suite.head_sha,
                check_run: None,
                requested_action: None,
                pull_requests: numbers(p.check_suite.pull_requests),
                head_branch: p.check_suite.head_branch,
                sender: p.sender.login,
            }
        }
        other => {
            serde_json::from_slice::<serde_json::Value>(body).map_err(invalid)?;
            Event::Other(other.to_owned())
        }
    })
}

/// Reads a pull request from GitHub's REST API (`GET /repos/{o}/{r}/pulls/{n}`, or one
/// item of the list).
pub fn parse_pull_request(value: serde_json::Value) -> Result<PullRequestInfo, EventError> {
    serde_json::from_value::<PullRequestJson>(value)
        .map(PullRequestInfo::from)
        .map_err(|e| EventError {
            event: "pull request".into(),
            message: e.to_string(),
        })
}
