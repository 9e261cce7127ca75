//! The Checks API calls: create, read and update a check run, list a commit's check runs
//! and a check run's annotations.

use hyper::{Method, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::GitHubClient;
use crate::GitHubError;

/// A check run as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub external_id: String,
    pub status: String,
    pub conclusion: Option<String>,
}

impl GitHubClient {
    /// Creates a check run from `fields` (with its name and head SHA); its id.
    pub async fn create_check_run(&self, repo: &str, fields: Value) -> Result<u64, GitHubError> {
        let path = format!("/repos/{repo}/check-runs");
        let value = self.found(Method::POST, &path, Some(fields)).await?;
        value["id"].as_u64().ok_or_else(|| GitHubError::Refused {
            call: format!("POST {path}"),
            status: 200,
            message: "no check run id in the answer".into(),
            retry_after: None,
        })
    }

    pub async fn update_check_run(
        &self,
        repo: &str,
        id: u64,
        fields: Value,
    ) -> Result<(), GitHubError> {
        self.found(
            Method::PATCH,
            &format!("/repos/{repo}/check-runs/{id}"),
            Some(fields),
        )
        .await
        .map(drop)
    }

    /// Check run `id` of `repo`; `None` when `repo` has none with that id.
    pub async fn check_run(&self, repo: &str, id: u64) -> Result<Option<CheckRun>, GitHubError> {
        let path = format!("/repos/{repo}/check-runs/{id}");
        match self.call(Method::GET, &path, None).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (_, value) => Ok(parse_check_run(&value)),
        }
    }

    /// The annotations of check run `id`, in the order GitHub lists them, at most `max`
    /// (read a hundred to a call).
    pub async fn check_run_annotations(
        &self,
        repo: &str,
        id: u64,
        max: usize,
    ) -> Result<Vec<Value>, GitHubError> {
        const PAGE: usize = 100;
        let mut all = Vec::new();
        for page in 1..=max.div_ceil(PAGE).max(1) {
            let path =
                format!("/repos/{repo}/check-runs/{id}/annotations?per_page={PAGE}&page={page}");
            let value = self.found(Method::GET, &path, None).await?;
            let items = value.as_array().cloned().unwrap_or_default();
            let full = items.len() == PAGE;
            all.extend(items);
            if !full {
                break;
            }
        }
        all.truncate(max);
        Ok(all)
    }

    /// The check runs on commit `sha`, those named `name` when given (the latest first,
    /// as GitHub lists them).
    pub async fn check_runs(
        &self,
        repo: &str,
        sha: &str,
        name: Option<&str>,
    ) -> Result<Vec<CheckRun>, GitHubError> {
        let named = name
            .map(|n| format!("check_name={}&", percent_encoded(n)))
            .unwrap_or_default();
        let value = self
            .found(
                Method::GET,
                &format!("/repos/{repo}/commits/{sha}/check-runs?{named}filter=all&per_page=100"),
                None,
            )
            .await?;
        Ok(value["check_runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(parse_check_run)
            .collect())
    }
}

fn parse_check_run(run: &Value) -> Option<CheckRun> {
    let text = |k: &str| run[k].as_str().unwrap_or("").to_owned();
    Some(CheckRun {
        id: run["id"].as_u64()?,
        name: text("name"),
        external_id: text("external_id"),
        status: text("status"),
        conclusion: run["conclusion"].as_str().map(str::to_owned),
    })
}

/// The characters percent-encoded in a value of a GitHub API query string: all but
/// RFC 3986's unreserved characters, so a check name's `&`, `=`, `+`, `#` and spaces
/// stay in it.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` as a query string's value, percent-encoded.
fn percent_encoded(name: &str) -> String {
    utf8_percent_encode(name, QUERY_VALUE).to_string()
}
