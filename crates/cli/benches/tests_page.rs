//! The build page's Tests section at the size (issue 30): a build of 100,000 test
//! cases, 1,000 of them failed with details, archived (as kubeci writes it: `tests.json`,
//! `outputs.json`, its record and index entry, after 100 earlier builds whose index
//! entries its known-flaky failures are judged by) in `serve --local`'s default archive.
//! Measured, read to the end, from 1 and from 4 clients: the build page (target: its Tests
//! section ≤ 300 KB, p99 ≤ 50 ms; its first view, which reads the build's `tests.json`,
//! apart: the server keeps the sections of the 16 builds viewed last), the API's
//! `…/tests` it is made from, and the job page with its pass-rate strip. Sizes and
//! timings are printed, not asserted; what must hold (the section shows the build's
//! counts) is asserted.
//!
//! Run: `cargo bench -p kubeci --bench tests_page` (`TESTS_CASES`, `TESTS_FAILURES`,
//! `TESTS_BEFORE`, `TESTS_SAMPLES` change the sizes; in debug with small ones:
//! `TESTS_CASES=2000 TESTS_SAMPLES=8 cargo test -p kubeci --bench tests_page`).

use std::path::Path;
use std::time::{Duration, Instant};

use kubeci_archive::{Archive, IndexEntry};
use kubeci_build::{BuildRef, BuildRequest, JobRef};
use kubeci_engine::archive::{ArchivedBuild, ArchivedState, ArchivedSummary};
use kubeci_engine::Phase;
use kubeci_results::{summarize, BuildOutputs, Outcome, ResultsBuilder, TestCase, TestResults};

#[path = "support.rs"]
mod support;

use support::{get, get_text, percentile, rss_mb};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const JOB: &str = "tests";

/// `cases` test cases, the first `failures` of them failed with a message and a stack
/// trace, then one in 20 skipped, the rest passed; in 50 classes of a Java-like project.
fn results(cases: usize, failures: usize) -> TestResults {
    let mut builder = ResultsBuilder::new();
    for n in 0..cases {
        let outcome = match n {
            n if n < failures => Outcome::Failed,
            n if n % 20 == 0 => Outcome::Skipped,
            _ => Outcome::Passed,
        };
        let failed = outcome == Outcome::Failed;
        builder.case(TestCase {
            suite: format!("com.example.module{}", n % 50),
            classname: format!("com.example.module{}.ServiceTest", n % 50),
            name: format!("test_case_number_{n}"),
            outcome,
            time: Some(0.012),
            message: failed.then(|| format!("expected:<{n}> but was:<{}>", n + 1)),
            kind: failed.then(|| "org.opentest4j.AssertionFailedError".to_owned()),
            details: failed.then(|| {
                "\tat com.example.module.ServiceTest.check(ServiceTest.java:42)\n".repeat(25)
            }),
            output: failed.then(|| "INFO starting the service\nINFO stopping\n".to_owned()),
            ..TestCase::default()
        });
    }
    builder.finish()
}

/// Build `number`'s record, finished, with `tests` in its index entry.
fn record(number: u64, results: &TestResults) -> ArchivedBuild {
    let at = |s: i64| jiff::Timestamp::from_second(1_790_000_000 + s).unwrap();
    let started = number as i64 * 600;
    ArchivedBuild {
        version: kubeci_engine::archive::RECORD_VERSION,
        namespace: "bench".into(),
        job: JOB.into(),
        complete: true,
        build: ArchivedSummary {
            number,
            name: format!("{JOB}-{number}"),
            state: ArchivedState {
                phase: Phase::Failed,
                reason: None,
                message: None,
                cancelled_by: None,
            },
            trigger: Some("manual".into()),
            requested_by: None,
            commit: Some(format!("{number:040x}")),
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

/// `before` builds of 200 cases (their first 20 failed), then the measured one; each
/// archived whole. The measured build's number.
async fn seed(archive: &Archive, before: u64, measured: &TestResults) -> u64 {
    let earlier = results(200, 20);
    let mut summaries = Vec::new();
    for number in 1..=before + 1 {
        let results = if number > before { measured } else { &earlier };
        let build = BuildRef {
            namespace: "bench",
            job: JOB,
            number,
        };
        let record = record(number, results);
        let outputs = BuildOutputs {
            tests: record.build.tests.clone(),
            ..BuildOutputs::new()
        };
        archive
            .put_outputs(build, Some(results), &outputs)
            .await
            .unwrap();
        archive.put_record(build, &record).await.unwrap();
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
        namespace: "bench",
        job: JOB,
    };
    archive.add_to_index(job, &entries).await.unwrap();
    before + 1
}

/// `samples` GETs of `path` from `clients` clients at once: p50, p99, the body's size.
fn latency(port: u16, path: &str, samples: usize, clients: usize) -> (Duration, Duration, usize) {
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_owned();
            std::thread::spawn(move || {
                (0..samples.div_ceil(clients))
                    .map(|_| {
                        let sent = Instant::now();
                        let (status, size) = get(port, &path);
                        assert_eq!(status, 200, "GET {path}");
                        (sent.elapsed(), size)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let taken: Vec<(Duration, usize)> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let size = taken.iter().map(|t| t.1).max().unwrap_or(0);
    let mut times: Vec<Duration> = taken.into_iter().map(|t| t.0).collect();
    (
        percentile(&mut times, 0.5),
        percentile(&mut times, 0.99),
        size,
    )
}

fn verdict(holds: bool) -> &'static str {
    if holds {
        "holds"
    } else {
        "DOES NOT hold"
    }
}

/// The build page's Tests section, from `<section id="tests"` to its `</section>`.
fn section(page: &str) -> &str {
    let start = page.find("<section id=\"tests\"").expect("a Tests section");
    let end = start + page[start..].find("</section>").expect("its end") + "</section>".len();
    &page[start..end]
}

fn write_job(jobs: &Path) {
    let mut configmap = support::configmap(0);
    configmap["metadata"]["name"] = JOB.into();
    configmap["data"]["job.yaml"] = format!(
        "- job:\n    name: {JOB}\n    git:\n      url: git@github.com:example/{JOB}.git\n    run_command: make test\n"
    )
    .into();
    std::fs::write(jobs.join(format!("{JOB}.yaml")), configmap.to_string()).unwrap();
}

fn main() {
    let cases = setting("TESTS_CASES", 100_000);
    let failures = setting("TESTS_FAILURES", 1_000).min(cases);
    let before = setting("TESTS_BEFORE", 100) as u64;
    let samples = setting("TESTS_SAMPLES", 200);
    let dir = tempfile::tempdir().unwrap();
    let (jobs, data) = (dir.path().join("jobs"), dir.path().join("data"));
    std::fs::create_dir_all(&jobs).unwrap();
    write_job(&jobs);
    let url = format!("file://{}", data.join("archive").display());
    let archive = Archive::open(&url.parse().unwrap()).unwrap();
    let measured = results(cases, failures);
    let json = serde_json::to_vec(&measured).unwrap().len();
    let seeding = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let number = runtime.block_on(seed(&archive, before, &measured));
    println!(
        "a build of {cases} cases ({failures} failed with details; tests.json {:.1} MB) after {before} builds, seeded in {:.1?}",
        json as f64 / 1e6,
        seeding.elapsed()
    );
    let (mut child, port) = support::start_local(&jobs, &data);
    let build_page = format!("/jobs/bench/{JOB}/builds/{number}");
    let started = Instant::now();
    while get(port, &format!("/jobs/bench/{JOB}")).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never served");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first view reads and renders the build's tests.json; the server keeps the
    // rendering for the next ones.
    let first = Instant::now();
    let page = get_text(port, &build_page);
    let first = first.elapsed();
    let tests = section(&page);
    let total = kubeci_results::Counts::total(&measured.counts);
    assert!(
        tests.contains(&format!("{} tests", thousands(total))),
        "the section counts the build's cases"
    );
    println!(
        "  the build page: {} bytes, its Tests section {} bytes (≤ 300 KB: {}); its first view {first:.2?}",
        page.len(),
        tests.len(),
        verdict(tests.len() <= 300 * 1024)
    );
    let paths = [
        ("the build page", build_page.clone()),
        (
            "`GET …/builds/{n}/tests` (JSON)",
            format!("/api/v1/jobs/bench/{JOB}/builds/{number}/tests"),
        ),
        (
            "the job page (pass-rate strip)",
            format!("/jobs/bench/{JOB}"),
        ),
    ];
    println!("  {samples} requests per row:");
    for (row, (label, path)) in paths.iter().enumerate() {
        let (p50_1, p99_1, size) = latency(port, path, samples, 1);
        let (p50_4, p99_4, _) = latency(port, path, samples, 4);
        // The figure is the build page's.
        let target = match row {
            0 => format!(
                " (p99 ≤ 50 ms: {})",
                verdict(p99_1 <= Duration::from_millis(50))
            ),
            _ => String::new(),
        };
        println!(
            "  {label:34} {size:>9} B  1 client p50 {p50_1:>8.2?} p99 {p99_1:>8.2?}  4 clients p50 {p50_4:>8.2?} p99 {p99_4:>8.2?}{target}",
        );
    }
    println!("  RSS after: {:.1} MB", rss_mb(child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

/// `n` with its thousands separated, as the page writes it.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (at, digit) in digits.chars().enumerate() {
        if at > 0 && (digits.len() - at).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
