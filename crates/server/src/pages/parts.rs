//! The small pieces every page is made of: a build state (icon, colour and word), times
//! relative to now with the exact time on hover, links to a repository's commits and pull
//! requests, paths, and who started a build, said for people.

use kubeci_engine::api::BuildView;
use kubeci_engine::Phase;
use maud::{html, Markup};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `value`, or a dash.
pub(crate) fn cell(value: Option<&str>) -> Markup {
    html! {
        @match value {
            Some(value) => (value),
            None => "–",
        }
    }
}

/// The icon of a state: each state has its own shape, so colour is never the only sign.
fn icon(phase: Phase) -> &'static str {
    match phase {
        Phase::Succeeded => "✓",
        Phase::Failed => "✗",
        Phase::Error => INVALID_ICON,
        Phase::Aborted => "⊘",
        Phase::Running => "●",
        Phase::Pending => "◔",
        Phase::Queued => "○",
    }
}

/// An invalid job's mark: an error's.
const INVALID_ICON: &str = "!";

/// A word as a state shows it: icon, colour (its class) and the word; `id` names it for
/// the live page.
fn marked(word: &str, icon: &str, id: Option<&str>) -> Markup {
    html! {
        span class={ "st st-" (word) } id=[id] {
            span class="ic" aria-hidden="true" { (icon) }
            " "
            span class="word" { (word) }
        }
    }
}

/// A build's state as icon, colour and word; `id` names it for the live page.
pub(crate) fn state_with_id(phase: Phase, id: Option<&str>) -> Markup {
    marked(phase.as_str(), icon(phase), id)
}

/// A build's state as icon, colour and word.
pub(crate) fn state(phase: Phase) -> Markup {
    state_with_id(phase, None)
}

/// An invalid job, marked as a state is.
pub(crate) fn invalid() -> Markup {
    marked("invalid", INVALID_ICON, None)
}

/// How long ago `then` was, for people: `just now`, `5 s ago`, `3 min ago`, `2 h ago`,
/// `4 days ago`; a time to come reads `in 3 min`.
pub(crate) fn ago(then: i64, now: i64) -> String {
    let seconds = now - then;
    let (amount, future) = (seconds.unsigned_abs(), seconds < 0);
    let said = match amount {
        0..=4 => return "just now".into(),
        5..=59 => format!("{amount} s"),
        60..=3599 => format!("{} min", amount / 60),
        3600..=86_399 => format!("{} h", amount / 3600),
        86_400..=172_799 => "1 day".into(),
        _ => format!("{} days", amount / 86_400),
    };
    if future {
        format!("in {said}")
    } else {
        format!("{said} ago")
    }
}

/// An RFC 3339 time as `<time>`: relative to now, the exact UTC time on hover (the page's
/// script keeps the relative words current).
pub(crate) fn time(rfc3339: Option<&str>, now: i64) -> Markup {
    let Some(text) = rfc3339 else {
        return cell(None);
    };
    let Ok(at) = text.parse::<jiff::Timestamp>() else {
        return html! { (text) };
    };
    html! {
        time datetime=(text) title=(at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()) {
            (ago(at.as_second(), now))
        }
    }
}

/// The web page of a job's repository (`https://host/owner/name`), for links to commits
/// and pull requests; `None` for a local path.
pub fn repository_web(git_url: &str) -> Option<String> {
    let key = kubeci_spec::giturl::GitUrl::parse(git_url)
        .ok()?
        .repository_key()?;
    Some(format!("https://{key}"))
}

/// A commit, linked to its page in the repository when there is one; `short` shows its
/// first 12 characters.
pub(crate) fn commit(web: Option<&str>, commit: Option<&str>, short: bool) -> Markup {
    let Some(commit) = commit else {
        return cell(None);
    };
    let shown = if short {
        commit.get(..12).unwrap_or(commit)
    } else {
        commit
    };
    html! {
        @match web {
            Some(web) => a href={ (web) "/commit/" (urlencode(commit)) } { code { (shown) } },
            None => code { (shown) },
        }
    }
}

/// A pull request number, linked to its page when the repository has one.
pub(crate) fn pull_request(web: Option<&str>, number: Option<u64>) -> Markup {
    html! {
        @match (web, number) {
            (_, None) => "–",
            (Some(web), Some(n)) => a href={ (web) "/pull/" (n) } { "#" (n) },
            (None, Some(n)) => { "#" (n) }
        }
    }
}

/// A branch, linked to its tree in the repository when there is one.
pub(crate) fn branch(web: Option<&str>, branch: Option<&str>) -> Markup {
    html! {
        @match (web, branch) {
            (_, None) => "–",
            (Some(web), Some(b)) => {
                a href={ (web) "/tree/" (b.split('/').map(urlencode).collect::<Vec<_>>().join("/")) } { (b) }
            }
            (None, Some(b)) => (b),
        }
    }
}

/// The page of job `name` in `namespace`.
pub(crate) fn job_path(namespace: &str, name: &str) -> String {
    format!("/jobs/{}/{}", urlencode(namespace), urlencode(name))
}

/// The page of build `number` of a job.
pub(crate) fn build_path(namespace: &str, name: &str, number: u64) -> String {
    format!("{}/builds/{number}", job_path(namespace, name))
}

/// The characters percent-encoded in a path segment or a query value of kubeci's own
/// links: all but RFC 3986's unreserved characters, so a value stays one segment (`/`, `?`, `#`) or one
/// query value (`&`, `=`, `+`, `#`) and the same encoding serves both.
const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment or a query value, percent-encoded.
pub fn urlencode(component: &str) -> String {
    utf8_percent_encode(component, URL_COMPONENT).to_string()
}

/// Who or what started `build`, said for people: `cron`, `@octocat (push)`, `@octocat
/// (pull request)`, `the web page (server token)`, or who the API or a proxy named (text:
/// the pages escape it).
pub(crate) fn started_by(build: &BuildView) -> String {
    let trigger = build.trigger.as_deref().unwrap_or("manual");
    let who = build.requested_by.as_deref();
    let person = who.map(|w| match w.strip_prefix("github:") {
        Some(login) => format!("@{login}"),
        None if w == "ui" => "the web page (server token)".to_owned(),
        None => w.to_owned(),
    });
    let said = match (trigger, person) {
        ("cron", _) => "cron".to_owned(),
        ("push", Some(p)) => format!("{p} (push)"),
        ("push", None) => "a push".to_owned(),
        ("pull-request", Some(p)) => format!("{p} (pull request)"),
        ("comment", Some(p)) => format!("{p} (comment or re-run)"),
        (_, Some(p)) => p,
        (other, None) => other.to_owned(),
    };
    said
}

/// A form that posts `action` with the session's CSRF token; `class` is its button's.
pub(crate) fn action_form(action: &str, csrf: &str, label: &str, class: Option<&str>) -> Markup {
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            button class=[class] { (label) }
        }
    }
}

/// `bytes` for people: `812 bytes`, `3.4 KB`, `59.6 MB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b < 1000 => format!("{b} bytes"),
        b if b < 1_000_000 => format!("{:.1} KB", b as f64 / 1e3),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// How many bytes `c` takes once escaped as HTML (as maud escapes it).
fn escaped_len(c: char) -> usize {
    match c {
        '&' => 5,
        '<' | '>' => 4,
        '"' => 6,
        c => c.len_utf8(),
    }
}

/// The start of `text` that takes at most `max` bytes once escaped as HTML, cut on a
/// character boundary; whether it was cut. A page that shows texts it does not control
/// (a test's message, a file's name) stays within its bound however they are made.
pub(crate) fn cut_escaped(text: &str, max: usize) -> (&str, bool) {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += escaped_len(c);
        if used > max {
            return (&text[..at], true);
        }
    }
    (text, false)
}

/// `n` with its thousands separated: `100,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_cut_by_its_escaped_length_on_a_character_boundary() {
        assert_eq!(cut_escaped("abc", 3), ("abc", false));
        assert_eq!(cut_escaped("abcd", 3), ("abc", true));
        assert_eq!(
            cut_escaped("a\"b", 6),
            ("a", true),
            "a quote is six bytes escaped"
        );
        assert_eq!(cut_escaped("éé", 3), ("é", true));
        let hostile = "<&\"x".repeat(1000);
        let (kept, _) = cut_escaped(&hostile, 1000);
        assert!(html! { (kept) }.into_string().len() <= 1000);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_url_component_keeps_only_the_unreserved_characters() {
        assert_eq!(
            urlencode("a:b/c?d#e f%g&h=i+j é-._~"),
            "a%3Ab%2Fc%3Fd%23e%20f%25g%26h%3Di%2Bj%20%C3%A9-._~"
        );
    }

    #[test]
    fn times_read_as_people_say_them_with_the_exact_time_on_hover() {
        assert_eq!(ago(100, 102), "just now");
        assert_eq!(ago(100, 145), "45 s ago");
        assert_eq!(ago(0, 3 * 60 + 5), "3 min ago");
        assert_eq!(ago(0, 7200), "2 h ago");
        assert_eq!(ago(0, 86_400 + 5), "1 day ago");
        assert_eq!(ago(0, 4 * 86_400), "4 days ago");
        assert_eq!(ago(600, 0), "in 10 min");
        let at = "2026-11-30T05:00:00Z";
        let then = at.parse::<jiff::Timestamp>().unwrap().as_second();
        assert_eq!(
            time(Some(at), then + 180).into_string(),
            "<time datetime=\"2026-11-30T05:00:00Z\" title=\"2026-11-30 05:00:00 UTC\">3 min ago</time>"
        );
        assert_eq!(time(None, 0).into_string(), "–");
        assert_eq!(time(Some("<b>"), 0).into_string(), "&lt;b&gt;");
    }

    #[test]
    fn every_state_has_an_icon_of_its_own_beside_its_word() {
        let icons: std::collections::BTreeSet<&str> = Phase::ALL.into_iter().map(icon).collect();
        assert_eq!(icons.len(), Phase::ALL.len(), "one shape per state");
        assert_eq!(
            state(Phase::Failed).into_string(),
            "<span class=\"st st-failed\"><span class=\"ic\" aria-hidden=\"true\">✗</span> <span class=\"word\">failed</span></span>"
        );
    }

    fn started(trigger: &str, by: Option<&str>) -> String {
        let build = BuildView {
            trigger: Some(trigger.into()),
            requested_by: by.map(str::to_owned),
            ..crate::pages::sample_build(1, Phase::Queued)
        };
        started_by(&build)
    }

    #[test]
    fn who_started_a_build_is_said_for_people() {
        assert_eq!(started("cron", None), "cron");
        assert_eq!(started("push", Some("github:octo")), "@octo (push)");
        assert_eq!(
            started("pull-request", Some("github:octo")),
            "@octo (pull request)"
        );
        assert_eq!(started("manual", Some("ui")), "the web page (server token)");
        assert_eq!(started("manual", Some("alice")), "alice");
        assert_eq!(started("manual", Some("<b>")), "<b>", "text, as named");
        let shown = html! { (started("manual", Some("<b>"))) };
        assert_eq!(shown.into_string(), "&lt;b&gt;", "and escaped where shown");
    }

    #[test]
    fn branches_and_commits_link_to_the_repository_escaped() {
        let web = Some("https://github.com/o/r");
        assert_eq!(
            branch(web, Some("release/1.x")).into_string(),
            "<a href=\"https://github.com/o/r/tree/release/1.x\">release/1.x</a>"
        );
        assert_eq!(branch(None, Some("main")).into_string(), "main");
        assert_eq!(branch(None, Some("<b>&")).into_string(), "&lt;b&gt;&amp;");
        let hostile = commit(web, Some("\"><x>"), true).into_string();
        assert!(hostile.contains("/commit/%22%3E%3Cx%3E\""), "{hostile}");
        assert!(
            hostile.contains("<code>&quot;&gt;&lt;x&gt;</code>"),
            "{hostile}"
        );
    }
}
