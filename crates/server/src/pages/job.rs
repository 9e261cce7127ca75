//! A job's page: what it builds and when, its builds (who or what started each, the
//! commit, the pull request, when and how long), every finding about its spec as
//! `kubeci lint` prints it, and its `job.yaml` as written, highlighted.

use kubeci_engine::api::{BuildView, BuildsPage, JobView};
use kubeci_spec::{LoadedJob, Severity};

use maud::{html, Markup};

use super::parts::{self, action_form, build_path, job_path, now, state, urlencode};
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
