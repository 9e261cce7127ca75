//! `test_reports` and `artifacts` in `job.yaml`: the files a build leaves behind, as glob
//! patterns relative to `workdir`. Each invalid pattern is an error at its own list item
//! (file:line:column) saying what is wrong and how to fix it; jobs without the keys (every
//! kube-jenkins job) stay valid.

use kubeci_spec::{Diagnostic, LoadedJob, Severity};

fn load(extra: &str) -> LoadedJob {
    let yaml = format!(
        "- job:\n    name: web\n    git:\n      url: https://github.com/o/r.git\n    run_command: make\n    timeout: 1h\n{extra}"
    );
    let report = kubeci_spec::load("job.yaml", yaml.as_bytes(), &Default::default());
    report.jobs.into_iter().next().unwrap()
}

fn errors(loaded: &LoadedJob) -> Vec<&Diagnostic> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

#[test]
fn both_keys_are_read_and_parse_as_patterns() {
    let loaded = load(
        "    test_reports: [\"**/junit*.xml\", \"target/nextest/**/*.xml\"]\n    artifacts:\n      - dist/*.tar.gz\n      - coverage/\n",
    );
    assert!(errors(&loaded).is_empty(), "{:?}", loaded.diagnostics);
    let job = loaded.job.expect("valid");
    assert_eq!(
        job.test_reports,
        ["**/junit*.xml", "target/nextest/**/*.xml"]
    );
    assert_eq!(job.artifacts, ["dist/*.tar.gz", "coverage/"]);
    let reports = job.test_report_patterns().unwrap();
    assert!(reports[0].matches("target/junit-unit.xml"));
    assert!(reports[1].matches("target/nextest/ci/junit.xml"));
    let artifacts = job.artifact_patterns().unwrap();
    assert!(artifacts[0].matches("dist/kubeci.tar.gz"));
    assert!(artifacts[1].is_dir() && artifacts[1].matches("coverage/index.html"));

    let before = load("").job.expect("a job without them is valid");
    assert!(before.test_reports.is_empty() && before.artifacts.is_empty());
    assert!(before.test_report_patterns().unwrap().is_empty());
}

#[test]
fn each_invalid_pattern_is_an_error_at_its_item_with_a_fix() {
    let loaded = load(concat!(
        "    test_reports:\n",
        "      - \"**/junit*.xml\"\n",
        "      - /workspace/src/junit.xml\n",
        "      - ../reports/*.xml\n",
        "      - \"\"\n",
        "    artifacts: [\"dist/*.tar.gz\", 'a\\b', \"bin/[a-z\", \"a**/x\", \"./dist/\", \"a//b\", \"x\\u0000y\", \"[z-a]\"]\n",
    ));
    assert!(loaded.job.is_none(), "invalid");
    let found: Vec<(String, usize, usize, &str)> = errors(&loaded)
        .iter()
        .map(|d| (d.field.to_string(), d.line, d.column, d.code))
        .collect();
    let at = |field: &str, line: usize, column: usize| {
        (field.to_owned(), line, column, "invalid-file-pattern")
    };
    assert_eq!(
        found,
        [
            at("job.test_reports[1]", 9, 9),
            at("job.test_reports[2]", 10, 9),
            at("job.test_reports[3]", 11, 9),
            at("job.artifacts[1]", 12, 34),
            at("job.artifacts[2]", 12, 41),
            at("job.artifacts[3]", 12, 53),
            at("job.artifacts[4]", 12, 62),
            at("job.artifacts[5]", 12, 73),
            at("job.artifacts[6]", 12, 81),
            at("job.artifacts[7]", 12, 93),
        ]
    );
    let says = |index: usize, message: &str, help: &str| {
        let d = errors(&loaded)[index];
        assert!(d.message.contains(message), "{}", d.message);
        assert!(d.help.as_deref().unwrap().contains(help), "{:?}", d.help);
    };
    says(0, "absolute path", "relative to the workdir");
    says(1, "has a `..` segment", "without `.` or `..`");
    says(2, "it is empty", "e.g.");
    says(3, "contains `\\`", "brackets");
    says(
        4,
        "the `[` at character 5 is never closed",
        "close it with `]`",
    );
    says(5, "`**` must be a whole segment", "`a/**/b`");
    says(6, "has a `.` segment", "without `.` or `..`");
    says(7, "empty segment", "one `/`");
    says(8, "control character U+0000", "separated by `/`");
    says(9, "the range `z-a` runs backwards", "`[a-z]`");
}

#[test]
fn a_pattern_too_long_or_one_too_many_is_an_error() {
    let long = format!("    artifacts: [\"{}\"]\n", "a".repeat(257));
    let loaded = load(&long);
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .contains("257 characters long; at most 256"),
        "{}",
        errors[0].message
    );

    let many: String = (0..33).map(|i| format!("      - r{i}.xml\n")).collect();
    let loaded = load(&format!("    test_reports:\n{many}"));
    let errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, "too-many-file-patterns");
    assert_eq!(errors[0].field.to_string(), "job.test_reports[32]");
    assert_eq!((errors[0].line, errors[0].column), (40, 9), "the 33rd item");
    assert!(errors[0].message.contains("lists 33 patterns; at most 32"));
    let thirty_two: String = (0..32).map(|i| format!("      - r{i}.xml\n")).collect();
    assert!(load(&format!("    test_reports:\n{thirty_two}"))
        .job
        .is_some());
}

#[test]
fn a_single_string_is_not_a_list() {
    let loaded = load("    artifacts: dist/*.tar.gz\n");
    let errors = errors(&loaded);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field.to_string(), "job.artifacts");
    assert!(errors[0].message.contains("list"), "{}", errors[0].message);
}
