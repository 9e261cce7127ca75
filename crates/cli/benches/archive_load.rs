//! Builds outlive their pods (issue 29): the archive under load, the real binary.
//!
//! - `log60`: a build with a 60 MB log archived by `serve --local` to S3 (versitygw), then
//!   served from the archive through `GET …/builds/1/log`, plain and `?timestamps=true`:
//!   what each adds to kubeci's RSS (target ≤ 16 MB); the log archived whole and served
//!   byte for byte as written.
//! - `history`: a job with 10,000 archived builds (written with `kubeci_archive` as kubeci
//!   writes them: logs, records, index) on S3 and on `file://`: its page, its builds'
//!   pages through the API (`?before=`), one archived build's page and record, from 1
//!   and 4 clients (target p99 ≤ 50 ms with one, ≤ 100 ms with four).
//! - `finish1000`: `serve --kubernetes --archive s3://…` on the fake API server, 1,000
//!   builds finishing together: how long after the last ends all are archived (target
//!   ≤ 60 s) and the requests to the store per build (counted by a forwarder).
//! - `start`: start to `/readyz` with 10,000 jobs, with and without `--archive`, as
//!   interleaved pairs (target: within 10 %).
//!
//! Timings are printed, not asserted; what must hold (every build archived whole, logs
//! served byte-identical) is asserted.
//!
//! Run: `cargo bench -p kubeci --bench archive_load [-- log60|history|finish1000|start]`
//! (`LOG60_LINES`, `HISTORY_BUILDS`, `HISTORY_SAMPLES`, `FINISH_BUILDS`,
//! `FINISH_RUN_SECONDS`, `START_JOBS`, `START_PAIRS` change the sizes). Needs versitygw:
//! `scripts/s3 build`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kubeci_archive::{Archive, IndexEntry, LogLine};
use kubeci_build::{BuildRef, BuildRequest, JobRef};
use kubeci_engine::archive::{ArchivedBuild, ArchivedState, ArchivedStep, ArchivedSummary};
use kubeci_engine::Phase;
use kubeci_testkit::S3Server;

#[path = "archive_cluster.rs"]
mod archive_cluster;
#[path = "s3_counter.rs"]
mod s3_counter;
#[path = "support.rs"]
mod support;

use support::{latency, rss_mb, PeakRss};

pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes job `name` of namespace `bench` to the `serve --local` jobs directory `jobs`.
fn write_job(jobs: &Path, name: &str) {
    let mut configmap = support::configmap(0);
    configmap["metadata"]["name"] = name.into();
    configmap["data"]["job.yaml"] = format!(
        "- job:\n    name: {name}\n    git:\n      url: git@github.com:example/{name}.git\n    run_command: make\n"
    )
    .into();
    std::fs::write(jobs.join(format!("{name}.yaml")), configmap.to_string()).unwrap();
}

/// Starts `serve --local JOBS --data DATA ARGS` with `env` added; its process and port
/// once `ready` answers 200.
fn serve_local(
    jobs: &Path,
    data: &Path,
    args: &[&str],
    env: &[(String, String)],
    ready: &str,
) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args(["serve", "--local"])
        .arg(jobs)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while support::get(port, ready).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, port)
}

/// A metric's value in kubeci's `/metrics` (the first series of that name).
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let text = support::get_text(port, "/metrics");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls `check` every 50 ms for at most `within`; panics naming `what` when it never holds.
pub fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One GET read to its end: its status and its body, de-chunked.
fn get_body(port: u16, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let body = &answer[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }
    let (mut whole, mut at) = (Vec::with_capacity(body.len()), 0);
    loop {
        let line_end = at + body[at..].windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&body[at..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return (status, whole);
        }
        whole.extend_from_slice(&body[line_end + 2..line_end + 2 + size]);
        at = line_end + 2 + size + 2;
    }
}

/// Fails, saying where, unless `served` is `expected` byte for byte.
fn assert_identical(what: &str, served: &[u8], expected: &[u8]) {
    if served != expected {
        let at = served.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{what}: served {} bytes, expected {}; first difference at byte {at:?}",
            served.len(),
            expected.len()
        );
    }
}

/// Line `seq` of the 60 MB log (100 bytes with its newline) and its time.
fn big_line(seq: u64) -> (Vec<u8>, i64) {
    let text = format!("{seq:>12} {}", "x".repeat(86)).into_bytes();
    (text, 1_790_000_000_000_000_000 + seq as i64 * 1_000)
}

/// A `serve --local` data directory with build 1 of `bench/big`, succeeded, whose log
/// is `lines` lines of [`big_line`].
fn seed_big_log(data: &Path, lines: u64) {
    let mut store = kubeci_local::store::Store::open(&data.join("kubeci.db")).unwrap();
    support::seed_build(&mut store, "big", 1_790_000_000, 1_790_000_100, |_| {
        (0..lines).map(|seq| {
            let (text, at) = big_line(seq);
            (Some(at), text)
        })
    });
}

/// The log of [`seed_big_log`] as `GET …/log` serves it, with each line's time when
/// `timestamps`.
fn big_log_served(lines: u64, timestamps: bool) -> Vec<u8> {
    let mut log = Vec::with_capacity(lines as usize * 132);
    for seq in 0..lines {
        let (text, at) = big_line(seq);
        let line = kubeci_engine::archive::TimedLine {
            time: Some(jiff::Timestamp::from_nanosecond(i128::from(at)).unwrap()),
            text,
        };
        log.extend(line.written(timestamps));
    }
    log
}

// Long on purpose: the figure's phases in the order they run (the baseline, archiving,
// serving plain and with times), each needing what the one before left.
fn log60() {
    let lines = setting("LOG60_LINES", 600_000) as u64;
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (jobs, data, twin) = (
        dir.path().join("jobs"),
        dir.path().join("data"),
        dir.path().join("twin"),
    );
    for d in [&jobs, &data, &twin] {
        std::fs::create_dir_all(d).unwrap();
    }
    write_job(&jobs, "big");
    let seeding = Instant::now();
    seed_big_log(&data, lines);
    let seeded_in = seeding.elapsed();
    std::fs::copy(data.join("kubeci.db"), twin.join("kubeci.db")).unwrap();
    let page = "/jobs/bench/big";

    // The baseline: the same data served by the same kubeci without an archive.
    let twin_started = Instant::now();
    let (mut child, port) = serve_local(&jobs, &twin, &["--no-archive"], &[], page);
    let twin_peak = PeakRss::start(child.id(), Duration::from_millis(5));
    std::thread::sleep(Duration::from_secs(3));
    let baseline = rss_mb(child.id());
    let twin_peak = twin_peak.stop();
    let twin_ready = twin_started.elapsed();
    assert_eq!(
        metric(port, "kubeci_archive_pending"),
        None,
        "--no-archive archives nothing"
    );
    let _ = child.kill();
    let _ = child.wait();

    // Archiving: kubeci's peak from its start until the build is archived whole.
    let archive = Archive::open_with_env(&s3.url().parse().unwrap(), &s3.env()).unwrap();
    let build = BuildRef {
        namespace: "bench",
        job: "big",
        number: 1,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (mut child, port) = serve_local(
        &jobs,
        &data,
        &["--archive", &s3.url()],
        &s3.env(),
        "/readyz",
    );
    let peak = PeakRss::start(child.id(), Duration::from_millis(5));
    wait_for("the 60 MB build archived", Duration::from_secs(300), || {
        let record = runtime
            .block_on(archive.record::<ArchivedBuild>(build))
            .unwrap();
        record.is_some_and(|r| r.complete) && metric(port, "kubeci_archive_pending") == Some(0.0)
    });
    let archived_in = started.elapsed();
    let archiving_peak = peak.stop();
    let record = runtime
        .block_on(archive.record::<ArchivedBuild>(build))
        .unwrap()
        .unwrap();
    let archived_lines: u64 = record.log.iter().map(|s| s.lines).sum();
    let archived_bytes: u64 = record.log.iter().map(|s| s.bytes).sum();
    assert_eq!(
        archived_lines, lines,
        "every line archived: {:?}",
        record.log
    );
    assert!(
        record.log.iter().all(|s| s.incomplete.is_none()),
        "{:?}",
        record.log
    );

    println!(
        "a build whose log is {lines} lines ({:.1} MB), seeded in {seeded_in:.1?}:",
        lines as f64 * 100.0 / 1e6
    );
    println!("  baseline (the same data, --no-archive): RSS {baseline:.1} MB once ready ({twin_ready:.1?}), peak {twin_peak:.1} MB");
    println!(
        "  archived to S3 ({archived_bytes} bytes in {} step(s)) {archived_in:.1?} after start; peak RSS {archiving_peak:.1} MB: added {:.1} MB (target ≤ 16 MB: {})",
        record.log.len(),
        archiving_peak - baseline,
        verdict(archiving_peak - baseline <= 16.0)
    );
    for (label, timestamps) in [("plain", false), ("?timestamps=true", true)] {
        let query = if timestamps { "?timestamps=true" } else { "" };
        let path = format!("/api/v1/jobs/bench/big/builds/1/log{query}");
        std::thread::sleep(Duration::from_secs(1));
        let before = rss_mb(child.id());
        let peak = PeakRss::start(child.id(), Duration::from_millis(5));
        let served = Instant::now();
        let (status, body) = get_body(port, &path);
        let took = served.elapsed();
        let peak = peak.stop();
        assert_eq!(status, 200, "GET {path}");
        assert_identical(
            &format!("GET {path}"),
            &body,
            &big_log_served(lines, timestamps),
        );
        println!(
            "  served from the archive, {label}: {} bytes in {took:.1?}, identical; RSS before {before:.1} MB, peak {peak:.1} MB: added {:.1} MB (target ≤ 16 MB: {})",
            body.len(),
            peak - before,
            verdict(peak - before <= 16.0)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn verdict(holds: bool) -> &'static str {
    if holds {
        "holds"
    } else {
        "DOES NOT hold"
    }
}

/// Build `number` of `bench/long`'s record (complete, its log's step filled in later).
fn history_record(number: u64) -> ArchivedBuild {
    let at = |s: i64| jiff::Timestamp::from_second(1_790_000_000 + s).unwrap();
    let started = number as i64 * 600;
    ArchivedBuild {
        version: kubeci_engine::archive::RECORD_VERSION,
        namespace: "bench".into(),
        job: "long".into(),
        complete: true,
        build: ArchivedSummary {
            number,
            name: format!("long-{number}"),
            state: ArchivedState {
                phase: Phase::Succeeded,
                reason: None,
                message: None,
                cancelled_by: None,
            },
            trigger: Some("manual".into()),
            requested_by: Some("alice".into()),
            commit: Some(format!("{number:040x}")),
            pull_request: None,
            spec_hash: Some("0".into()),
            chart_version: None,
            reported: String::new(),
            pod: None,
            created_at: Some(at(started - 5)),
            started_at: Some(at(started)),
            finished_at: Some(at(started + 95)),
            tests: Some(tests_of(number)),
            artifacts: 0,
        },
        request: BuildRequest::manual(number),
        git_url: Some("git@github.com:example/long.git".into()),
        check_name: None,
        archived_at: at(started + 100),
        log: Vec::new(),
    }
}

/// The test that fails in every third build of the history: flaky by its flips.
const FLIPPING_TEST: &str = "bench.Suite::test_flips";

/// Build `number`'s tests in its index entry: 400 cases, [`FLIPPING_TEST`] failing in
/// every third build and another in every tenth.
fn tests_of(number: u64) -> kubeci_results::TestsInBuild {
    let mut results = kubeci_results::ResultsBuilder::new();
    for case in 0..400 {
        let name = match case {
            0 => "test_flips".to_owned(),
            1 => "test_breaks".to_owned(),
            n => format!("test_{n}"),
        };
        let failed =
            (case == 0 && number.is_multiple_of(3)) || (case == 1 && number.is_multiple_of(10));
        results.case(kubeci_results::TestCase {
            classname: "bench.Suite".into(),
            name,
            outcome: if failed {
                kubeci_results::Outcome::Failed
            } else {
                kubeci_results::Outcome::Passed
            },
            ..Default::default()
        });
    }
    kubeci_results::summarize(&results.finish())
}

/// Line `seq` of build `number`'s log in the history.
fn history_line(number: u64, seq: u64) -> LogLine {
    let at =
        jiff::Timestamp::from_second(1_790_000_000 + number as i64 * 600 + seq as i64).unwrap();
    LogLine {
        time: Some(at),
        text: format!("step {seq} of build {number}").into_bytes().into(),
    }
}

const HISTORY_LOG_LINES: u64 = 20;

/// Writes `builds` builds of `bench/long` as kubeci does (each step's log, then its
/// record, then the index: here all entries at once, chunk by chunk).
async fn seed_history(archive: &Archive, builds: u64) {
    let written = futures_util::stream::iter(1..=builds)
        .map(|number| async move {
            let build = BuildRef {
                namespace: "bench",
                job: "long",
                number,
            };
            let lines = (0..HISTORY_LOG_LINES)
                .map(|seq| Ok::<_, std::io::Error>(history_line(number, seq)));
            let put = archive
                .put_log(build, "build", futures_util::stream::iter(lines))
                .await
                .unwrap();
            let mut record = history_record(number);
            record.log = vec![ArchivedStep {
                name: "build".into(),
                lines: put.lines,
                bytes: put.bytes,
                incomplete: None,
            }];
            archive.put_record(build, &record).await.unwrap();
            record.build
        })
        .buffer_unordered(16)
        .collect::<Vec<ArchivedSummary>>()
        .await;
    let entries: Vec<IndexEntry<&ArchivedSummary>> = written
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
        job: "long",
    };
    archive.add_to_index(job, &entries).await.unwrap();
}

/// Every build listed once, newest first, by following `next` from the first page; one
/// archived build's record and log as written.
fn check_history(port: u16, builds: u64) {
    let mut next = Some("/api/v1/jobs/bench/long/builds".to_owned());
    let mut listed = Vec::new();
    while let Some(path) = next {
        let page = support::get_json(port, &path);
        assert!(page.get("archive_error").is_none(), "{path}: {page}");
        let items = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {page}"));
        listed.extend(items.iter().map(|b| b["number"].as_u64().unwrap()));
        next = page["next"].as_str().map(str::to_owned);
    }
    let expected: Vec<u64> = (1..=builds).rev().collect();
    assert_eq!(
        listed, expected,
        "every archived build listed once, newest first"
    );
    let some = builds / 2;
    let record = support::get_json(port, &format!("/api/v1/jobs/bench/long/builds/{some}"));
    assert_eq!(record["number"].as_u64(), Some(some), "{record}");
    let (status, log) = get_body(port, &format!("/api/v1/jobs/bench/long/builds/{some}/log"));
    assert_eq!(status, 200);
    let expected: Vec<u8> = (0..HISTORY_LOG_LINES)
        .flat_map(|seq| [history_line(some, seq).text.to_vec(), b"\n".to_vec()].concat())
        .collect();
    assert_identical("an archived build's log", &log, &expected);
}

// Long on purpose: one scenario read top to bottom — seed each store, check it, then
// measure every row from one and four clients.
fn history() {
    let builds = setting("HISTORY_BUILDS", 10_000) as u64;
    let samples = setting("HISTORY_SAMPLES", 200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for store in ["s3", "file"] {
        let dir = tempfile::tempdir().unwrap();
        let s3 = (store == "s3").then(S3Server::start);
        let (url, env) = match &s3 {
            Some(s3) => (s3.url(), s3.env()),
            None => (
                format!("file://{}", dir.path().join("archive").display()),
                Vec::new(),
            ),
        };
        let archive = Archive::open_with_env(&url.parse().unwrap(), &env).unwrap();
        let seeding = Instant::now();
        runtime.block_on(seed_history(&archive, builds));
        let seeded_in = seeding.elapsed();
        let (jobs, data) = (dir.path().join("jobs"), dir.path().join("data"));
        std::fs::create_dir_all(&jobs).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        write_job(&jobs, "long");
        let (mut child, port) = serve_local(&jobs, &data, &["--archive", &url], &env, "/readyz");
        check_history(port, builds);
        let (second, deep, some) = (builds.saturating_sub(49).max(1), builds / 2, builds / 2);
        let paths = [
            ("the job page", "/jobs/bench/long".to_owned()),
            (
                "`GET …/builds` (first page)",
                "/api/v1/jobs/bench/long/builds".to_owned(),
            ),
            (
                "`GET …/builds?before=` (second page)",
                format!("/api/v1/jobs/bench/long/builds?before={second}"),
            ),
            (
                "`GET …/builds?before=` (halfway)",
                format!("/api/v1/jobs/bench/long/builds?before={deep}"),
            ),
            (
                "the job page `?before=` (halfway)",
                format!("/jobs/bench/long?before={deep}"),
            ),
            (
                "an archived build's page",
                format!("/jobs/bench/long/builds/{some}"),
            ),
            (
                "`GET …/builds/{n}` (archived)",
                format!("/api/v1/jobs/bench/long/builds/{some}"),
            ),
            (
                "a test's history (its newest 1,000 builds)",
                format!("/api/v1/jobs/bench/long/tests/history?name={FLIPPING_TEST}"),
            ),
        ];
        let history = support::get_json(
            port,
            &format!("/api/v1/jobs/bench/long/tests/history?name={FLIPPING_TEST}"),
        );
        let statuses = history["builds"].as_array().map_or(0, Vec::len);
        assert_eq!(statuses as u64, builds.min(1_000), "{history}");
        assert_eq!(history["flaky"]["rule"], "flips", "{history}");
        println!("a job with {builds} archived builds on {store} (seeded in {seeded_in:.1?}); {samples} requests per row:");
        for (label, path) in &paths {
            let (p50_1, p99_1, size) = latency(port, path, samples, 1);
            let (p50_4, p99_4, _) = latency(port, path, samples, 4);
            println!(
                "  {label:40} {size:>6} B  1 client p50 {p50_1:>8.2?} p99 {p99_1:>8.2?} ({})  4 clients p50 {p50_4:>8.2?} p99 {p99_4:>8.2?} ({})",
                verdict(p99_1 <= Duration::from_millis(50)),
                verdict(p99_4 <= Duration::from_millis(100)),
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn main() {
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| chosen.is_empty() || chosen.iter().any(|c| c == name);
    if run("log60") {
        log60();
    }
    if run("history") {
        history();
    }
    if run("finish1000") {
        archive_cluster::finish_together();
    }
    if run("start") {
        archive_cluster::start_pairs();
    }
}
