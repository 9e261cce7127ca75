//! Reports written by real test runners, run here over small generated projects: pytest
//! (`--junitxml`), and Go's `go test -json` converted by go-junit-report v2 and by
//! gotestsum (built by `scripts/go-tools build` from test-tools/go). What a user would see
//! of each: the counts, every outcome, the messages, the file and line of the failures.
//!
//! They need those tools, so the fast lane skips them; `.ci/run` installs pytest, builds
//! the Go tools and runs them (`cargo test -p kubeci-results -- --include-ignored`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kubeci_results::{Counts, JunitLimits, Outcome, ResultsBuilder, TestCase, TestResults};

/// Reads the report at `path` as kubeci does, and checks it was read whole.
fn read_report(path: &Path) -> TestResults {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut builder = ResultsBuilder::new();
    let read = builder.read_junit(
        std::io::BufReader::new(file),
        "report.xml",
        &JunitLimits::default(),
    );
    assert_eq!(read.error, None, "{}", path.display());
    builder.finish()
}

fn case<'a>(results: &'a TestResults, name: &str) -> &'a TestCase {
    results
        .detailed
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name:?} that did not pass in {results:#?}"))
}

fn outcome_of(results: &TestResults, id: &str) -> Outcome {
    results
        .cases
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id:?} in {:#?}", results.cases))
        .outcome
}

/// The line (from 1) of `source` that contains `text`.
fn line_of(source: &str, text: &str) -> u32 {
    let index = source
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{text:?} is not in the source"));
    index as u32 + 1
}

fn run(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if output.status.code().is_none() {
        panic!("{command:?} was killed: {output:?}");
    }
    output
}

const PYTHON_TESTS: &str = r#"import sys

import pytest


def add(a, b):
    return a + b


def test_passes():
    assert add(1, 2) == 3


def test_fails():
    assert add(1, 2) == 4, "one and two make three"


@pytest.mark.skip(reason="not on this machine")
def test_skipped():
    pass


@pytest.fixture
def broken():
    raise RuntimeError("the fixture broke")


def test_fixture_error(broken):
    pass


@pytest.mark.xfail(reason="known bug #12")
def test_xfail():
    assert add(2, 2) == 5


def test_prints():
    print("hello from the test")
    print("to stderr", file=sys.stderr)
    assert add(0, 0) == 1
"#;

/// Runs pytest over [`PYTHON_TESTS`] in `dir`; its report's results.
fn run_pytest(dir: &Path) -> TestResults {
    std::fs::create_dir(dir.join("tests")).unwrap();
    std::fs::write(dir.join("tests/test_sample.py"), PYTHON_TESTS).unwrap();
    let output = run(Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-o",
            "junit_logging=all",
        ])
        .args(["--junitxml=report.xml", "tests"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir));
    // pytest exits 1 when tests failed; anything else is pytest not running them.
    assert_eq!(
        output.status.code(),
        Some(1),
        "pytest did not run the tests (is it installed? python3 -m pip install pytest):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    read_report(&dir.join("report.xml"))
}

#[test]
#[ignore = "needs pytest (.ci/run installs it: python3 -m pip install pytest==9.2.0)"]
fn pytest_junitxml() {
    let dir = tempfile::tempdir().unwrap();
    let results = run_pytest(dir.path());
    assert_eq!(
        results.counts,
        Counts {
            passed: 1,
            failed: 2,
            errored: 1,
            flaky: 0,
            skipped: 2
        }
    );
    assert_eq!(
        outcome_of(&results, "tests.test_sample::test_passes"),
        Outcome::Passed
    );
    let at = |text| {
        (
            Some("tests/test_sample.py"),
            Some(line_of(PYTHON_TESTS, text)),
        )
    };

    let fails = case(&results, "test_fails");
    assert_eq!(fails.outcome, Outcome::Failed);
    assert_eq!(
        fails.message.as_deref(),
        Some("AssertionError: one and two make three\nassert 3 == 4\n +  where 3 = add(1, 2)")
    );
    assert_eq!(
        (fails.file.as_deref(), fails.line),
        at("assert add(1, 2) == 4")
    );

    let fixture = case(&results, "test_fixture_error");
    assert_eq!(fixture.outcome, Outcome::Errored);
    assert_eq!(
        fixture.message.as_deref(),
        Some(r#"failed on setup with "RuntimeError: the fixture broke""#)
    );
    assert_eq!(
        (fixture.file.as_deref(), fixture.line),
        at(r#"raise RuntimeError("the fixture broke")"#)
    );

    check_pytest_skips_output_and_order(&results);
}

/// The skipped and xfailed tests, the printing test's output, and the order a page shows.
fn check_pytest_skips_output_and_order(results: &TestResults) {
    let at = |text| {
        (
            Some("tests/test_sample.py"),
            Some(line_of(PYTHON_TESTS, text)),
        )
    };
    let skipped = case(results, "test_skipped");
    assert_eq!(
        (skipped.outcome, skipped.message.as_deref()),
        (Outcome::Skipped, Some("not on this machine"))
    );
    let xfail = case(results, "test_xfail");
    assert_eq!(
        (
            xfail.outcome,
            xfail.kind.as_deref(),
            xfail.message.as_deref()
        ),
        (
            Outcome::Skipped,
            Some("pytest.xfail"),
            Some("known bug #12")
        )
    );

    let prints = case(results, "test_prints");
    assert_eq!(prints.outcome, Outcome::Failed);
    assert_eq!(
        (prints.file.as_deref(), prints.line),
        at("assert add(0, 0) == 1")
    );
    let output = prints.output.as_deref().unwrap_or_default();
    assert!(output.contains("hello from the test\n"), "{output}");
    assert!(output.contains("to stderr\n"), "{output}");
    // Failures first, then the error, then the skipped.
    let order: Vec<_> = results.detailed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "test_fails",
            "test_prints",
            "test_fixture_error",
            "test_skipped",
            "test_xfail"
        ]
    );
}

const GO_MOD: &str = "module example.com/demo\n\ngo 1.22\n";

const GO_CALC: &str = "package demo\n\nfunc Add(a, b int) int { return a + b }\n";

const GO_TESTS: &str = r#"package demo

import "testing"

func TestAddPasses(t *testing.T) {
	if Add(1, 2) != 3 {
		t.Fatal("1 + 2 is not 3")
	}
}

func TestAddFails(t *testing.T) {
	if got := Add(1, 2); got != 4 {
		t.Errorf("Add(1, 2) = %d, want 4", got)
	}
}

func TestSkipped(t *testing.T) {
	t.Skip("not on this machine")
}

func TestTable(t *testing.T) {
	for _, c := range []struct {
		name      string
		a, b, sum int
	}{{"small", 1, 1, 2}, {"wrong", 2, 2, 5}} {
		t.Run(c.name, func(t *testing.T) {
			if got := Add(c.a, c.b); got != c.sum {
				t.Errorf("Add(%d, %d) = %d, want %d", c.a, c.b, got, c.sum)
			}
		})
	}
}
"#;

/// In a package of its own: a panic ends its test binary.
const GO_PANIC: &str = r#"package crash

import "testing"

func TestBeforePanic(t *testing.T) {}

func TestPanics(t *testing.T) {
	var m map[string]int
	m["boom"] = 1
}
"#;

/// Writes the Go module into `dir`.
fn write_go_module(dir: &Path) {
    std::fs::create_dir(dir.join("crash")).unwrap();
    for (path, text) in [
        ("go.mod", GO_MOD),
        ("calc.go", GO_CALC),
        ("calc_test.go", GO_TESTS),
        ("crash/crash_test.go", GO_PANIC),
    ] {
        std::fs::write(dir.join(path), text).unwrap();
    }
}

/// `go test` (or a tool that runs it) in `dir`, with nothing to download: the module has
/// no dependency, and this machine's Go is used.
fn go_command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .envs([
            ("GOPROXY", "off"),
            ("GOTOOLCHAIN", "local"),
            ("GOWORK", "off"),
        ])
        .env("GOFLAGS", "-mod=mod")
        .current_dir(dir);
    command
}

/// A Go tool's binary: from `env`, else `scripts/go-tools path TOOL`.
fn go_tool(tool: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{env}={} is not a file", path.display());
        return path;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/go-tools");
    let output = run(Command::new("bash").arg(&script).args(["path", tool]));
    assert!(
        output.status.success(),
        "no {tool}: {} (build it with scripts/go-tools build, or set {env})",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    PathBuf::from(OsString::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// What both tools report of the Go module: the counts, each outcome, the failures'
/// messages and where they failed.
fn check_go_results(results: &TestResults) {
    assert_eq!(
        results.counts,
        Counts {
            passed: 3,
            failed: 4,
            errored: 0,
            flaky: 0,
            skipped: 1
        }
    );
    for (id, outcome) in [
        ("example.com/demo::TestAddPasses", Outcome::Passed),
        ("example.com/demo::TestAddFails", Outcome::Failed),
        ("example.com/demo::TestSkipped", Outcome::Skipped),
        ("example.com/demo::TestTable", Outcome::Failed),
        ("example.com/demo::TestTable/small", Outcome::Passed),
        ("example.com/demo::TestTable/wrong", Outcome::Failed),
        ("example.com/demo/crash::TestBeforePanic", Outcome::Passed),
        ("example.com/demo/crash::TestPanics", Outcome::Failed),
    ] {
        assert_eq!(outcome_of(results, id), outcome, "{id}");
    }
    let fails = case(results, "TestAddFails");
    assert_eq!(fails.message.as_deref(), Some("Failed"));
    assert!(fails
        .details
        .as_deref()
        .unwrap()
        .contains("calc_test.go:13: Add(1, 2) = 3, want 4"));
    let at = |text| (Some("calc_test.go"), Some(line_of(GO_TESTS, text)));
    assert_eq!(
        (fails.file.as_deref(), fails.line),
        at(r#"t.Errorf("Add(1, 2) = %d, want 4", got)"#)
    );
    let wrong = case(results, "TestTable/wrong");
    assert_eq!(
        (wrong.file.as_deref(), wrong.line),
        at(r#"t.Errorf("Add(%d, %d) = %d, want %d""#)
    );
    let skipped = case(results, "TestSkipped");
    let said = [&skipped.message, &skipped.details];
    assert!(
        said.iter().any(|t| t
            .as_deref()
            .unwrap_or_default()
            .contains("not on this machine")),
        "{skipped:?}"
    );
}

#[test]
#[ignore = "needs Go and go-junit-report (scripts/go-tools build)"]
fn go_junit_report() {
    let tool = go_tool("go-junit-report", "KUBECI_GO_JUNIT_REPORT");
    let dir = tempfile::tempdir().unwrap();
    write_go_module(dir.path());
    let output = run(go_command("go", dir.path()).args(["test", "-json", "./..."]));
    assert_eq!(
        output.status.code(),
        Some(1),
        "go test did not run the tests (is Go installed?):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = dir.path().join("test.json");
    std::fs::write(&json, &output.stdout).unwrap();
    let report = dir.path().join("report.xml");
    let output = run(Command::new(tool)
        .args(["-parser", "gojson", "-in"])
        .arg(&json)
        .arg("-out")
        .arg(&report));
    assert!(output.status.success(), "{output:?}");
    let results = read_report(&report);
    check_go_results(&results);
    // go-junit-report puts the panic in its package's <system-out>, not in the test's
    // failure: the case fails with no text, so no place to point at.
    let panics = case(&results, "TestPanics");
    assert_eq!((panics.details.as_deref(), panics.line), (None, None));
}

#[test]
#[ignore = "needs Go and gotestsum (scripts/go-tools build)"]
fn gotestsum() {
    let tool = go_tool("gotestsum", "KUBECI_GOTESTSUM");
    let dir = tempfile::tempdir().unwrap();
    write_go_module(dir.path());
    let report = dir.path().join("report.xml");
    // gotestsum runs `go test -json ./...` itself, and exits 1 as tests failed.
    let output = run(go_command(tool, dir.path())
        .arg("--junitfile")
        .arg(&report)
        .args(["--format", "standard-quiet", "--", "./..."]));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let results = read_report(&report);
    check_go_results(&results);
    // gotestsum keeps the panic's stack in the test's failure: the test's own frame is
    // named, past Go's (/usr/local/go/src/testing/…, runtime/panic.go).
    let panics = case(&results, "TestPanics");
    let details = panics.details.as_deref().unwrap();
    assert!(
        details.contains("panic: assignment to entry in nil map"),
        "{details}"
    );
    let file = panics.file.as_deref().unwrap();
    assert!(file.ends_with("/crash/crash_test.go"), "{file}");
    assert_eq!(panics.line, Some(line_of(GO_PANIC, r#"m["boom"] = 1"#)));
}
