//! Build states as GitHub check runs (for a GitHub App): one check run per build, named
//! `kubeci/<job>` (or `ghprb.context`), created by the build's first report and updated
//! by the later ones — queued, in progress, completed with its conclusion — each call
//! one request. The check run's id is recorded with the build's reported states, so a
//! restarted kubeci updates it instead of creating a second one; when a first report may
//! have reached GitHub without being recorded (kubeci stopped in between, or the answer
//! was lost), the check run is looked for by its `external_id` before one is created.

use std::sync::Arc;

use kubeci_engine::report::{Receipt, Report, ReportTarget, Reporter, Reporting};
use serde_json::Value;

use crate::client::GitHubClient;
use crate::{check_run, repository_on};

/// Creates and updates check runs for builds of commits on one GitHub.
pub struct ChecksReporter {
    client: Arc<GitHubClient>,
    host: String,
}

impl ChecksReporter {
    /// Reports builds whose `git.url` is on `host` (see [`crate::repository_host`]).
    pub fn new(client: Arc<GitHubClient>, host: &str) -> ChecksReporter {
        ChecksReporter {
            client,
            host: host.to_ascii_lowercase(),
        }
    }

    /// The check run of this build GitHub already has, if a report may have created one
    /// that was not recorded.
    async fn existing(
        &self,
        report: &Report<'_>,
        repo: &str,
        sha: &str,
        name: &str,
    ) -> Result<Option<u64>, crate::GitHubError> {
        if let Some(id) = report.before.check_run {
            return Ok(Some(id));
        }
        if !report.may_have_been_sent {
            return Ok(None);
        }
        let external_id = check_run::external_id(report);
        let runs = self.client.check_runs(repo, sha, Some(name)).await?;
        Ok(runs
            .into_iter()
            .find(|run| run.external_id == external_id)
            .map(|run| run.id))
    }
}

impl Reporter for ChecksReporter {
    fn name(&self) -> &str {
        "github-checks"
    }

    fn wants(&self, target: &ReportTarget) -> bool {
        crate::reporter::reported_to_github(target, &self.host)
    }

    fn creates_on_first_report(&self) -> bool {
        true
    }

    fn wants_log_tail(&self) -> bool {
        true
    }

    fn reports_running(&self) -> bool {
        true
    }

    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        Box::pin(async move {
            let target = report.target;
            let repo = target
                .git_url
                .as_deref()
                .and_then(|url| repository_on(&self.host, url));
            let (Some(repo), Some(sha)) = (repo, target.commit.as_deref()) else {
                return Ok(Receipt::default());
            };
            let Some(name) = target.context.clone() else {
                return Ok(Receipt::default());
            };
            let now = jiff::Timestamp::now().as_second();
            let mut fields = check_run::fields(report, now);
            let failed = crate::report_error;
            let id = match self
                .existing(report, &repo, sha, &name)
                .await
                .map_err(failed)?
            {
                Some(id) => {
                    self.client
                        .update_check_run(&repo, id, fields)
                        .await
                        .map_err(failed)?;
                    id
                }
                None => {
                    fields["name"] = Value::String(name);
                    fields["head_sha"] = sha.into();
                    fields["external_id"] = check_run::external_id(report).into();
                    self.client
                        .create_check_run(&repo, fields)
                        .await
                        .map_err(failed)?
                }
            };
            Ok(Receipt {
                check_run: Some(id),
            })
        })
    }
}
