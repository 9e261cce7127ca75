//! The read-only web pages, rendered on the server from the API's views: the jobs list, a
//! job's builds, a build with its log, and status badges. Every value from a job, a build
//! or a log is escaped; log colours go through [`crate::ansi`]. Every page works without
//! JavaScript; with it (`static/kubeci.js`) a running build's page follows its log and its
//! end live.

use kubeci_engine::api::{BuildView, JobView};

use crate::ansi::{escape, line_to_html};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328}\
table{border-collapse:collapse}td,th{padding:.3rem .8rem;text-align:left;border-bottom:1px solid #d0d7de}\
.state{font-weight:600}.succeeded{color:#1a7f37}.failed,.error{color:#cf222e}.aborted{color:#6e7781}\
.running,.pending,.queued{color:#9a6700}pre.log{background:#0d1117;color:#e6edf3;padding:1rem;overflow-x:auto}\
.b{font-weight:700}.c0{color:#6e7681}.c1{color:#ff7b72}.c2{color:#3fb950}.c3{color:#d29922}.c4{color:#58a6ff}\
.c5{color:#bc8cff}.c6{color:#39c5cf}.c7{color:#b1bac4}.c8{color:#8b949e}.c9{color:#ffa198}.c10{color:#56d364}\
.c11{color:#e3b341}.c12{color:#79c0ff}.c13{color:#d2a8ff}.c14{color:#56d4dd}.c15{color:#f0f6fc}\
.note{color:#57606a;font-size:.9rem}";

/// The page around `body`.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{} · kubeci</title><style>{STYLE}</style></head><body><nav><a href=\"/\">kubeci</a></nav>\n{body}\n\
<p class=\"note\">kubeci is read-only here: jobs change through their ConfigMaps (their Helm charts), not in this page.</p>\
<script src=\"/static/kubeci.js\"></script></body></html>\n",
        escape(title)
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn cell(value: Option<&str>) -> String {
    value.map_or_else(|| "–".to_owned(), escape)
}

fn state(state: &str) -> String {
    format!("<span class=\"state {0}\">{0}</span>", escape(state))
}

/// The build page's state, which the live log updates when the build ends.
fn live_state(state: &str) -> String {
    format!(
        "<span class=\"state {0}\" id=\"state\">{0}</span>",
        escape(state)
    )
}

/// The web page of a job's repository (`https://host/owner/name`), for links to commits
/// and pull requests; `None` for a local path.
pub fn repository_web(git_url: &str) -> Option<String> {
    let key = kubeci_spec::giturl::GitUrl::parse(git_url)
        .ok()?
        .repository_key()?;
    Some(format!("https://{key}"))
}

/// A commit, linked to its page in the repository when there is one.
fn commit_cell(web: Option<&str>, commit: Option<&str>, short: bool) -> String {
    let Some(commit) = commit else {
        return "–".to_owned();
    };
    let shown = if short {
        commit.get(..12).unwrap_or(commit)
    } else {
        commit
    };
    match web {
        Some(web) => format!(
            "<a href=\"{}/commit/{}\">{}</a>",
            escape(web),
            urlencode(commit),
            escape(shown)
        ),
        None => escape(shown),
    }
}

/// A pull request number, linked to its page when the repository has one.
fn pull_request_cell(web: Option<&str>, number: Option<u64>) -> String {
    match (web, number) {
        (_, None) => "–".to_owned(),
        (Some(web), Some(n)) => format!("<a href=\"{}/pull/{n}\">#{n}</a>", escape(web)),
        (None, Some(n)) => format!("#{n}"),
    }
}

fn job_path(namespace: &str, name: &str) -> String {
    format!("/jobs/{}/{}", urlencode(namespace), urlencode(name))
}

/// A path segment, percent-encoded.
pub fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The jobs list; `query` filters by namespace, name, repository or trigger
/// (case-insensitive).
pub fn jobs(jobs: &[(JobView, Option<BuildView>)], query: &str) -> String {
    let wanted = query.to_lowercase();
    let rows: String = jobs
        .iter()
        .filter(|(job, _)| {
            let fields = [Some(&job.namespace), job.name.as_ref(), job.git_url.as_ref()];
            wanted.is_empty()
                || fields
                    .into_iter()
                    .flatten()
                    .chain(&job.triggers)
                    .any(|v| v.to_lowercase().contains(&wanted))
        })
        .map(|(job, last)| {
            let name = job.name.as_deref().unwrap_or("(unnamed)");
            let result = match (job.valid, last) {
                (false, _) => "<span class=\"state error\">invalid</span>".to_owned(),
                (true, Some(build)) => format!("#{} {}", build.number, state(build.state)),
                (true, None) => "–".to_owned(),
            };
            format!(
                "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&job.namespace),
                job_path(&job.namespace, name),
                escape(name),
                cell(job.git_url.as_deref()),
                cell(job.branch.as_deref()),
                cell(job.chart_version.as_deref()),
                if job.triggers.is_empty() {
                    "–".to_owned()
                } else {
                    escape(&job.triggers.join(", "))
                },
                result
            )
        })
        .collect();
    layout(
        "Jobs",
        &format!(
            "<h1>Jobs</h1><form method=\"get\" action=\"/\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"namespace, job, repository or trigger\"> <button>Filter</button></form>\n\
<table><thead><tr><th>Namespace</th><th>Job</th><th>Repository</th><th>Branch</th><th>Chart</th><th>Triggers</th><th>Last build</th></tr></thead><tbody>\n{rows}</tbody></table>",
            escape(query)
        ),
    )
}

/// A form that posts `action` with the session's CSRF token.
fn action_form(action: &str, csrf: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\" class=\"action\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>{}</button></form>",
        escape(csrf),
        escape(label)
    )
}

/// The sign-in page; `next` is where to go afterwards.
pub fn login(next: &str, problem: Option<&str>) -> String {
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>{}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
<label>The server's token <input type=\"password\" name=\"token\" autocomplete=\"current-password\"></label> <button>Sign in</button></form>\
<p class=\"note\">Starting and cancelling builds needs the token kubeci was given (--token-file).</p>",
            problem.map_or_else(String::new, |p| format!("<p class=\"state error\">{}</p>", escape(p))),
            escape(next)
        ),
    )
}

/// A job: its triggers, its builds, and its spec as written (read-only). `csrf`: the
/// signed-in session's token, which offers "Build now".
pub fn job(declared: &kubeci_spec::LoadedJob, builds: &[BuildView], csrf: Option<&str>) -> String {
    let job = &JobView::of(declared);
    let name = job.name.as_deref().unwrap_or("(unnamed)");
    let triggers = if job.valid {
        job.triggers
            .iter()
            .map(|t| escape(t))
            .collect::<Vec<_>>()
            .join(" · ")
    } else {
        "none (invalid)".to_owned()
    };
    let path = job_path(&job.namespace, name);
    let web = job.git_url.as_deref().and_then(repository_web);
    let web = web.as_deref();
    let actions = match (csrf, job.valid) {
        (Some(csrf), true) => format!(
            "{}{}",
            action_form(&format!("{path}/build"), csrf, "Build now"),
            action_form("/logout", csrf, "Sign out")
        ),
        (Some(csrf), false) => action_form("/logout", csrf, "Sign out"),
        (None, _) => format!(
            "<p><a href=\"/login?next={}\">Sign in</a> to start builds.</p>",
            escape(&urlencode(&path))
        ),
    };
    let errors: String = job
        .errors
        .iter()
        .map(|e| format!("<li><code>{}</code></li>", escape(e)))
        .collect();
    let rows: String = builds
        .iter()
        .map(|b| {
            format!(
                "<tr><td><a href=\"{}/builds/{}\">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                job_path(&job.namespace, name),
                b.number,
                b.number,
                state(b.state),
                cell(b.duration(now()).as_deref()),
                cell(b.trigger.as_deref()),
                commit_cell(web, b.commit.as_deref(), true),
                pull_request_cell(web, b.pull_request),
                cell(b.chart_version.as_deref()),
                cell(b.message.as_deref())
            )
        })
        .collect();
    layout(
        &format!("{}/{name}", job.namespace),
        &format!(
            "<h1>{}/{}</h1><p>Repository {} · branch {} · chart {} · spec {} · <img alt=\"status\" src=\"/badges/{}/{}.svg\"></p>\n{}\
<p>Builds on: {triggers}</p>{actions}\
<table><thead><tr><th>Build</th><th>State</th><th>Duration</th><th>Trigger</th><th>Commit</th><th>PR</th><th>Chart</th><th>Message</th></tr></thead><tbody>\n{rows}</tbody></table>\n\
<h2>job.yaml</h2><p class=\"note\">As written in {}; change it there.</p><pre>{}</pre>",
            escape(&job.namespace),
            escape(name),
            cell(job.git_url.as_deref()),
            cell(job.branch.as_deref()),
            cell(job.chart_version.as_deref()),
            escape(job.spec_hash.get(..12).unwrap_or(&job.spec_hash)),
            urlencode(&job.namespace),
            urlencode(name),
            if errors.is_empty() {
                String::new()
            } else {
                format!("<p>This job is invalid and does not build:</p><ul>{errors}</ul>")
            },
            cell(job.configmap.as_deref()),
            escape(&kubeci_spec::giturl::redact_credentials(&declared.source)),
        ),
    )
}

/// What the build page shows of a log: its end, and how much comes before it.
pub struct LogShown<'a> {
    pub text: &'a str,
    pub skipped_bytes: u64,
}

/// A build, its log (live while it runs), and how to look at it in the cluster; `web`: its
/// repository's page ([`repository_web`]), for links to the commit and pull request. `csrf`:
/// the signed-in session's token, which offers "Cancel" while the build runs and
/// "Rebuild" (the same commit, branch and pull request) once it has ended.
pub fn build(
    namespace: &str,
    job: &str,
    build: &BuildView,
    log: &LogShown<'_>,
    web: Option<&str>,
    csrf: Option<&str>,
) -> String {
    let live = matches!(build.state, "queued" | "pending" | "running");
    layout(
        &format!("{namespace}/{job} #{}", build.number),
        &format!(
            "<h1><a href=\"{}\">{}/{}</a> #{}</h1><p id=\"state-line\">{}<span id=\"message\">{}</span></p>\n{}\n{}{}",
            job_path(namespace, job),
            escape(namespace),
            escape(job),
            build.number,
            live_state(build.state),
            build
                .message
                .as_deref()
                .map_or_else(String::new, |m| format!(": {}", escape(m))),
            build_facts(build, web),
            build_actions(namespace, job, build, csrf, live),
            build_log(namespace, job, build, log, live),
        ),
    )
}

/// The table of a build's facts; the cells with an id are updated live.
fn build_facts(build: &BuildView, web: Option<&str>) -> String {
    format!(
        "<table>\
<tr><th>Requested</th><td>{}</td></tr><tr><th>Started</th><td id=\"started\">{}</td></tr><tr><th>Finished</th><td id=\"finished\">{}</td></tr><tr><th>Duration</th><td id=\"duration\">{}</td></tr>\
<tr><th>Trigger</th><td>{}</td></tr><tr><th>Requested by</th><td>{}</td></tr>\
<tr><th>Commit</th><td id=\"commit\">{}</td></tr><tr><th>Pull request</th><td>{}</td></tr>\
<tr><th>Job version</th><td>chart {} · spec {}</td></tr>\
<tr><th>Reported</th><td>{}</td></tr></table>",
        cell(build.created_at.as_deref()),
        cell(build.started_at.as_deref()),
        cell(build.finished_at.as_deref()),
        cell(build.duration(now()).as_deref()),
        cell(build.trigger.as_deref()),
        cell(build.requested_by.as_deref()),
        commit_cell(web, build.commit.as_deref(), false),
        pull_request_cell(web, build.pull_request),
        cell(build.chart_version.as_deref()),
        cell(build.spec_hash.as_deref().map(|h| h.get(..12).unwrap_or(h))),
        escape(&build.reported.join(", ")),
    )
}

/// "Cancel" or "Rebuild" for a signed-in user (`csrf`). A live build offers "Cancel", and
/// "Rebuild" hidden: the page's script swaps them when the build ends, so the page never
/// offers to cancel a finished build.
fn build_actions(
    namespace: &str,
    job: &str,
    build: &BuildView,
    csrf: Option<&str>,
    live: bool,
) -> String {
    let action = |verb: &str, label: &str, csrf: &str| {
        let path = job_path(namespace, job);
        action_form(
            &format!("{path}/builds/{}/{verb}", build.number),
            csrf,
            label,
        )
    };
    match csrf {
        Some(csrf) if live => format!(
            "<span id=\"cancel\">{}</span><span id=\"rebuild\" hidden>{}</span>",
            action("cancel", "Cancel", csrf),
            action("rebuild", "Rebuild", csrf)
        ),
        Some(csrf) => action("rebuild", "Rebuild", csrf),
        None => String::new(),
    }
}

/// The log's shown end (followed while `live`), the links to the whole log and to the log
/// store, and how to look at the build with `kubectl`.
fn build_log(
    namespace: &str,
    job: &str,
    build: &BuildView,
    log: &LogShown<'_>,
    live: bool,
) -> String {
    let (events, follow) = if live {
        (
            format!(
                " data-events=\"{}/builds/{}/events\"",
                job_path(namespace, job),
                build.number
            ),
            "<p><label><input type=\"checkbox\" id=\"follow\" checked> follow the log</label> <span id=\"live\">live</span></p>",
        )
    } else {
        (String::new(), "")
    };
    let lines: String = log.text.lines().map(|l| line_to_html(l) + "\n").collect();
    let whole_log = format!(
        "{}/builds/{}/log",
        job_path(namespace, job).replacen("/jobs/", "/api/v1/jobs/", 1),
        build.number
    );
    let cut = if log.skipped_bytes > 0 {
        format!(
            "<p class=\"note\" id=\"log-cut\">The first {} of this log are not shown here: <a href=\"{whole_log}\">the whole log</a>.</p>",
            human_bytes(log.skipped_bytes)
        )
    } else {
        String::new()
    };
    let store = build.log_url.as_deref().map_or_else(String::new, |url| {
        format!(
            " · <a href=\"{}\" rel=\"noreferrer\">the log in the log store</a>",
            escape(url)
        )
    });
    format!(
        "{follow}{cut}<pre class=\"log\" id=\"log\"{events}>{lines}</pre>\n\
<p class=\"note\"><a href=\"{whole_log}\">The whole log</a> (plain text). In the cluster: <code>kubectl -n {ns} get job {name}</code> · <code>kubectl -n {ns} logs job/{name} -c build</code>{store}</p>",
        ns = escape(namespace),
        name = escape(&build.name),
    )
}

/// `bytes` for people: `812 bytes`, `3.4 KB`, `59.6 MB`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b < 1000 => format!("{b} bytes"),
        b if b < 1_000_000 => format!("{:.1} KB", b as f64 / 1e3),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// An SVG status badge: `label | state`.
pub fn badge(label: &str, state: Option<&str>) -> String {
    let text = state.unwrap_or("no builds");
    let colour = match text {
        "succeeded" => "#2da44e",
        "failed" | "error" => "#cf222e",
        "aborted" | "no builds" => "#6e7781",
        _ => "#bf8700",
    };
    let (left, right) = (
        label.chars().count() * 7 + 10,
        text.chars().count() * 7 + 10,
    );
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"20\" role=\"img\" aria-label=\"{l}: {t}\">\
<rect width=\"{left}\" height=\"20\" fill=\"#555\"/><rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"{colour}\"/>\
<g fill=\"#fff\" font-family=\"Verdana,sans-serif\" font-size=\"11\"><text x=\"5\" y=\"14\">{l}</text><text x=\"{x}\" y=\"14\">{t}</text></g></svg>\n",
        w = left + right,
        l = escape(label),
        t = escape(text),
        x = left + 5,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LOG: LogShown<'static> = LogShown {
        text: "",
        skipped_bytes: 0,
    };

    fn build_view(commit: &str, pull_request: Option<u64>) -> BuildView {
        BuildView {
            number: 3,
            name: "api-3".into(),
            state: "succeeded",
            message: None,
            trigger: Some("pull-request".into()),
            requested_by: None,
            commit: Some(commit.into()),
            pull_request,
            spec_hash: Some(
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ),
            chart_version: Some("1.2.0".into()),
            reported: Vec::new(),
            log_url: None,
            created_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn a_build_shows_the_version_of_the_job_it_ran() {
        let page = build("ci", "api", &build_view("abc", None), &NO_LOG, None, None);
        assert!(
            page.contains("<td>chart 1.2.0 · spec 9f86d081884c</td>"),
            "{page}"
        );
    }

    #[test]
    fn commits_and_pull_requests_link_to_the_repository_when_it_has_a_web_page() {
        assert_eq!(
            repository_web("git@github.com:Org/Repo.git").as_deref(),
            Some("https://github.com/org/repo")
        );
        assert_eq!(
            repository_web("https://ghe.example.com/team/api").as_deref(),
            Some("https://ghe.example.com/team/api")
        );
        assert_eq!(repository_web("./target/examples/hello.git"), None);

        let sha = "0123456789abcdef0123456789abcdef01234567";
        let web = Some("https://github.com/org/repo");
        let page = build("ci", "api", &build_view(sha, Some(7)), &NO_LOG, web, None);
        assert!(page.contains(&format!(
            "<a href=\"https://github.com/org/repo/commit/{sha}\">{sha}</a>"
        )));
        assert!(page.contains("<a href=\"https://github.com/org/repo/pull/7\">#7</a>"));
        let local = build("ci", "api", &build_view(sha, Some(7)), &NO_LOG, None, None);
        assert!(!local.contains("/commit/") && local.contains("#7"));

        let hostile = build(
            "ci",
            "api",
            &build_view("\"><script>x</script>", None),
            &NO_LOG,
            web,
            None,
        );
        assert!(!hostile.contains("<script>x"), "{hostile}");
        assert!(hostile.contains("/commit/%22%3E%3Cscript%3Ex%3C%2Fscript%3E\""));
    }
}
