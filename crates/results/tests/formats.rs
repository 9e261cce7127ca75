//! JUnit as each tool writes it (tests/reports/): what a user sees of every case — its
//! outcome, message, where it failed, its output and reruns. pytest's, jest-junit's,
//! go-junit-report's and gotestsum's reports were written by those tools (pytest 9.2,
//! jest 29.7 with jest-junit 16.0, go-junit-report 2.1.0 and gotestsum 1.13.0 over
//! `go test -json`; tests/real_runners.rs runs them afresh); Surefire's, Failsafe's,
//! nextest's and PHPUnit's follow those tools' writers (Surefire's StatelessXmlReporter,
//! nextest's quick-junit, PHPUnit's JUnit logger and its end-to-end tests).

use kubeci_results::{read_junit, Counts, JunitLimits, Outcome, ResultsBuilder, TestCase};

fn report(name: &str) -> Vec<TestCase> {
    let path = format!("{}/tests/reports/{name}", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut cases = Vec::new();
    let read = read_junit(
        std::io::BufReader::new(file),
        name,
        &JunitLimits::default(),
        &mut |case| cases.push(case),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(read.cases, cases.len() as u64);
    assert_eq!(read.path, name);
    cases
}

fn case<'a>(cases: &'a [TestCase], name: &str) -> &'a TestCase {
    cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name:?} in {cases:#?}"))
}

fn counts(cases: &[TestCase]) -> Counts {
    let mut counts = Counts::default();
    for case in cases {
        counts.add(case.outcome);
    }
    counts
}

fn counts_of(passed: u64, failed: u64, errored: u64, flaky: u64, skipped: u64) -> Counts {
    Counts {
        passed,
        failed,
        errored,
        flaky,
        skipped,
    }
}

fn at(case: &TestCase) -> (Option<&str>, Option<u32>) {
    (case.file.as_deref(), case.line)
}

#[test]
fn surefire() {
    let cases = report("surefire.xml");
    assert_eq!(counts(&cases), counts_of(1, 1, 1, 0, 1));
    let subtracts = case(&cases, "subtracts");
    assert_eq!(subtracts.suite, "com.example.CalculatorTest");
    assert_eq!(subtracts.id(), "com.example.CalculatorTest::subtracts");
    assert_eq!(subtracts.outcome, Outcome::Failed);
    assert_eq!(
        subtracts.message.as_deref(),
        Some("expected: <1> but was: <-1>")
    );
    assert_eq!(
        subtracts.kind.as_deref(),
        Some("org.opentest4j.AssertionFailedError")
    );
    assert!(subtracts
        .details
        .as_deref()
        .unwrap()
        .starts_with("org.opentest4j.AssertionFailedError: expected: <1> but was: <-1>\n\tat "));
    // The JDK's and JUnit's frames are passed over; Java names the file only.
    assert_eq!(at(subtracts), (Some("CalculatorTest.java"), Some(21)));
    assert_eq!(
        subtracts.output.as_deref(),
        Some("subtracting 2 from 1\nWARN rounding mode not set\n")
    );
    assert_eq!(subtracts.time, Some(0.011));
    let divides = case(&cases, "divides");
    assert_eq!(divides.outcome, Outcome::Errored);
    assert_eq!(
        divides.message.as_deref(),
        Some(r#"Cannot invoke "java.lang.Integer.intValue()" because "divisor" is null"#)
    );
    assert_eq!(at(divides), (Some("Calculator.java"), Some(14)));
    let multiplies = case(&cases, "multiplies");
    assert_eq!(multiplies.outcome, Outcome::Skipped);
    assert_eq!(multiplies.message.as_deref(), Some("not on CI"));
    assert_eq!(case(&cases, "adds").outcome, Outcome::Passed);
}

#[test]
fn failsafe_reruns_flaky_and_failing_each_time() {
    let cases = report("failsafe-rerun.xml");
    assert_eq!(counts(&cases), counts_of(1, 1, 0, 2, 0));
    let reconnects = case(&cases, "reconnects");
    assert_eq!((reconnects.outcome, reconnects.reruns), (Outcome::Flaky, 1));
    assert_eq!(
        reconnects.message.as_deref(),
        Some("expected: <true> but was: <false>")
    );
    assert!(reconnects
        .details
        .as_deref()
        .unwrap()
        .contains("at com.example.NetworkIT.reconnects(NetworkIT.java:33)"));
    assert_eq!(at(reconnects), (Some("NetworkIT.java"), Some(33)));
    assert_eq!(
        reconnects.output.as_deref(),
        Some("attempt 1: socket closed early\n")
    );
    let times_out = case(&cases, "times out");
    assert_eq!((times_out.outcome, times_out.reruns), (Outcome::Flaky, 2));
    assert_eq!(
        times_out.kind.as_deref(),
        Some("java.net.SocketTimeoutException")
    );
    let serves = case(&cases, "serves");
    assert_eq!((serves.outcome, serves.reruns), (Outcome::Failed, 2));
    assert_eq!(
        serves.message.as_deref(),
        Some("expected: <200> but was: <503>")
    );
    assert_eq!(at(serves), (Some("NetworkIT.java"), Some(58)));
    assert_eq!(
        serves.output.as_deref(),
        Some("GET /health -> 503\nGET /health -> 503 (rerun 1)\nGET /health -> 503 (rerun 2)\n")
    );
}

#[test]
fn pytest() {
    let cases = report("pytest.xml");
    assert_eq!(counts(&cases), counts_of(1, 2, 1, 0, 2));
    let fails = case(&cases, "test_fails");
    assert_eq!(fails.suite, "pytest");
    assert_eq!(fails.id(), "tests.test_sample::test_fails");
    assert_eq!(fails.outcome, Outcome::Failed);
    assert_eq!(
        fails.message.as_deref(),
        Some("AssertionError: one and two make three\nassert 3 == 4\n +  where 3 = add(1, 2)")
    );
    assert!(fails
        .details
        .as_deref()
        .unwrap()
        .contains(">       assert add(1, 2) == 4"));
    assert_eq!(at(fails), (Some("tests/test_sample.py"), Some(13)));
    let fixture = case(&cases, "test_fixture_error");
    assert_eq!(fixture.outcome, Outcome::Errored);
    assert_eq!(
        fixture.message.as_deref(),
        Some(r#"failed on setup with "RuntimeError: the fixture broke""#)
    );
    assert_eq!(at(fixture), (Some("tests/test_sample.py"), Some(23)));
    let skipped = case(&cases, "test_skipped");
    assert_eq!(skipped.outcome, Outcome::Skipped);
    assert_eq!(skipped.kind.as_deref(), Some("pytest.skip"));
    assert_eq!(skipped.message.as_deref(), Some("not on this machine"));
    let xfail = case(&cases, "test_xfail");
    assert_eq!(xfail.outcome, Outcome::Skipped);
    assert_eq!(xfail.kind.as_deref(), Some("pytest.xfail"));
    assert_eq!(xfail.message.as_deref(), Some("known bug #12"));
    let prints = case(&cases, "test_prints");
    assert_eq!(prints.outcome, Outcome::Failed);
    let output = prints.output.as_deref().unwrap();
    assert!(output.contains("hello from the test"), "{output}");
    assert!(output.contains("to stderr"), "{output}");
    assert_eq!(at(prints), (Some("tests/test_sample.py"), Some(39)));
}

#[test]
fn go_junit_report() {
    let cases = report("go-junit-report.xml");
    assert_eq!(counts(&cases), counts_of(3, 4, 0, 0, 1));
    let fails = case(&cases, "TestAddFails");
    assert_eq!(fails.id(), "example.com/demo::TestAddFails");
    assert_eq!(fails.message.as_deref(), Some("Failed"));
    assert_eq!(
        fails.details.as_deref(),
        Some("    calc_test.go:12: adding one and two\n    calc_test.go:14: Add(1, 2) = 3, want 4")
    );
    // The first location in the output: a t.Log line before the failure is named.
    assert_eq!(at(fails), (Some("calc_test.go"), Some(12)));
    let wrong = case(&cases, "TestTable/wrong");
    assert_eq!(wrong.outcome, Outcome::Failed);
    assert_eq!(at(wrong), (Some("calc_test.go"), Some(29)));
    assert_eq!(case(&cases, "TestTable/small").outcome, Outcome::Passed);
    assert_eq!(case(&cases, "TestTable").outcome, Outcome::Failed);
    let skipped = case(&cases, "TestSkipped");
    assert_eq!(skipped.outcome, Outcome::Skipped);
    assert_eq!(
        skipped.details.as_deref(),
        Some("    calc_test.go:19: not on this machine")
    );
    // go-junit-report puts a panic in its package's <system-out>, not in the test's
    // failure: the case fails, with no text and no location.
    let panics = case(&cases, "TestPanics");
    assert_eq!(panics.outcome, Outcome::Failed);
    assert_eq!(
        (panics.details.as_deref(), at(panics)),
        (None, (None, None))
    );
}

#[test]
fn gotestsum() {
    let cases = report("gotestsum.xml");
    assert_eq!(counts(&cases), counts_of(3, 4, 0, 0, 1));
    let fails = case(&cases, "TestAddFails");
    assert_eq!(fails.classname, "example.com/demo");
    assert!(fails
        .details
        .as_deref()
        .unwrap()
        .contains("calc_test.go:14: Add(1, 2) = 3, want 4\n--- FAIL: TestAddFails"));
    let panics = case(&cases, "TestPanics");
    assert_eq!(panics.outcome, Outcome::Failed);
    assert!(panics
        .details
        .as_deref()
        .unwrap()
        .contains("panic: assignment to entry in nil map"));
    // Go's own frames (/usr/local/go/src/testing/…) are passed over.
    assert_eq!(
        at(panics),
        (Some("/tmp/jr/go/crash/crash_test.go"), Some(9))
    );
    let skipped = case(&cases, "TestSkipped");
    assert_eq!(skipped.outcome, Outcome::Skipped);
    assert!(skipped
        .message
        .as_deref()
        .unwrap()
        .contains("calc_test.go:19: not on this machine"));
}

#[test]
fn nextest() {
    let cases = report("nextest.xml");
    assert_eq!(counts(&cases), counts_of(2, 2, 0, 1, 0));
    let subtracts = case(&cases, "tests::subtracts");
    assert_eq!(
        (subtracts.suite.as_str(), subtracts.classname.as_str()),
        ("calc", "calc")
    );
    assert_eq!(
        subtracts.message.as_deref(),
        Some("thread 'tests::subtracts' panicked at src/lib.rs:12:5")
    );
    assert_eq!(
        subtracts.kind.as_deref(),
        Some("test failure with exit code 101")
    );
    assert_eq!(at(subtracts), (Some("src/lib.rs"), Some(12)));
    let output = subtracts.output.as_deref().unwrap();
    assert!(
        output.starts_with("\nrunning 1 test\ntest tests::subtracts ... FAILED"),
        "{output:?}"
    );
    assert!(
        output.contains("finished in 0.00s\n\nthread 'tests::subtracts' panicked"),
        "{output:?}"
    );
    let fetches = case(&cases, "tests::fetches");
    assert_eq!((fetches.outcome, fetches.reruns), (Outcome::Flaky, 1));
    assert_eq!(at(fetches), (Some("src/net.rs"), Some(40)));
    assert!(fetches
        .details
        .as_deref()
        .unwrap()
        .contains("Connection refused"));
    let forever = case(&cases, "serves_forever");
    assert_eq!(forever.suite, "calc::integration");
    assert_eq!((forever.outcome, forever.reruns), (Outcome::Failed, 1));
    assert_eq!(forever.kind.as_deref(), Some("test timeout"));
    assert_eq!(forever.time, Some(60.001));
}

#[test]
fn jest_junit() {
    let cases = report("jest-junit.xml");
    assert_eq!(counts(&cases), counts_of(1, 3, 1, 0, 1));
    let five = case(&cases, "sum adds 2 + 2 to equal 5");
    assert_eq!(five.suite, "sum");
    assert_eq!(five.outcome, Outcome::Failed);
    assert!(five.details.as_deref().unwrap().starts_with(
        "Error: expect(received).toBe(expected) // Object.is equality\n\nExpected: 5\nReceived: 4"
    ));
    // The report's file="src/sum.test.js", its line from the stack trace.
    assert_eq!(at(five), (Some("src/sum.test.js"), Some(10)));
    let throws = case(&cases, "sum throws & <escapes>");
    assert_eq!(at(throws), (Some("src/sum.test.js"), Some(16)));
    assert_eq!(
        case(&cases, "sum subtracts, some day").outcome,
        Outcome::Skipped
    );
    let broken: Vec<_> = cases
        .iter()
        .filter(|c| c.classname == "Test suite failed to run")
        .collect();
    assert_eq!(broken.len(), 2);
    assert_eq!(broken[0].outcome, Outcome::Errored);
    assert!(broken[0]
        .details
        .as_deref()
        .unwrap()
        .contains("Cannot find module './does-not-exist' from 'src/broken.test.js'"));
    assert_eq!(at(broken[0]), (Some("src/broken.test.js"), Some(1)));
}

#[test]
fn phpunit_suites_nest() {
    let cases = report("phpunit.xml");
    assert_eq!(counts(&cases), counts_of(3, 1, 1, 0, 1));
    let subtract = case(&cases, "testSubtract");
    // The unnamed outer suite adds nothing to the path.
    assert_eq!(subtract.suite, "unit / App\\Tests\\CalculatorTest");
    assert_eq!(subtract.classname, "App.Tests.CalculatorTest");
    assert_eq!(
        subtract.kind.as_deref(),
        Some("PHPUnit\\Framework\\ExpectationFailedException")
    );
    assert!(subtract
        .details
        .as_deref()
        .unwrap()
        .contains("Failed asserting that -1 is identical to 1."));
    // The report's own file and line: the test method's.
    assert_eq!(
        at(subtract),
        (Some("/app/tests/CalculatorTest.php"), Some(17))
    );
    assert_eq!(case(&cases, "testDivide").outcome, Outcome::Errored);
    assert_eq!(case(&cases, "testPower").outcome, Outcome::Skipped);
    let data_set = case(&cases, "testSum with data set \"negative\"");
    assert_eq!(
        data_set.suite,
        "unit / App\\Tests\\CalculatorTest / App\\Tests\\CalculatorTest::testSum"
    );
    assert_eq!(data_set.outcome, Outcome::Passed);
}

#[test]
fn the_builder_records_each_file_and_keeps_failures_first() {
    let mut builder = ResultsBuilder::new();
    for name in ["pytest.xml", "nextest.xml"] {
        let path = format!("{}/tests/reports/{name}", env!("CARGO_MANIFEST_DIR"));
        let file = std::fs::File::open(path).unwrap();
        let read = builder.read_junit(
            std::io::BufReader::new(file),
            &format!("reports/{name}"),
            &JunitLimits::default(),
        );
        assert_eq!(read.error, None);
    }
    let results = builder.finish();
    assert_eq!(results.counts, counts_of(3, 4, 1, 1, 2));
    let files: Vec<_> = results
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.cases))
        .collect();
    assert_eq!(
        files,
        [("reports/pytest.xml", 6), ("reports/nextest.xml", 5)]
    );
    let outcomes: Vec<_> = results.detailed.iter().map(|c| c.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Errored,
            Outcome::Flaky,
            Outcome::Skipped,
            Outcome::Skipped
        ]
    );
    assert_eq!(results.cases.len(), 11);
}
