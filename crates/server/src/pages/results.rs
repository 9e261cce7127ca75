//! A build page's "Tests" section (issue 30): the counts, the report files that could not
//! be read, then the failures first (failed, errored) with their message, details and
//! output, those the job's history shows flaky marked with why, then the skipped tests and
//! those that passed on a rerun, and the passing ones counted. Each test shown has an
//! anchor (`#test-…`, [`test_anchor`]) and a link to its history's page
//! ([`super::history`]).
//!
//! Bounded whatever the counts: at most [`SHOWN_FAILURES`] failures and [`SHOWN_LISTED`]
//! tests of each other list, every text cut to a number of bytes *as escaped HTML*
//! ([`parts::cut_escaped`]), so the section stays under [`MAX_SECTION_BYTES`] for a build
//! of 100,000 cases or of hostile ones; the page says what it left out, and the whole of it
//! is a link away (the API's JSON).

use std::collections::HashMap;

use kubeci_engine::api::BuildTests;
use kubeci_results::{index_id, CaseLine, FlakyReason, Outcome, TestCase, TestResults};
use maud::{html, Markup};

use super::history::history_path;
use super::parts::{cut_escaped, thousands, urlencode};

/// How many failures (failed, then errored) the section shows, each with its details.
pub const SHOWN_FAILURES: usize = 40;
/// How many tests each other list (skipped, passed on a rerun, passed) shows.
pub const SHOWN_LISTED: usize = 40;
/// How many report files that could not be read the section names.
pub const SHOWN_REPORT_ERRORS: usize = 10;
/// The most the section takes, in bytes, whatever the build's results: what the bounds
/// above and the cuts below add up to at worst (the tests prove it).
pub const MAX_SECTION_BYTES: usize = 300 * 1024;

/// How much of each text the page shows, in bytes of escaped HTML.
const ID_BYTES: usize = 200;
const KIND_BYTES: usize = 100;
const MESSAGE_BYTES: usize = 400;
const TEXT_BYTES: usize = 1_000;
const FILE_BYTES: usize = 200;
const LISTED_MESSAGE_BYTES: usize = 120;
const REPORT_ERROR_BYTES: usize = 300;

/// The anchor of test `id` on its build's page: `test-`, the id's letters, digits, `_`
/// and `-` (any other run of characters made one `-`, at most 40 of them), then `-` and 8
/// hex digits of the id's 32-bit FNV-1a hash, so two ids that read alike stay apart. Safe
/// in a URL's fragment and in a CSS selector; the same for the same id on every page.
pub(crate) fn test_anchor(id: &str) -> String {
    let mut slug = String::with_capacity(40);
    for c in id.chars() {
        if slug.len() >= 40 {
            break;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let hash = id.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    if slug.is_empty() {
        format!("test-{hash:08x}")
    } else {
        format!("test-{slug}-{hash:08x}")
    }
}

/// The anchors given on one page: a test listed twice (two report files name it) gets
/// its anchor once and `-2`, `-3` … after it, so every id on the page stays its own.
#[derive(Default)]
struct Anchors(HashMap<String, u32>);

impl Anchors {
    fn of(&mut self, id: &str) -> String {
        let anchor = test_anchor(id);
        let seen = self.0.entry(anchor.clone()).or_insert(0);
        *seen += 1;
        match *seen {
            1 => anchor,
            n => format!("{anchor}-{n}"),
        }
    }
}

/// Where a build's page and its tests' links lead.
#[derive(Debug, Clone, Copy)]
pub struct BuildAt<'a> {
    pub namespace: &'a str,
    pub job: &'a str,
    pub number: u64,
}

impl BuildAt<'_> {
    /// The API's path of the build (`/api/v1/jobs/NS/JOB/builds/N`).
    pub(crate) fn api(&self) -> String {
        format!(
            "/api/v1/jobs/{}/{}/builds/{}",
            urlencode(self.namespace),
            urlencode(self.job),
            self.number
        )
    }

    /// The page of test `id`'s history up to this build. The id the index keeps (at most
    /// 256 bytes) names the same test, so the link stays short.
    fn history(&self, id: &str) -> String {
        history_path(self.namespace, self.job, &index_id(id), Some(self.number))
    }
}

/// One test as a list shows it: with its details when `tests.json` kept them, else its
/// line alone.
enum Shown<'a> {
    Detailed(&'a TestCase),
    Line(&'a CaseLine),
}

impl Shown<'_> {
    fn id(&self) -> String {
        match self {
            Shown::Detailed(case) => case.id(),
            Shown::Line(line) => line.id.clone(),
        }
    }
}

/// The cases of `outcome`, in report order: first those `tests.json` keeps with details
/// (the first ones of that outcome), then the rest by their line alone.
fn of_outcome(results: &TestResults, outcome: Outcome) -> impl Iterator<Item = Shown<'_>> {
    let detailed = results
        .detailed
        .iter()
        .filter(move |case| case.outcome == outcome);
    let kept = detailed.clone().count();
    detailed.map(Shown::Detailed).chain(
        results
            .cases
            .iter()
            .filter(move |line| line.outcome == outcome)
            .skip(kept)
            .map(Shown::Line),
    )
}

/// An outcome as a page shows it: an icon of its own and its word (colour is never the
/// only sign).
fn outcome_mark(outcome: Outcome) -> Markup {
    let icon = match outcome {
        Outcome::Failed => "✗",
        Outcome::Errored => "!",
        Outcome::Flaky => "↻",
        Outcome::Skipped => "⊘",
        Outcome::Passed => "✓",
    };
    html! {
        span class={ "to to-" (outcome.as_str()) } {
            span class="ic" aria-hidden="true" { (icon) } " " (outcome.as_str())
        }
    }
}

/// `text` cut to `max` escaped bytes, with `…` where it was cut.
fn shown_text(text: &str, max: usize) -> Markup {
    let (kept, cut) = cut_escaped(text, max);
    html! { (kept) @if cut { "…" } }
}

/// Whether `text` is longer than the page shows of it.
fn is_cut(text: Option<&str>, max: usize) -> bool {
    text.is_some_and(|text| cut_escaped(text, max).1)
}

/// "Showing the first N of M …", when a list is cut.
fn showing(shown: usize, total: u64, what: &str, json: &str) -> Markup {
    html! {
        @if (shown as u64) < total {
            p class="note" {
                "Showing the first " (thousands(shown as u64)) " of " (thousands(total)) " " (what)
                "; every one is in "
                a href=(json) { "the build's test results (JSON)" }
                "."
            }
        }
    }
}

/// The head of a test in a list: its outcome, its id linking to its own anchor, and
/// whether it is known flaky.
fn head(outcome: Outcome, id: &str, anchor: &str, flaky: Option<&FlakyReason>) -> Markup {
    html! {
        div class="test-head" {
            (outcome_mark(outcome))
            " "
            a class="test-id" href={ "#" (anchor) } { code { (shown_text(id, ID_BYTES)) } }
            @if flaky.is_some() {
                " "
                span class="flaky-mark" { span class="ic" aria-hidden="true" { "≈" } " known flaky" }
            }
        }
        @if let Some(reason) = flaky {
            p class="sub flaky-why" { (reason.to_string()) }
        }
    }
}

/// One failure: its head, its message, where it failed, its details and output (folded),
/// and its history.
fn failure(
    shown: &Shown<'_>,
    anchor: &str,
    at: BuildAt<'_>,
    flaky: &HashMap<&str, &FlakyReason>,
) -> Markup {
    let id = shown.id();
    let (outcome, case) = match shown {
        Shown::Detailed(case) => (case.outcome, Some(*case)),
        Shown::Line(line) => (line.outcome, None),
    };
    let details = case.and_then(|c| c.details.as_deref());
    let output = case.and_then(|c| c.output.as_deref());
    let cut = is_cut(details, TEXT_BYTES)
        || is_cut(output, TEXT_BYTES)
        || is_cut(case.and_then(|c| c.message.as_deref()), MESSAGE_BYTES);
    html! {
        li class="test" id=(anchor) {
            (head(outcome, &id, anchor, flaky.get(id.as_str()).copied()))
            @if let Some(case) = case {
                @if case.kind.is_some() || case.message.is_some() {
                    p class="test-msg" {
                        @if let Some(kind) = &case.kind { b { (shown_text(kind, KIND_BYTES)) } ": " }
                        @if let Some(message) = &case.message { (shown_text(message, MESSAGE_BYTES)) }
                    }
                }
                @if let Some(file) = &case.file {
                    p class="sub" {
                        "at " code { (shown_text(file, FILE_BYTES)) @if let Some(line) = case.line { ":" (line) } }
                    }
                }
                @if details.is_some() || output.is_some() {
                    details {
                        summary { "Details and output" }
                        @if let Some(details) = details { pre class="test-text" { (shown_text(details, TEXT_BYTES)) } }
                        @if let Some(output) = output {
                            p class="sub" { "Output" }
                            pre class="test-text" { (shown_text(output, TEXT_BYTES)) }
                        }
                    }
                }
                @if cut {
                    p class="note" {
                        "Cut for the page: the whole text is in "
                        a href={ (at.api()) "/tests" } { "the build's test results (JSON)" }
                        "."
                    }
                }
            } @else {
                p class="note" { "Its details were not kept (a build keeps those of its first 1,000 tests that did not pass)." }
            }
            p class="sub" { a href=(at.history(&id)) { "History of this test" } }
        }
    }
}

/// One test of a short list (skipped, passed on a rerun, passed): its head and message.
fn listed(shown: &Shown<'_>, anchor: &str) -> Markup {
    let id = shown.id();
    let (outcome, message, reruns, time) = match shown {
        Shown::Detailed(case) => (
            case.outcome,
            case.message.as_deref(),
            case.reruns,
            case.time,
        ),
        Shown::Line(line) => (line.outcome, None, 0, line.time),
    };
    html! {
        li class="test" id=(anchor) {
            (head(outcome, &id, anchor, None))
            @if reruns > 0 {
                span class="sub" { "Failed " (reruns) @if reruns == 1 { " time" } @else { " times" } " before it passed." }
            }
            @if let Some(message) = message {
                span class="sub" { (shown_text(message, LISTED_MESSAGE_BYTES)) }
            }
            @if outcome == Outcome::Passed {
                @if let Some(time) = time { span class="sub" { (format!("{time:.3}")) " s" } }
            }
        }
    }
}

/// A list of tests of one outcome under `title`, the first [`SHOWN_LISTED`] of `total`.
fn list(
    results: &TestResults,
    (outcome, title, total): (Outcome, &str, u64),
    json: &str,
    anchors: &mut Anchors,
) -> Markup {
    if total == 0 {
        return html! {};
    }
    let id = format!("tests-{}", outcome.as_str());
    let shown: Vec<(Shown<'_>, String)> = of_outcome(results, outcome)
        .take(SHOWN_LISTED)
        .map(|test| {
            let anchor = anchors.of(&test.id());
            (test, anchor)
        })
        .collect();
    let items = html! {
        (showing(shown.len(), total, &format!("{} tests", outcome.as_str()), json))
        ul class="tests" { @for (test, anchor) in &shown { (listed(test, anchor)) } }
    };
    html! {
        @if outcome == Outcome::Passed {
            details class="tests-list" id=(id) {
                summary { (title) " (" (thousands(total)) ")" }
                (items)
            }
        } @else {
            h3 id=(id) { (title) " (" (thousands(total)) ")" }
            (items)
        }
    }
}

/// The counts, each with its icon and word; the failures known flaky said as the check
/// run says them.
fn counts(results: &TestResults, known_flaky: usize) -> Markup {
    let c = &results.counts;
    let all = [
        (Outcome::Passed, c.passed),
        (Outcome::Failed, c.failed),
        (Outcome::Errored, c.errored),
        (Outcome::Flaky, c.flaky),
        (Outcome::Skipped, c.skipped),
    ];
    html! {
        p class="test-counts" id="test-counts" {
            b { (thousands(c.total())) @if c.total() == 1 { " test" } @else { " tests" } } ": "
            @for (at, (outcome, count)) in all.iter().enumerate() {
                @if at > 0 { " · " }
                span class={ "to to-" (outcome.as_str()) } {
                    (thousands(*count)) " " (outcome.as_str())
                }
            }
            @if known_flaky > 0 {
                " — " (thousands(known_flaky as u64)) " of the failures known flaky"
            }
        }
    }
}

/// The report files that gave an error, each with why.
fn report_errors(results: &TestResults) -> Markup {
    let failed: Vec<_> = results.files.iter().filter(|f| f.error.is_some()).collect();
    if failed.is_empty() {
        return html! {};
    }
    html! {
        div class="warning" id="report-errors" {
            p {
                b { (thousands(failed.len() as u64)) " of " (thousands(results.files.len() as u64)) " report files could not be read whole:" }
            }
            ul {
                @for file in failed.iter().take(SHOWN_REPORT_ERRORS) {
                    li {
                        code { (shown_text(&file.path, FILE_BYTES)) } ": "
                        (shown_text(file.error.as_deref().unwrap_or_default(), REPORT_ERROR_BYTES))
                    }
                }
            }
            @if failed.len() > SHOWN_REPORT_ERRORS {
                p class="note" { "And " (failed.len() - SHOWN_REPORT_ERRORS) " more, in the build's test results (JSON)." }
            }
        }
    }
}

/// The build's "Tests" section.
pub fn tests_section(at: BuildAt<'_>, tests: &BuildTests) -> Markup {
    let results = &tests.results;
    let json = format!("{}/tests", at.api());
    let flaky: HashMap<&str, &FlakyReason> = tests
        .known_flaky
        .iter()
        .map(|known| (known.id.as_str(), &known.reason))
        .collect();
    let mut anchors = Anchors::default();
    let failures: Vec<(Shown<'_>, String)> = of_outcome(results, Outcome::Failed)
        .chain(of_outcome(results, Outcome::Errored))
        .take(SHOWN_FAILURES)
        .map(|test| {
            let anchor = anchors.of(&test.id());
            (test, anchor)
        })
        .collect();
    let total_failures = results.counts.failures();
    let of = &results.counts;
    let skipped = list(
        results,
        (Outcome::Skipped, "Skipped", of.skipped),
        &json,
        &mut anchors,
    );
    let flaky_on_rerun = list(
        results,
        (Outcome::Flaky, "Passed on a rerun (flaky)", of.flaky),
        &json,
        &mut anchors,
    );
    let passed = list(
        results,
        (Outcome::Passed, "Passed", of.passed),
        &json,
        &mut anchors,
    );
    html! {
        section id="tests" aria-labelledby="tests-title" {
            h2 id="tests-title" { "Tests" }
            (counts(results, tests.known_flaky.len()))
            p class="note" {
                "From " (thousands(results.files.len() as u64)) " report files · "
                a href=(json) { "all results (JSON)" }
            }
            (report_errors(results))
            @if total_failures > 0 {
                h3 id="tests-failures" { "Failures (" (thousands(total_failures)) ")" }
                (showing(failures.len(), total_failures, "failures, failed then errored", &json))
                ol class="tests" {
                    @for (test, anchor) in &failures { (failure(test, anchor, at, &flaky)) }
                }
            }
            (skipped)
            (flaky_on_rerun)
            (passed)
        }
    }
}

#[cfg(test)]
mod tests;
