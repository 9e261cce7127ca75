//! Which files the patterns pick, relative to the workdir, as what.

use kubeci_collect::{collect, CollectError, Kinds, Limits};

use crate::{paths, patterns, refused, Workspace};

const REPORTS: [&str; 2] = ["**/junit*.xml", "target/nextest/**/*.xml"];
const ARTIFACTS: [&str; 2] = ["dist/*.tar.gz", "coverage/"];

fn project() -> Workspace {
    let ws = Workspace::create();
    ws.file("README.md", "top")
        .file("app/junit.xml", "<testsuites/>")
        .file("app/pkg/junit-unit.xml", "<testsuite/>")
        .file("app/target/nextest/ci/junit.xml", "<testsuites/>")
        .file("app/target/nextest/ci/other.xml", "<testsuites/>")
        .file("app/target/debug/build.log", "log")
        .file("app/dist/app-1.0.tar.gz", "tar")
        .file("app/dist/app-1.0.zip", "zip")
        .file("app/coverage/index.html", "<html>")
        .file("app/coverage/lcov-report/src/a.js.html", "<html>")
        .file("app/src/main.rs", "fn main() {}");
    ws
}

#[test]
fn the_patterns_pick_files_under_the_workdir_named_from_it() {
    let ws = project();
    let collected = ws.collect("app", &REPORTS, &ARTIFACTS);
    assert_eq!(
        paths(&collected),
        [
            "coverage/index.html",
            "coverage/lcov-report/src/a.js.html",
            "dist/app-1.0.tar.gz",
            "junit.xml",
            "pkg/junit-unit.xml",
            "target/nextest/ci/junit.xml",
            "target/nextest/ci/other.xml",
        ]
    );
    assert!(collected.refused.is_empty(), "{:?}", refused(&collected));
    let reports: Vec<&str> = collected.test_reports().map(|f| f.path.as_str()).collect();
    assert_eq!(
        reports,
        [
            "junit.xml",
            "pkg/junit-unit.xml",
            "target/nextest/ci/junit.xml",
            "target/nextest/ci/other.xml"
        ]
    );
    let artifacts: Vec<&str> = collected.artifacts().map(|f| f.path.as_str()).collect();
    assert_eq!(
        artifacts,
        [
            "coverage/index.html",
            "coverage/lcov-report/src/a.js.html",
            "dist/app-1.0.tar.gz"
        ]
    );
    let junit = &collected.files[3];
    assert_eq!(junit.size, "<testsuites/>".len() as u64);
    assert_eq!(
        junit.full,
        ws.root().canonicalize().unwrap().join("app/junit.xml")
    );
    assert_eq!(
        std::fs::read_to_string(&junit.full).unwrap(),
        "<testsuites/>"
    );
}

#[test]
fn the_workdir_may_be_written_loosely_or_be_the_checkout() {
    let ws = project();
    let loose = ws.collect("./app/../app/", &REPORTS, &[]);
    assert_eq!(loose.files.len(), 4);
    let top = ws.collect("", &["app/junit.xml", "*.md"], &[]);
    assert_eq!(paths(&top), ["README.md", "app/junit.xml"]);
}

#[test]
fn a_file_both_patterns_match_is_one_file_of_both_kinds() {
    let ws = project();
    let collected = ws.collect("app", &["junit.xml"], &["*.xml"]);
    assert_eq!(paths(&collected), ["junit.xml"]);
    assert_eq!(
        collected.files[0].kinds,
        Kinds {
            test_report: true,
            artifact: true
        }
    );
}

/// Hidden names are taken only where a pattern writes their `.`: a `**` never ships
/// `.git/config` (which may hold a token) or `.env`.
#[test]
fn hidden_files_are_taken_only_when_named() {
    let ws = Workspace::create();
    ws.file(".git/config", "[http] extraheader = AUTHORIZATION: token")
        .file(".env", "TOKEN=x")
        .file("out/.cache/a.txt", "hidden dir")
        .file("out/a.txt", "a")
        .file(".coverage/lcov.info", "lcov");
    let everything = ws.collect("", &[], &["**"]);
    assert_eq!(paths(&everything), ["out/a.txt"]);
    let dir = ws.collect("", &[], &["out/"]);
    assert_eq!(paths(&dir), ["out/a.txt"]);
    let named = ws.collect("", &[], &[".coverage/", ".env"]);
    assert_eq!(paths(&named), [".coverage/lcov.info", ".env"]);
}

#[test]
fn a_missing_workdir_gives_nothing_and_says_so() {
    let ws = project();
    let collected = ws.collect("web", &REPORTS, &ARTIFACTS);
    assert!(collected.files.is_empty());
    assert_eq!(
        refused(&collected),
        [(
            ".",
            "the workdir `web` does not exist in the workspace: nothing is collected"
        )]
    );
    let file = ws.collect("README.md", &REPORTS, &[]);
    assert_eq!(
        refused(&file),
        [(
            ".",
            "the workdir `README.md` is not a directory: nothing is collected"
        )]
    );
}

#[test]
fn no_patterns_collect_nothing_without_reading_the_workspace() {
    let ws = project();
    let missing = ws.root().join("nowhere");
    let collected = collect(&missing, "app", &[], &[], &Limits::default()).unwrap();
    assert_eq!(collected, Default::default());
}

#[test]
fn a_workdir_leaving_the_checkout_or_a_missing_workspace_is_an_error_not_worth_retrying() {
    let ws = project();
    let reports = patterns(&REPORTS);
    let err = collect(&ws.root(), "../other", &reports, &[], &Limits::default()).unwrap_err();
    assert!(matches!(err, CollectError::Workdir { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "workdir `../other` leaves the checkout through `..`"
    );
    assert!(!err.is_retryable());
    let err = collect(
        &ws.root().join("gone"),
        "",
        &reports,
        &[],
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, CollectError::Workspace { .. }), "{err}");
    assert!(!err.is_retryable());
    let err = collect(
        &ws.root().join("README.md"),
        "",
        &reports,
        &[],
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, CollectError::Workspace { .. }), "{err}");
}

/// Directories no pattern can reach are not read: a big `node_modules` costs nothing when
/// the patterns name `dist/`.
#[test]
fn directories_no_pattern_reaches_are_not_walked() {
    let ws = Workspace::create();
    for i in 0..200 {
        ws.file(&format!("node_modules/m{i}/index.js"), "");
    }
    ws.file("dist/app.tar.gz", "tar");
    let limits = Limits {
        entries_walked: 10,
        ..Limits::default()
    };
    let collected = ws.collect_within("", &[], &["dist/*.tar.gz"], &limits);
    assert_eq!(paths(&collected), ["dist/app.tar.gz"]);
    assert!(collected.refused.is_empty(), "{:?}", refused(&collected));
}
