//! What a backend offers the server: the jobs, their builds, and manual builds. The views
//! are the JSON of the REST API.

use std::future::Future;
use std::pin::Pin;

use futures_core::Stream;
use kubeci_build::BuildRequest;
use serde::Serialize;

use crate::build::{BuildState, Phase};
use crate::report::CommitState;

/// A job as the API shows it, valid or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    pub namespace: String,
    /// The job's name, when it could be read.
    pub name: Option<String>,
    /// `ConfigMap namespace/name`.
    pub configmap: Option<String>,
    pub valid: bool,
    /// Error messages, `file:line:column: error: message`.
    pub errors: Vec<String>,
    /// Warnings, `file:line:column: warning: message` (an extra job in the ConfigMap, an
    /// ignored key, a local git URL).
    pub warnings: Vec<String>,
    /// With its credentials hidden (an `https://` user alone may be a token).
    pub git_url: Option<String>,
    pub branch: Option<String>,
    pub chart_version: Option<String>,
    pub spec_hash: String,
    /// What starts its builds, in words (`manual (API, CLI)`, `GitHub pull requests`,
    /// `pushes to main`, `cron H * * * *`); empty for an invalid job.
    pub triggers: Vec<String>,
}

/// What starts a job's builds, in words.
pub fn triggers(job: &kubeci_spec::Job) -> Vec<String> {
    let mut found = vec!["manual (API, CLI)".to_owned()];
    if job.pull_requests_enabled() {
        found.push("GitHub pull requests".to_owned());
    }
    if let Some(triggers) = &job.triggers {
        if let Some(push) = &triggers.push {
            let branches: Vec<&str> = push.branches.iter().collect();
            found.push(format!("pushes to {}", branches.join(", ")));
        }
        if let Some(cron) = &triggers.cron {
            found.push(format!("cron {}", cron.trim()));
        }
    }
    found
}

impl JobView {
    /// How the API shows a declared job, valid or not.
    pub fn of(loaded: &kubeci_spec::LoadedJob) -> JobView {
        let job = loaded.job.as_ref();
        JobView {
            namespace: loaded.namespace.clone(),
            name: loaded.name.clone(),
            configmap: loaded.configmap.as_ref().map(ToString::to_string),
            valid: job.is_some(),
            errors: loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == kubeci_spec::Severity::Error)
                .map(ToString::to_string)
                .collect(),
            warnings: loaded
                .diagnostics
                .iter()
                .filter(|d| d.severity == kubeci_spec::Severity::Warning)
                .map(ToString::to_string)
                .collect(),
            git_url: job.map(|j| kubeci_spec::redact::redact_url(&j.git.url).into_owned()),
            branch: job.and_then(|j| j.git.branch.clone()),
            chart_version: loaded.chart_version.clone(),
            spec_hash: loaded.spec_hash.clone(),
            triggers: job.map(triggers).unwrap_or_default(),
        }
    }
}

/// Expands a log URL template for one build.
pub fn log_url(template: &str, fields: &[(&str, &str)]) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    /// The characters percent-encoded in a value put into a log store's URL template: all
    /// but RFC 3986's unreserved characters and `:`, so it stays one path segment or query
    /// value wherever the template puts it. `:` is kept because it is legal in a path
    /// segment, a query and a fragment alike, and `{start}`/`{end}` are RFC 3339 times
    /// (`2026-11-23T10:00:00Z`) that people read and paste in Grafana's, Loki's or
    /// Kibana's URLs, which read them back the same either way.
    const TEMPLATE_VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b':');
    let mut url = template.to_owned();
    for (name, value) in fields {
        let encoded = utf8_percent_encode(value, TEMPLATE_VALUE).to_string();
        url = url.replace(&format!("{{{name}}}"), &encoded);
    }
    url
}

/// A build as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildView {
    pub number: u64,
    /// The Kubernetes Job (or local build) that runs it.
    pub name: String,
    pub state: Phase,
    /// Why it is in that state, when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub trigger: Option<String>,
    /// Who asked for it (manual builds) as the server authenticated them.
    pub requested_by: Option<String>,
    pub commit: Option<String>,
    pub pull_request: Option<u64>,
    pub spec_hash: Option<String>,
    pub chart_version: Option<String>,
    /// The commit statuses reported for it so far.
    pub reported: Vec<&'static str>,
    /// When it was requested, started and finished (RFC 3339), when known.
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Its log in the cluster's log store (from `--log-url-template` or the job's `log_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
}

/// What a backend knows of a build, for its [`BuildView`].
#[derive(Debug, Clone)]
pub struct BuildFacts<'a> {
    pub namespace: &'a str,
    pub job: &'a str,
    pub number: u64,
    /// The Kubernetes Job (or local build) that runs it.
    pub name: String,
    pub state: &'a BuildState,
    pub trigger: Option<String>,
    pub requested_by: Option<String>,
    /// The commit requested, else the one its clone step checked out.
    pub commit: Option<String>,
    pub pull_request: Option<u64>,
    pub spec_hash: Option<String>,
    pub chart_version: Option<String>,
    pub reported: Vec<CommitState>,
    /// The pod that runs it, when it has one: `{pod}` in a log URL.
    pub pod: Option<String>,
    /// Seconds since the epoch.
    pub created_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A time (seconds since the epoch) as the API writes it: RFC 3339, UTC.
pub fn timestamp(seconds: Option<i64>) -> Option<String> {
    seconds
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
}

impl BuildView {
    /// How the API shows a build; `log_template` is the job's `log_url` or the server's
    /// `--log-url-template`, expanded for this build (`{end}` is `now` while it runs).
    pub fn of(facts: BuildFacts<'_>, log_template: Option<&str>) -> BuildView {
        let (state, message) = BuildView::describe(facts.state);
        let log_url = log_template.map(|template| {
            log_url(
                template,
                &[
                    ("namespace", facts.namespace),
                    ("pod", facts.pod.as_deref().unwrap_or_default()),
                    ("job", facts.job),
                    ("build", &facts.number.to_string()),
                    ("start", &timestamp(facts.created_at).unwrap_or_default()),
                    (
                        "end",
                        &timestamp(facts.finished_at).unwrap_or_else(|| "now".into()),
                    ),
                ],
            )
        });
        BuildView {
            number: facts.number,
            name: facts.name,
            state,
            message,
            trigger: facts.trigger,
            requested_by: facts.requested_by,
            commit: facts.commit,
            pull_request: facts.pull_request,
            spec_hash: facts.spec_hash,
            chart_version: facts.chart_version,
            reported: facts
                .reported
                .into_iter()
                .map(CommitState::as_str)
                .collect(),
            log_url,
            created_at: timestamp(facts.created_at),
            started_at: timestamp(facts.started_at),
            finished_at: timestamp(facts.finished_at),
        }
    }

    /// How long it ran (from start to finish, or to now while it runs), as `1m 05s`.
    pub fn duration(&self, now: i64) -> Option<String> {
        let at = |t: &Option<String>| {
            t.as_deref()?
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_second())
        };
        let started = at(&self.started_at)?;
        Some(human_duration(
            at(&self.finished_at).unwrap_or(now) - started,
        ))
    }

    pub fn describe(state: &BuildState) -> (Phase, Option<String>) {
        let message = match state {
            BuildState::Pending { message } => message.clone(),
            BuildState::Failed { message, .. } | BuildState::Error { message, .. } => {
                Some(message.clone())
            }
            BuildState::Aborted { by } => by.as_ref().map(|b| format!("cancelled by {b}")),
            _ => None,
        };
        (state.phase(), message)
    }
}

/// What failed inside a backend (the cluster's API, the local engine's database), with
/// its own error as the source.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a build could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No such job. Not worth retrying.
    #[error("no job {namespace}/{name}")]
    NotFound { namespace: String, name: String },
    /// The job's definition has errors. Not worth retrying until its ConfigMap changes.
    #[error("job {namespace}/{name} is invalid: {errors}")]
    Invalid {
        namespace: String,
        name: String,
        errors: String,
    },
    /// The request was made before and its build has since been deleted. Not worth
    /// retrying with the same key.
    #[error("the build this request started before ({number}) has been deleted")]
    Gone { number: u64 },
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(#[source] BackendError),
}

/// Why an approval could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// No such job. Not worth retrying.
    #[error("no job {namespace}/{name}")]
    NotFound { namespace: String, name: String },
    /// The cluster or the database failed. Worth retrying.
    #[error("cannot record the approval: {0}")]
    Backend(#[source] BackendError),
}

impl ApproveError {
    pub fn not_found(namespace: &str, name: &str) -> ApproveError {
        ApproveError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Why a build could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such build. Not worth retrying.
    #[error("no build {number} of job {namespace}/{name}")]
    NotFound {
        namespace: String,
        name: String,
        number: u64,
    },
    /// It already finished. Not worth retrying.
    #[error("build {number} of job {namespace}/{name} already finished ({state})")]
    Finished {
        namespace: String,
        name: String,
        number: u64,
        state: Phase,
    },
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(#[source] BackendError),
}

impl CancelError {
    pub fn not_found(namespace: &str, name: &str, number: u64) -> CancelError {
        CancelError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
            number,
        }
    }

    /// Whether build `number` of a job, in `state`, may be cancelled: not once it ended.
    pub fn cancellable(
        namespace: &str,
        name: &str,
        number: u64,
        state: &BuildState,
    ) -> Result<(), CancelError> {
        if state.is_finished() {
            return Err(CancelError::Finished {
                namespace: namespace.into(),
                name: name.into(),
                number,
                state: state.phase(),
            });
        }
        Ok(())
    }
}

/// Why a build's log cannot be streamed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// No such build, or it has no pod (yet, or any more). Not worth retrying now.
    #[error("{0}")]
    NotFound(String),
    /// The cluster refused or failed. Worth retrying.
    #[error("the cluster failed: {0}")]
    Backend(#[source] BackendError),
}

/// A build to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRequest {
    pub namespace: String,
    pub name: String,
    /// What to build; its `number` is assigned by the backend.
    pub build: BuildRequest,
    /// The request's identity: a request with a key seen before starts nothing new and
    /// answers with the build the first one started (a retried API call, a redelivered
    /// webhook, a cron time). `None`: always a new build.
    pub key: Option<String>,
}

/// The build a trigger started, or had already started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggered {
    pub build: BuildView,
    /// False when the request's key had started it before.
    pub created: bool,
}

/// `seconds` as people say them: `42s`, `1m 05s`, `2h 03m`.
pub fn human_duration(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A job's newest build's state, and the one time alone turns it into (see
/// [`crate::observe::StateOverTime`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestState {
    pub now: Phase,
    /// From this time (seconds since the epoch) on, the state is this one.
    pub later: Option<(i64, Phase)>,
}

impl From<crate::observe::StateOverTime> for NewestState {
    fn from(state: crate::observe::StateOverTime) -> NewestState {
        NewestState {
            now: state.now.phase(),
            later: state.later.map(|(from, later)| (from, later.phase())),
        }
    }
}

impl From<Phase> for NewestState {
    fn from(now: Phase) -> NewestState {
        NewestState { now, later: None }
    }
}

/// Namespace → job → its newest build's state (looked up by `&str`, no key built per job).
pub type StatesByJob =
    std::collections::HashMap<String, std::collections::HashMap<String, NewestState>>;

/// The state of every job's newest build at a time: what the jobs page's state filter
/// reads. Its parts (one per watched scope) are shared, not copied.
#[derive(Debug, Clone, Default)]
pub struct LatestStates {
    parts: Vec<std::sync::Arc<StatesByJob>>,
    now: i64,
}

impl LatestStates {
    /// The states of `parts` (each job in one of them) at `now` (seconds since the epoch).
    pub fn new(parts: Vec<std::sync::Arc<StatesByJob>>, now: i64) -> LatestStates {
        LatestStates { parts, now }
    }

    /// The state of the newest build of job `name` of `namespace`, if it has a build.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Phase> {
        let state = self
            .parts
            .iter()
            .find_map(|part| part.get(namespace)?.get(name))?;
        Some(match state.later {
            Some((from, later)) if self.now >= from => later,
            _ => state.now,
        })
    }
}

/// How a build's log is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the build's last step ends.
    pub follow: bool,
    /// Begin each line with when it was written (RFC 3339, UTC) and a space, as
    /// `kubectl logs --timestamps` does. A line whose time is not known has none.
    pub timestamps: bool,
}

/// `line` as a timestamped log shows it: its time (RFC 3339 with nanoseconds, trailing
/// zeros dropped, as the Kubernetes log API writes it), a space, the line.
pub fn stamp_line(at: jiff::Timestamp, line: &[u8]) -> Vec<u8> {
    let mut stamped = format!("{at} ").into_bytes();
    stamped.extend_from_slice(line);
    stamped
}

/// A timestamped log's line as its time and its text; a line without a leading time
/// is all text.
pub fn split_stamp(line: &str) -> (Option<jiff::Timestamp>, &str) {
    match line.split_once(' ') {
        Some((at, text)) if at.ends_with('Z') && at.len() >= 20 => match at.parse() {
            Ok(at) => (Some(at), text),
            Err(_) => (None, line),
        },
        _ => (None, line),
    }
}

/// A log as it is written: chunks of bytes.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, String>> + Send>>;

/// The last `max_bytes` of a log (from the start of a line when one begins in them),
/// reading it through; `None` when it is empty.
pub async fn log_tail(mut stream: LogStream, max_bytes: usize) -> Option<String> {
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        let Ok(chunk) = chunk else { break };
        tail.extend_from_slice(&chunk);
        if tail.len() > 2 * max_bytes {
            tail.drain(..tail.len() - max_bytes);
        }
    }
    if tail.len() > max_bytes {
        tail.drain(..tail.len() - max_bytes);
        if let Some(newline) = tail.iter().position(|b| *b == b'\n') {
            tail.drain(..=newline);
        }
    }
    let text = String::from_utf8_lossy(&tail).into_owned();
    (!text.is_empty()).then_some(text)
}

/// Which engine runs the builds: the pages name its own tools in their hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Kubernetes,
    Local,
}

pub use crate::webhooks::{BodyCheck, Delivery, DeliveryAnswer, NoWebhooks, Webhooks};

/// A backend as the server uses it.
pub trait Backend: Send + Sync + 'static {
    /// Whether the backend has its first complete view (its caches are synced).
    fn ready(&self) -> bool;
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// Why this engine cannot build `job`, if it cannot: said on the job's page before
    /// anyone presses "Build now".
    fn cannot_build(&self, _job: &kubeci_spec::LoadedJob) -> Option<String> {
        None
    }
    fn jobs(&self) -> Vec<JobView>;
    /// The namespaces that have jobs, sorted: the pages' namespace filter.
    fn namespaces(&self) -> Vec<String> {
        let found: std::collections::BTreeSet<String> =
            self.jobs().into_iter().map(|j| j.namespace).collect();
        found.into_iter().collect()
    }
    /// The builds of a job, newest first; `None` if there is no such job.
    fn builds(&self, namespace: &str, name: &str) -> Option<Vec<BuildView>>;
    /// Build `number` of a job. The default looks in [`Backend::builds`]; an engine whose
    /// view of builds lags behind the store (a watch cache) also asks the store, so a
    /// build another replica just started is found at once.
    fn build(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
    ) -> impl Future<Output = Option<BuildView>> + Send {
        let found = self
            .builds(namespace, name)
            .and_then(|builds| builds.into_iter().find(|b| b.number == number));
        std::future::ready(found)
    }
    /// Every job as declared, valid or not (one per ConfigMap or job file), shared: what
    /// the jobs page filters before it builds views of the jobs it shows.
    fn declared_jobs(&self) -> Vec<std::sync::Arc<kubeci_spec::LoadedJob>>;
    /// The state of the newest build of every job that has one: the jobs page's state
    /// filter, without building a view of every build.
    fn latest_states(&self) -> LatestStates {
        let mut states = StatesByJob::new();
        for job in self.jobs() {
            let Some(name) = job.name else { continue };
            if let Some(newest) = self
                .builds(&job.namespace, &name)
                .and_then(|b| b.into_iter().next())
            {
                states
                    .entry(job.namespace)
                    .or_default()
                    .insert(name, newest.state.into());
            }
        }
        LatestStates::new(vec![std::sync::Arc::new(states)], 0)
    }
    /// The newest `limit` builds of each of `jobs` (namespace, name), newest first: the
    /// recent builds the jobs page shows for the jobs on it.
    fn recent_builds(
        &self,
        jobs: &[(String, String)],
        limit: usize,
    ) -> std::collections::HashMap<(String, String), Vec<BuildView>> {
        jobs.iter()
            .filter_map(|(namespace, name)| {
                let mut builds = self.builds(namespace, name)?;
                builds.truncate(limit);
                Some(((namespace.clone(), name.clone()), builds))
            })
            .collect()
    }
    /// Starts a build of a job.
    fn trigger(
        &self,
        request: TriggerRequest,
    ) -> impl Future<Output = Result<Triggered, TriggerError>> + Send;
    /// Cancels a build that has not finished; `by` is recorded as who cancelled it.
    fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        by: &str,
    ) -> impl Future<Output = Result<BuildView, CancelError>> + Send;
    /// Records an admin's approval of one pull request head for job `name`, kept with the
    /// job's records so that it survives restarts and hand-overs.
    fn approve(
        &self,
        namespace: &str,
        name: &str,
        approval: crate::approval::Approval,
    ) -> impl Future<Output = Result<(), ApproveError>> + Send;
    /// The approvals recorded for job `name`, newest first.
    fn approvals(&self, namespace: &str, name: &str) -> Vec<crate::approval::Approval>;
    /// The request build `number` of a job was started with: what a rebuild repeats.
    fn request(&self, namespace: &str, name: &str, number: u64) -> Option<BuildRequest>;
    /// The valid jobs declared now, with the namespace their builds run in; only those
    /// whose `git.url` names one of `repositories` (`GitUrl::repository_key`) when given
    /// (the GitHub webhook's matching).
    fn specs(
        &self,
        repositories: Option<&[String]>,
    ) -> Vec<(String, std::sync::Arc<kubeci_spec::Job>)>;
    /// Job `name` of `namespace` as declared (valid or not), with its `job.yaml` as written.
    fn declaration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<std::sync::Arc<kubeci_spec::LoadedJob>>;
    /// The engine's metrics (builds by job and state, queue length, errors).
    fn metrics(&self) -> Vec<crate::metrics::Family> {
        Vec::new()
    }
    /// Called once when kubeci stops: give up what other replicas should take over now
    /// (the Kubernetes engine gives its leader Lease back).
    fn stop(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// A build's log, its steps (clone, build) each begun by a line `==> {container}:
    /// (init )container started`.
    fn log(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        options: LogOptions,
    ) -> impl Future<Output = Result<LogStream, LogError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_line_splits_back_into_its_time_and_text() {
        let at: jiff::Timestamp = "2026-11-30T07:33:35.120Z".parse().unwrap();
        let stamped = String::from_utf8(stamp_line(at, b"make: all done")).unwrap();
        assert_eq!(stamped, "2026-11-30T07:33:35.12Z make: all done");
        assert_eq!(split_stamp(&stamped), (Some(at), "make: all done"));
        // As the Kubernetes log API writes it, nanoseconds and all.
        let (at, text) = split_stamp("2026-11-30T07:33:35.123456789Z ==> build: container started");
        assert_eq!(at.map(|t| t.subsec_nanosecond()), Some(123_456_789));
        assert_eq!(text, "==> build: container started");
        for unstamped in ["plain words here", "2026-11-30Z not a time", "", "Z"] {
            assert_eq!(split_stamp(unstamped), (None, unstamped));
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let build = |started: Option<i64>, finished: Option<i64>| BuildView {
            number: 1,
            name: "demo-1".into(),
            state: Phase::Running,
            message: None,
            trigger: None,
            requested_by: None,
            commit: None,
            pull_request: None,
            spec_hash: None,
            chart_version: None,
            reported: Vec::new(),
            log_url: None,
            created_at: timestamp(started),
            started_at: timestamp(started),
            finished_at: timestamp(finished),
        };
        let t = 1_795_428_000;
        assert_eq!(
            build(Some(t), Some(t + 42)).duration(0).as_deref(),
            Some("42s")
        );
        assert_eq!(
            build(Some(t), Some(t + 65)).duration(0).as_deref(),
            Some("1m 05s")
        );
        assert_eq!(
            build(Some(t), Some(t + 7322)).duration(0).as_deref(),
            Some("2h 02m")
        );
        assert_eq!(
            build(Some(t), None).duration(t + 3).as_deref(),
            Some("3s"),
            "while it runs"
        );
        assert_eq!(build(None, None).duration(t), None, "not started");
        assert_eq!(timestamp(Some(t)).as_deref(), Some("2026-11-23T10:00:00Z"));
    }
}
