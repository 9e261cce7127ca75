//! Commit statuses: what a build's state means on GitHub, and which report is still owed.
//!
//! What was reported is recorded on the build's Job (the `kubeci.io/reported` annotation,
//! a comma-separated list), so a restarted kubeci neither loses nor repeats a report.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::build::BuildState;

/// The build a report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTarget {
    pub namespace: String,
    pub job: String,
    pub number: u64,
    /// The Job's name.
    pub build_name: String,
    pub trigger: Option<String>,
    pub git_url: Option<String>,
    pub commit: Option<String>,
    pub pull_request: Option<u64>,
    /// The build's page.
    pub url: String,
    /// The job's `ghprb.context`, if set.
    pub context: Option<String>,
}

/// Why a report failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReportError {
    pub message: String,
    /// Worth trying again soon (a network failure, a 5xx, a rate limit); otherwise it is
    /// tried again at the slowest pace, as the receiver may be fixed.
    pub retryable: bool,
    /// When the receiver said to come back (`Retry-After`, a rate-limit reset).
    pub retry_after: Option<Duration>,
}

/// Where build states are reported (GitHub commit statuses, a notification endpoint).
pub trait Reporter: Send + Sync + 'static {
    /// Whether this build is reported at all (e.g. GitHub needs a commit).
    fn wants(&self, target: &ReportTarget) -> bool;
    fn report<'a>(
        &'a self,
        target: &'a ReportTarget,
        state: CommitState,
        description: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + 'a>>;
}

/// Several reporters as one: a build is reported if any of them wants it, to each that
/// does. A failure of one fails the report, so it is retried — to all of them: a
/// reporter that already delivered may receive a state twice when another one fails.
pub struct Reporters(pub Vec<std::sync::Arc<dyn Reporter>>);

impl Reporter for Reporters {
    fn wants(&self, target: &ReportTarget) -> bool {
        self.0.iter().any(|r| r.wants(target))
    }

    fn report<'a>(
        &'a self,
        target: &'a ReportTarget,
        state: CommitState,
        description: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReportError>> + Send + 'a>> {
        Box::pin(async move {
            for reporter in self.0.iter().filter(|r| r.wants(target)) {
                reporter.report(target, state, description).await?;
            }
            Ok(())
        })
    }
}

/// A GitHub commit status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    Pending,
    Success,
    Failure,
    Error,
}

impl CommitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
            CommitState::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<CommitState> {
        match text.trim() {
            "pending" => Some(CommitState::Pending),
            "success" => Some(CommitState::Success),
            "failure" => Some(CommitState::Failure),
            "error" => Some(CommitState::Error),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        self != CommitState::Pending
    }
}

impl fmt::Display for CommitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The commit status a build in `state` shows, with its description.
pub fn commit_state(state: &BuildState) -> (CommitState, String) {
    match state {
        BuildState::Queued => (CommitState::Pending, "Queued".into()),
        BuildState::Pending { .. } => (CommitState::Pending, "Starting".into()),
        BuildState::Running => (CommitState::Pending, "Running".into()),
        BuildState::Succeeded => (CommitState::Success, "Build succeeded".into()),
        BuildState::Failed { message, .. } => {
            (CommitState::Failure, format!("Build failed: {message}"))
        }
        BuildState::Error { reason, message } => (
            CommitState::Error,
            format!("Build could not run ({reason}): {message}"),
        ),
        BuildState::Aborted { by: Some(by) } => {
            (CommitState::Error, format!("Build cancelled by {by}"))
        }
        BuildState::Aborted { by: None } => (CommitState::Error, "Build cancelled".into()),
    }
}

/// Reads the `kubeci.io/reported` annotation.
pub fn parse_reported(annotation: Option<&str>) -> Vec<CommitState> {
    annotation
        .unwrap_or("")
        .split(',')
        .filter_map(CommitState::parse)
        .collect()
}

/// The identity of one report: a receiver that saw it before can ignore it. A report is
/// recorded on its build once delivered, so kubeci sends it again only if it stopped
/// between delivering and recording — the key makes that repeat harmless.
pub fn report_key(target: &ReportTarget, state: CommitState) -> String {
    format!(
        "{}/{}/{}/{}",
        target.namespace,
        target.job,
        target.number,
        state.as_str()
    )
}

/// The longest wait between two attempts at a report.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How long to wait before attempt `attempts + 1` at a report that failed with `error`:
/// doubling from 1 s up to [`MAX_RETRY_DELAY`], never sooner than the receiver's
/// `retry_after`; the longest wait when it is not worth retrying soon.
pub fn retry_delay(attempts: u32, error: &ReportError) -> Duration {
    if !error.retryable {
        return MAX_RETRY_DELAY.max(error.retry_after.unwrap_or_default());
    }
    let backoff = Duration::from_secs(1 << attempts.min(6)).min(MAX_RETRY_DELAY);
    error.retry_after.unwrap_or(backoff).max(backoff)
}

/// Writes the `kubeci.io/reported` annotation.
pub fn format_reported(reported: &[CommitState]) -> String {
    reported
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The report still owed for a build in `state`, given what was reported: each state at
/// most once, `pending` never after a final state, nothing after the final one.
pub fn next_report(state: &BuildState, reported: &[CommitState]) -> Option<(CommitState, String)> {
    if reported.iter().any(|s| s.is_final()) {
        return None;
    }
    let (wanted, description) = commit_state(state);
    (!reported.contains(&wanted)).then_some((wanted, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reports_wait_longer_each_time_and_as_long_as_the_receiver_asks() {
        let error = |retryable, retry_after| ReportError {
            message: "no".into(),
            retryable,
            retry_after,
        };
        let secs = |d: Duration| d.as_secs();
        assert_eq!(secs(retry_delay(0, &error(true, None))), 1);
        assert_eq!(secs(retry_delay(3, &error(true, None))), 8);
        assert_eq!(secs(retry_delay(20, &error(true, None))), 60, "capped");
        assert_eq!(
            secs(retry_delay(
                0,
                &error(true, Some(Duration::from_secs(3600)))
            )),
            3600,
            "Retry-After wins"
        );
        assert_eq!(
            secs(retry_delay(4, &error(true, Some(Duration::from_secs(2))))),
            16,
            "never sooner than the backoff"
        );
        assert_eq!(
            secs(retry_delay(0, &error(false, None))),
            60,
            "not worth retrying soon"
        );
    }

    #[test]
    fn each_state_is_reported_once_and_nothing_after_the_final_one() {
        assert_eq!(
            next_report(&BuildState::Queued, &[]).map(|r| r.0),
            Some(CommitState::Pending)
        );
        assert_eq!(
            next_report(&BuildState::Running, &[CommitState::Pending]),
            None
        );
        assert_eq!(
            next_report(&BuildState::Succeeded, &[CommitState::Pending]).map(|r| r.0),
            Some(CommitState::Success)
        );
        assert_eq!(
            next_report(&BuildState::Succeeded, &[]).map(|r| r.0),
            Some(CommitState::Success),
            "a fast build reports its end directly"
        );
        assert_eq!(
            next_report(
                &BuildState::Succeeded,
                &[CommitState::Pending, CommitState::Success]
            ),
            None
        );
        let aborted = next_report(
            &BuildState::Aborted {
                by: Some("alice".into()),
            },
            &[CommitState::Pending],
        )
        .unwrap();
        assert_eq!(
            aborted,
            (CommitState::Error, "Build cancelled by alice".into())
        );
    }

    #[test]
    fn the_annotation_round_trips() {
        let reported = [CommitState::Pending, CommitState::Failure];
        assert_eq!(format_reported(&reported), "pending,failure");
        assert_eq!(parse_reported(Some("pending,failure")), reported);
        assert_eq!(
            parse_reported(Some("pending,bogus,")),
            [CommitState::Pending]
        );
        assert_eq!(parse_reported(None), []);
    }
}
