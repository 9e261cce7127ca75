use kubeci_results::{KnownFlaky, ReportFile, ResultsBuilder};

use super::*;

const AT: BuildAt<'static> = BuildAt {
    namespace: "ci",
    job: "api",
    number: 7,
};

fn case(classname: &str, name: &str, outcome: Outcome) -> TestCase {
    TestCase {
        classname: classname.into(),
        name: name.into(),
        outcome,
        ..TestCase::default()
    }
}

fn failed(name: &str, message: &str) -> TestCase {
    TestCase {
        message: Some(message.into()),
        kind: Some("AssertionError".into()),
        details: Some(format!("at pkg.Mod.{name}(Mod.java:12)")),
        output: Some("stdout of the test".into()),
        file: Some("src/mod.rs".into()),
        line: Some(12),
        ..case("pkg.Mod", name, Outcome::Failed)
    }
}

fn tests(results: TestResults, known_flaky: Vec<KnownFlaky>) -> BuildTests {
    BuildTests {
        results,
        known_flaky,
    }
}

fn section(tests: &BuildTests) -> String {
    tests_section(AT, tests).into_string()
}

/// Where `needle` is in `html` (it must be there).
fn at(html: &str, needle: &str) -> usize {
    html.find(needle)
        .unwrap_or_else(|| panic!("{needle} not in {html}"))
}

#[test]
fn an_anchor_is_stable_url_safe_and_tells_similar_ids_apart() {
    let anchor = test_anchor("pkg.Mod::test_a");
    assert!(anchor.starts_with("test-pkg-Mod-test_a-"), "{anchor}");
    assert_eq!(
        anchor,
        test_anchor("pkg.Mod::test_a"),
        "the same every time"
    );
    assert_ne!(anchor, test_anchor("pkg.Mod:test_a"), "{anchor}");
    for id in [
        "a b/c?d#e\"<x>",
        "日本語::テスト",
        "",
        &"x".repeat(10_000),
        "--",
    ] {
        let anchor = test_anchor(id);
        assert!(
            anchor.len() <= 5 + 40 + 1 + 8
                && anchor
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{id}: {anchor}"
        );
        assert!(!anchor.contains("--"), "{anchor}");
    }
    // The hash is fixed: links people saved keep working after an upgrade.
    assert_eq!(
        test_anchor("pkg.Mod::test_a"),
        "test-pkg-Mod-test_a-5cc13f53"
    );
}

// Long on purpose: one build's section read top to bottom, in the order the page shows it.
#[test]
fn failures_come_first_with_their_details_the_known_flaky_marked_with_why() {
    let mut builder = ResultsBuilder::new();
    builder.case(case("pkg.Mod", "skips", Outcome::Skipped));
    builder.case(case("pkg.Mod", "passes", Outcome::Passed));
    builder.case(TestCase {
        reruns: 2,
        ..case("pkg.Mod", "reruns", Outcome::Flaky)
    });
    builder.case(TestCase {
        message: Some("panicked".into()),
        ..case("pkg.Mod", "errs", Outcome::Errored)
    });
    builder.case(failed("fails", "expected 1, got 2"));
    builder.case(failed("flakes", "timed out"));
    builder.file(ReportFile {
        path: "reports/junit.xml".into(),
        cases: 6,
        error: None,
    });
    builder.file(ReportFile {
        path: "reports/bad.xml".into(),
        cases: 0,
        error: Some("not JUnit: its root element is <html>".into()),
    });
    let known = vec![KnownFlaky {
        id: "pkg.Mod::flakes".into(),
        reason: FlakyReason::PassedOnRerun { build: 5 },
    }];
    let html = section(&tests(builder.finish(), known));
    assert!(
        html.contains("<b>6 tests</b>: <span class=\"to to-passed\">1 passed</span> · <span class=\"to to-failed\">2 failed</span> · <span class=\"to to-errored\">1 errored</span> · <span class=\"to to-flaky\">1 flaky</span> · <span class=\"to to-skipped\">1 skipped</span> — 1 of the failures known flaky"),
        "{html}"
    );
    assert!(
        html.contains(
            "<li><code>reports/bad.xml</code>: not JUnit: its root element is &lt;html&gt;</li>"
        ),
        "{html}"
    );
    let order = [
        "id=\"test-pkg-Mod-fails-",
        "id=\"test-pkg-Mod-flakes-",
        "id=\"test-pkg-Mod-errs-",
        "id=\"tests-skipped\"",
        "id=\"tests-flaky\"",
        "id=\"tests-passed\"",
    ];
    let places: Vec<usize> = order.iter().map(|needle| at(&html, needle)).collect();
    assert!(
        places.windows(2).all(|w| w[0] < w[1]),
        "failed, errored, skipped, flaky, passed: {places:?}"
    );
    let fails = test_anchor("pkg.Mod::fails");
    assert!(
        html.contains(&format!("<li class=\"test\" id=\"{fails}\"><div class=\"test-head\"><span class=\"to to-failed\"><span class=\"ic\" aria-hidden=\"true\">✗</span> failed</span> <a class=\"test-id\" href=\"#{fails}\"><code>pkg.Mod::fails</code></a></div><p class=\"test-msg\"><b>AssertionError</b>: expected 1, got 2</p><p class=\"sub\">at <code>src/mod.rs:12</code></p><details><summary>Details and output</summary><pre class=\"test-text\">at pkg.Mod.fails(Mod.java:12)</pre><p class=\"sub\">Output</p><pre class=\"test-text\">stdout of the test</pre></details>")),
        "{html}"
    );
    assert!(
        html.contains("<a href=\"/jobs/ci/api/tests/history?name=pkg.Mod%3A%3Afails&amp;build=7\">History of this test</a>"),
        "{html}"
    );
    let flakes = &html[at(&html, "id=\"test-pkg-Mod-flakes-")..];
    let flakes = &flakes[..at(flakes, "</li>")];
    assert!(
        flakes.contains("<span class=\"flaky-mark\"><span class=\"ic\" aria-hidden=\"true\">≈</span> known flaky</span></div><p class=\"sub flaky-why\">It failed, then passed on a rerun within build #5.</p>"),
        "{flakes}"
    );
    assert!(
        !html[..at(&html, "id=\"test-pkg-Mod-flakes-")].contains("known flaky</span>"),
        "only the known flaky one is marked"
    );
    assert!(html.contains("Failed 2 times before it passed."), "{html}");
    assert!(
        html.contains(
            "<details class=\"tests-list\" id=\"tests-passed\"><summary>Passed (1)</summary>"
        ),
        "passing tests folded: {html}"
    );
    assert!(!html.contains("Showing the first"), "nothing left out");
}

#[test]
fn a_long_text_is_cut_for_the_page_with_a_link_to_the_whole_of_it() {
    let mut builder = ResultsBuilder::new();
    builder.case(TestCase {
        details: Some("x".repeat(5_000)),
        ..failed("long", "short")
    });
    let html = section(&tests(builder.finish(), Vec::new()));
    assert!(
        html.contains(&format!(
            "<pre class=\"test-text\">{}…</pre>",
            "x".repeat(1_000)
        )),
        "{html}"
    );
    assert!(
        html.contains("Cut for the page: the whole text is in <a href=\"/api/v1/jobs/ci/api/builds/7/tests\">"),
        "{html}"
    );
}

#[test]
fn a_test_listed_twice_keeps_every_anchor_on_the_page_its_own() {
    let mut builder = ResultsBuilder::new();
    builder.case(failed("twice", "one"));
    builder.case(failed("twice", "two"));
    let html = section(&tests(builder.finish(), Vec::new()));
    let anchor = test_anchor("pkg.Mod::twice");
    assert!(html.contains(&format!("id=\"{anchor}\"")), "{html}");
    assert!(html.contains(&format!("id=\"{anchor}-2\"")), "{html}");
}

#[test]
fn failures_past_the_kept_details_are_listed_by_their_id() {
    // 1,000 skipped cases first take every kept detail: the failures after them have none.
    let mut builder = ResultsBuilder::new();
    for n in 0..kubeci_results::MAX_DETAILED_CASES {
        builder.case(case("pkg", &format!("skip{n}"), Outcome::Skipped));
    }
    builder.case(case("pkg", "late", Outcome::Failed));
    let html = section(&tests(builder.finish(), Vec::new()));
    let late = at(&html, &format!("id=\"{}\"", test_anchor("pkg::late")));
    assert!(late < at(&html, "id=\"tests-skipped\""), "failures first");
    assert!(html.contains("Its details were not kept"), "{html}");
}

/// A build of `cases` cases, `failing` of them failed, then a tenth each errored, passed
/// on a rerun and skipped; `text(n)` their texts, `id(n)` their names.
fn build_of(
    cases: usize,
    failing: usize,
    text: impl Fn(usize) -> String,
    id: impl Fn(usize) -> String,
) -> BuildTests {
    let mut builder = ResultsBuilder::new();
    for n in 0..cases {
        let outcome = match n % 10 {
            _ if n < failing => Outcome::Failed,
            0 => Outcome::Skipped,
            1 => Outcome::Flaky,
            2 => Outcome::Errored,
            _ => Outcome::Passed,
        };
        let detail = (outcome != Outcome::Passed).then(|| text(n));
        builder.case(TestCase {
            message: detail.clone(),
            kind: detail.clone(),
            details: detail.clone(),
            output: detail.clone(),
            file: detail,
            line: Some(1),
            time: Some(0.001),
            reruns: u32::from(outcome == Outcome::Flaky),
            ..case(&id(n), &format!("test_{n}"), outcome)
        });
    }
    for n in 0..1_000 {
        builder.file(ReportFile {
            path: format!("reports/{n}/{}.xml", id(n)),
            cases: 0,
            error: Some(text(n)),
        });
    }
    let results = builder.finish();
    let known_flaky = results
        .detailed
        .iter()
        .filter(|case| case.outcome.is_failure())
        .map(|case| KnownFlaky {
            id: case.id(),
            reason: FlakyReason::SameCommit {
                failed: 7,
                not_failed: 6,
                commit: text(0),
            },
        })
        .collect();
    tests(results, known_flaky)
}

#[test]
fn the_section_stays_under_its_bound_whatever_the_counts_and_the_texts() {
    // The figure: 100,000 cases, 1,000 of them failed with a stack trace.
    let trace = |n: usize| format!("expected {n} but was {}\n", n + 1).repeat(40);
    let class = |n: usize| format!("com.example.service.module{}.SomethingTest", n % 50);
    let typical = section(&build_of(100_000, 1_000, trace, class));
    assert!(
        typical.len() <= MAX_SECTION_BYTES,
        "{} bytes",
        typical.len()
    );
    assert!(
        typical.contains("Showing the first 40 of 10,900 failures"),
        "cut and said"
    );
    assert!(
        typical.contains("<b>100,000 tests</b>"),
        "counted, not listed"
    );
    assert_eq!(
        typical.matches("<li class=\"test\"").count(),
        SHOWN_FAILURES + 3 * SHOWN_LISTED
    );
    // Every text as long as `tests.json` keeps it, made of the characters that grow most
    // when escaped, and ids of a thousand quotes.
    let quotes = |_| "\"".repeat(kubeci_results::MAX_TEXT_BYTES);
    let worst = section(&build_of(2_000, 100, quotes, |_| "\"".repeat(1_000)));
    assert!(worst.len() <= MAX_SECTION_BYTES, "{} bytes", worst.len());
    assert!(worst.contains("And 990 more"), "report files bounded");
    assert!(!worst.contains("\"\"\""), "no quote unescaped");
}
