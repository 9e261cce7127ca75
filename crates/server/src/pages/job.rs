//! A job's page: what it builds and when, its builds (who or what started each, the
//! commit, the pull request, when and how long), every finding about its spec as
//! `kubeci lint` prints it, and its `job.yaml` as written, highlighted.

use kubeci_engine::api::{BuildView, BuildsPage, JobView};
use kubeci_results::Counts;
use kubeci_spec::{LoadedJob, Severity};

use maud::{html, Markup};

use super::parts::{self, action_form, build_path, job_path, now, state, thousands, urlencode};
use super::{layout, yaml, Chrome};

/// A finding as `kubeci lint` prints it, with any credentials in URLs of its source line
/// masked: a page is read by more people than a terminal.
pub fn shown_diagnostic(d: &kubeci_spec::Diagnostic) -> String {
    let rendered = kubeci_spec::diagnostic::render(d, None);
    kubeci_spec::giturl::redact_credentials(rendered.trim_end()).into_owned()
}

/// The findings of one severity, each as `kubeci lint` prints it, under `title`.
fn findings_of(declared: &LoadedJob, severity: Severity, class: &str, title: &str) -> Markup {
    let mut found = declared
        .diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .peekable();
    if found.peek().is_none() {
        return html! {};
    }
    html! {
        section class=(class) aria-label=(title) {
            p { b { (title) } }
            @for d in found {
                pre class="diag" { (shown_diagnostic(d)) }
            }
        }
    }
}

/// The findings about a job's spec, errors first.
fn findings(declared: &LoadedJob) -> Markup {
    html! {
        (findings_of(declared, Severity::Error, "problem", "This job is invalid and does not build:"))
        (findings_of(declared, Severity::Warning, "warning", "Warnings:"))
    }
}

/// How to start the first build, when there is none.
fn no_builds(job: &JobView, name: &str, signed_in: bool) -> Markup {
    html! {
        div class="empty" {
            p {
                b { "No builds yet." }
                " "
                @if !job.valid {
                    "It builds once its spec is fixed."
                } @else {
                    @if signed_in { "Start one with the button above." } @else { "Sign in to start one here." }
                    " Or with "
                    code { "kubeci trigger -n " (job.namespace) " " (name) " --server URL --token-file FILE" }
                    ", or "
                    code { "POST /api/v1/jobs/" (urlencode(&job.namespace)) "/" (urlencode(name)) "/builds" }
                    " with the server's token."
                }
                @if job.triggers.len() > 1 {
                    " It also builds on: " (job.triggers[1..].join(", ")) "."
                }
            }
        }
    }
}

/// A build's tests as words: `412 passed, 3 failed` (errored ones counted as failed; the
/// skipped and the flaky said when there are some).
fn tests_said(counts: &Counts) -> String {
    let mut said = format!(
        "{} passed, {} failed",
        thousands(counts.passed.saturating_add(counts.flaky)),
        thousands(counts.failures())
    );
    if counts.flaky > 0 {
        said.push_str(&format!(" ({} flaky)", thousands(counts.flaky)));
    }
    if counts.skipped > 0 {
        said.push_str(&format!(", {} skipped", thousands(counts.skipped)));
    }
    said
}

/// How tall a build's bar in the pass-rate strip is, in pixels.
const BAR: u64 = 24;

/// One build's bar: its failed share in red on top of its passed share in green, as tall
/// as the strip (an empty bar for a build without test results). Drawn, so it needs no
/// style attribute (the pages' policy allows none).
fn bar(counts: Option<&Counts>) -> Markup {
    let (passed, failed) =
        counts.map_or((0, 0), |c| (c.passed.saturating_add(c.flaky), c.failures()));
    let run = passed.saturating_add(failed);
    let red = match (failed, run) {
        (0, _) | (_, 0) => 0,
        (failed, run) => (failed.saturating_mul(BAR) / run).max(1),
    };
    html! {
        svg width="12" height=(BAR) viewBox={ "0 0 12 " (BAR) } aria-hidden="true" focusable="false" {
            @if run == 0 {
                rect class="none" x="0" y="0" width="12" height=(BAR) {}
            } @else {
                rect class="bad" x="0" y="0" width="12" height=(red) {}
                rect class="ok" x="0" y=(red) width="12" height=(BAR - red) {}
            }
        }
    }
}

/// The pass-rate strip of the builds shown, oldest on the left: each a bar linking to its
/// Tests section, its counts in words beside it for screen readers and on hover (colour
/// is never the only sign). Nothing when none of them has test results.
fn passrate(namespace: &str, name: &str, builds: &[BuildView]) -> Markup {
    if builds.iter().all(|b| b.tests.is_none()) {
        return html! {};
    }
    html! {
        div class="passrate" {
            span class="sub" aria-hidden="true" { "Tests, oldest first:" }
            ol id="passrate" aria-label="Test results of the builds shown, oldest first" {
                @for b in builds.iter().rev() {
                    @let said = match &b.tests {
                        Some(counts) => format!("#{}: {}", b.number, tests_said(counts)),
                        None => format!("#{}: no test results", b.number),
                    };
                    li {
                        a href={ (build_path(namespace, name, b.number)) "#tests" } title=(said) {
                            (bar(b.tests.as_ref()))
                            span class="vh" { (said) }
                        }
                    }
                }
            }
        }
    }
}

/// The builds table, or how to start the first build.
fn builds_table(
    job: &JobView,
    name: &str,
    builds: &[BuildView],
    web: Option<&str>,
    signed_in: bool,
) -> Markup {
    if builds.is_empty() {
        return no_builds(job, name, signed_in);
    }
    let now = now();
    let columns = [
        "Build",
        "State",
        "Trigger",
        "Started by",
        "Commit",
        "PR",
        "Started",
        "Duration",
        "Tests",
    ];
    html! {
        div class="scroll" tabindex="0" role="region" aria-label="Builds" {
            table {
                thead {
                    tr {
                        @for column in columns { th scope="col" { (column) } }
                        th scope="col" class="hide-narrow" { "Message" }
                    }
                }
                tbody {
                    @for b in builds {
                        tr {
                            td { a href=(build_path(&job.namespace, name, b.number)) { "#" (b.number) } }
                            td { (state(b.state)) }
                            td { (parts::cell(b.trigger.as_deref())) }
                            td { (parts::started_by(b)) }
                            td { (parts::commit(web, b.commit.as_deref(), true)) }
                            td { (parts::pull_request(web, b.pull_request)) }
                            td { (parts::time(b.started_at.as_deref().or(b.created_at.as_deref()), now)) }
                            td { (parts::cell(b.duration(now).as_deref())) }
                            td { (parts::cell(b.tests.as_ref().map(tests_said).as_deref())) }
                            td class="hide-narrow" { (parts::cell(b.message.as_deref())) }
                        }
                    }
                }
            }
        }
    }
}

/// What the job is: repository, branch, triggers, chart and where it is declared.
fn facts(job: &JobView, web: Option<&str>) -> Markup {
    html! {
        dl class="facts" {
            dt { "Repository" }
            dd {
                @match (job.git_url.as_deref(), web) {
                    (Some(url), Some(web)) => a href=(web) { (url) },
                    (url, _) => (parts::cell(url)),
                }
            }
            dt { "Branch" }
            dd { (parts::branch(web, job.branch.as_deref())) }
            dt { "Builds on" }
            dd {
                @if job.valid { (job.triggers.join(" · ")) } @else { "nothing while it is invalid" }
            }
            dt { "Chart" }
            dd { (parts::cell(job.chart_version.as_deref())) }
            dt { "Declared in" }
            dd {
                (parts::cell(job.configmap.as_deref()))
                " · spec "
                code { (job.spec_hash.get(..12).unwrap_or(&job.spec_hash)) }
            }
        }
    }
}

/// "Build now" for a signed-in user, "Sign in to start builds" for anyone else, nothing
/// for a job that cannot build.
fn build_now(job: &JobView, path: &str, cannot_build: Option<&str>, chrome: &Chrome) -> Markup {
    html! {
        @match (&chrome.csrf, job.valid, cannot_build) {
            (Some(csrf), true, None) => {
                (action_form(&format!("{path}/build"), csrf, "Build now", Some("primary")))
            }
            (None, true, None) => {
                a href={ "/login?next=" (urlencode(path)) } { "Sign in to start builds" }
            }
            _ => {}
        }
    }
}

/// A job: what it is, every finding about it, its builds, and its spec as written.
/// `cannot_build`: why this engine cannot build it, said before anyone presses "Build
/// now".
pub fn job(
    declared: &LoadedJob,
    page: &BuildsPage,
    cannot_build: Option<&str>,
    chrome: &Chrome,
) -> String {
    let builds = &page.builds[..];
    let job = &JobView::of(declared);
    let name = job.name.as_deref().unwrap_or("(unnamed)");
    let path = job_path(&job.namespace, name);
    let web = job.git_url.as_deref().and_then(parts::repository_web);
    let web = web.as_deref();
    let last = builds.first().map_or("no builds", |b| b.state.as_str());
    let body = html! {
        h1 { (job.namespace) "/" (name) }
        div class="actions" {
            (build_now(job, &path, cannot_build, chrome))
            img alt={ "status badge: " (last) }
                src={ "/badges/" (urlencode(&job.namespace)) "/" (urlencode(name)) ".svg" }
                height="20";
        }
        (facts(job, web))
        (findings(declared))
        @if let Some(why) = cannot_build {
            p class="warning" id="cannot-build" {
                b { "This engine cannot build this job:" } " " (why)
            }
        }
        h2 { "Builds" }
        @if let Some(error) = &page.archive_error {
            p class="warning" id="archive-error" {
                "Archived builds may be missing: the archive cannot be read now (" (error) ")."
            }
        }
        (passrate(&job.namespace, name, builds))
        (builds_table(job, name, builds, web, chrome.csrf.is_some()))
        @if let (true, Some(last)) = (page.more, builds.last()) {
            p { a id="older-builds" href={ (path) "?before=" (last.number) } { "Older builds" } }
        }
        h2 { "job.yaml" }
        p class="note" { "As written in " (parts::cell(job.configmap.as_deref())) "; change it there." }
        pre class="yaml" tabindex="0" aria-label="job.yaml" {
            (yaml::highlight(&kubeci_spec::giturl::redact_credentials(&declared.source)))
        }
    };
    layout(&format!("{}/{name}", job.namespace), chrome, body)
}

#[cfg(test)]
mod tests {
    use kubeci_engine::Phase;

    use super::*;

    fn declared() -> LoadedJob {
        let data = [(
            "job.yaml".to_owned(),
            "- job:\n    name: api\n    git: {url: 'https://github.com/o/api'}\n    run_command: make\n"
                .to_owned(),
        )]
        .into();
        kubeci_spec::load_configmap(
            kubeci_spec::ConfigMapData {
                namespace: "ci",
                name: "api",
                labels: &Default::default(),
                data: &data,
            },
            &kubeci_spec::LoadOptions::default(),
        )
    }

    fn with_tests(number: u64, passed: u64, failed: u64) -> BuildView {
        BuildView {
            tests: Some(Counts {
                passed,
                failed,
                ..Counts::default()
            }),
            ..crate::pages::sample_build(number, Phase::Failed)
        }
    }

    fn page(builds: Vec<BuildView>) -> String {
        let page = BuildsPage {
            builds,
            more: false,
            archive_error: None,
        };
        job(&declared(), &page, None, &Chrome::default())
    }

    #[test]
    fn the_pass_rate_strip_shows_each_build_s_counts_drawn_and_in_words() {
        let html = page(vec![
            with_tests(3, 1, 3),
            crate::pages::sample_build(2, Phase::Running),
            with_tests(1, 412, 0),
        ]);
        let strip = &html[html.find("<ol id=\"passrate\"").expect("a strip")..];
        let strip = &strip[..strip.find("</ol>").unwrap()];
        let said: Vec<&str> = strip
            .split("<span class=\"vh\">")
            .skip(1)
            .map(|s| &s[..s.find('<').unwrap()])
            .collect();
        assert_eq!(
            said,
            [
                "#1: 412 passed, 0 failed",
                "#2: no test results",
                "#3: 1 passed, 3 failed"
            ],
            "oldest first, each in words: {strip}"
        );
        assert!(
            strip.contains("<a href=\"/jobs/ci/api/builds/3#tests\" title=\"#3: 1 passed, 3 failed\"><svg width=\"12\" height=\"24\" viewBox=\"0 0 12 24\" aria-hidden=\"true\" focusable=\"false\"><rect class=\"bad\" x=\"0\" y=\"0\" width=\"12\" height=\"18\"></rect><rect class=\"ok\" x=\"0\" y=\"18\" width=\"12\" height=\"6\"></rect></svg>"),
            "three quarters red: {strip}"
        );
        assert!(
            html.contains("<td>1 passed, 3 failed</td>"),
            "the table says it too: {html}"
        );
        assert!(!page(vec![crate::pages::sample_build(1, Phase::Succeeded)]).contains("passrate"));
    }

    #[test]
    fn one_failure_among_many_still_shows_and_the_rest_is_said() {
        assert_eq!(
            tests_said(&Counts {
                passed: 99_990,
                flaky: 10,
                failed: 1,
                errored: 1,
                skipped: 5
            }),
            "100,000 passed, 2 failed (10 flaky), 5 skipped"
        );
        let thin = bar(Some(&Counts {
            passed: 100_000,
            failed: 1,
            ..Counts::default()
        }))
        .into_string();
        assert!(
            thin.contains("class=\"bad\" x=\"0\" y=\"0\" width=\"12\" height=\"1\""),
            "{thin}"
        );
    }
}
