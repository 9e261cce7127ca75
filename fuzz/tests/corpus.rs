//! Every fuzz target's checks over its committed corpus (`fuzz/corpus/TARGET/`: seeds and
//! the inputs of crashes once found, kept as regressions), on every CI run. The fuzzing
//! itself: `scripts/fuzz` (see docs/security.md).

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "a seed corpus for {target}");
    files
}

fn run(target: &str, check: fn(&[u8])) {
    for (name, data) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: corpus input {name} fails");
    }
}

#[test]
fn job_spec_corpus() {
    run("job_spec", kubeci_fuzz::job_spec);
}

#[test]
fn webhook_corpus() {
    run("webhook", kubeci_fuzz::webhook);
}

#[test]
fn cron_corpus() {
    run("cron", kubeci_fuzz::cron);
}

#[test]
fn log_line_corpus() {
    run("log_line", kubeci_fuzz::log_line);
}

#[test]
fn junit_corpus() {
    run("junit", kubeci_fuzz::junit);
}

/// What the log target's property rests on: markup in a line is escaped.
#[test]
fn markup_in_a_log_line_is_escaped() {
    assert_eq!(kubeci_server::ansi::line_to_html("<b>"), "&lt;b&gt;");
    kubeci_fuzz::log_line(b"<b>bold</b>");
}
