//! What a GitHub check run says of a build (pure): its status and conclusion, times,
//! and an output whose title says what happened and whose summary gives the trigger, how
//! long it took, why it failed, and the end of its log — ANSI stripped, within GitHub's
//! limits, with a link to the whole log.

use kubeci_engine::api::human_duration;
use kubeci_engine::report::{CommitState, Report};
use kubeci_engine::BuildState;
use serde_json::{json, Value};

use crate::check_tests;
use crate::client::CheckRun;

/// GitHub refuses a check run output's summary over 65,535 characters.
pub const SUMMARY_LIMIT: usize = 65_535;

/// The check run's `external_id`: which build it shows.
pub fn external_id(report: &Report<'_>) -> String {
    let target = report.target;
    format!("{}/{}/{}", target.namespace, target.job, target.number)
}

/// Whether a check run GitHub has is this build's: kubeci created it for the build
/// (`external_id`, see [`external_id`]) under the report's check name. A check run id
/// read from a build's record is used only when this holds: the record is on the build's
/// Job, which whoever may patch Jobs in its namespace can rewrite with any id.
pub fn belongs_to(run: &CheckRun, external_id: &str, name: &str) -> bool {
    run.external_id == external_id && run.name == name
}

/// A check run's conclusion for a finished build.
pub fn conclusion(build: &BuildState) -> &'static str {
    match build {
        BuildState::Succeeded => "success",
        BuildState::Failed { reason, .. } if reason == "DeadlineExceeded" => "timed_out",
        BuildState::Aborted { .. } => "cancelled",
        _ => "failure",
    }
}

/// The output's title: what happened, in a few words, and at the end the counts of the
/// build's tests (`Failed in 40s: 412 passed, 3 failed, 5 skipped`).
pub fn title(report: &Report<'_>) -> String {
    let outcome = outcome(report);
    match check_tests::title_counts(report).filter(|_| report.state.is_final()) {
        Some(counts) => format!("{outcome}: {counts}"),
        None => outcome,
    }
}

/// What happened to the build, in a few words.
fn outcome(report: &Report<'_>) -> String {
    let took = took(report).map(|d| format!(" in {d}")).unwrap_or_default();
    match (report.state, report.build) {
        (CommitState::Pending, BuildState::Pending { .. }) => "Starting".into(),
        (CommitState::Pending, _) => "Queued".into(),
        (CommitState::Running, _) => "Running".into(),
        (_, BuildState::Succeeded) => format!("Succeeded{took}"),
        (_, BuildState::Failed { reason, .. }) if reason == "DeadlineExceeded" => {
            format!("Timed out{took}")
        }
        (_, BuildState::Failed { .. }) => format!("Failed{took}"),
        (_, BuildState::Error { reason, .. }) => format!("Could not run ({reason})"),
        (_, BuildState::Aborted { by: Some(by) }) => format!("Cancelled by {by}"),
        (_, _) => "Cancelled".into(),
    }
}

/// From the request to the end, for a finished build.
fn took(report: &Report<'_>) -> Option<String> {
    Some(human_duration(
        report.finished_at? - report.target.created_at?,
    ))
}

/// `text` without ANSI escape sequences (colours, cursor moves) and other control
/// characters but newlines and tabs.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    // Parameters and intermediates, up to the final byte (@ to ~).
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // An operating system command, ended by BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {
                    chars.next();
                }
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A fence longer than any run of backticks in `text`, so the log cannot end it.
pub(crate) fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// The longest reason a build failed the summary shows.
const WHY_CHARS: usize = 2_000;

/// The output's summary (Markdown): which build, its tests (when it left results), the
/// facts of the build, and the end of its log — which gives way first to stay within
/// GitHub's [`SUMMARY_LIMIT`].
pub fn summary(report: &Report<'_>) -> String {
    let target = report.target;
    let header = format!(
        "**Build {} of `{}/{}`** · [details]({})\n\n",
        target.number, target.namespace, target.job, target.url
    );
    let facts = facts(report);
    let link = format!("\n\n[The whole log]({}#log)\n", target.url);
    let fixed = [&header, &facts, &link]
        .map(|t| t.chars().count())
        .iter()
        .sum::<usize>();
    let tests = check_tests::section(report, SUMMARY_LIMIT.saturating_sub(fixed + 1));
    let mut summary = header;
    if !tests.is_empty() {
        summary.push_str(tests.trim_end());
        summary.push_str("\n\n");
    }
    summary.push_str(&facts);
    if let Some(log) = report.log_tail {
        let log = strip_ansi(log);
        let fence = fence(&log);
        let frame = format!("\n\n### The end of the log\n\n{fence}text\n\n{fence}");
        let room = SUMMARY_LIMIT
            .saturating_sub(summary.chars().count() + frame.chars().count() + link.chars().count());
        let skip = log.chars().count().saturating_sub(room);
        let tail: String = log.chars().skip(skip).collect();
        if room > 0 {
            summary.push_str(&format!(
                "\n\n### The end of the log\n\n{fence}text\n{}\n{fence}",
                tail.trim_end_matches('\n')
            ));
        }
    }
    summary.push_str(&link);
    summary
}

/// The facts of the build as a table: its trigger, commit, how long it took, why it
/// failed or who cancelled it.
fn facts(report: &Report<'_>) -> String {
    let target = report.target;
    let mut rows = vec!["| | |\n| --- | --- |".to_owned()];
    let trigger = match (target.trigger.as_deref(), target.pull_request) {
        (Some("pull-request" | "comment"), Some(number)) => format!("pull request #{number}"),
        (Some(trigger), _) => trigger.to_owned(),
        (None, _) => "unknown".into(),
    };
    rows.push(format!("| Trigger | {trigger} |"));
    if let Some(commit) = &target.commit {
        rows.push(format!("| Commit | `{commit}` |"));
    }
    if let Some(took) = took(report) {
        rows.push(format!("| Took | {took} |"));
    }
    match report.build {
        BuildState::Failed { reason, message } | BuildState::Error { reason, message } => {
            let message: String = message.chars().take(WHY_CHARS).collect();
            rows.push(format!("| Why | {reason}: {} |", table_cell(&message)));
        }
        BuildState::Aborted { by: Some(by) } => {
            rows.push(format!("| Cancelled by | {} |", table_cell(by)));
        }
        _ => {}
    }
    rows.join("\n")
}

/// A value inside a Markdown table cell: one line, no cell separators.
fn table_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// RFC 3339 of seconds since the epoch.
fn time(seconds: i64) -> Option<String> {
    jiff::Timestamp::from_second(seconds)
        .ok()
        .map(|t| t.to_string())
}

/// The fields of a check run for `report` at `now` (seconds since the epoch): status,
/// conclusion, times, the build's page and the output.
pub fn fields(report: &Report<'_>, now: i64) -> Value {
    let mut fields = json!({
        "details_url": report.target.url,
        "output": {"title": title(report), "summary": summary(report)},
    });
    match report.state {
        CommitState::Pending => fields["status"] = "queued".into(),
        CommitState::Running => {
            fields["status"] = "in_progress".into();
            fields["started_at"] = time(now).into();
        }
        CommitState::Success | CommitState::Failure | CommitState::Error => {
            fields["status"] = "completed".into();
            fields["conclusion"] = conclusion(report.build).into();
            fields["completed_at"] = time(report.finished_at.unwrap_or(now)).into();
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_run_belongs_to_the_build_only_with_its_external_id_and_check_name() {
        let run = |external_id: &str, name: &str| CheckRun {
            id: 5,
            name: name.into(),
            external_id: external_id.into(),
            status: "completed".into(),
            conclusion: Some("failure".into()),
        };
        let own = run("team-a/evil/1", "kubeci/evil");
        assert!(belongs_to(&own, "team-a/evil/1", "kubeci/evil"));
        // Another team's build, another build of the same job, another check name,
        // a check run kubeci did not create.
        assert!(!belongs_to(
            &run("team-b/deploy/1", "kubeci/deploy"),
            "team-a/evil/1",
            "kubeci/evil"
        ));
        assert!(!belongs_to(
            &run("team-a/evil/2", "kubeci/evil"),
            "team-a/evil/1",
            "kubeci/evil"
        ));
        assert!(!belongs_to(
            &run("team-a/evil/1", "kubeci/deploy"),
            "team-a/evil/1",
            "kubeci/evil"
        ));
        assert!(!belongs_to(
            &run("", "kubeci/evil"),
            "team-a/evil/1",
            "kubeci/evil"
        ));
    }
    use kubeci_engine::report::{ReportTarget, Reported};

    fn target() -> ReportTarget {
        ReportTarget {
            namespace: "team".into(),
            job: "demo".into(),
            number: 3,
            build_name: "demo-3".into(),
            trigger: Some("pull-request".into()),
            git_url: Some("https://github.com/o/r".into()),
            commit: Some("c0ffee".into()),
            pull_request: Some(7),
            url: "https://ci.example.com/jobs/team/demo/builds/3".into(),
            context: None,
            created_at: Some(1_000_000),
            workdir: Some(String::new()),
            checkout_dir: Some("/workspace/src".into()),
        }
    }

    fn report<'a>(
        target: &'a ReportTarget,
        state: CommitState,
        build: &'a BuildState,
        before: &'a Reported,
        log_tail: Option<&'a str>,
    ) -> Report<'a> {
        Report {
            target,
            state,
            description: "",
            build,
            finished_at: Some(1_000_072),
            before,
            may_have_been_sent: false,
            log_tail,
            tests: None,
            known_flaky: &[],
        }
    }

    #[test]
    fn each_state_has_its_status_conclusion_and_title() {
        let target = target();
        let before = Reported::default();
        let cases = [
            (
                CommitState::Pending,
                BuildState::Queued,
                "queued",
                None,
                "Queued",
            ),
            (
                CommitState::Running,
                BuildState::Running,
                "in_progress",
                None,
                "Running",
            ),
            (
                CommitState::Success,
                BuildState::Succeeded,
                "completed",
                Some("success"),
                "Succeeded in 1m 12s",
            ),
            (
                CommitState::Failure,
                BuildState::Failed {
                    reason: "Error".into(),
                    message: "exit code 2".into(),
                },
                "completed",
                Some("failure"),
                "Failed in 1m 12s",
            ),
            (
                CommitState::Failure,
                BuildState::Failed {
                    reason: "DeadlineExceeded".into(),
                    message: "too long".into(),
                },
                "completed",
                Some("timed_out"),
                "Timed out in 1m 12s",
            ),
            (
                CommitState::Error,
                BuildState::Aborted {
                    by: Some("alice".into()),
                },
                "completed",
                Some("cancelled"),
                "Cancelled by alice",
            ),
            (
                CommitState::Error,
                BuildState::Error {
                    reason: "CloneFailed".into(),
                    message: "no such ref".into(),
                },
                "completed",
                Some("failure"),
                "Could not run (CloneFailed)",
            ),
        ];
        for (state, build, status, conclusion, title) in cases {
            let fields = fields(&report(&target, state, &build, &before, None), 1_000_050);
            assert_eq!(fields["status"], status, "{build:?}");
            assert_eq!(fields["conclusion"].as_str(), conclusion, "{build:?}");
            assert_eq!(fields["output"]["title"], title, "{build:?}");
            assert_eq!(fields["details_url"], target.url);
        }
    }

    #[test]
    fn a_check_run_starts_when_reported_running_and_ends_when_the_build_did() {
        let target = target();
        let before = Reported::default();
        let running = fields(
            &report(
                &target,
                CommitState::Running,
                &BuildState::Running,
                &before,
                None,
            ),
            1_000_050,
        );
        assert_eq!(running["started_at"], "1970-01-12T13:47:30Z");
        let done = fields(
            &report(
                &target,
                CommitState::Success,
                &BuildState::Succeeded,
                &before,
                None,
            ),
            1_000_090,
        );
        assert_eq!(
            done["completed_at"], "1970-01-12T13:47:52Z",
            "when it finished"
        );
    }

    #[test]
    fn the_summary_says_why_and_ends_with_the_log_without_its_colours() {
        let target = target();
        let before = Reported::default();
        let failed = BuildState::Failed {
            reason: "Error".into(),
            message: "make: *** [test] | Error 2".into(),
        };
        let log = "\u{1b}[1;31mFAIL\u{1b}[0m test_a\n```\nnot a fence\n\u{1b}]0;title\u{7}done\n";
        let summary = summary(&report(
            &target,
            CommitState::Failure,
            &failed,
            &before,
            Some(log),
        ));
        assert!(
            summary.contains("| Trigger | pull request #7 |"),
            "{summary}"
        );
        assert!(summary.contains("| Took | 1m 12s |"), "{summary}");
        assert!(
            summary.contains("| Why | Error: make: *** [test] \\| Error 2 |"),
            "{summary}"
        );
        assert!(
            summary.contains("````text\nFAIL test_a\n```\nnot a fence\ndone\n````"),
            "{summary}"
        );
        assert!(!summary.contains('\u{1b}'), "{summary}");
        assert!(summary
            .ends_with("[The whole log](https://ci.example.com/jobs/team/demo/builds/3#log)\n"));
    }

    #[test]
    fn a_long_log_is_cut_from_its_start_to_fit_githubs_limit() {
        let target = target();
        let before = Reported::default();
        let log = format!(
            "first line\n{}last line\n",
            "é a line of the build\n".repeat(10_000)
        );
        let summary = summary(&report(
            &target,
            CommitState::Success,
            &BuildState::Succeeded,
            &before,
            Some(&log),
        ));
        assert!(
            summary.chars().count() <= SUMMARY_LIMIT,
            "{}",
            summary.chars().count()
        );
        assert!(
            summary.chars().count() > SUMMARY_LIMIT - 100,
            "the room is used"
        );
        assert!(!summary.contains("first line"));
        assert!(summary.contains("last line\n```"), "the end is kept");
    }

    #[test]
    fn control_sequences_are_stripped() {
        assert_eq!(
            strip_ansi("a\u{1b}[2Kb\u{1b}[38;5;196mc\r\n\u{0}d"),
            "abc\nd"
        );
        assert_eq!(
            strip_ansi("x\u{1b}]8;;http://e\u{1b}\\link\u{1b}]8;;\u{1b}\\y"),
            "xlinky"
        );
    }
}
