//! Build states as GitHub commit statuses: `pending` → `success`/`failure`/`error`, context
//! `kubeci/<job>` (or `ghprb.context`), linking to the build's page. Which states were
//! posted is recorded on the build by the controller; a state is posted only if the
//! commit's latest status of the context is not that state of that build already (a kubeci
//! that stopped between posting and recording), so each is posted once. A final status
//! says the counts of the build's tests where they fit in GitHub's 140 characters
//! ([`description`]).

use std::sync::Arc;

use kubeci_engine::report::{Receipt, Report, ReportTarget, Reporter, Reporting};
use kubeci_engine::BuildState;
use kubeci_results::{counts_text, known_flaky_failures};

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

/// The longest description GitHub keeps.
pub const DESCRIPTION_LIMIT: usize = 140;

/// A status's description: the report's, or for a build that left test results, what
/// happened with its counts first and then why, as far as GitHub's
/// [`DESCRIPTION_LIMIT`] allows (`Build failed: 412 passed, 3 failed · exit code 2`). Counts
/// that would not fit leave the report's description as it is.
pub fn description(report: &Report<'_>) -> String {
    let tests = report.tests.filter(|t| t.counts.total() > 0);
    let Some(tests) = tests.filter(|_| report.state.is_final()) else {
        return report.description.to_owned();
    };
    let counts = counts_text(
        &tests.counts,
        known_flaky_failures(tests, report.known_flaky),
    );
    let (what, why) = match report.build {
        BuildState::Succeeded => ("Build succeeded".to_owned(), None),
        BuildState::Failed { message, .. } => ("Build failed".to_owned(), Some(message)),
        BuildState::Error { reason, message } => {
            (format!("Build could not run ({reason})"), Some(message))
        }
        _ => (report.description.to_owned(), None),
    };
    let text = format!("{what}: {counts}");
    let length = text.chars().count();
    if length > DESCRIPTION_LIMIT {
        return report.description.to_owned();
    }
    // Why, after ` · `, if a few words of it fit.
    let room = DESCRIPTION_LIMIT.saturating_sub(length + 3);
    let why = why.map(|w| w.replace(['\n', '\r'], " ").trim().to_owned());
    match why.filter(|w| !w.is_empty()) {
        Some(why) if room >= 10 => {
            let why = match why.chars().count() > room {
                true => why.chars().take(room - 1).collect::<String>() + "…",
                false => why,
            };
            format!("{text} · {why}")
        }
        _ => text,
    }
}

impl Reporter for GitHubReporter {
    fn name(&self) -> &str {
        "github-status"
    }

    fn wants(&self, target: &ReportTarget) -> bool {
        reported_to_github(target, &self.host)
    }

    fn wants_tests(&self) -> bool {
        true
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
            let description = description(report);
            let status = Status {
                state,
                context: &context,
                description: &description,
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

#[cfg(test)]
mod tests {
    use super::*;
    use kubeci_engine::report::{CommitState, Reported};
    use kubeci_results::{Counts, TestResults};

    fn target() -> ReportTarget {
        ReportTarget {
            namespace: "team".into(),
            job: "demo".into(),
            number: 3,
            build_name: "demo-3".into(),
            trigger: Some("push".into()),
            git_url: Some("https://github.com/o/r".into()),
            commit: Some("c0ffee".into()),
            pull_request: None,
            url: "https://ci.example.com/jobs/team/demo/builds/3".into(),
            context: Some("kubeci/demo".into()),
            created_at: None,
            workdir: Some(String::new()),
            checkout_dir: None,
        }
    }

    fn described(build: &BuildState, state: CommitState, tests: Option<&TestResults>) -> String {
        let target = target();
        let before = Reported::default();
        let (_, plain) = kubeci_engine::report::commit_state(build);
        description(&Report {
            target: &target,
            state,
            description: &plain,
            build,
            finished_at: None,
            before: &before,
            may_have_been_sent: false,
            log_tail: None,
            tests,
            known_flaky: &[],
        })
    }

    fn results(passed: u64, failed: u64, skipped: u64) -> TestResults {
        TestResults {
            counts: Counts {
                passed,
                failed,
                skipped,
                ..Counts::default()
            },
            ..TestResults::default()
        }
    }

    #[test]
    fn a_final_status_says_the_counts_then_why_within_140_characters() {
        let failed = |message: &str| BuildState::Failed {
            reason: "Error".into(),
            message: message.into(),
        };
        let tests = results(412, 3, 5);
        assert_eq!(
            described(&failed("exit code 2"), CommitState::Failure, Some(&tests)),
            "Build failed: 412 passed, 3 failed, 5 skipped · exit code 2"
        );
        assert_eq!(
            described(
                &BuildState::Succeeded,
                CommitState::Success,
                Some(&results(7, 0, 0))
            ),
            "Build succeeded: 7 passed"
        );
        let long = described(
            &failed(&"why ".repeat(100)),
            CommitState::Failure,
            Some(&tests),
        );
        assert_eq!(long.chars().count(), DESCRIPTION_LIMIT, "{long}");
        assert!(long.starts_with("Build failed: 412 passed, 3 failed, 5 skipped · why why"));
        assert!(long.ends_with('…'));
    }

    #[test]
    fn without_test_results_or_before_the_end_the_description_is_as_it_was() {
        let failed = BuildState::Failed {
            reason: "Error".into(),
            message: "exit code 2".into(),
        };
        assert_eq!(
            described(&failed, CommitState::Failure, None),
            "Build failed: exit code 2"
        );
        assert_eq!(
            described(&failed, CommitState::Failure, Some(&results(0, 0, 0))),
            "Build failed: exit code 2",
            "no tests ran"
        );
        assert_eq!(
            described(
                &BuildState::Running,
                CommitState::Pending,
                Some(&results(1, 0, 0))
            ),
            "Running"
        );
    }
}
