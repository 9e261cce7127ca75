//! kubeci's GitHub edge (docs/design.md §5), thin around the pure `kubeci-github`: the REST
//! client (as a token's owner or a GitHub App), the check-run and commit-status
//! [`Reporter`](kubeci_engine::report::Reporter)s, the work a webhook delivery causes, and
//! the periodic resync of open pull requests.

pub mod app;
pub mod check_run;
pub mod check_tests;
pub mod checks;
pub mod client;
pub mod hooks;
pub mod reporter;

use std::time::Duration;

pub use checks::ChecksReporter;
pub use client::GitHubClient;
pub use hooks::{HookSettings, Hooks};
pub use reporter::GitHubReporter;

/// Why a GitHub call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("`{url}` is not a usable GitHub API URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot make an HTTP client")]
    Client(#[source] kubeci_https::HttpsError),
    /// A network failure or no answer in time. Worth retrying.
    #[error("{call}: GitHub could not be reached: {message}")]
    Unreachable { call: String, message: String },
    /// The rate limit is spent. Worth retrying after `retry_after`.
    #[error("{call}: GitHub's rate limit is reached; retry in {}s", retry_after.as_secs())]
    RateLimited { call: String, retry_after: Duration },
    /// An error answer. Worth retrying when it is a 5xx.
    #[error("{call}: GitHub answered {status}: {message}")]
    Refused {
        call: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The App's private key cannot sign (found at start, never at the first webhook).
    #[error("the GitHub App's private key cannot be used: {reason}")]
    InvalidAppKey { reason: String },
    /// The App is not installed where a call needs it. Not worth retrying soon: someone
    /// has to install it.
    #[error("{call}: kubeci's GitHub App is not installed on the {scope}; install it there (docs/github.md)")]
    NoInstallation { call: String, scope: String },
    /// An answer kubeci cannot read.
    #[error("GitHub's answer cannot be read")]
    Decode(#[source] kubeci_github::EventError),
}

impl GitHubError {
    pub fn is_retryable(&self) -> bool {
        match self {
            GitHubError::Unreachable { .. } | GitHubError::RateLimited { .. } => true,
            GitHubError::Refused { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GitHubError::RateLimited { retry_after, .. } => Some(*retry_after),
            GitHubError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A failed call as a failed report: worth retrying as the error says.
pub(crate) fn report_error(e: GitHubError) -> kubeci_engine::report::ReportError {
    kubeci_engine::report::ReportError {
        message: e.to_string(),
        retryable: e.is_retryable(),
        retry_after: e.retry_after(),
    }
}

/// The host of the repositories a GitHub API serves: `api.github.com` serves
/// `github.com`; an Enterprise server's `https://ghe.example.com/api/v3` serves
/// `ghe.example.com`.
pub fn repository_host(api_url: &str) -> Option<String> {
    let uri: hyper::Uri = api_url.parse().ok()?;
    let host = uri.host()?.to_ascii_lowercase();
    Some(host.strip_prefix("api.").unwrap_or(&host).to_owned())
}

/// `owner/name` of a job's `git.url` (as written, without `.git`) when it is a GitHub
/// repository on `host`: `GitUrl::github_repository`, derived from the repository key the
/// check-name rule compares, so a URL spelled another way (`%6F`, `./`, `../`) names none.
pub fn repository_on(host: &str, git_url: &str) -> Option<String> {
    kubeci_spec::giturl::GitUrl::parse(git_url)
        .ok()?
        .github_repository(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_found_on_their_host() {
        assert_eq!(
            repository_host("https://api.github.com").as_deref(),
            Some("github.com")
        );
        assert_eq!(
            repository_host("https://ghe.example.com/api/v3").as_deref(),
            Some("ghe.example.com")
        );
        for url in [
            "git@github.com:org/repo.git",
            "https://github.com/org/repo",
            "ssh://git@github.com/org/repo.git",
        ] {
            assert_eq!(
                repository_on("github.com", url).as_deref(),
                Some("org/repo"),
                "{url}"
            );
        }
        assert_eq!(
            repository_on("GitHub.com", "git@github.com:Org/Repo.git").as_deref(),
            Some("Org/Repo"),
            "the repository as written"
        );
        assert_eq!(
            repository_on("github.com", "git@gitlab.com:org/repo.git"),
            None
        );
        assert_eq!(repository_on("github.com", "/srv/git/repo.git"), None);
        for alias in [
            "https://github.com/victim/rep%6F",
            "https://github.com/victim/./repo",
            "https://github.com/mallory/../victim/repo",
        ] {
            assert_eq!(repository_on("github.com", alias), None, "{alias}");
        }
    }
}
