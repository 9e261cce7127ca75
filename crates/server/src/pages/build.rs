//! A build's page: a header that follows the build live (state, times, the actions that
//! apply now), why it failed first, and its log with numbered, linkable lines, search,
//! follow and a download of the raw log. Hints name the engine's own tools only where
//! they apply (`kubectl` for the Kubernetes engine, `--secrets` for the local one).

use kubeci_engine::api::{BuildView, EngineKind as Engine};
use kubeci_engine::Phase;

use maud::{html, Markup, PreEscaped};

use super::outputs::LeftHtml;
use super::parts::{self, action_form, build_path, human_bytes, job_path, now};
use super::{layout, Chrome};
use crate::ansi::line_to_html;

/// What the build page shows of a log: its end, and how much comes before it.
pub struct LogShown<'a> {
    pub text: &'a str,
    pub skipped_bytes: u64,
    /// The lines before `text`, so the shown ones keep their numbers.
    pub skipped_lines: u64,
}

/// What to do about a failure, when kubeci knows: a missing Secret, a clone that failed.
fn hint(build: &BuildView, namespace: &str, engine: Engine) -> Option<String> {
    let message = build.message.as_deref()?;
    if let Some(rest) = message.split_once("secret \"").map(|(_, r)| r) {
        let secret = rest.split('"').next().unwrap_or_default();
        return Some(match engine {
            Engine::Local => format!(
                "The local engine reads Secrets from the directory given with `--secrets DIR` (one directory per Secret, one file per key): add `{secret}` there."
            ),
            Engine::Kubernetes => format!(
                "Create the Secret `{secret}` in namespace `{namespace}` (kubeci never reads Secrets; the build's pod does)."
            ),
        });
    }
    if message.contains("clone step") {
        return Some("The clone step could not check the commit out: the log's first lines say why (an unknown host key, a missing credential, a commit that does not exist).".into());
    }
    None
}

/// Why the build failed, first on the page.
fn reason(build: &BuildView, namespace: &str, engine: Engine) -> Markup {
    if !matches!(build.state, Phase::Failed | Phase::Error) {
        return html! {};
    }
    let said = build.message.as_deref().unwrap_or("no reason was given");
    let verb = if build.state == Phase::Failed {
        "failed"
    } else {
        "stopped"
    };
    html! {
        p class="problem" role="alert" id="reason" {
            b { "Why it " (verb) ":" }
            " "
            (said)
            @if let Some(hint) = hint(build, namespace, engine) {
                br;
                span class="sub" { (hint) }
            }
        }
    }
}

/// The build's facts; the cells with an id follow the build live.
fn facts(build: &BuildView, web: Option<&str>) -> Markup {
    let now = now();
    let spec = build.spec_hash.as_deref().map(|h| h.get(..12).unwrap_or(h));
    let reported = build.reported.join(", ");
    html! {
        dl class="facts" {
            dt { "Requested" } dd { (parts::time(build.created_at.as_deref(), now)) }
            dt { "Started" } dd id="started" { (parts::time(build.started_at.as_deref(), now)) }
            dt { "Finished" } dd id="finished" { (parts::time(build.finished_at.as_deref(), now)) }
            dt { "Duration" } dd id="duration" { (parts::cell(build.duration(now).as_deref())) }
            dt { "Trigger" } dd { (parts::cell(build.trigger.as_deref())) }
            dt { "Started by" } dd { (parts::started_by(build)) }
            dt { "Commit" } dd id="commit" { (parts::commit(web, build.commit.as_deref(), false)) }
            dt { "Pull request" } dd { (parts::pull_request(web, build.pull_request)) }
            dt { "Job version" }
            dd { "chart " (parts::cell(build.chart_version.as_deref())) " · spec " (parts::cell(spec)) }
            dt { "Reported" }
            dd { (parts::cell(Some(reported.as_str()).filter(|r| !r.is_empty()))) }
        }
    }
}

/// "Cancel" or "Rebuild" for a signed-in user. A live build offers "Cancel", and
/// "Rebuild" hidden: the page's script swaps them when the build ends, so the page never
/// offers to cancel a finished build.
fn actions(
    namespace: &str,
    job: &str,
    build: &BuildView,
    csrf: Option<&str>,
    live: bool,
) -> Markup {
    let path = build_path(namespace, job, build.number);
    let action = |verb: &str, label: &str, csrf: &str| {
        action_form(&format!("{path}/{verb}"), csrf, label, None)
    };
    html! {
        @match csrf {
            Some(csrf) if live => {
                span id="cancel" { (action("cancel", "Cancel", csrf)) }
                span id="rebuild" hidden { (action("rebuild", "Rebuild", csrf)) }
            }
            Some(csrf) => (action("rebuild", "Rebuild", csrf)),
            None => {}
        }
    }
}

/// One step of a log: the lines from a container's start (`==> clone: init container
/// started (…)`, as both engines write it) to the next one's, numbered from `first`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Step<'a> {
    /// The container (`clone`, `build`), or empty for lines before any start.
    pub name: &'a str,
    pub first: u64,
    /// Each line's time (when the log has it) and text.
    pub lines: Vec<(Option<jiff::Timestamp>, &'a str)>,
}

/// The container a line says started, if it is such a line.
fn step_start(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("==> ")?;
    let (name, what) = rest.split_once(": ")?;
    (what.starts_with("init container started") || what.starts_with("container started"))
        .then_some(name)
}

/// `text` (its lines timestamped or not) split into steps; its first line is line
/// `first`. A log without step lines is one step, `build`.
pub(crate) fn steps(text: &str, first: u64) -> Vec<Step<'_>> {
    let mut steps: Vec<Step<'_>> = Vec::new();
    for (line, n) in text.lines().zip(first..) {
        let line = kubeci_engine::api::split_stamp(line);
        match (step_start(line.1), steps.last_mut()) {
            (Some(name), _) => steps.push(Step {
                name,
                first: n,
                lines: vec![line],
            }),
            (None, Some(step)) => step.lines.push(line),
            (None, None) => steps.push(Step {
                name: "",
                first: n,
                lines: vec![line],
            }),
        }
    }
    match steps.as_mut_slice() {
        [] => vec![Step {
            name: "build",
            first,
            lines: Vec::new(),
        }],
        [only] if only.name.is_empty() => {
            only.name = "build";
            steps
        }
        _ => steps,
    }
}

/// A line's time as the log shows it on demand: the time of day (UTC) to the
/// millisecond, the whole time on hover.
fn line_time(at: Option<jiff::Timestamp>) -> Markup {
    html! {
        @if let Some(at) = at {
            @let exact = at.to_string();
            time class="ts" datetime=(exact) title=(exact) {
                (at.strftime("%H:%M:%S").to_string()) "." (format!("{:03}", at.subsec_millisecond()))
            }
        }
    }
}

/// One step of the log: its lines numbered and linkable (`#L42`), their times ready to
/// show; `last` is open, and named `log` for the page's script (which, with `events`,
/// follows it live).
fn log_step(step: &Step<'_>, last: bool, events: Option<&str>) -> Markup {
    let name = if step.name.is_empty() {
        "setup"
    } else {
        step.name
    };
    html! {
        details open[last] data-step=(name) {
            summary { (name) }
            ol start=(step.first) id=[last.then_some("log")] data-events=[events.filter(|_| last)] {
                @for ((time, line), n) in step.lines.iter().zip(step.first..) {
                    li id={ "L" (n) } {
                        a href={ "#L" (n) } aria-label={ "line " (n) } { (n) }
                        (line_time(*time))
                        // Safe as HTML: the ANSI renderer escapes the line's text and adds
                        // only spans of its own classes.
                        span { (PreEscaped(line_to_html(line))) }
                    }
                }
            }
        }
    }
}

/// The log's steps, each folding; a step that another follows is folded, the last one
/// open.
fn log_steps(text: &str, first: u64, events: Option<&str>) -> Markup {
    let steps = steps(text, first);
    let last = steps.len() - 1;
    html! {
        @for (at, step) in steps.iter().enumerate() {
            (log_step(step, at == last, events))
        }
    }
}

/// The log's tools: follow (while live), show times, search, jump to the end, download.
fn log_bar(job: &str, number: u64, raw: &str, live: bool) -> Markup {
    html! {
        div class="logbar" {
            @if live {
                label { input type="checkbox" id="follow" checked; " follow the log" }
                " "
                span id="live" role="status" { "live" }
            }
            label { input type="checkbox" id="show-times"; " show times" }
            " "
            label for="log-search" class="vh" { "Search the log" }
            input id="log-search" type="search" placeholder="search the log" hidden;
            " "
            span id="log-hits" role="status" {}
            a href="#log-end" { "jump to the end" }
            " · "
            a href=(raw) download={ (job) "-" (number) ".log" } { "download the raw log" }
        }
    }
}

/// Where else to read the log: whole, in the log store, in the cluster.
fn elsewhere(namespace: &str, build: &BuildView, raw: &str, engine: Engine) -> Markup {
    html! {
        p class="note" {
            a href=(raw) { "The whole log" }
            " (plain text)"
            @if let Some(url) = &build.log_url {
                " · "
                a href=(url) rel="noreferrer" { "the log in the log store" }
            }
            @if matches!(engine, Engine::Kubernetes) {
                " · in the cluster: "
                code { "kubectl -n " (namespace) " get job " (build.name) }
                " · "
                code { "kubectl -n " (namespace) " logs job/" (build.name) " -c build" }
            }
        }
    }
}

/// The log (followed while `live`), its tools, and where else to read it.
fn log(
    namespace: &str,
    job: &str,
    build: &BuildView,
    shown: &LogShown<'_>,
    live: bool,
    engine: Engine,
) -> Markup {
    let path = build_path(namespace, job, build.number);
    let raw = format!("/api/v1{path}/log");
    let events = live.then(|| format!("{path}/events"));
    html! {
        h2 id="log-title" { "Log" }
        (log_bar(job, build.number, &raw, live))
        @if shown.skipped_bytes > 0 {
            p class="note" id="log-cut" {
                "The first " (human_bytes(shown.skipped_bytes)) " (" (shown.skipped_lines)
                " lines) of this log are not shown here: "
                a href=(raw) { "the whole log" }
                "."
            }
        }
        div class="log" id="log-box" tabindex="0" role="region" aria-label="Log" {
            (log_steps(shown.text, shown.skipped_lines + 1, events.as_deref()))
            span id="log-end" {}
        }
        (elsewhere(namespace, build, &raw, engine))
    }
}

/// What a build's page shows: the build, its log, what it left, and where its links lead.
pub struct BuildPage<'a> {
    pub namespace: &'a str,
    pub job: &'a str,
    pub build: &'a BuildView,
    pub shown: &'a LogShown<'a>,
    /// Its repository's page ([`parts::repository_web`]), for links to the commit and
    /// pull request.
    pub web: Option<&'a str>,
    pub engine: Engine,
    /// Its test results and files, once it ended ([`super::left_html`]).
    pub left: &'a LeftHtml,
}

/// A build, what it left (its tests first: failures lead), its log (live while it runs),
/// and where else to read it. A signed-in user (`chrome.csrf`) is offered "Cancel" while
/// the build runs and "Rebuild" (the same commit, branch and pull request) once it has
/// ended.
pub fn build(page: &BuildPage<'_>, chrome: &Chrome) -> String {
    let BuildPage {
        namespace,
        job,
        build,
        shown,
        web,
        engine,
        left,
    } = *page;
    let live = !build.state.is_finished();
    let body = html! {
        h1 { a href=(job_path(namespace, job)) { (namespace) "/" (job) } " #" (build.number) }
        (reason(build, namespace, engine))
        p id="state-line" {
            (parts::state_with_id(build.state, Some("state")))
            span id="message" {
                @if let Some(message) = &build.message { ": " (message) }
            }
        }
        (facts(build, web))
        div class="actions" { (actions(namespace, job, build, chrome.csrf.as_deref(), live)) }
        (left)
        (log(namespace, job, build, shown, live, engine))
    };
    layout(
        &format!("{namespace}/{job} #{}", build.number),
        chrome,
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LOG: LogShown<'static> = LogShown {
        text: "",
        skipped_bytes: 0,
        skipped_lines: 0,
    };

    fn view(state: Phase, message: Option<&str>) -> BuildView {
        BuildView {
            name: "api-3".into(),
            message: message.map(str::to_owned),
            trigger: Some("pull-request".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            pull_request: Some(7),
            spec_hash: Some(
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ),
            chart_version: Some("1.2.0".into()),
            ..crate::pages::sample_build(3, state)
        }
    }

    /// Each step's container, first line and number of lines.
    fn shape(log: &str) -> Vec<(&str, u64, usize)> {
        steps(log, 1)
            .iter()
            .map(|s| (s.name, s.first, s.lines.len()))
            .collect()
    }

    /// `text` as the whole log shown.
    fn whole(text: &str) -> LogShown<'_> {
        LogShown {
            text,
            skipped_bytes: 0,
            skipped_lines: 0,
        }
    }

    fn page(build_view: &BuildView, log: &LogShown<'_>, engine: Engine) -> String {
        let page = BuildPage {
            namespace: "ci",
            job: "api",
            build: build_view,
            shown: log,
            web: Some("https://github.com/org/repo"),
            engine,
            left: &LeftHtml::default(),
        };
        build(&page, &Chrome::default())
    }

    #[test]
    fn a_log_splits_into_the_steps_the_pod_runner_marks() {
        let log = "==> clone: init container started (kubeci clone)\ncloned\n==> clone: exited with code 0\n==> build: container started (bash -c make)\nmade\n==> result: succeeded in 1.00s\n";
        assert_eq!(shape(log), [("clone", 1, 3), ("build", 4, 3)]);
        let plain = steps("a\nb\n", 10);
        assert_eq!(
            plain,
            [Step {
                name: "build",
                first: 10,
                lines: vec![(None, "a"), (None, "b")]
            }]
        );
        let html = page(&view(Phase::Succeeded, None), &whole(log), Engine::Local);
        assert!(
            html.contains("<details data-step=\"clone\"><summary>clone</summary><ol start=\"1\">"),
            "{html}"
        );
        assert!(html.contains("<details open data-step=\"build\"><summary>build</summary><ol start=\"4\" id=\"log\">"), "{html}");
    }

    #[test]
    fn a_timestamped_log_keeps_its_steps_and_shows_each_line_s_time_on_demand() {
        let log = "2026-11-30T07:33:35.5Z ==> clone: init container started\n2026-11-30T07:33:35.987654321Z cloned\nno time\n2026-11-30T07:33:36Z ==> build: container started\n";
        assert_eq!(shape(log), [("clone", 1, 3), ("build", 4, 1)]);
        assert_eq!(steps(log, 1)[0].lines[2], (None, "no time"));
        let html = page(
            &view(Phase::Succeeded, None),
            &whole(log),
            Engine::Kubernetes,
        );
        assert!(html.contains("<li id=\"L2\"><a href=\"#L2\" aria-label=\"line 2\">2</a><time class=\"ts\" datetime=\"2026-11-30T07:33:35.987654321Z\" title=\"2026-11-30T07:33:35.987654321Z\">07:33:35.987</time><span>cloned</span></li>"), "{html}");
        assert!(html.contains("<li id=\"L3\"><a href=\"#L3\" aria-label=\"line 3\">3</a><span>no time</span></li>"), "{html}");
        assert!(
            html.contains("<input type=\"checkbox\" id=\"show-times\"> show times"),
            "{html}"
        );
    }

    #[test]
    fn lines_are_numbered_from_where_the_shown_tail_starts_and_linkable() {
        let tail = LogShown {
            text: "one\n\u{1b}[31mtwo\u{1b}[0m <b>\n",
            skipped_bytes: 900,
            skipped_lines: 40,
        };
        let html = page(&view(Phase::Succeeded, None), &tail, Engine::Local);
        assert!(html.contains("<li id=\"L41\"><a href=\"#L41\" aria-label=\"line 41\">41</a><span>one</span></li>"), "{html}");
        assert!(html.contains("<li id=\"L42\"><a href=\"#L42\" aria-label=\"line 42\">42</a><span><span class=\"c1\">two</span> &lt;b&gt;</span></li>"), "{html}");
        assert!(
            html.contains("(40 lines) of this log are not shown here"),
            "{html}"
        );
        assert!(html.contains("download=\"api-3.log\""), "{html}");
    }

    #[test]
    fn a_failure_says_why_first_with_a_hint_for_the_engine_that_ran_it() {
        let missing = view(
            Phase::Error,
            Some("CreateContainerConfigError: secret \"deploy-key\" not found"),
        );
        let local = page(&missing, &NO_LOG, Engine::Local);
        let at = |needle: &str| {
            local
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} in {local}"))
        };
        assert!(
            at("Why it stopped:") < at("<dl class=\"facts\">"),
            "the reason first"
        );
        assert!(
            local.contains("`--secrets DIR`") && local.contains("`deploy-key`"),
            "{local}"
        );
        assert!(
            !local.contains("kubectl"),
            "no cluster hints on a local build: {local}"
        );
        let cluster = page(&missing, &NO_LOG, Engine::Kubernetes);
        assert!(
            cluster.contains("Create the Secret `deploy-key` in namespace `ci`"),
            "{cluster}"
        );
        assert!(
            cluster.contains("kubectl -n ci logs job/api-3 -c build"),
            "{cluster}"
        );
        assert!(!page(&view(Phase::Succeeded, None), &NO_LOG, Engine::Local).contains("Why it"));
    }

    #[test]
    fn a_build_shows_the_version_of_the_job_it_ran_and_links_its_commit_and_pull_request() {
        let html = page(&view(Phase::Succeeded, None), &NO_LOG, Engine::Local);
        assert!(
            html.contains("<dd>chart 1.2.0 · spec 9f86d081884c</dd>"),
            "{html}"
        );
        assert!(html.contains("<a href=\"https://github.com/org/repo/commit/0123456789abcdef0123456789abcdef01234567\"><code>0123456789abcdef0123456789abcdef01234567</code></a>"), "{html}");
        assert!(html.contains("<a href=\"https://github.com/org/repo/pull/7\">#7</a>"));
        let mut hostile = view(Phase::Succeeded, None);
        hostile.commit = Some("\"><script>x</script>".into());
        let html = page(&hostile, &NO_LOG, Engine::Local);
        assert!(!html.contains("<script>x"), "{html}");
    }
}
