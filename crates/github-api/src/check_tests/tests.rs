use super::*;
use crate::check_run::{self, SUMMARY_LIMIT};
use kubeci_engine::report::{CommitState, ReportTarget, Reported};
use kubeci_engine::BuildState;
use kubeci_results::{Outcome, ReportFile, ResultsBuilder};

fn target() -> ReportTarget {
    ReportTarget {
        namespace: "team".into(),
        job: "demo".into(),
        number: 3,
        build_name: "demo-3".into(),
        trigger: Some("pull-request".into()),
        git_url: Some("https://github.com/o/r".into()),
        commit: Some("c0ffee".into()),
        pull_request: Some(7),
        url: "https://ci.example.com/jobs/team/demo/builds/3".into(),
        context: Some("kubeci/demo".into()),
        created_at: Some(1_000_000),
        workdir: Some("backend".into()),
        checkout_dir: Some("/workspace/src".into()),
    }
}

static FAILED: BuildState = BuildState::Failed {
    reason: String::new(),
    message: String::new(),
};
static BEFORE: Reported = Reported {
    states: Vec::new(),
    check_run: None,
};

fn report<'a>(
    target: &'a ReportTarget,
    tests: Option<&'a TestResults>,
    known_flaky: &'a [String],
    log_tail: Option<&'a str>,
) -> Report<'a> {
    Report {
        target,
        state: CommitState::Failure,
        description: "Build failed",
        build: &FAILED,
        finished_at: Some(1_000_072),
        before: &BEFORE,
        may_have_been_sent: false,
        log_tail,
        tests,
        known_flaky,
    }
}

fn case(name: &str, outcome: Outcome) -> TestCase {
    TestCase {
        classname: "tests.test_app".into(),
        name: name.into(),
        outcome,
        ..TestCase::default()
    }
}

/// A failed case with a message, details of `lines` lines, its output, in `file` at `line`.
fn failed(name: &str, file: Option<&str>, line: Option<u32>) -> TestCase {
    let details: Vec<String> = (1..=15)
        .map(|n| format!("trace line {n} of {name}"))
        .collect();
    TestCase {
        message: Some(format!("assert 1 == 2 in {name}")),
        details: Some(details.join("\n")),
        output: Some(format!("printed by {name}")),
        file: file.map(str::to_owned),
        line,
        ..case(name, Outcome::Failed)
    }
}

/// 412 passed, 3 failed (`test_a` in `tests/test_a.py`, `test_b` with no file, `test_c`
/// outside the repository), 1 errored, 2 flaky, 5 skipped.
fn results() -> TestResults {
    let mut builder = ResultsBuilder::new();
    for n in 0..412 {
        builder.case(case(&format!("ok_{n}"), Outcome::Passed));
    }
    builder.case(failed("test_a", Some("tests/test_a.py"), Some(12)));
    builder.case(failed("test_b", None, None));
    builder.case(failed("test_c", Some("/usr/lib/python3/x.py"), Some(3)));
    let mut errored = case("test_d", Outcome::Errored);
    errored.message = Some("fixture `db` broke".into());
    errored.file = Some("/workspace/src/backend/tests/test_d.py".into());
    builder.case(errored);
    for n in 0..2 {
        builder.case(case(&format!("rerun_{n}"), Outcome::Flaky));
    }
    for n in 0..5 {
        builder.case(case(&format!("skip_{n}"), Outcome::Skipped));
    }
    builder.file(ReportFile {
        path: "reports/coverage.xml".into(),
        cases: 0,
        error: Some("not JUnit: its root is <coverage>".into()),
    });
    builder.finish()
}

#[test]
fn the_title_ends_with_the_counts_of_the_final_report() {
    let target = target();
    let results = results();
    let known = ["tests.test_app::test_b".to_owned()];
    let final_report = report(&target, Some(&results), &known, None);
    assert_eq!(
        check_run::title(&final_report),
        "Failed in 1m 12s: 412 passed, 3 failed, 1 errored — 1 known flaky, 2 flaky (passed on rerun), 5 skipped"
    );
    let without = report(&target, None, &[], None);
    assert_eq!(check_run::title(&without), "Failed in 1m 12s");
    let running = Report {
        state: CommitState::Running,
        build: &BuildState::Running,
        ..final_report
    };
    assert_eq!(
        check_run::title(&running),
        "Running",
        "only an end has counts"
    );
}

#[test]
fn the_summary_starts_with_the_counts_and_the_failed_tests_before_the_log() {
    let target = target();
    let results = results();
    let known = ["tests.test_app::test_b".to_owned()];
    let summary = check_run::summary(&report(&target, Some(&results), &known, Some("LOG END\n")));
    let at = |text: &str| {
        summary
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} not in:\n{summary}"))
    };
    assert!(at("| 412 | 3 | 1 | 2 | 5 |") < at("#### Failed tests"));
    assert!(at("3 failed, 1 errored — 1 known flaky") < at("#### Failed tests"));
    assert!(at("#### Failed tests") < at("| Trigger |"));
    assert!(at("| Trigger |") < at("LOG END"));
    // Each failure: its id, its outcome, where it is, its message, its details' first lines.
    assert!(
        summary.contains("- **`tests.test_app::test_a`** failed · `backend/tests/test_a.py:12`"),
        "{summary}"
    );
    assert!(summary.contains("- **`tests.test_app::test_b`** failed (known flaky)\n"));
    assert!(summary.contains("- **`tests.test_app::test_d`** errored · `backend/tests/test_d.py`"));
    assert!(summary.contains("  assert 1 == 2 in test_a\n  trace line 1 of test_a\n"));
    assert!(summary.contains("  trace line 10 of test_a\n  …\n"));
    assert!(
        !summary.contains("trace line 11 of test_a"),
        "the first lines only"
    );
    assert!(
        !summary.contains("printed by"),
        "output is the annotation's"
    );
    assert!(summary
        .contains("Not read: `reports/coverage.xml` — not JUnit: its root is \\<coverage\\>"));
    assert!(summary.contains(
        "2 failed tests are marked on their line in *Files changed*. 2 failed tests name no file of the repository: they are listed here only."
    ));
    assert!(
        !summary.contains("ok_1"),
        "passed tests are counted, not listed"
    );
}

#[test]
fn with_five_thousand_failures_the_summary_fits_and_the_log_gives_way_first() {
    let target = target();
    let mut results = TestResults::default();
    for n in 0..5_000 {
        let file = format!("tests/test_{n}.py");
        results
            .detailed
            .push(failed(&format!("t{n}"), Some(&file), Some(n)));
        results.counts.add(Outcome::Failed);
    }
    let log = format!(
        "first log line\n{}last log line\n",
        "a line of the log\n".repeat(5_000)
    );
    let summary = check_run::summary(&report(&target, Some(&results), &[], Some(&log)));
    let length = summary.chars().count();
    assert!(length <= SUMMARY_LIMIT, "{length}");
    assert!(summary.contains("| 0 | 5000 | 0 | 0 | 0 |"));
    assert!(summary.contains("- **`tests.test_app::t0`** failed"));
    let listed = summary.matches("- **`tests.test_app::t").count();
    assert_eq!(listed, LISTED, "a line each after the first {WITH_DETAILS}");
    assert!(
        summary.contains(&format!(
            "And {} more failed tests: see [the build's page]({})",
            5_000 - LISTED,
            target.url
        )),
        "{summary}"
    );
    assert!(
        summary.contains("last log line"),
        "the end of the log in what is left"
    );
    assert!(!summary.contains("first log line"), "cut from its start");
    assert!(
        summary.ends_with("[The whole log](https://ci.example.com/jobs/team/demo/builds/3#log)\n")
    );

    // Long messages: the failures fill the summary and the log gives way whole.
    for case in &mut results.detailed {
        case.message = Some("m".repeat(400));
    }
    let summary = check_run::summary(&report(&target, Some(&results), &[], Some(&log)));
    assert!(summary.chars().count() <= SUMMARY_LIMIT);
    assert!(summary.contains("more failed tests: see"));
    let failed_tests = summary.find("#### Failed tests").unwrap();
    let log_at = summary.find("last log line").unwrap_or(usize::MAX);
    assert!(failed_tests < log_at);

    // In little room, as many as fit, and how many more.
    let small = section(&report(&target, Some(&results), &[], None), 3_000);
    assert!(small.chars().count() <= 3_000, "{}", small.chars().count());
    let shown = small.matches("- **`tests.test_app::t").count();
    assert!(shown >= 1, "{small}");
    assert!(small.contains(&format!("And {} more failed tests", 5_000 - shown)));
    assert_eq!(section(&report(&target, Some(&results), &[], None), 10), "");
}

#[test]
fn a_failed_test_in_the_repository_is_one_annotation_on_its_line() {
    let target = target();
    let results = results();
    let known = ["tests.test_app::test_d".to_owned()];
    let annotations = annotations(&report(&target, Some(&results), &known, None));
    assert_eq!((annotations.with_file, annotations.without_file), (2, 2));
    let [a, d] = annotations.list.as_slice() else {
        panic!("{:#?}", annotations.list)
    };
    assert_eq!(
        *a,
        json!({
            "path": "backend/tests/test_a.py",
            "start_line": 12,
            "end_line": 12,
            "annotation_level": "failure",
            "title": "tests.test_app::test_a",
            "message": format!(
                "assert 1 == 2 in test_a\n\n{}",
                (1..=15).map(|n| format!("trace line {n} of test_a")).collect::<Vec<_>>().join("\n")
            ),
            "raw_details": "printed by test_a",
        })
    );
    assert_eq!(d["path"], "backend/tests/test_d.py", "absolute in the pod");
    assert_eq!(
        (d["start_line"].as_u64(), d["end_line"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(d["annotation_level"], "warning", "known flaky");
    assert_eq!(d["message"], "fixture `db` broke");
    assert!(d.get("raw_details").is_none(), "no output");
}

#[test]
fn annotations_are_cut_to_githubs_limits_and_their_number_capped() {
    let target = target();
    let mut results = TestResults::default();
    let mut long = failed(&"n".repeat(300), Some("a.py"), None);
    long.message = Some("é".repeat(40_000));
    long.output = Some("o".repeat(70_000));
    results.detailed.push(long);
    for n in 0..MAX_ANNOTATIONS + 200 {
        results
            .detailed
            .push(failed(&format!("t{n}"), Some("b.py"), Some(1)));
    }
    let annotations = annotations(&report(&target, Some(&results), &[], None));
    assert_eq!(annotations.list.len(), MAX_ANNOTATIONS);
    assert_eq!(annotations.with_file, MAX_ANNOTATIONS + 201);
    let first = &annotations.list[0];
    assert!(first["message"].as_str().unwrap().len() <= ANNOTATION_TEXT_BYTES);
    assert!(first["message"].as_str().unwrap().ends_with('…'));
    assert!(first["raw_details"].as_str().unwrap().len() <= ANNOTATION_TEXT_BYTES);
    assert_eq!(
        first["title"].as_str().unwrap().chars().count(),
        ANNOTATION_TITLE_CHARS
    );
    let section = section(&report(&target, Some(&results), &[], None), SUMMARY_LIMIT);
    assert!(
        section.contains("1201 failed tests are marked on their line in *Files changed* (the first 1000: GitHub is sent no more)."),
        "{section}"
    );
}

#[test]
fn annotations_go_fifty_to_a_request_and_only_those_github_lacks_are_sent_again() {
    let target = target();
    let mut results = TestResults::default();
    for n in 0..120 {
        results
            .detailed
            .push(failed(&format!("t{n}"), Some("a.py"), Some(n % 3)));
    }
    // Two runs of one test in two reports: two annotations alike.
    results.detailed.push(failed("t0", Some("a.py"), Some(0)));
    let wanted = annotations(&report(&target, Some(&results), &[], None)).list;
    let sizes: Vec<usize> = batches(&wanted).map(<[Value]>::len).collect();
    assert_eq!(sizes, [50, 50, 21]);

    assert_eq!(missing(wanted.clone(), &[]), wanted, "none sent yet");
    // The first request got through: GitHub lists what it holds (with fields of its own).
    let mut present: Vec<Value> = wanted[..50].to_vec();
    for annotation in &mut present {
        annotation["blob_href"] = "https://github.com/o/r/blob/c0ffee/a.py".into();
    }
    let rest = missing(wanted.clone(), &present);
    assert_eq!(rest, wanted[50..], "the first fifty not again");
    // Both runs of `t0` sent: neither again; one of them: the other.
    present.push(wanted[120].clone());
    assert_eq!(missing(wanted.clone(), &present), wanted[50..120]);
    assert_eq!(missing(wanted.clone(), &wanted), Vec::<Value>::new());
}

#[test]
fn names_and_messages_show_as_written_not_as_markdown() {
    let target = target();
    let mut results = TestResults::default();
    let mut odd = failed("test `x` [y](javascript:z)", None, None);
    odd.message = Some("<img src=x> **bold** | cell\nsecond line".into());
    for n in 0..WITH_DETAILS {
        results.detailed.push(failed(&format!("t{n}"), None, None));
    }
    results.detailed.push(odd);
    results.counts.failed = results.detailed.len() as u64;
    let summary = check_run::summary(&report(&target, Some(&results), &[], None));
    assert!(
        summary.contains(
            "- **``tests.test_app::test `x` [y](javascript:z)``** failed: \\<img src=x\\> \\*\\*bold\\*\\* \\| cell second line\n"
        ),
        "{summary}"
    );
}
