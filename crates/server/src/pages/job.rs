//! A job's page: what it builds and when, its builds (who or what started each, the
//! commit, the pull request, when and how long), every finding about its spec as
//! `kubeci lint` prints it, and its `job.yaml` as written, highlighted.

use kubeci_engine::api::{BuildView, JobView};
use kubeci_spec::{LoadedJob, Severity};

use super::parts::{self, action_form, build_path, job_path, now, state, urlencode};
use super::{layout, yaml, Chrome};
use crate::ansi::escape;

/// A finding as `kubeci lint` prints it, with any credentials in URLs of its source line
/// masked: a page is read by more people than a terminal.
pub fn shown_diagnostic(d: &kubeci_spec::Diagnostic) -> String {
    let rendered = kubeci_spec::diagnostic::render(d, None);
    kubeci_spec::giturl::redact_credentials(rendered.trim_end()).into_owned()
}

/// The findings about a job's spec, errors first, each as `kubeci lint` prints it.
fn findings(declared: &LoadedJob) -> String {
    let shown = |severity: Severity, class: &str, title: &str| {
        let found: String = declared
            .diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .map(|d| format!("<pre class=\"diag\">{}</pre>", escape(&shown_diagnostic(d))))
            .collect();
        if found.is_empty() {
            String::new()
        } else {
            format!("<section class=\"{class}\" aria-label=\"{title}\"><p><b>{title}</b></p>{found}</section>")
        }
    };
    format!(
        "{}{}",
        shown(
            Severity::Error,
            "problem",
            "This job is invalid and does not build:"
        ),
        shown(Severity::Warning, "warning", "Warnings:")
    )
}

/// The builds table, or how to start the first build.
fn builds_table(
    job: &JobView,
    name: &str,
    builds: &[BuildView],
    web: Option<&str>,
    signed_in: bool,
) -> String {
    if builds.is_empty() {
        let how = if job.valid {
            format!(
                "{} Or with <code>kubeci trigger -n {} {} --server URL --token-file FILE</code>, or <code>POST /api/v1/jobs/{}/{}/builds</code> with the server's token.",
                if signed_in { "Start one with the button above." } else { "Sign in to start one here." },
                escape(&job.namespace),
                escape(name),
                escape(&urlencode(&job.namespace)),
                escape(&urlencode(name))
            )
        } else {
            "It builds once its spec is fixed.".to_owned()
        };
        let also = if job.triggers.len() > 1 {
            format!(
                " It also builds on: {}.",
                escape(&job.triggers[1..].join(", "))
            )
        } else {
            String::new()
        };
        return format!("<div class=\"empty\"><p><b>No builds yet.</b> {how}{also}</p></div>");
    }
    let now = now();
    let rows: String = builds
        .iter()
        .map(|b| {
            format!(
                "<tr><td><a href=\"{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"hide-narrow\">{}</td></tr>\n",
                build_path(&job.namespace, name, b.number),
                b.number,
                state(b.state),
                parts::cell(b.trigger.as_deref()),
                parts::started_by(b),
                parts::commit(web, b.commit.as_deref(), true),
                parts::pull_request(web, b.pull_request),
                parts::time(b.started_at.as_deref().or(b.created_at.as_deref()), now),
                parts::cell(b.duration(now).as_deref()),
                parts::cell(b.message.as_deref())
            )
        })
        .collect();
    format!(
        "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Builds\"><table><thead><tr><th scope=\"col\">Build</th><th scope=\"col\">State</th><th scope=\"col\">Trigger</th><th scope=\"col\">Started by</th><th scope=\"col\">Commit</th><th scope=\"col\">PR</th><th scope=\"col\">Started</th><th scope=\"col\">Duration</th><th scope=\"col\" class=\"hide-narrow\">Message</th></tr></thead><tbody>\n{rows}</tbody></table></div>"
    )
}

/// What the job is: repository, branch, triggers, chart and where it is declared.
fn facts(job: &JobView, web: Option<&str>) -> String {
    let repository = match (job.git_url.as_deref(), web) {
        (Some(url), Some(web)) => format!("<a href=\"{}\">{}</a>", escape(web), escape(url)),
        (url, _) => parts::cell(url),
    };
    let triggers = if job.valid {
        escape(&job.triggers.join(" · "))
    } else {
        "nothing while it is invalid".to_owned()
    };
    format!(
        "<dl class=\"facts\"><dt>Repository</dt><dd>{repository}</dd><dt>Branch</dt><dd>{}</dd>\
<dt>Builds on</dt><dd>{triggers}</dd><dt>Chart</dt><dd>{}</dd><dt>Declared in</dt><dd>{} · spec <code>{}</code></dd></dl>",
        parts::branch(web, job.branch.as_deref()),
        parts::cell(job.chart_version.as_deref()),
        parts::cell(job.configmap.as_deref()),
        escape(job.spec_hash.get(..12).unwrap_or(&job.spec_hash)),
    )
}

/// A job: what it is, every finding about it, its builds, and its spec as written.
/// `cannot_build`: why this engine cannot build it, said before anyone presses "Build
/// now".
pub fn job(
    declared: &LoadedJob,
    builds: &[BuildView],
    cannot_build: Option<&str>,
    chrome: &Chrome,
) -> String {
    let job = &JobView::of(declared);
    let name = job.name.as_deref().unwrap_or("(unnamed)");
    let path = job_path(&job.namespace, name);
    let web = job.git_url.as_deref().and_then(parts::repository_web);
    let web = web.as_deref();
    let build_now = match (&chrome.csrf, job.valid, cannot_build) {
        (Some(csrf), true, None) => {
            action_form(&format!("{path}/build"), csrf, "Build now", "primary")
        }
        (None, true, None) => format!(
            "<a href=\"/login?next={}\">Sign in to start builds</a>",
            escape(&urlencode(&path))
        ),
        _ => String::new(),
    };
    let cannot = cannot_build.map_or_else(String::new, |why| {
        format!(
            "<p class=\"warning\" id=\"cannot-build\"><b>This engine cannot build this job:</b> {}</p>",
            escape(why)
        )
    });
    layout(
        &format!("{}/{name}", job.namespace),
        chrome,
        &format!(
            "<h1>{}/{}</h1><div class=\"actions\">{build_now}<img alt=\"status badge: {}\" src=\"/badges/{}/{}.svg\" height=\"20\"></div>\n{}{}{cannot}\
<h2>Builds</h2>{}\n<h2>job.yaml</h2><p class=\"note\">As written in {}; change it there.</p><pre class=\"yaml\" tabindex=\"0\" aria-label=\"job.yaml\">{}</pre>",
            escape(&job.namespace),
            escape(name),
            builds.first().map_or("no builds", |b| b.state.as_str()),
            urlencode(&job.namespace),
            urlencode(name),
            facts(job, web),
            findings(declared),
            builds_table(job, name, builds, web, chrome.csrf.is_some()),
            parts::cell(job.configmap.as_deref()),
            yaml::highlight(&kubeci_spec::giturl::redact_credentials(&declared.source)),
        ),
    )
}
