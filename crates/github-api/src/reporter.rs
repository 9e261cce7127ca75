//! Build states as GitHub commit statuses: `pending` → `success`/`failure`/`error`, context
//! `kubeci/<job>` (or `ghprb.context`), linking to the build's page. Which states were
//! posted is recorded on the build by the controller; a state is posted only if the
//! commit's latest status of the context is not that state of that build already (a kubeci
//! that stopped between posting and recording), so each is posted once.

use std::sync::Arc;

use kubeci_engine::report::{Receipt, Report, ReportTarget, Reporter, Reporting};

use crate::client::{GitHubClient, Status};
use crate::repository_on;

/// Posts commit statuses for builds of commits on one GitHub.
pub struct GitHubReporter {
    client: Arc<GitHubClient>,
    host: String,
}

impl GitHubReporter {
    /// Reports builds whose `git.url` is on `host` (see [`crate::repository_host`]).
    pub fn new(client: Arc<GitHubClient>, host: &str) -> GitHubReporter {
        GitHubReporter {
            client,
            host: host.to_ascii_lowercase(),
        }
    }

    fn repository(&self, target: &ReportTarget) -> Option<String> {
        repository_on(&self.host, target.git_url.as_deref()?)
    }
}

/// Whether a build is reported to GitHub: one GitHub started (a pull request, a comment,
/// a push), of a commit, on a repository of `host`, whose job — declared and valid now —
/// names the build's repository and owns a check name (`ReportTarget::context`). A build
/// whose job is gone, invalid or moved to another repository reports nothing: the name it
/// would report under may be another job's by now.
pub(crate) fn reported_to_github(target: &ReportTarget, host: &str) -> bool {
    let from_github = matches!(
        target.trigger.as_deref(),
        Some("pull-request" | "comment" | "push")
    );
    from_github
        && target.commit.is_some()
        && target.context.is_some()
        && target
            .git_url
            .as_deref()
            .and_then(|url| repository_on(host, url))
            .is_some()
}

impl Reporter for GitHubReporter {
    fn name(&self) -> &str {
        "github-status"
    }

    fn wants(&self, target: &ReportTarget) -> bool {
        reported_to_github(target, &self.host)
    }

    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        Box::pin(async move {
            let target = report.target;
            let (Some(repo), Some(sha)) = (self.repository(target), target.commit.as_deref())
            else {
                return Ok(Receipt::default());
            };
            let state = report.state.as_str();
            let Some(context) = target.context.clone() else {
                return Ok(Receipt::default());
            };
            let failed = crate::report_error;
            // Posted already (by a kubeci that stopped before recording it): not again.
            let statuses = self.client.statuses(&repo, sha).await.map_err(failed)?;
            let latest = statuses.iter().find(|s| s.context == context);
            if latest.is_some_and(|s| s.state == state && s.target_url == target.url) {
                return Ok(Receipt::default());
            }
            let status = Status {
                state,
                context: &context,
                description: report.description,
                target_url: &target.url,
            };
            self.client
                .post_status(&repo, sha, &status)
                .await
                .map_err(failed)?;
            Ok(Receipt::default())
        })
    }
}
