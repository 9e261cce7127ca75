//! How the API shows jobs and builds: their views, the facts a backend knows of a build,
//! the log-URL template, times and durations as people read them.

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
        let job = loaded.job.as_deref();
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
    /// Its test counts, once it is archived with test results (issue 30): what its job's
    /// index keeps, so a page of builds shows them without reading each build's
    /// `tests.json`. `None` while it is live, and for a build without test results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<kubeci_results::Counts>,
}

/// What a backend knows of a build: for its [`BuildView`], its metrics and its reports.
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
    /// The repository it was made from, as recorded on it (`keys::GIT_URL`): where its
    /// reports go. Never shown (it may hold credentials).
    pub git_url: Option<String>,
    /// The name its job reported under when it was created, as recorded on it
    /// (`keys::CHECK_NAME`; see `kubeci_spec::checkname::report_name`).
    pub check_name: Option<String>,
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
            tests: None,
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

/// `seconds` as people say them: `42s`, `1m 05s`, `2h 03m`.
pub fn human_duration(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            tests: None,
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
