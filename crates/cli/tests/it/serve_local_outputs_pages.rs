//! What a build leaves (issue 30), as users see it with `kubeci serve --local` and its
//! default archive (`file://DATA/archive`): a real build runs, ends and is archived, then
//! its test results, its outputs and a file are written into that archive with
//! `kubeci_archive::Archive` (as the engines' collection writes them); three builds before
//! it are archived with their index entries' test counts, as kubeci writes them. Then the
//! build page's Tests and Artifacts sections, the job page's pass-rate strip, a test's
//! history page, `kubeci tests` and `kubeci artifacts` — and the Tests section of a build
//! of 100,000 cases stays under its bound.

use crate::common;

use std::path::Path;

use bytes::Bytes;
use common::local::{configmap, Local};
use common::serve::{http, Kubeci};
use common::{assert_golden, kubeci, kubeci_in};
use kubeci_archive::{Archive, ArchiveUrl, IndexEntry};
use kubeci_build::{BuildRef, BuildRequest, JobRef};
use kubeci_engine::archive::{ArchivedBuild, ArchivedState, ArchivedSummary};
use kubeci_engine::Phase;
use kubeci_results::{
    summarize, ArtifactFile, BuildOutputs, Outcome, RefusedFile, ReportFile, ResultsBuilder,
    TestCase, TestResults,
};

/// The job's name; its builds 1 to 3 are seeded, build 4 runs.
pub(crate) const JOB: &str = "api";

/// The bytes of build 4's one file, `dist/app.tar.gz`.
pub(crate) const FILE: &[u8] = b"not really a tarball\n\x00\x01\x02";

fn archive(local: &Local) -> Archive {
    let url = format!("file://{}", local.data.join("archive").display());
    let url: ArchiveUrl = url.parse().expect("a file:// URL");
    Archive::open(&url).expect("the archive opens")
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

fn build(number: u64) -> BuildRef<'static> {
    BuildRef {
        namespace: "default",
        job: JOB,
        number,
    }
}

fn case(name: &str, outcome: Outcome) -> TestCase {
    TestCase {
        classname: "pkg.Mod".into(),
        name: name.into(),
        outcome,
        time: Some(0.25),
        ..TestCase::default()
    }
}

/// `(name, outcome)` cases as a build's results, read from one report.
fn results_of(cases: &[(&str, Outcome)]) -> TestResults {
    let mut builder = ResultsBuilder::new();
    for (name, outcome) in cases {
        builder.case(case(name, *outcome));
    }
    builder.file(ReportFile {
        path: "reports/junit.xml".into(),
        cases: cases.len() as u64,
        error: None,
    });
    builder.finish()
}

/// Build 4's results: a failure with all its details, one that passed on a rerun in
/// build 2 (so known flaky), an error, a skip, a rerun, a pass, and a report file that is
/// not JUnit.
pub(crate) fn build4_results() -> TestResults {
    let mut builder = ResultsBuilder::new();
    builder.case(case("passes", Outcome::Passed));
    builder.case(TestCase {
        message: Some("needs a GPU".into()),
        ..case("skips", Outcome::Skipped)
    });
    builder.case(TestCase {
        reruns: 1,
        ..case("reruns", Outcome::Flaky)
    });
    builder.case(TestCase {
        message: Some("panicked at src/lib.rs:3".into()),
        ..case("errs", Outcome::Errored)
    });
    builder.case(TestCase {
        kind: Some("AssertionError".into()),
        message: Some("expected 1, got 2".into()),
        details: Some("Traceback:\n  tests/test_mod.py:12: in fails\n    assert 1 == 2".into()),
        output: Some("captured stdout\n".into()),
        file: Some("tests/test_mod.py".into()),
        line: Some(12),
        ..case("fails", Outcome::Failed)
    });
    builder.case(TestCase {
        message: Some("timed out after 30s".into()),
        ..case("flakes", Outcome::Failed)
    });
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
    builder.finish()
}

/// A build of 100,000 cases, its first 1,000 failed with a stack trace each.
pub(crate) fn huge_results() -> TestResults {
    let mut builder = ResultsBuilder::new();
    for n in 0..100_000 {
        let failed = n < 1_000;
        builder.case(TestCase {
            classname: format!("com.example.module{}.SomethingTest", n % 50),
            name: format!("test_{n}"),
            outcome: if failed {
                Outcome::Failed
            } else {
                Outcome::Passed
            },
            message: failed.then(|| format!("expected {n} but was {}", n + 1)),
            details: failed
                .then(|| "\tat com.example.Something.check(Something.java:42)\n".repeat(20)),
            time: Some(0.01),
            ..TestCase::default()
        });
    }
    builder.finish()
}

/// Archived build `number`'s record, finished, of commit `Naaa…` (N, then 39 `a`).
fn record(number: u64, phase: Phase, results: &TestResults) -> ArchivedBuild {
    let at = |s: i64| jiff::Timestamp::from_second(1_790_000_000 + s).unwrap();
    let started = number as i64 * 600;
    ArchivedBuild {
        version: kubeci_engine::archive::RECORD_VERSION,
        namespace: "default".into(),
        job: JOB.into(),
        complete: true,
        build: ArchivedSummary {
            number,
            name: format!("{JOB}-{number}"),
            state: ArchivedState {
                phase,
                reason: None,
                message: None,
                cancelled_by: None,
            },
            trigger: Some("manual".into()),
            requested_by: None,
            commit: Some(format!("{number}{}", "a".repeat(39))),
            pull_request: None,
            spec_hash: Some("0".into()),
            chart_version: None,
            reported: String::new(),
            pod: None,
            created_at: Some(at(started - 5)),
            started_at: Some(at(started)),
            finished_at: Some(at(started + 95)),
            tests: Some(summarize(results)),
            artifacts: 0,
        },
        request: BuildRequest::manual(number),
        git_url: None,
        check_name: None,
        archived_at: at(started + 100),
        log: Vec::new(),
    }
}

/// Builds 1 to 3 archived as kubeci archives them — record, index entry with its tests,
/// test results and outputs: 10 passed; 9 passed and `flakes` passed on a rerun; the
/// 100,000 cases of [`huge_results`].
async fn seed(archive: &Archive) {
    let flakes = [("a", Outcome::Passed); 9]
        .into_iter()
        .chain([("flakes", Outcome::Flaky)])
        .collect::<Vec<_>>();
    let builds = [
        (
            1,
            Phase::Succeeded,
            results_of(&[("a", Outcome::Passed); 10]),
        ),
        (2, Phase::Succeeded, results_of(&flakes)),
        (3, Phase::Failed, huge_results()),
    ];
    let mut summaries = Vec::new();
    for (number, phase, results) in &builds {
        let record = record(*number, *phase, results);
        let outputs = BuildOutputs {
            tests: record.build.tests.clone(),
            ..BuildOutputs::new()
        };
        archive
            .put_outputs(build(*number), Some(results), &outputs)
            .await
            .unwrap();
        archive.put_record(build(*number), &record).await.unwrap();
        summaries.push(record.build);
    }
    let entries: Vec<IndexEntry<&ArchivedSummary>> = summaries
        .iter()
        .map(|summary| IndexEntry {
            number: summary.number,
            started: summary.began().unwrap(),
            ended: summary.finished_at,
            summary,
        })
        .collect();
    let job = JobRef {
        namespace: "default",
        job: JOB,
    };
    archive.add_to_index(job, &entries).await.unwrap();
}

/// Build 4's test results, outputs and file, written once it is archived.
async fn leave(archive: &Archive) {
    let results = build4_results();
    let bytes = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(FILE))]);
    let size = archive
        .put_file(build(4), "dist/app.tar.gz", bytes, 1 << 20)
        .await
        .unwrap();
    let outputs = BuildOutputs {
        tests: Some(summarize(&results)),
        artifacts: vec![ArtifactFile {
            path: "dist/app.tar.gz".into(),
            size,
        }],
        refused: vec![RefusedFile {
            path: "dist/latest".into(),
            why: "it is a link out of the workspace".into(),
        }],
        ..BuildOutputs::new()
    };
    archive
        .put_outputs(build(4), Some(&results), &outputs)
        .await
        .unwrap();
}

/// `serve --local` with builds 1 to 3 seeded in its archive and build 4 run, ended,
/// archived, then given its results and file.
pub(crate) fn served_with_results() -> (Local, Kubeci) {
    let (local, repo) = Local::new();
    local.write(
        "api.yaml",
        &configmap(JOB, &repo.bare, "echo tested; exit 1", ""),
    );
    let archive = archive(&local);
    block_on(seed(&archive));
    let kubeci = local.serve(&[], &[]);
    assert_eq!(crate::serve_local_archive::trigger(&kubeci, JOB), 4);
    crate::serve_local_archive::wait("build 4 archived and out of the database", || {
        crate::serve_local_archive::state(&kubeci, JOB, 4) == "failed"
            && crate::serve_local_archive::rows(&local.data) == (0, 0)
    });
    block_on(leave(&archive));
    (local, kubeci)
}

fn get(kubeci: &Kubeci, path: &str) -> String {
    let (status, body) = http(kubeci, "GET", path, &[]);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The part of `page` from `start` to the first `end` after it.
fn part<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {page}"));
    let after = from + start.len();
    let to = after + page[after..].find(end).expect("its end") + end.len();
    &page[from..to]
}

// Long on purpose: one served archive read through every page it shows, in the order a user
// follows them; split, each part would start kubeci and run a build again.
#[test]
fn the_build_page_shows_its_tests_failures_first_its_files_and_the_job_page_its_pass_rate() {
    let (_local, kubeci) = served_with_results();

    let page = get(&kubeci, "/jobs/default/api/builds/4");
    let tests = part(&page, "<section id=\"tests\"", "</section>");
    assert!(
        tests.contains("<b>6 tests</b>: <span class=\"to to-passed\">1 passed</span> · <span class=\"to to-failed\">2 failed</span> · <span class=\"to to-errored\">1 errored</span>"),
        "{tests}"
    );
    let at = |needle: &str| {
        tests
            .find(needle)
            .unwrap_or_else(|| panic!("{needle}: {tests}"))
    };
    assert!(
        at("pkg.Mod::fails") < at("pkg.Mod::errs"),
        "failed, then errored"
    );
    assert!(at("pkg.Mod::errs") < at("pkg.Mod::skips"), "then skipped");
    assert!(
        at("pkg.Mod::skips") < at("pkg.Mod::reruns"),
        "then the reruns"
    );
    assert!(
        at("pkg.Mod::reruns") < at("pkg.Mod::passes"),
        "then the passed"
    );
    let flakes = part(
        tests,
        "<li class=\"test\" id=\"test-pkg-Mod-flakes-",
        "</li>",
    );
    assert!(
        flakes.contains("known flaky</span></div><p class=\"sub flaky-why\">It failed, then passed on a rerun within build #2.</p>"),
        "build 2's rerun makes it known flaky: {flakes}"
    );
    assert!(
        tests.contains("<code>reports/bad.xml</code>: not JUnit: its root element is &lt;html&gt;"),
        "{tests}"
    );
    let artifacts = part(&page, "<section id=\"artifacts\"", "</section>");
    assert!(
        artifacts.contains("<a href=\"/api/v1/jobs/default/api/builds/4/artifacts/dist/app.tar.gz\"><code>dist/app.tar.gz</code></a></td><td>24 bytes</td>"),
        "{artifacts}"
    );
    assert!(
        artifacts.contains("<code>dist/latest</code>: it is a link out of the workspace"),
        "{artifacts}"
    );
    let (status, file) = http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/api/builds/4/artifacts/dist/app.tar.gz",
        &[],
    );
    assert_eq!(
        (status, file.as_bytes()),
        (200, FILE),
        "the link downloads it"
    );

    // Each test links to its history's page.
    let history = part(
        &page,
        "href=\"/jobs/default/api/tests/history?name=pkg.Mod%3A%3Aflakes",
        "\"",
    );
    let history = get(
        &kubeci,
        &history["href=\"".len()..history.len() - 1].replace("&amp;", "&"),
    );
    assert!(
        history.contains("<b>Known flaky.</b> It failed, then passed on a rerun within build #2."),
        "{history}"
    );
    assert!(
        history.contains("<a href=\"/jobs/default/api/builds/2#test-pkg-Mod-flakes-"),
        "{history}"
    );

    // The 100,000 cases of build 3: counted, not listed, within the bound.
    let page = get(&kubeci, "/jobs/default/api/builds/3");
    let tests = part(&page, "<section id=\"tests\"", "</section>");
    assert!(
        tests.len() <= kubeci_server::pages::MAX_SECTION_BYTES,
        "{} bytes",
        tests.len()
    );
    assert!(tests.contains("<b>100,000 tests</b>"), "counted");
    assert!(
        tests.contains("Showing the first 40 of 1,000 failures"),
        "cut and said"
    );
    assert!(
        tests.contains("Showing the first 40 of 99,000 passed tests"),
        "cut and said"
    );

    // The job page: each archived build's counts, from the index alone.
    let job = get(&kubeci, "/jobs/default/api");
    let strip = part(&job, "<ol id=\"passrate\"", "</ol>");
    let said: Vec<&str> = strip
        .split("<span class=\"vh\">")
        .skip(1)
        .map(|s| &s[..s.find('<').unwrap()])
        .collect();
    assert_eq!(
        said,
        [
            "#1: 10 passed, 0 failed",
            "#2: 10 passed, 0 failed (1 flaky)",
            "#3: 99,000 passed, 1,000 failed",
            "#4: no test results",
        ],
        "oldest first; build 4 was archived before it left results: {strip}"
    );
    let api = common::serve::json(&kubeci, "/api/v1/jobs/default/api/builds");
    assert_eq!(api["items"][1]["tests"]["failed"], 1_000, "{api}");
    assert!(api["items"][0].get("tests").is_none(), "{api}");
}

#[test]
fn kubeci_tests_and_kubeci_artifacts_read_what_a_build_left() {
    let (local, server) = served_with_results();
    let url = format!("http://127.0.0.1:{}", server.port);

    let tests = kubeci(&["tests", JOB, "4", "--server", &url]);
    assert_eq!(tests.code, 0, "{}", tests.stderr);
    assert_golden("tests/golden/client/tests.txt", &tests.stdout);
    let as_json = kubeci(&["tests", JOB, "4", "--server", &url, "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&as_json.stdout).unwrap();
    assert_eq!(value["counts"]["failed"], 2);
    assert_eq!(value["known_flaky"][0]["id"], "pkg.Mod::flakes");
    let history = kubeci(&[
        "tests",
        JOB,
        "3",
        "--history",
        "pkg.Mod::flakes",
        "--server",
        &url,
    ]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    assert_golden("tests/golden/client/tests-history.txt", &history.stdout);
    let none = kubeci(&["tests", JOB, "--server", &url]);
    assert_eq!(none.code, 2);
    assert!(none.stderr.contains("say which build"), "{}", none.stderr);
    let absent = kubeci(&["tests", JOB, "9", "--server", &url]);
    assert_eq!(
        (absent.code, absent.stderr.as_str()),
        (1, "kubeci: no build 9 of job default/api (404)\n")
    );

    let listed = kubeci(&["artifacts", JOB, "4", "--server", &url]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_golden("tests/golden/client/artifacts.txt", &listed.stdout);

    downloads(&local.dir.path().join("downloads"), &url);
}

/// `kubeci artifacts --download` run in `here` against the server at `url`: the file is
/// written by its last segment into the current directory, never over an existing file
/// without `--force`, and nothing is left of a refused download.
fn downloads(here: &Path, url: &str) {
    // Downloaded by its last segment into the current directory, never over a file.
    std::fs::create_dir_all(here).unwrap();
    let download = [
        "artifacts",
        JOB,
        "4",
        "--server",
        url,
        "--download",
        "dist/app.tar.gz",
    ];
    let got = kubeci_in(here, &download);
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert_eq!(std::fs::read(here.join("app.tar.gz")).unwrap(), FILE);
    assert!(
        !here.join("dist").exists(),
        "nothing but its own name is written"
    );
    std::fs::write(here.join("app.tar.gz"), "mine").unwrap();
    let again = kubeci_in(here, &download);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("app.tar.gz exists: give --force"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read(here.join("app.tar.gz")).unwrap(),
        b"mine",
        "kept"
    );
    let forced = kubeci_in(here, &[&download[..], &["--force"]].concat());
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(std::fs::read(here.join("app.tar.gz")).unwrap(), FILE);
    let to = kubeci_in(here, &[&download[..], &["--to", "copy.bin"]].concat());
    assert_eq!(to.code, 0, "{}", to.stderr);
    assert_eq!(std::fs::read(here.join("copy.bin")).unwrap(), FILE);
    let missing = kubeci_in(
        here,
        &[
            "artifacts",
            JOB,
            "4",
            "--server",
            url,
            "--download",
            "dist/other.bin",
        ],
    );
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("left no file `dist/other.bin` (404)"),
        "{}",
        missing.stderr
    );
    assert!(
        !here.join("other.bin").exists(),
        "nothing written for a refusal"
    );
    let left: Vec<String> = std::fs::read_dir(here)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    assert!(Path::new(here).join("copy.bin").exists());
}

#[test]
#[ignore = "needs Python's jsonschema: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn a_build_s_test_counts_in_the_api_match_the_openapi_document() {
    common::require_python_module("jsonschema", "jsonschema");
    let (_local, kubeci) = served_with_results();
    let dir = tempfile::tempdir().unwrap();
    let answers = [
        ("BuildPage", get(&kubeci, "/api/v1/jobs/default/api/builds")),
        ("Build", get(&kubeci, "/api/v1/jobs/default/api/builds/3")),
        (
            "TestResults",
            get(&kubeci, "/api/v1/jobs/default/api/builds/4/tests"),
        ),
        (
            "ArtifactList",
            get(&kubeci, "/api/v1/jobs/default/api/builds/4/artifacts"),
        ),
    ];
    assert!(answers[1].1.contains("\"tests\":{"), "{}", answers[1].1);
    std::fs::write(
        dir.path().join("openapi.json"),
        get(&kubeci, "/api/v1/openapi.json"),
    )
    .unwrap();
    for (schema, body) in &answers {
        std::fs::write(dir.path().join(format!("{schema}.json")), body).unwrap();
    }
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
import referencing.jsonschema
doc = json.load(open(sys.argv[1] + "/openapi.json"))
registry = Registry().with_resource("urn:kubeci:openapi", Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012))
failures = []
for name in sys.argv[2:]:
    schema = {"$ref": "urn:kubeci:openapi#/components/schemas/" + name}
    for error in Draft202012Validator(schema, registry=registry).iter_errors(json.load(open(sys.argv[1] + "/" + name + ".json"))):
        failures.append(f"{name}: {error.json_path}: {error.message}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(dir.path())
        .args(answers.iter().map(|(schema, _)| schema))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
