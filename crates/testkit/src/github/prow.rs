//! What Prow's hook and crier call besides what kubeci calls (issue 31): the
//! authenticated user (`GET /user`: who the bot is, which crier asks when it looks through
//! a pull request's comments for its own) and a branch's head (`GET /repos/{owner}/{repo}/git/refs/heads/{branch}`:
//! trigger reads the base branch's head into each ProwJob). And the call log both systems'
//! calls are counted from, with the `User-Agent` that tells who made each (Prow's commands
//! send `<command>/<version>`).

use axum::body::Body;
use axum::http::{header, Response, StatusCode};
use serde_json::json;

use super::{not_found, reply, repo_key, FakeGitHub, State};

/// One request the fake GitHub got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubCall {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Its `User-Agent` header ("" without one).
    pub user_agent: String,
}

impl GitHubCall {
    pub(super) fn of(parts: &axum::http::request::Parts) -> GitHubCall {
        GitHubCall {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        }
    }
}

/// The GETs of this module; 404 for any other.
pub(super) fn get(state: &State, segments: &[&str]) -> Response<Body> {
    match segments {
        ["user"] => reply(
            StatusCode::OK,
            json!({"login": state.bot, "id": 1, "type": "User"}),
        ),
        ["repos", owner, name, "git", "refs" | "ref", "heads", branch @ ..]
            if !branch.is_empty() =>
        {
            let branch = branch.join("/");
            match state.branches.get(&(repo_key(owner, name), branch.clone())) {
                Some(sha) => reply(
                    StatusCode::OK,
                    json!({
                        "ref": format!("refs/heads/{branch}"),
                        "object": {"type": "commit", "sha": sha},
                    }),
                ),
                None => not_found(),
            }
        }
        _ => not_found(),
    }
}

impl FakeGitHub {
    /// Sets branch `branch` of `repo` (`owner/name`) to `sha`.
    pub fn set_branch(&self, repo: &str, branch: &str, sha: &str) {
        self.state().branches.insert(
            (repo.to_ascii_lowercase(), branch.to_owned()),
            sha.to_owned(),
        );
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<GitHubCall> {
        self.state().requests.clone()
    }

    /// (method, path) of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        let calls = &self.state().requests;
        calls
            .iter()
            .map(|c| (c.method.clone(), c.path.clone()))
            .collect()
    }
}
