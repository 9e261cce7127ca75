//! What each fuzz target checks, as plain functions: `cargo fuzz run TARGET` feeds them
//! generated inputs, and the workspace's tests feed them the committed corpus
//! (`fuzz/corpus/TARGET/`), so a crash once found stays fixed. Each one panics only when
//! kubeci misbehaves: a panic inside kubeci, or an answer that breaks its promise.

use kubeci_github::{event, signature, trust};
use kubeci_spec::LoadOptions;

/// libyaml-safer 0.3 panics on some inputs (`[!!str,x]` reaches a `TODO` panic); kubeci's
/// reader contains those panics and refuses the input with an error. libFuzzer's hook
/// aborts on every panic before it can be contained, so this lets the YAML library's own
/// panics unwind to kubeci's containment; every other panic still aborts: a crash.
pub fn contain_yaml_reader_panics() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_reader = info
            .location()
            .is_some_and(|l| l.file().contains("libyaml-safer"));
        if !in_reader {
            abort(info);
        }
    }));
}

/// The job reader, validator and renderer: any bytes give diagnostics or jobs, never a
/// panic; every diagnostic points inside the input; every valid job renders.
pub fn job_spec(data: &[u8]) {
    let report = kubeci_spec::load("fuzz.yaml", data, &LoadOptions::default());
    // YAML's line breaks: `\r\n`, `\r` and `\n` (a lone `\r` ends a line too).
    let breaks = data
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && data.get(i + 1) != Some(&b'\n')))
        .count();
    let lines = breaks + 1;
    for diagnostic in report.all_diagnostics() {
        assert!(
            diagnostic.line <= lines + 1,
            "a diagnostic past the end of the input: {diagnostic:?}"
        );
    }
    for loaded in &report.jobs {
        if let Some(job) = &loaded.job {
            let origin = kubeci_render::JobOrigin::of(loaded);
            kubeci_render::render(
                job,
                &origin,
                &kubeci_build::BuildRequest::manual(1),
                &kubeci_render::RenderConfig::default(),
            )
            .expect("a valid job renders");
        }
    }
    let mut jobs = report.jobs;
    kubeci_spec::mark_duplicates(&mut jobs);
}

const SECRET: &[u8] = b"fuzz-secret";
const EVENTS: [&str; 5] = ["pull_request", "issue_comment", "push", "ping", "check_run"];

/// A delivery: the first byte picks the event, a signature header line may follow, the
/// rest is the body. Only a body signed with the secret verifies; parsing never panics;
/// comment phrases parse.
pub fn webhook(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(selector) % EVENTS.len()];
    let (header, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(end) if selector & 0x80 != 0 => {
            (std::str::from_utf8(&rest[..end]).ok(), &rest[end + 1..])
        }
        _ => (None, rest),
    };
    let verified = signature::verify(Some(SECRET), header, body).is_ok();
    if verified {
        assert_eq!(
            header,
            Some(signature::sign(SECRET, body).as_str()),
            "only the body's own signature verifies"
        );
    }
    assert!(
        signature::verify(None, header, body).is_err(),
        "no secret, no acceptance"
    );
    let signed = signature::sign(SECRET, body);
    assert!(signature::verify(Some(SECRET), Some(&signed), body).is_ok());
    if let Ok(event::Event::Comment { body, .. }) = event::parse(event, body) {
        let _ = trust::commands(&body);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = trust::commands(text);
    }
}

/// The cron parser and its next-run search: never a panic, and a next run is strictly
/// after the time asked about.
pub fn cron(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(schedule) = kubeci_spec::cron::CronSchedule::parse(text, "fuzz-job") {
        for after in [0, 1_790_000_000, 4_102_444_800] {
            if let Some(next) = schedule.next_after(after) {
                assert!(next > after, "{text:?}: {next} is not after {after}");
                assert_eq!(next % 60, 0, "runs start on a minute");
            }
        }
    }
}

/// The log renderer: any line (terminal escapes, HTML) becomes text with kubeci's own
/// colour spans only — no other tag, no raw `<`, `>`, `"` or control character.
pub fn log_line(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let html = kubeci_server::ansi::line_to_html(&line);
    let mut rest = html.as_str();
    loop {
        let text_end = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..text_end];
        assert!(
            !text.contains(['>', '"']),
            "raw markup in the text: {text:?}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\t'),
            "a control character got through: {text:?}"
        );
        if text_end == rest.len() {
            break;
        }
        let tag_end = rest[text_end..].find('>').expect("every tag closes") + text_end;
        let tag = &rest[text_end..=tag_end];
        let own_span = tag == "</span>"
            || tag
                .strip_prefix("<span class=\"")
                .and_then(|t| t.strip_suffix("\">"))
                .is_some_and(|class| class.chars().all(|c| c.is_ascii_alphanumeric() || c == ' '));
        assert!(own_span, "a tag kubeci did not make: {tag}");
        rest = &rest[tag_end + 1..];
    }
    assert!(!kubeci_server::ansi::escape(&line).contains(['<', '>', '"']));
}

/// Limits small enough that the fuzzer reaches them: a few levels, short texts and tags.
fn junit_limits() -> kubeci_results::JunitLimits {
    kubeci_results::JunitLimits {
        max_depth: 8,
        max_cases: 64,
        max_text_bytes: 32,
        max_tag_bytes: 256,
    }
}

/// Reads `data` through a reader that gives at most `step` bytes at a time.
fn read_junit_by(
    data: &[u8],
    step: usize,
) -> (
    Vec<kubeci_results::TestCase>,
    Result<u64, kubeci_results::JunitError>,
) {
    struct Steps<'a>(&'a [u8], usize);
    impl std::io::Read for Steps<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut cases = Vec::new();
    let reader = std::io::BufReader::with_capacity(step, Steps(data, step));
    let result = kubeci_results::read_junit(reader, "fuzz.xml", &junit_limits(), &mut |case| {
        cases.push(case)
    });
    (cases, result.map(|file| file.cases))
}

/// The JUnit reader: any bytes give cases and an end (all read, or an error whose position
/// is inside the input), never a panic; texts stay within their limit; and the answer is
/// the same whether the bytes come at once or one at a time (nothing depends on where a
/// read happens to end: a character, a reference, a `]]>` cut in two).
pub fn junit(data: &[u8]) {
    let limits = junit_limits();
    let (cases, result) = read_junit_by(data, data.len().max(1));
    if let Ok(count) = &result {
        assert_eq!(*count as usize, cases.len());
    }
    assert!(cases.len() as u64 <= limits.max_cases);
    let cut = limits.max_text_bytes + '…'.len_utf8();
    for case in &cases {
        for text in [&case.message, &case.kind, &case.details, &case.output] {
            assert!(text.as_deref().unwrap_or_default().len() <= cut, "{case:?}");
        }
        assert!(case.name.len() <= cut && case.classname.len() <= cut);
    }
    if let Err(error) = &result {
        let lines = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let text = error.to_string();
        assert!(!text.is_empty());
        // Where it stopped, as the error holds it (its text may quote the file's own
        // `line 9`).
        if let Some(at) = error.position() {
            assert!(
                at.line >= 1 && at.line <= lines,
                "{text} (of {lines} lines)"
            );
        }
    }
    let (by_byte, by_byte_result) = read_junit_by(data, 1);
    assert_eq!(by_byte, cases, "one byte at a time");
    assert_eq!(
        by_byte_result.map_err(|e| e.to_string()),
        result.map_err(|e| e.to_string()),
        "one byte at a time"
    );
}
