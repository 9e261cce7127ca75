//! `serve`'s GitHub flags: the API and who kubeci calls it as (a personal token, or a
//! GitHub App's installations), the webhook secret, and where build states are reported.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kubeci_engine::report::Reporter;
use kubeci_github_api::app::{App, AppKey};
use kubeci_github_api::GitHubClient;

use super::{duration_flag, secret};

#[derive(Debug, clap::Args)]
pub struct GitHubArgs {
    /// File holding the GitHub webhook secret [default: $KUBECI_GITHUB_WEBHOOK_SECRET];
    /// without one, `POST /hooks/github` refuses every delivery.
    #[arg(long, value_name = "FILE")]
    github_webhook_secret_file: Option<PathBuf>,
    /// File holding the GitHub token that posts statuses and comments
    /// [default: $KUBECI_GITHUB_TOKEN]. A GitHub App (--github-app-id) is the
    /// alternative: one or the other.
    #[arg(long, value_name = "FILE")]
    github_token_file: Option<PathBuf>,
    /// The id of kubeci's GitHub App, which kubeci calls GitHub as, through its
    /// installation on each repository [default: $KUBECI_GITHUB_APP_ID].
    #[arg(long, value_name = "ID")]
    github_app_id: Option<String>,
    /// File holding the GitHub App's private key, the PEM file GitHub generated
    /// [default: the PEM text in $KUBECI_GITHUB_APP_KEY].
    #[arg(long, value_name = "FILE")]
    github_app_key_file: Option<PathBuf>,
    /// How builds are reported on GitHub: `checks` (check runs, with the end of the log;
    /// an App only) or `statuses` (commit statuses) [default: `checks` for an App,
    /// `statuses` for a token].
    #[arg(long, value_enum, value_name = "HOW")]
    github_report: Option<GitHubReport>,
    /// How long a GitHub call may take before it counts as failed.
    #[arg(long, default_value = "15s", value_name = "DURATION")]
    github_timeout: String,
    /// GitHub's API: `https://api.github.com`, or an Enterprise server's
    /// `https://HOST/api/v3`.
    #[arg(long, default_value = "https://api.github.com", value_name = "URL")]
    github_url: String,
    /// The host of the repositories that API serves [default: from --github-url,
    /// `github.com` for `api.github.com`].
    #[arg(long, value_name = "HOST")]
    github_host: Option<String>,
    /// kubeci's own GitHub login: its comments never trigger builds.
    #[arg(long, value_name = "LOGIN")]
    pub(super) github_bot: Option<String>,
    /// The comment asking an admin to approve an untrusted pull request.
    #[arg(long, value_name = "TEXT", default_value = kubeci_github_api::hooks::REQUEST_MESSAGE)]
    pub(super) github_request_message: String,
    /// How often open pull requests are checked for heads without a kubeci status
    /// (healing missed webhooks); `0s` turns it off.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    github_resync: String,
}

/// How builds are reported on GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GitHubReport {
    Checks,
    Statuses,
}

/// The GitHub side of the flags: the API client and who it calls as, how builds are
/// reported, the repositories' host, the webhook secret.
pub(super) struct GitHubFront {
    pub client: Arc<GitHubClient>,
    pub report: GitHubReport,
    pub host: String,
    pub webhook_secret: Option<String>,
    pub resync: Duration,
    timeout: Duration,
}

/// The App of `--github-app-id` and `--github-app-key-file` (or their variables), read
/// and checked now: a key that cannot sign is an error at start, not at the first webhook.
fn app(args: &GitHubArgs) -> Result<Option<App>> {
    let id = match &args.github_app_id {
        Some(id) => Some(id.clone()),
        None => std::env::var("KUBECI_GITHUB_APP_ID").ok(),
    };
    let key = secret(
        args.github_app_key_file.as_ref(),
        "KUBECI_GITHUB_APP_KEY",
        "--github-app-key-file",
    )?;
    let (id, key) = match (id, key) {
        (None, None) => return Ok(None),
        (Some(id), Some(key)) => (id, key),
        (Some(_), None) => bail!(
            "--github-app-id needs the App's private key: --github-app-key-file FILE (the .pem \
             GitHub generated) or $KUBECI_GITHUB_APP_KEY"
        ),
        (None, Some(_)) => bail!(
            "the GitHub App's private key needs its App: --github-app-id ID (or \
             $KUBECI_GITHUB_APP_ID), shown on the App's settings page"
        ),
    };
    let id = id.trim().parse::<u64>().map_err(|_| {
        anyhow::anyhow!(
            "--github-app-id {id:?} is not an App id: the number on the App's settings page"
        )
    })?;
    let key = AppKey::from_pem(key.as_bytes()).context("--github-app-key-file")?;
    Ok(Some(App { id, key }))
}

impl GitHubFront {
    pub fn from_flags(args: &GitHubArgs) -> Result<GitHubFront> {
        let webhook_secret = secret(
            args.github_webhook_secret_file.as_ref(),
            "KUBECI_GITHUB_WEBHOOK_SECRET",
            "--github-webhook-secret-file",
        )?;
        let token = secret(
            args.github_token_file.as_ref(),
            "KUBECI_GITHUB_TOKEN",
            "--github-token-file",
        )?;
        let app = app(args)?;
        let resync = duration_flag("--github-resync", &args.github_resync)?;
        let timeout = duration_flag("--github-timeout", &args.github_timeout)?;
        if timeout.is_zero() {
            bail!("--github-timeout must be at least 1s");
        }
        let host = match &args.github_host {
            Some(host) => host.to_ascii_lowercase(),
            None => kubeci_github_api::repository_host(&args.github_url)
                .with_context(|| format!("--github-url {} has no host", args.github_url))?,
        };
        let report = match (args.github_report, app.is_some()) {
            (Some(GitHubReport::Checks), false) => bail!(
                "--github-report checks needs a GitHub App (--github-app-id): GitHub lets only \
                 Apps write check runs. Use --github-report statuses with a token"
            ),
            (Some(report), _) => report,
            (None, true) => GitHubReport::Checks,
            (None, false) => GitHubReport::Statuses,
        };
        let client = match (token, app) {
            (Some(_), Some(_)) => bail!(
                "both a GitHub token (--github-token-file or $KUBECI_GITHUB_TOKEN) and a \
                 GitHub App (--github-app-id) are given: kubeci calls GitHub as one of them. \
                 Keep the App (see docs/github.md, moving from a token to an App)"
            ),
            (None, Some(app)) => GitHubClient::with_app(&args.github_url, app),
            (token, None) => GitHubClient::new(&args.github_url, token),
        }
        .context("--github-url")?
        .with_timeout(timeout);
        Ok(GitHubFront {
            client: Arc::new(client),
            report,
            host,
            webhook_secret,
            resync,
            timeout,
        })
    }

    /// After a replica takes the lead, how long builds from before wait for their first
    /// check run: the longest a report of the replica before can still take (finding the
    /// installation, its token, looking for the check run, creating it).
    pub fn takeover_grace(&self) -> Duration {
        match self.report {
            GitHubReport::Checks => 4 * self.timeout,
            GitHubReport::Statuses => Duration::ZERO,
        }
    }

    /// Where build states are reported: `notify_url`, and GitHub when kubeci can call it
    /// as someone.
    pub fn reporter(&self, notify_url: Option<&str>) -> Result<Option<Arc<dyn Reporter>>> {
        let mut reporters: Vec<Arc<dyn Reporter>> = Vec::new();
        if let Some(url) = notify_url {
            reporters.push(Arc::new(
                kubeci_notify::WebhookReporter::new(url).context("--notify-url")?,
            ));
        }
        if self.client.has_credentials() {
            let (client, host) = (self.client.clone(), &self.host);
            reporters.push(match self.report {
                GitHubReport::Checks => {
                    Arc::new(kubeci_github_api::ChecksReporter::new(client, host))
                }
                GitHubReport::Statuses => {
                    Arc::new(kubeci_github_api::GitHubReporter::new(client, host))
                }
            });
        }
        Ok(match reporters.len() {
            0 => None,
            1 => reporters.pop(),
            _ => Some(Arc::new(
                kubeci_engine::report::Reporters::new(reporters).context("the reporters")?,
            )),
        })
    }
}
