//! The jobs page: every job with its last build (state, when, how long) and a strip of its
//! recent builds, filtered by namespace, state and text (all kept in the URL), a page of
//! [`PAGE_SIZE`] at a time.

use kubeci_engine::api::{BuildView, JobView};
use kubeci_engine::Phase;
use kubeci_spec::LoadedJob;

use maud::{html, Markup};

use super::parts::{self, build_path, job_path, now, state};
use super::{layout, Chrome};

/// Jobs shown on one page.
pub const PAGE_SIZE: usize = 100;

/// How many recent builds each job's strip shows.
pub const STRIP: usize = 10;

/// What the jobs page was asked for: its URL's query.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct JobsQuery {
    /// Text in the namespace, name, repository or triggers (case-insensitive).
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub namespace: String,
    /// `succeeded`, `failed` (failed or error), `running` (queued, pending or running),
    /// `aborted`, `never` (no build yet) or `invalid`; empty for all.
    #[serde(default)]
    pub state: String,
    /// The page, from 1.
    #[serde(default)]
    pub page: Option<usize>,
}

/// The states the filter offers: (value, label).
const STATES: [(&str, &str); 7] = [
    ("", "any state"),
    ("succeeded", "succeeded"),
    ("failed", "failed or error"),
    ("running", "queued or running"),
    ("aborted", "aborted"),
    ("never", "never built"),
    ("invalid", "invalid"),
];

/// Whether `text` contains `wanted` (lowercase) in any case; ASCII text (as names and URLs
/// mostly are) is compared where it lies, without a lowercased copy.
fn contains_lowercase(text: &str, wanted: &str) -> bool {
    if !text.is_ascii() {
        return text.to_lowercase().contains(wanted);
    }
    let (text, wanted) = (text.as_bytes(), wanted.as_bytes());
    wanted.is_empty()
        || text
            .windows(wanted.len())
            .any(|window| window.eq_ignore_ascii_case(wanted))
}

impl JobsQuery {
    /// Whether `job`, whose last build ended in state `last`, is asked for. Read from the
    /// declaration itself: the page builds views only of the jobs it shows.
    pub fn wants(&self, job: &LoadedJob, last: Option<Phase>) -> bool {
        self.matcher()(job, last)
    }

    /// [`JobsQuery::wants`], with what is worked out once per query (the text, lowercased)
    /// done once: the page asks it of every job.
    pub fn matcher(&self) -> impl Fn(&LoadedJob, Option<Phase>) -> bool + '_ {
        let wanted = self.q.trim().to_lowercase();
        move |job, last| self.matches(job, last, &wanted)
    }

    fn matches(&self, job: &LoadedJob, last: Option<Phase>, wanted: &str) -> bool {
        if !self.namespace.is_empty() && job.namespace != self.namespace {
            return false;
        }
        let valid = job.job.is_some();
        let state_matches = match (self.state.as_str(), valid, last) {
            ("", _, _) => true,
            ("invalid", valid, _) => !valid,
            (_, false, _) => false,
            ("never", _, last) => last.is_none(),
            ("failed", _, Some(s)) => matches!(s, Phase::Failed | Phase::Error),
            ("running", _, Some(s)) => !s.is_finished(),
            (wanted, _, Some(s)) => wanted == s.as_str(),
            (_, _, None) => false,
        };
        if !state_matches {
            return false;
        }
        if wanted.is_empty() {
            return true;
        }
        let has = |value: &str| contains_lowercase(value, wanted);
        let spec = job.job.as_ref();
        has(&job.namespace)
            || job.name.as_deref().is_some_and(has)
            || spec.is_some_and(|s| has(&kubeci_spec::redact::redact_url(&s.git.url)))
            || spec.is_some_and(|s| kubeci_engine::api::triggers(s).iter().any(|t| has(t)))
    }

    /// The page asked for, from 1.
    pub fn page(&self) -> usize {
        self.page.unwrap_or(1).max(1)
    }

    /// How many jobs come before the page asked for (however large a number it names).
    pub fn skipped(&self) -> usize {
        (self.page() - 1).saturating_mul(PAGE_SIZE)
    }

    /// This query's URL on page `page`.
    fn url(&self, page: usize) -> String {
        let mut url = format!("/?page={page}");
        for (key, value) in [
            ("q", &self.q),
            ("namespace", &self.namespace),
            ("state", &self.state),
        ] {
            if !value.is_empty() {
                url.push_str(&format!("&{key}={}", parts::urlencode(value)));
            }
        }
        url
    }
}

/// One job on the page, with its recent builds (newest first).
pub struct JobRow {
    pub job: JobView,
    pub recent: Vec<BuildView>,
}

/// The job's last build: a link with its state, when it ended (or started), and how long
/// it took; an invalid job says why instead.
fn last_build(row: &JobRow, name: &str, now: i64) -> Markup {
    let job = &row.job;
    if !job.valid {
        let first = job.errors.first().map_or("", String::as_str);
        return html! { (parts::invalid()) span class="sub" { (first) } };
    }
    let Some(build) = row.recent.first() else {
        return html! { span class="st st-never" { "never built" } };
    };
    let when = build
        .finished_at
        .as_deref()
        .or(build.started_at.as_deref())
        .or(build.created_at.as_deref());
    html! {
        a href=(build_path(&job.namespace, name, build.number)) { "#" (build.number) }
        " "
        (state(build.state))
        span class="sub" {
            (parts::time(when, now))
            @if let Some(took) = build.duration(now) { " · " (took) }
        }
    }
}

/// The recent builds as a strip of small links, oldest on the left.
fn strip(row: &JobRow, name: &str) -> Markup {
    html! {
        div class="strip" {
            @for b in row.recent.iter().take(STRIP).rev() {
                @let said = format!("#{} {}", b.number, b.state);
                a class={ "st-" (b.state.as_str()) }
                    href=(build_path(&row.job.namespace, name, b.number))
                    title=(said) {
                    span class="vh" { (said) }
                }
            }
        }
    }
}

/// The job's repository, linked to its web page when it has one, and its branch.
fn repository(job: &JobView) -> Markup {
    let Some(url) = job.git_url.as_deref() else {
        return parts::cell(None);
    };
    html! {
        @match parts::repository_web(url) {
            Some(web) => a href=(web) { (url) },
            None => (url),
        }
        @if let Some(branch) = &job.branch {
            span class="sub" { (branch) }
        }
    }
}

fn row(row: &JobRow, now: i64) -> Markup {
    let job = &row.job;
    let Some(name) = job.name.as_deref() else {
        // A declaration whose name cannot be read has no page: its ConfigMap stands in.
        let configmap = job.configmap.as_deref().unwrap_or("a job file");
        return html! {
            tr {
                td { (configmap) span class="sub" { (job.namespace) } }
                td { (last_build(row, "", now)) }
                td class="hide-narrow" {}
                td class="hide-narrow" { "–" }
                td class="hide-narrow" { "–" }
            }
        };
    };
    html! {
        tr {
            td {
                a href=(job_path(&job.namespace, name)) { (name) }
                span class="sub" {
                    (job.namespace)
                    @if let Some(chart) = &job.chart_version { " · chart " (chart) }
                }
            }
            td { (last_build(row, name, now)) }
            td class="hide-narrow" { (strip(row, name)) }
            td class="hide-narrow" { (repository(job)) }
            td class="hide-narrow" {
                @if job.triggers.is_empty() { "–" } @else { (job.triggers.join(", ")) }
            }
        }
    }
}

/// The filters: text and state (the namespace is the header's, carried along).
fn filters(query: &JobsQuery) -> Markup {
    html! {
        form class="filters" method="get" action="/" role="search" {
            input type="hidden" name="namespace" value=(query.namespace);
            label for="q" class="vh" { "Text" }
            input id="q" type="search" name="q" value=(query.q)
                placeholder="job, namespace, repository or trigger";
            label for="state" class="vh" { "State" }
            select id="state" name="state" {
                @for (value, said) in STATES {
                    option value=(value) selected[query.state == value] { (said) }
                }
            }
            " "
            button { "Filter" }
        }
    }
}

/// "Showing 1–100 of 2,345 jobs", with links to the pages before and after.
fn pager(query: &JobsQuery, shown: usize, total: usize) -> Markup {
    let page = query.page();
    let first = query.skipped();
    let said = if shown == 0 {
        format!("No job of {total} shown")
    } else {
        format!(
            "Showing {}–{} of {total} jobs",
            first.saturating_add(1),
            first.saturating_add(shown)
        )
    };
    html! {
        nav class="pager" aria-label="Pages" {
            span { (said) }
            @if page > 1 {
                a href=(query.url(page - 1)) rel="prev" { "← Previous page" }
            }
            @if first.saturating_add(shown) < total {
                a href=(query.url(page.saturating_add(1))) rel="next" { "Next page →" }
            }
        }
    }
}

/// The table of the page's jobs.
fn table(rows: &[JobRow], now: i64) -> Markup {
    html! {
        div class="scroll" tabindex="0" role="region" aria-label="Jobs" {
            table class="jobs" {
                thead {
                    tr {
                        th scope="col" { "Job" }
                        th scope="col" { "Last build" }
                        th scope="col" class="hide-narrow" { "Recent builds" }
                        th scope="col" class="hide-narrow" { "Repository" }
                        th scope="col" class="hide-narrow" { "Builds on" }
                    }
                }
                tbody {
                    @for r in rows { (row(r, now)) }
                }
            }
        }
    }
}

/// What the page says when there is no job at all: how to add one.
fn no_jobs() -> Markup {
    html! {
        div class="empty" {
            p {
                b { "No jobs yet." }
                " A job is a ConfigMap labelled " code { "ci-job-spec: \"true\"" }
                " with a " code { "job.yaml" }
                " key (usually from a Helm chart); in local mode, a file of such ConfigMaps in the jobs directory. "
                code { "kubeci new" } " writes one to start from."
            }
        }
    }
}

/// The jobs page: `rows` are the page's jobs, `total` how many matched `query` in all,
/// `any` whether there is any job at all.
pub fn jobs(
    rows: &[JobRow],
    total: usize,
    any: bool,
    query: &JobsQuery,
    chrome: &Chrome,
) -> String {
    let body = html! {
        h1 { "Jobs" }
        (filters(query))
        @if !any {
            (no_jobs())
        } @else {
            (pager(query, rows.len(), total))
            @if rows.is_empty() {
                div class="empty" {
                    p { "No job matches these filters. " a href="/" { "Show every job" } "." }
                }
            } @else {
                (table(rows, now()))
            }
        }
    };
    layout("Jobs", chrome, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_found_in_any_case() {
        assert!(contains_lowercase("Team-API", "api"));
        assert!(contains_lowercase(
            "https://GitHub.com/o/api.git",
            "github.com/o"
        ));
        assert!(contains_lowercase("ÄRGER-job", "ärger"), "beyond ASCII too");
        assert!(!contains_lowercase("api", "apis"));
        assert!(!contains_lowercase("", "a"));
        assert!(contains_lowercase("anything", ""));
    }

    fn job(namespace: &str, name: &str, valid: bool) -> JobView {
        JobView {
            namespace: namespace.into(),
            name: Some(name.into()),
            configmap: None,
            valid,
            errors: if valid {
                Vec::new()
            } else {
                vec!["job.yaml:3:5: error: no".into()]
            },
            warnings: Vec::new(),
            git_url: Some("https://github.com/o/r".into()),
            branch: Some("main".into()),
            chart_version: None,
            spec_hash: String::new(),
            triggers: vec!["manual (API, CLI)".into()],
        }
    }

    fn build(number: u64, state: Phase) -> BuildView {
        BuildView {
            started_at: Some("2026-11-30T05:00:00Z".into()),
            finished_at: Some("2026-11-30T05:01:12Z".into()),
            ..crate::pages::sample_build(number, state)
        }
    }

    fn asked(state: &str, q: &str, namespace: &str) -> JobsQuery {
        JobsQuery {
            q: q.into(),
            namespace: namespace.into(),
            state: state.into(),
            page: None,
        }
    }

    /// Job `name` of `namespace` as declared; `valid: false` gives it an error.
    fn declared(namespace: &str, name: &str, valid: bool) -> LoadedJob {
        let extra = if valid {
            ""
        } else {
            "    max_concurrency: lots\n"
        };
        let data = [(
            "job.yaml".to_owned(),
            format!("- job:\n    name: {name}\n    git: {{url: 'https://github.com/o/{name}'}}\n    run_command: make\n{extra}"),
        )]
        .into();
        kubeci_spec::load_configmap(
            kubeci_spec::ConfigMapData {
                namespace,
                name,
                labels: &Default::default(),
                data: &data,
            },
            &kubeci_spec::LoadOptions::default(),
        )
    }

    #[test]
    fn filters_by_namespace_state_and_text_together() {
        let (ok, failed, broken) = (
            declared("ci", "api", true),
            declared("web", "ui", true),
            declared("ci", "bad", false),
        );
        let wants = |query: &JobsQuery| {
            [
                (&ok, Some(Phase::Succeeded)),
                (&failed, Some(Phase::Error)),
                (&broken, None),
            ]
            .iter()
            .filter(|(j, l)| query.wants(j, *l))
            .map(|(j, _)| j.name.clone().unwrap())
            .collect::<Vec<_>>()
        };
        assert_eq!(wants(&asked("", "", "")), ["api", "ui", "bad"]);
        assert_eq!(wants(&asked("", "", "ci")), ["api", "bad"]);
        assert_eq!(
            wants(&asked("failed", "", "")),
            ["ui"],
            "error counts as failed"
        );
        assert_eq!(wants(&asked("invalid", "", "")), ["bad"]);
        assert_eq!(
            wants(&asked("never", "", "")),
            Vec::<String>::new(),
            "an invalid job is not 'never built'"
        );
        assert_eq!(wants(&asked("", "UI", "")), ["ui"]);
        assert_eq!(
            wants(&asked("", "github.com/o/api", "")),
            ["api"],
            "the repository"
        );
        assert_eq!(wants(&asked("", "manual", "web")), ["ui"], "a trigger");
        assert_eq!(
            wants(&asked("", "github.com/o/api", "")),
            ["api"],
            "the repository"
        );
        assert_eq!(
            wants(&asked("", "pull requests", "")),
            Vec::<String>::new(),
            "a trigger"
        );
        assert_eq!(wants(&asked("succeeded", "", "web")), Vec::<String>::new());
    }

    #[test]
    fn a_row_links_its_last_build_with_when_and_how_long_and_a_strip_of_recent_ones() {
        let rows = [JobRow {
            job: job("ci", "api", true),
            recent: (1..=12)
                .rev()
                .map(|n| {
                    build(
                        n,
                        if n % 2 == 0 {
                            Phase::Failed
                        } else {
                            Phase::Succeeded
                        },
                    )
                })
                .collect(),
        }];
        let page = jobs(&rows, 1, true, &asked("", "", ""), &Chrome::default());
        assert!(
            page.contains(
                "<a href=\"/jobs/ci/api/builds/12\">#12</a> <span class=\"st st-failed\">"
            ),
            "{page}"
        );
        assert!(
            page.contains("<time datetime=\"2026-11-30T05:01:12Z\""),
            "{page}"
        );
        assert!(page.contains(" · 1m 12s</span>"), "{page}");
        let strip: Vec<&str> = page.matches("<a class=\"st-").collect();
        assert_eq!(strip.len(), STRIP, "the last ten");
        let oldest = page.find("#3 succeeded</span>").unwrap();
        let newest = page.find("title=\"#12 failed\"").unwrap();
        assert!(oldest < newest, "oldest on the left");
        assert!(
            !page.contains("title=\"#2 "),
            "build 2 is not among the last ten"
        );
        assert!(page.contains("Showing 1–1 of 1 jobs"));
    }

    #[test]
    fn an_invalid_job_says_its_first_error_and_no_jobs_says_how_to_add_one() {
        let rows = [JobRow {
            job: job("ci", "bad", false),
            recent: Vec::new(),
        }];
        let page = jobs(&rows, 1, true, &asked("", "", ""), &Chrome::default());
        assert!(
            page.contains("st-invalid") && page.contains("job.yaml:3:5: error: no"),
            "{page}"
        );
        let mut unnamed = job("ci", "x", false);
        unnamed.name = None;
        unnamed.configmap = Some("ConfigMap ci/broken".into());
        let rows = [JobRow {
            job: unnamed,
            recent: Vec::new(),
        }];
        let page = jobs(&rows, 1, true, &asked("", "", ""), &Chrome::default());
        assert!(
            page.contains("<td>ConfigMap ci/broken<span class=\"sub\">ci</span></td>"),
            "{page}"
        );
        assert!(!page.contains("/jobs/ci/"), "no page to link to: {page}");
        let empty = jobs(&[], 0, false, &asked("", "", ""), &Chrome::default());
        assert!(
            empty.contains("No jobs yet") && empty.contains("ci-job-spec"),
            "{empty}"
        );
        let none = jobs(&[], 0, true, &asked("failed", "", ""), &Chrome::default());
        assert!(none.contains("No job matches these filters"), "{none}");
    }

    #[test]
    fn the_pager_keeps_the_filters_in_its_links() {
        let mut query = asked("failed", "a b", "ci");
        query.page = Some(2);
        let nav = pager(&query, PAGE_SIZE, 3 * PAGE_SIZE).into_string();
        assert!(nav.contains("Showing 101–200 of 300 jobs"), "{nav}");
        assert!(
            nav.contains("href=\"/?page=1&amp;q=a%20b&amp;namespace=ci&amp;state=failed\""),
            "{nav}"
        );
        assert!(nav.contains("href=\"/?page=3&amp;"), "{nav}");
        let far = JobsQuery {
            page: Some(usize::MAX),
            ..JobsQuery::default()
        };
        assert_eq!(far.skipped(), usize::MAX, "no overflow");
        assert!(pager(&far, 0, 5)
            .into_string()
            .contains("No job of 5 shown"));
    }
}
