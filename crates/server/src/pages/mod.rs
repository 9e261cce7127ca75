//! The read-only web pages, rendered on the server from the API's views: the jobs list
//! ([`jobs`]), a job ([`job`], with its builds' pass-rate strip), a build with what it
//! left and its log ([`build`]; its Tests and Artifacts sections: `results`, `outputs`),
//! a test's history ([`test_history`]), sign-in, and status badges ([`badge`]). Every page has the same header ([`Chrome`]: kubeci, the namespace
//! filter, who is signed in) and one stylesheet (`style.css`, light and dark from the
//! browser's preference). The pages are `maud` templates, so every value from a job, a
//! build or a log is escaped unless it is marked `PreEscaped` — which only HTML kubeci
//! made itself is: a log line from [`crate::ansi`], the highlighted `job.yaml` (and a
//! build's sections kept rendered, [`LeftHtml`], made by these templates only). Every page
//! works without JavaScript; with it (`static/kubeci.js`) times stay current and a running
//! build's page follows its log and its end live.

mod badge;
mod build;
mod history;
mod job;
mod jobs;
mod outputs;
pub(crate) mod parts;
mod results;
mod yaml;

#[cfg(test)]
mod hostile;

pub use badge::badge;
pub use build::{build, BuildPage, LogShown};
pub use history::{history_path, test_history, SHOWN_HISTORY};
pub use job::{job, shown_diagnostic};
pub use jobs::{jobs, JobRow, JobsQuery, PAGE_SIZE, STRIP};
pub use outputs::{left_html, Left, LeftHtml, SHOWN_ARTIFACTS, SHOWN_REFUSED};
pub use parts::{repository_web, urlencode};
pub use results::{BuildAt, MAX_SECTION_BYTES, SHOWN_FAILURES, SHOWN_LISTED};

use maud::{html, Markup, DOCTYPE};

/// The pages' stylesheet, served as `/static/kubeci.css`.
pub const STYLE: &str = include_str!("style.css");

/// What the header of every page shows: who is signed in (and their form token, for
/// "Sign out"), the namespaces to filter by, and where "Sign in" leads back to.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// Who is signed in: a proxy's user, or `None` for the server's token
    /// (`signed_in` true) or no one.
    pub user: Option<String>,
    pub signed_in: bool,
    /// The signed-in session's CSRF token.
    pub csrf: Option<String>,
    /// The namespaces that have jobs, and the one the pages are filtered to.
    pub namespaces: Vec<String>,
    pub namespace: Option<String>,
    /// This page's path, for "Sign in" to come back to.
    pub here: String,
    /// Why archiving is behind, when builds wait to be archived (`--archive`).
    pub archive_behind: Option<String>,
}

impl Chrome {
    /// The header: kubeci, the namespace filter (a form: it works without a script), and
    /// who is signed in with "Sign out", or "Sign in".
    fn header(&self) -> Markup {
        html! {
            header class="top" {
                a class="brand" href="/" { "kubeci" }
                form method="get" action="/" role="search" {
                    label for="namespace" { "Namespace" }
                    " "
                    select id="namespace" name="namespace" {
                        option value="" { "all" }
                        @for ns in &self.namespaces {
                            option selected[self.namespace.as_ref() == Some(ns)] { (ns) }
                        }
                    }
                    " "
                    button { "Show" }
                }
                (self.who())
            }
            @if let Some(behind) = &self.archive_behind {
                p class="warning" id="archive-behind" role="status" { (behind) }
            }
        }
    }

    /// Who is signed in, with "Sign out"; or "Sign in".
    fn who(&self) -> Markup {
        html! {
            span class="who" {
                @match (&self.csrf, self.signed_in) {
                    (Some(csrf), true) => {
                        span id="signed-in" {
                            @match &self.user {
                                Some(user) => { "Signed in as " b { (user) } },
                                None => "Signed in with the server's token",
                            }
                        }
                        (parts::action_form("/logout", csrf, "Sign out", None))
                    }
                    _ => a id="sign-in" href={ "/login?next=" (urlencode(&self.here)) } { "Sign in" },
                }
            }
        }
    }
}

/// The page around `body`.
pub fn layout(title: &str, chrome: &Chrome, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · kubeci" }
                link rel="stylesheet" href="/static/kubeci.css";
            }
            body {
                (chrome.header())
                main { (body) }
                footer {
                    "kubeci is read-only here: jobs change through their ConfigMaps (their Helm charts), not in these pages."
                }
                script src="/static/kubeci.js" {}
            }
        }
    }
    .into_string()
}

/// The sign-in page; `next` is where to go afterwards.
pub fn login(next: &str, problem: Option<&str>) -> String {
    let chrome = Chrome {
        here: next.to_owned(),
        ..Chrome::default()
    };
    let body = html! {
        h1 { "Sign in" }
        @if let Some(problem) = problem {
            p class="problem" role="alert" { (problem) }
        }
        form method="post" action="/login" class="filters" {
            input type="hidden" name="next" value=(next);
            label for="token" { "The server's token" }
            " "
            input id="token" type="password" name="token" autocomplete="current-password";
            " "
            button class="primary" { "Sign in" }
        }
        p class="note" {
            "Starting and cancelling builds needs the token kubeci was given ("
            code { "--token-file" }
            "); everything else is open to read."
        }
    };
    layout("Sign in", &chrome, body)
}

/// A page that says what is not there.
pub fn not_found(chrome: &Chrome, what: &str) -> String {
    let body = html! {
        h1 { "Not found" }
        p { (what) }
        p { a href="/" { "All jobs" } }
    };
    layout("Not found", chrome, body)
}

/// A build that is archived and whose archive cannot be read: said on its page, the
/// other builds unaffected.
pub fn archive_unreadable(chrome: &Chrome, build: &str, why: &str) -> String {
    let body = html! {
        h1 { (build) }
        p class="warning" id="archive-error" { "This build is archived, and its archive cannot be read: " (why) }
        p { a href="/" { "All jobs" } }
    };
    layout(build, chrome, body)
}

/// A page that says why something was not done: `title`, then `why` as a problem.
pub fn problem(title: &str, why: &str) -> String {
    let body = html! {
        h1 { (title) }
        p class="problem" { (why) }
    };
    layout(title, &Chrome::default(), body)
}

/// A build for the pages' tests: number `number` of a job called `x`, in `state`, with
/// nothing else known; tests set what they show.
#[cfg(test)]
pub(crate) fn sample_build(
    number: u64,
    state: kubeci_engine::Phase,
) -> kubeci_engine::api::BuildView {
    kubeci_engine::api::BuildView {
        number,
        name: format!("x-{number}"),
        state,
        message: None,
        trigger: None,
        requested_by: None,
        commit: None,
        pull_request: None,
        spec_hash: None,
        chart_version: None,
        reported: Vec::new(),
        log_url: None,
        created_at: None,
        started_at: None,
        finished_at: None,
        tests: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_says_who_is_signed_in_and_offers_to_sign_out_or_in() {
        let anonymous = Chrome {
            here: "/jobs/ci/api".into(),
            namespaces: vec!["ci".into(), "<x>".into()],
            namespace: Some("ci".into()),
            ..Chrome::default()
        };
        let page = layout("t", &anonymous, html! {});
        assert!(
            page.contains("<a id=\"sign-in\" href=\"/login?next=%2Fjobs%2Fci%2Fapi\">Sign in</a>")
        );
        assert!(page.contains("<option selected>ci</option><option>&lt;x&gt;</option>"));
        assert!(!page.contains("Sign out"));
        let proxy = Chrome {
            user: Some("alice".into()),
            signed_in: true,
            csrf: Some("t0k".into()),
            ..anonymous.clone()
        };
        let page = layout("t", &proxy, html! {});
        assert!(page.contains("Signed in as <b>alice</b>"), "{page}");
        assert!(page.contains("action=\"/logout\"") && page.contains("value=\"t0k\""));
        let token = Chrome {
            user: None,
            ..proxy
        };
        assert!(layout("t", &token, html! {}).contains("Signed in with the server's token"));
    }
}
