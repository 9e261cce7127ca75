//! The read-only web pages, rendered on the server from the API's views: the jobs list
//! ([`jobs`]), a job ([`job`]), a build with its log ([`build`]), sign-in, and status
//! badges ([`badge`]). Every page has the same header ([`Chrome`]: kubeci, the namespace
//! filter, who is signed in) and one stylesheet (`style.css`, light and dark from the
//! browser's preference). Every value from a job, a build or a log is escaped; log colours
//! go through [`crate::ansi`]. Every page works without JavaScript; with it
//! (`static/kubeci.js`) times stay current and a running build's page follows its log and
//! its end live.

mod badge;
mod build;
mod job;
mod jobs;
pub(crate) mod parts;
mod yaml;

pub use badge::badge;
pub use build::{build, LogShown};
pub use job::{job, shown_diagnostic};
pub use jobs::{jobs, JobRow, JobsQuery, PAGE_SIZE, STRIP};
pub use parts::{repository_web, urlencode};

use crate::ansi::escape;

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
}

impl Chrome {
    /// The header: kubeci, the namespace filter (a form: it works without a script), and
    /// who is signed in with "Sign out", or "Sign in".
    fn header(&self) -> String {
        let options: String = self
            .namespaces
            .iter()
            .map(|ns| {
                let chosen = if self.namespace.as_deref() == Some(ns.as_str()) {
                    " selected"
                } else {
                    ""
                };
                format!("<option{chosen}>{}</option>", escape(ns))
            })
            .collect();
        let who = match (&self.csrf, self.signed_in) {
            (Some(csrf), true) => {
                let name = self.user.as_deref().map_or_else(
                    || "Signed in with the server's token".to_owned(),
                    |u| format!("Signed in as <b>{}</b>", escape(u)),
                );
                format!(
                    "<span class=\"who\"><span id=\"signed-in\">{name}</span>{}</span>",
                    parts::action_form("/logout", csrf, "Sign out", "")
                )
            }
            _ => format!(
                "<span class=\"who\"><a id=\"sign-in\" href=\"/login?next={}\">Sign in</a></span>",
                escape(&urlencode(&self.here))
            ),
        };
        format!(
            "<header class=\"top\"><a class=\"brand\" href=\"/\">kubeci</a>\
<form method=\"get\" action=\"/\" role=\"search\"><label for=\"namespace\">Namespace</label> <select id=\"namespace\" name=\"namespace\"><option value=\"\">all</option>{options}</select> <button>Show</button></form>{who}</header>"
        )
    }
}

/// The page around `body`.
pub fn layout(title: &str, chrome: &Chrome, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"color-scheme\" content=\"light dark\"><title>{} · kubeci</title><link rel=\"stylesheet\" href=\"/static/kubeci.css\"></head><body>{}\n<main>\n{body}\n</main>\n\
<footer>kubeci is read-only here: jobs change through their ConfigMaps (their Helm charts), not in these pages.</footer>\
<script src=\"/static/kubeci.js\"></script></body></html>\n",
        escape(title),
        chrome.header()
    )
}

/// The sign-in page; `next` is where to go afterwards.
pub fn login(next: &str, problem: Option<&str>) -> String {
    let chrome = Chrome {
        here: next.to_owned(),
        ..Chrome::default()
    };
    layout(
        "Sign in",
        &chrome,
        &format!(
            "<h1>Sign in</h1>{}<form method=\"post\" action=\"/login\" class=\"filters\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<label for=\"token\">The server's token</label> <input id=\"token\" type=\"password\" name=\"token\" autocomplete=\"current-password\"> <button class=\"primary\">Sign in</button></form>\
<p class=\"note\">Starting and cancelling builds needs the token kubeci was given (<code>--token-file</code>); everything else is open to read.</p>",
            problem.map_or_else(String::new, |p| format!("<p class=\"problem\" role=\"alert\">{}</p>", escape(p))),
            escape(next)
        ),
    )
}

/// A page that says what is not there.
pub fn not_found(chrome: &Chrome, what: &str) -> String {
    layout(
        "Not found",
        chrome,
        &format!(
            "<h1>Not found</h1><p>{}</p><p><a href=\"/\">All jobs</a></p>",
            escape(what)
        ),
    )
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
        let page = layout("t", &anonymous, "");
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
        let page = layout("t", &proxy, "");
        assert!(page.contains("Signed in as <b>alice</b>"), "{page}");
        assert!(page.contains("action=\"/logout\"") && page.contains("value=\"t0k\""));
        let token = Chrome {
            user: None,
            ..proxy
        };
        assert!(layout("t", &token, "").contains("Signed in with the server's token"));
    }
}
