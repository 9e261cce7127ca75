//! Reports of build states (GitHub check runs or commit statuses, notifications): what a
//! build's state means to a receiver, and which report is still owed.
//!
//! What was reported is recorded on the build's Job (the `kubeci.io/reported` annotation),
//! per reporter: its states and the GitHub check run they went to ([`record`]), so a
//! restarted kubeci neither loses nor repeats a report, and a reporter that fails is
//! retried alone.

pub mod record;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kubeci_results::TestResults;

use crate::build::BuildState;
pub use record::{fully_reported, valid_reporter_name, ReportRecord};

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
    /// The name the job's builds are reported under on GitHub (`kubeci_spec::checkname`);
    /// `None` for a job no longer declared (reporters then use `kubeci/<job>`).
    pub context: Option<String>,
    /// When the build was created (seconds since the epoch).
    pub created_at: Option<i64>,
    /// The directory inside the checkout its job runs in (its `workdir` as declared now,
    /// normalized; `""`: the checkout itself), where its test tools name files from; `None`
    /// when the job is not valid now.
    pub workdir: Option<String>,
    /// Where its checkout lay as its test tools saw it (`/workspace/src` in a build pod,
    /// the build's own directory on the local engine): a file named under it is in the
    /// repository.
    pub checkout_dir: Option<String>,
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

/// One report: a state of a build, and what is known of the build's earlier reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'a> {
    pub target: &'a ReportTarget,
    pub state: CommitState,
    /// One line saying what happened.
    pub description: &'a str,
    /// The build's state in full (why it failed, who cancelled it).
    pub build: &'a BuildState,
    /// When it finished (seconds since the epoch).
    pub finished_at: Option<i64>,
    /// What was reported of it before to this reporter, and the check run it went to.
    pub before: &'a Reported,
    /// A report of it may have reached the receiver without being recorded (a leader
    /// before this one, or an attempt of this one that failed without an answer): a
    /// receiver that creates an object on the first report looks for it first.
    pub may_have_been_sent: bool,
    /// The end of the build's log (final states, to reporters that ask for it).
    pub log_tail: Option<&'a str>,
    /// The build's test results (final states, to reporters that ask for them), when it
    /// left any.
    pub tests: Option<&'a TestResults>,
    /// The ids ([`kubeci_results::TestCase::id`]) of the tests judged flaky from their
    /// history: a failed case named here is "known flaky".
    pub known_flaky: &'a [String],
}

/// What a delivered report left at the receiver, to be recorded with the build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The GitHub check run that shows the build.
    pub check_run: Option<u64>,
}

/// A future a reporter returns.
pub type Reporting<'a> = Pin<Box<dyn Future<Output = Result<Receipt, ReportError>> + Send + 'a>>;

/// Where build states are reported (GitHub check runs or commit statuses, a notification
/// endpoint). Each reporter is sent each state once, retried alone, and recorded under
/// its name.
pub trait Reporter: Send + Sync + 'static {
    /// Its key in a build's record ([`ReportRecord`]): stable across versions, and
    /// [`valid_reporter_name`] (`github-status`, `github-checks`, `webhook`).
    fn name(&self) -> &str;
    /// The reporters it stands for, when it is several ([`Reporters`]): each is then
    /// reported to, retried and recorded alone.
    fn members(&self) -> Option<&[Arc<dyn Reporter>]> {
        None
    }
    /// Whether this build is reported at all (e.g. GitHub needs a commit).
    fn wants(&self, target: &ReportTarget) -> bool;
    /// Whether the first report of a build creates an object at the receiver (a check
    /// run), which a second first report would duplicate.
    fn creates_on_first_report(&self) -> bool {
        false
    }
    /// Whether final reports carry the end of the build's log.
    fn wants_log_tail(&self) -> bool {
        false
    }
    /// Whether final reports carry the build's test results.
    fn wants_tests(&self) -> bool {
        false
    }
    /// Whether a running build is reported as `running` (a check run in progress);
    /// otherwise it is `pending` until its end, as a commit status shows it.
    fn reports_running(&self) -> bool {
        false
    }
    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a>;
}

/// Several reporters handed over as one (the backends take one reporter): the scheduler
/// reports to each of its [`Reporter::members`] alone, with its own retries and its own
/// record, so a failing one neither holds nor repeats the others' reports.
pub struct Reporters(Vec<Arc<dyn Reporter>>);

/// Why reporters cannot be put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportersError {
    #[error("the reporter name {0:?} is not 1 to 32 lowercase letters, digits or `-`")]
    InvalidName(String),
    #[error("two reporters are named {0:?}: their records would be one")]
    SameName(String),
}

impl Reporters {
    /// These reporters, each with a valid name of its own.
    pub fn new(reporters: Vec<Arc<dyn Reporter>>) -> Result<Reporters, ReportersError> {
        for (i, reporter) in reporters.iter().enumerate() {
            let name = reporter.name();
            if !valid_reporter_name(name) {
                return Err(ReportersError::InvalidName(name.to_owned()));
            }
            if reporters[..i].iter().any(|r| r.name() == name) {
                return Err(ReportersError::SameName(name.to_owned()));
            }
        }
        Ok(Reporters(reporters))
    }
}

/// `reporter` as the reporters it stands for: its members, or itself.
pub fn each(reporter: &Arc<dyn Reporter>) -> Vec<Arc<dyn Reporter>> {
    match reporter.members() {
        Some(members) => members.iter().flat_map(each).collect(),
        None => vec![Arc::clone(reporter)],
    }
}

impl Reporter for Reporters {
    fn name(&self) -> &str {
        "reporters"
    }

    fn members(&self) -> Option<&[Arc<dyn Reporter>]> {
        Some(&self.0)
    }

    fn wants(&self, target: &ReportTarget) -> bool {
        self.0.iter().any(|r| r.wants(target))
    }

    /// Reports to each member that wants it, as far as the first failure: the scheduler
    /// never calls it (it reports to each member alone).
    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        Box::pin(async move {
            let mut receipt = Receipt::default();
            for reporter in self.0.iter().filter(|r| r.wants(report.target)) {
                let delivered = reporter.report(report).await?;
                receipt.check_run = receipt.check_run.or(delivered.check_run);
            }
            Ok(receipt)
        })
    }
}

/// A reported state: a GitHub commit status state, and `running` (a check run in
/// progress), for receivers that report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitState {
    /// Queued, or starting.
    Pending,
    Running,
    Success,
    Failure,
    Error,
}

impl CommitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitState::Pending => "pending",
            CommitState::Running => "running",
            CommitState::Success => "success",
            CommitState::Failure => "failure",
            CommitState::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<CommitState> {
        match text.trim() {
            "pending" => Some(CommitState::Pending),
            "running" => Some(CommitState::Running),
            "success" => Some(CommitState::Success),
            "failure" => Some(CommitState::Failure),
            "error" => Some(CommitState::Error),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommitState::Success | CommitState::Failure | CommitState::Error
        )
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
        BuildState::Running => (CommitState::Running, "Running".into()),
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

/// What was reported of a build to one reporter: its states, and the GitHub check run that
/// shows them (a build's record of them all is a [`ReportRecord`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    pub states: Vec<CommitState>,
    pub check_run: Option<u64>,
}

const CHECK_RUN: &str = "check-run=";

impl Reported {
    /// Reads one reporter's entry of a record (or a whole record of a kubeci from before):
    /// `pending,running,check-run=42`; each state once.
    pub fn parse(text: Option<&str>) -> Reported {
        let mut reported = Reported::default();
        for item in text.unwrap_or("").split(',').map(str::trim) {
            if let Some(id) = item.strip_prefix(CHECK_RUN) {
                reported.check_run = reported.check_run.or(id.parse().ok());
            } else if let Some(state) = CommitState::parse(item) {
                if !reported.states.contains(&state) {
                    reported.states.push(state);
                }
            }
        }
        reported
    }

    /// Writes one reporter's entry of a record.
    pub fn format(&self) -> String {
        let mut items: Vec<String> = self.states.iter().map(|s| s.as_str().into()).collect();
        items.extend(self.check_run.map(|id| format!("{CHECK_RUN}{id}")));
        items.join(",")
    }

    /// These reports and the states of `other` they lack; the check run known first.
    pub fn union(&self, other: &Reported) -> Reported {
        let mut states = self.states.clone();
        states.extend(other.states.iter().filter(|s| !self.states.contains(s)));
        Reported {
            states,
            check_run: self.check_run.or(other.check_run),
        }
    }

    /// Whether everything in `other` is here.
    pub fn includes(&self, other: &Reported) -> bool {
        other.states.iter().all(|s| self.states.contains(s))
            && (other.check_run.is_none() || self.check_run == other.check_run)
    }
}

/// The states of the `kubeci.io/reported` annotation that some reporter was sent (what a
/// build's page shows).
pub fn parse_reported(annotation: Option<&str>) -> Vec<CommitState> {
    ReportRecord::parse(annotation).states()
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

/// The report still owed for a build in `state`, given what was reported: each state at
/// most once, never one before a state reported (`pending` after `running`: a view that
/// lags), nothing after the final one. Without `running`, a running build is `pending`.
pub fn next_report(
    state: &BuildState,
    reported: &[CommitState],
    running: bool,
) -> Option<(CommitState, String)> {
    if reported.iter().any(|s| s.is_final()) {
        return None;
    }
    let (mut wanted, description) = commit_state(state);
    if wanted == CommitState::Running && !running {
        wanted = CommitState::Pending;
    }
    let behind = wanted == CommitState::Pending && reported.contains(&CommitState::Running);
    (!behind && !reported.contains(&wanted)).then_some((wanted, description))
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
            next_report(&BuildState::Queued, &[], true).map(|r| r.0),
            Some(CommitState::Pending)
        );
        assert_eq!(
            next_report(&BuildState::Running, &[CommitState::Pending], true).map(|r| r.0),
            Some(CommitState::Running),
            "a check run shows the build in progress"
        );
        assert_eq!(
            next_report(
                &BuildState::Running,
                &[CommitState::Pending, CommitState::Running],
                true
            ),
            None
        );
        assert_eq!(
            next_report(&BuildState::Succeeded, &[CommitState::Pending], true).map(|r| r.0),
            Some(CommitState::Success)
        );
        assert_eq!(
            next_report(&BuildState::Succeeded, &[], true).map(|r| r.0),
            Some(CommitState::Success),
            "a fast build reports its end directly"
        );
        assert_eq!(
            next_report(&BuildState::Succeeded, &[CommitState::Running], true).map(|r| r.0),
            Some(CommitState::Success),
            "running is not an end"
        );
        assert_eq!(
            next_report(&BuildState::Queued, &[CommitState::Running], true),
            None,
            "a view that lags behind what was reported says nothing"
        );
        assert_eq!(
            next_report(
                &BuildState::Succeeded,
                &[CommitState::Pending, CommitState::Success],
                true
            ),
            None
        );
        let aborted = next_report(
            &BuildState::Aborted {
                by: Some("alice".into()),
            },
            &[CommitState::Pending],
            true,
        )
        .unwrap();
        assert_eq!(
            aborted,
            (CommitState::Error, "Build cancelled by alice".into())
        );
    }

    #[test]
    fn without_running_a_running_build_is_pending_until_its_end() {
        assert_eq!(
            next_report(&BuildState::Running, &[], false),
            Some((CommitState::Pending, "Running".into())),
            "first seen running"
        );
        assert_eq!(
            next_report(&BuildState::Running, &[CommitState::Pending], false),
            None,
            "nothing new: no second pending, nothing to record"
        );
        assert_eq!(
            next_report(&BuildState::Succeeded, &[CommitState::Pending], false).map(|r| r.0),
            Some(CommitState::Success)
        );
    }

    #[test]
    fn the_annotation_round_trips() {
        let reported = Reported {
            states: vec![CommitState::Pending, CommitState::Failure],
            check_run: None,
        };
        assert_eq!(reported.format(), "pending,failure");
        assert_eq!(Reported::parse(Some("pending,failure")), reported);
        let with_check_run = Reported {
            check_run: Some(42),
            ..reported.clone()
        };
        assert_eq!(with_check_run.format(), "pending,failure,check-run=42");
        assert_eq!(
            Reported::parse(Some("pending,failure,check-run=42")),
            with_check_run
        );
        assert_eq!(
            parse_reported(Some("pending,bogus,check-run=x,")),
            [CommitState::Pending]
        );
        assert_eq!(parse_reported(None), []);
    }

    #[test]
    fn reports_add_up_and_the_first_check_run_stays() {
        let parse = |text| Reported::parse(Some(text));
        let union = parse("pending,check-run=1").union(&parse("running,check-run=2"));
        assert_eq!(union, parse("pending,running,check-run=1"));
        assert!(union.includes(&parse("running")));
        assert!(union.includes(&parse("pending,check-run=1")));
        assert!(!union.includes(&parse("success")));
        assert!(!parse("pending").includes(&parse("pending,check-run=1")));
    }
}
