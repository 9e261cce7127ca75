//! A build's test results on its check run (pure): the counts in the output's title, a
//! section at the head of its summary (the counts, then the failed tests with their message
//! and the first lines of their details), and one annotation per failed test whose file is
//! in the repository — so the failure shows on that line in the pull request's *Files
//! changed* — sent [`ANNOTATIONS_PER_REQUEST`] to a request, at most [`MAX_ANNOTATIONS`].
//!
//! GitHub appends the annotations of every request to the check run's, and replaces none:
//! a report sent again after a failure that may have reached GitHub first reads the check
//! run's annotations and sends only those it lacks ([`missing`]).

use std::collections::{HashMap, HashSet};

use kubeci_engine::report::Report;
use kubeci_results::{counts_text, known_flaky_failures, repository_path, TestCase, TestResults};
use serde_json::{json, Value};

/// GitHub takes at most this many annotations in one request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

/// The most annotations a check run is given: twenty requests. A build failing more tests
/// than that has its first ones marked, and its summary says so.
pub const MAX_ANNOTATIONS: usize = 1_000;

/// GitHub's limit on an annotation's `message` and `raw_details` ("64 KB"), in bytes.
pub const ANNOTATION_TEXT_BYTES: usize = 64_000;

/// GitHub's limit on an annotation's `title`, in characters.
const ANNOTATION_TITLE_CHARS: usize = 255;

/// How many failed tests the summary shows with their message and details; those after
/// them get a line each, at most [`LISTED`] in all.
const WITH_DETAILS: usize = 10;
const LISTED: usize = 100;
/// How much of a failure the summary shows: its message's first characters, its details'
/// first lines, each line's first characters.
const MESSAGE_CHARS: usize = 500;
const DETAIL_LINES: usize = 10;
const LINE_CHARS: usize = 200;
/// How many report files that could not be read are named.
const FILES_NAMED: usize = 10;

/// The counts of the build's tests in words, for the output's title, when it ran any.
pub fn title_counts(report: &Report<'_>) -> Option<String> {
    let tests = report.tests.filter(|t| t.counts.total() > 0)?;
    Some(counts_text(
        &tests.counts,
        known_flaky_failures(tests, report.known_flaky),
    ))
}

/// The build's failed and errored cases with their details, failures first.
fn failures(tests: &TestResults) -> impl Iterator<Item = &TestCase> {
    tests
        .detailed
        .iter()
        .filter(|case| case.outcome.is_failure())
}

/// The path of `case`'s file in the repository, if it names one there.
fn path_of(report: &Report<'_>, case: &TestCase) -> Option<String> {
    let checkouts: Vec<&str> = report.target.checkout_dir.as_deref().into_iter().collect();
    repository_path(
        case.file.as_deref()?,
        report.target.workdir.as_deref(),
        &checkouts,
    )
}

/// The annotations of a build's failed tests, and how many failed tests name no file of
/// the repository.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotations {
    /// The first [`MAX_ANNOTATIONS`], in the order of the results (failures first).
    pub list: Vec<Value>,
    /// How many failed tests name a file of the repository (more than `list` holds when
    /// it is cut).
    pub with_file: usize,
    /// How many failed tests with details name none.
    pub without_file: usize,
}

/// One annotation per failed or errored test whose file is in the repository: on its line
/// (else the file's first), `failure` (`warning` when it is known flaky), titled by the
/// test's id, its message and details as the message, its output as the raw details.
pub fn annotations(report: &Report<'_>) -> Annotations {
    let mut annotations = Annotations::default();
    let Some(tests) = report.tests else {
        return annotations;
    };
    let known: HashSet<&str> = report.known_flaky.iter().map(String::as_str).collect();
    for case in failures(tests) {
        let Some(path) = path_of(report, case) else {
            annotations.without_file += 1;
            continue;
        };
        annotations.with_file += 1;
        if annotations.list.len() < MAX_ANNOTATIONS {
            let id = case.id();
            let level = if known.contains(id.as_str()) {
                "warning"
            } else {
                "failure"
            };
            annotations.list.push(annotation(case, path, &id, level));
        }
    }
    annotations
}

fn annotation(case: &TestCase, path: String, id: &str, level: &str) -> Value {
    let line = case.line.unwrap_or(1).max(1);
    let text: Vec<&str> = [case.message.as_deref(), case.details.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim_end)
        .filter(|t| !t.is_empty())
        .collect();
    let message = match text.is_empty() {
        true => format!("The test {}.", case.outcome.as_str()),
        false => text.join("\n\n"),
    };
    let mut annotation = json!({
        "path": path,
        "start_line": line,
        "end_line": line,
        "annotation_level": level,
        "title": cut_chars(id, ANNOTATION_TITLE_CHARS),
        "message": cut_bytes(&message, ANNOTATION_TEXT_BYTES),
    });
    if let Some(output) = case.output.as_deref().filter(|o| !o.trim().is_empty()) {
        annotation["raw_details"] = cut_bytes(output, ANNOTATION_TEXT_BYTES).into();
    }
    annotation
}

/// What identifies an annotation among a check run's: its file, line and title.
fn key(annotation: &Value) -> (String, u64, String) {
    let text = |k: &str| annotation[k].as_str().unwrap_or("").to_owned();
    let line = annotation["start_line"].as_u64().unwrap_or(0);
    (text("path"), line, text("title"))
}

/// The annotations of `wanted` that `present` (a check run's, as GitHub lists them) does
/// not hold yet: each present one stands for one wanted one with its file, line and title.
pub fn missing(wanted: Vec<Value>, present: &[Value]) -> Vec<Value> {
    let mut held: HashMap<(String, u64, String), usize> = HashMap::new();
    for annotation in present {
        *held.entry(key(annotation)).or_default() += 1;
    }
    let mut missing = Vec::new();
    for annotation in wanted {
        match held.get_mut(&key(&annotation)) {
            Some(count) if *count > 0 => *count -= 1,
            _ => missing.push(annotation),
        }
    }
    missing
}

/// The section of the summary on the build's tests, within `room` characters: the counts
/// as a table and in words, the report files that could not be read, where failures are
/// marked, then as many failed tests as fit (the first with their message and details),
/// and how many more there are. Empty when the build left no test results.
pub fn section(report: &Report<'_>, room: usize) -> String {
    let Some(tests) = report.tests else {
        return String::new();
    };
    let counts = &tests.counts;
    let known = known_flaky_failures(tests, report.known_flaky);
    let mut text = format!(
        "### Tests\n\n| Passed | Failed | Errored | Flaky (passed on rerun) | Skipped |\n| ---: | ---: | ---: | ---: | ---: |\n| {} | {} | {} | {} | {} |\n\n{}.\n",
        counts.passed,
        counts.failed,
        counts.errored,
        counts.flaky,
        counts.skipped,
        counts_text(counts, known)
    );
    let unread: Vec<_> = tests.files.iter().filter(|f| f.error.is_some()).collect();
    for file in unread.iter().take(FILES_NAMED) {
        let why = file.error.as_deref().unwrap_or_default();
        text.push_str(&format!(
            "\nNot read: {} — {}\n",
            code(&file.path),
            plain(why, MESSAGE_CHARS)
        ));
    }
    if unread.len() > FILES_NAMED {
        text.push_str(&format!(
            "\nAnd {} more report files not read.\n",
            unread.len() - FILES_NAMED
        ));
    }
    text.push_str(&marked(&annotations(report)));
    if chars(&text) > room {
        return String::new();
    }
    let listed = failed_tests(report, tests, room - chars(&text));
    text + &listed
}

/// Where the failed tests are marked, in words.
fn marked(annotations: &Annotations) -> String {
    let Annotations {
        list,
        with_file,
        without_file,
    } = annotations;
    let mut text = String::new();
    if *with_file > 0 {
        text.push_str(&format!(
            "\n{with_file} failed tests are marked on their line in *Files changed*"
        ));
        if list.len() < *with_file {
            text.push_str(&format!(
                " (the first {}: GitHub is sent no more)",
                list.len()
            ));
        }
        text.push('.');
    }
    if *without_file > 0 {
        let space = if text.is_empty() { "\n" } else { " " };
        text.push_str(&format!(
            "{space}{without_file} failed tests name no file of the repository: they are listed here only."
        ));
    }
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// The failed tests, as many as fit in `room` characters with the line saying how many
/// more there are.
fn failed_tests(report: &Report<'_>, tests: &TestResults, room: usize) -> String {
    let total = tests.counts.failures();
    if total == 0 {
        return String::new();
    }
    let known: HashSet<&str> = report.known_flaky.iter().map(String::as_str).collect();
    let mut text = String::from("\n#### Failed tests\n\n");
    let mut shown = 0u64;
    for (n, case) in failures(tests).take(LISTED).enumerate() {
        let entry = entry(
            report,
            case,
            known.contains(case.id().as_str()),
            n < WITH_DETAILS,
        );
        let more = more(report, total.saturating_sub(shown + 1));
        if chars(&text) + chars(&entry) + chars(&more) > room {
            break;
        }
        text.push_str(&entry);
        shown += 1;
    }
    let more = more(report, total.saturating_sub(shown));
    if shown == 0 && chars(&text) + chars(&more) > room {
        return String::new();
    }
    text + &more
}

/// The line saying `count` more failed tests are on the build's page.
fn more(report: &Report<'_>, count: u64) -> String {
    match count {
        0 => String::new(),
        count => format!(
            "\nAnd {count} more failed tests: see [the build's page]({}).\n",
            report.target.url
        ),
    }
}

/// One failed test in the summary: its id, outcome, file and line; with `details`, its
/// message and the first lines of its details in a block, else its message in a line.
fn entry(report: &Report<'_>, case: &TestCase, known_flaky: bool, details: bool) -> String {
    let mut head = format!("- **{}** {}", code(&case.id()), case.outcome.as_str());
    if known_flaky {
        head.push_str(" (known flaky)");
    }
    if let Some(path) = path_of(report, case) {
        let line = case.line.map(|l| format!(":{l}")).unwrap_or_default();
        head.push_str(&format!(" · {}", code(&format!("{path}{line}"))));
    }
    let message = case.message.as_deref().unwrap_or("").trim();
    if !details {
        return match message.is_empty() {
            true => format!("{head}\n"),
            false => format!("{head}: {}\n", plain(message, LINE_CHARS)),
        };
    }
    let mut lines: Vec<String> = Vec::new();
    if !message.is_empty() {
        let message = cut_chars(message, MESSAGE_CHARS);
        lines.extend(message.lines().map(|l| cut_chars(l, LINE_CHARS)));
    }
    let detail = case.details.as_deref().unwrap_or("").trim_end();
    let first: Vec<&str> = detail.lines().take(DETAIL_LINES + 1).collect();
    lines.extend(
        first
            .iter()
            .take(DETAIL_LINES)
            .map(|l| cut_chars(l, LINE_CHARS)),
    );
    if first.len() > DETAIL_LINES {
        lines.push("…".into());
    }
    if lines.is_empty() {
        return format!("{head}\n");
    }
    let block = crate::check_run::strip_ansi(&lines.join("\n"));
    let fence = crate::check_run::fence(&block);
    let indented: String = block.lines().map(|l| format!("  {l}\n")).collect();
    format!("{head}\n\n  {fence}text\n{indented}  {fence}\n\n")
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

/// `text` as Markdown inline code, whatever backticks it holds, on one line.
fn code(text: &str) -> String {
    let text = cut_chars(&text.replace(['\n', '\r'], " "), LINE_CHARS);
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// `text` on one line as Markdown that shows it as written (nothing in it is a link, an
/// image, emphasis or HTML), at most `most` characters of it.
fn plain(text: &str, most: usize) -> String {
    let line = crate::check_run::strip_ansi(text).replace(['\n', '\r', '\t'], " ");
    let mut escaped = String::new();
    for c in cut_chars(line.trim(), most).chars() {
        if "\\`*_{}[]()<>#+!|~&".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// At most `most` characters of `text`, `…` in place of the rest.
fn cut_chars(text: &str, most: usize) -> String {
    if chars(text) <= most {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(most.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// At most `most` bytes of `text`, cut on a character, `…` in place of the rest.
fn cut_bytes(text: &str, most: usize) -> String {
    if text.len() <= most {
        return text.to_owned();
    }
    let mut end = most.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The annotations in the requests that carry them: the first with the report's own
/// request, each of the others with a request of its own.
pub fn batches(list: &[Value]) -> std::slice::Chunks<'_, Value> {
    list.chunks(ANNOTATIONS_PER_REQUEST)
}

#[cfg(test)]
#[path = "check_tests/tests.rs"]
mod tests;
