//! Memory under hostile load (issue 17, findings 4 and 5), the real binary:
//!
//! - 20 forged 25 MB webhook deliveries at once (well-formed signatures that do not
//!   match): every one answered 401, and kubeci's peak RSS;
//! - a build whose log is 60 MB, its page opened by 4 clients at once, then the whole log
//!   fetched through the API: how much each adds to kubeci's RSS;
//! - a build whose log is 150 lines of 1 MB each (a build printing without newlines):
//!   its page opened by 1 client, then by 4 at once (issue 27: lines are cut at 64 KiB).
//!
//! The chart caps kubeci at 256 MiB; the targets are ≤ 100 MB for the deliveries and
//! ≤ 32 MB added for the four page views.
//!
//! Run: `cargo bench -p kubeci --bench memory_bounds` (`-- long-lines`: the 1 MB lines alone)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kubeci_local::store::Store;
use kubeci_testkit::Options;

#[path = "support.rs"]
mod support;

use support::{get, rss_mb, PeakRss};

/// One POST of a forged delivery of `size` bytes; its status (0: no answer).
fn forged_delivery(port: u16, size: usize) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: l\r\nConnection: close\r\nX-GitHub-Event: pull_request\r\n\
         X-GitHub-Delivery: forged\r\nX-Hub-Signature-256: sha256={}\r\nContent-Length: {size}\r\n\r\n",
        "0".repeat(64)
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(answer.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

fn forged_deliveries() {
    let (runtime, server) = support::fake_api_server(Options::default());
    let _guard = runtime.enter();
    let kubeci = support::start_for_webhooks(&server, "the-webhook-secret");
    let pid = kubeci.child.id();
    let before = rss_mb(pid);
    let peak = PeakRss::start(pid, Duration::from_millis(10));
    let started = Instant::now();
    let senders: Vec<_> = (0..20)
        .map(|_| {
            let port = kubeci.port;
            std::thread::spawn(move || forged_delivery(port, 25 * 1000 * 1000))
        })
        .collect();
    let statuses: Vec<u16> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let took = started.elapsed();
    let peak = peak.stop();
    let refused = statuses.iter().filter(|s| **s == 401).count();
    println!("20 concurrent forged 25 MB webhook deliveries:");
    println!("  answered 401: {refused} of 20 (statuses {statuses:?}) in {took:.1?}");
    println!(
        "  RSS before {before:.1} MB, peak {peak:.1} MB (target ≤ 100 MB: {})",
        if peak <= 100.0 { "met" } else { "NOT met" }
    );
}

/// A `serve --local` data directory with build 1 of `bench/big`, succeeded, whose log
/// is `lines` lines made by `line`.
fn seed_log(data: &std::path::Path, lines: u64, line: impl Fn(u64) -> Vec<u8>) {
    let mut store = Store::open(&data.join("kubeci.db")).unwrap();
    support::seed_build(&mut store, "big", 1_790_000_000, 1_790_000_100, |_| {
        (0..lines).map(|seq| {
            (
                Some(1_790_000_000_000_000_000 + seq as i64 * 1_000),
                line(seq),
            )
        })
    });
}

/// Starts `serve --local` on a data directory seeded by `seed` with build 1 of
/// `bench/big`; its process and port, once it answers.
fn serve_seeded(
    dir: &std::path::Path,
    seed: impl FnOnce(&std::path::Path),
) -> (std::process::Child, u16) {
    let (jobs, data) = (dir.join("jobs"), dir.join("data"));
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let mut configmap = support::configmap(0);
    configmap["metadata"]["name"] = "big".into();
    configmap["data"]["job.yaml"] = "- job:\n    name: big\n    git:\n      url: git@github.com:example/big.git\n    run_command: make\n".into();
    std::fs::write(jobs.join("big.yaml"), configmap.to_string()).unwrap();
    seed(&data);
    let (child, port) = support::start_local(&jobs, &data);
    let started = Instant::now();
    while get(port, "/jobs/bench/big").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, port)
}

/// `views` concurrent views of `page`: the page's size, kubeci's RSS before and at its
/// peak.
fn page_views(
    child: &std::process::Child,
    port: u16,
    page: &str,
    views: usize,
) -> (usize, f64, f64) {
    let before = rss_mb(child.id());
    let peak = PeakRss::start(child.id(), Duration::from_millis(5));
    let viewers: Vec<_> = (0..views)
        .map(|_| {
            let page = page.to_owned();
            std::thread::spawn(move || get(port, &page))
        })
        .collect();
    let mut bytes = 0;
    for view in viewers {
        let (status, size) = view.join().unwrap();
        assert_eq!(status, 200);
        bytes = size;
    }
    (bytes, before, peak.stop())
}

fn big_log_page() {
    let dir = tempfile::tempdir().unwrap();
    let seeding = Instant::now();
    let (mut child, port) = serve_seeded(dir.path(), |data| {
        seed_log(data, 600_000, |seq| {
            format!("{seq:>12} {}", "x".repeat(86)).into_bytes()
        })
    });
    println!(
        "a build with a 60 MB log (seeded and served in {:.1?}):",
        seeding.elapsed()
    );
    let page = "/jobs/bench/big/builds/1";
    assert_eq!(get(port, page).0, 200);
    let (bytes, before, peak) = page_views(&child, port, page, 4);
    println!("  the build page: {bytes} bytes (the log's last 256 KiB)");
    println!(
        "  4 concurrent views: RSS before {before:.1} MB, peak {peak:.1} MB, added {:.1} MB (target ≤ 32 MB: {})",
        peak - before,
        if peak - before <= 32.0 { "met" } else { "NOT met" }
    );
    let before = rss_mb(child.id());
    let peak = PeakRss::start(child.id(), Duration::from_millis(5));
    let (status, whole) = get(port, "/api/v1/jobs/bench/big/builds/1/log");
    let peak = peak.stop();
    assert_eq!(status, 200);
    println!(
        "  the whole log through the API ({whole} bytes, streamed): added {:.1} MB",
        peak - before
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The page of a build whose log is 150 lines of 1 MB (as kept by a kubeci from before
/// lines were cut): one view, then four at once.
fn long_lines_page() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = serve_seeded(dir.path(), |data| {
        seed_log(data, 150, |seq| {
            let mut line = format!("{seq:>12} ").into_bytes();
            line.resize(1024 * 1024, b'x');
            line
        })
    });
    println!("a build whose log is 150 lines of 1 MB:");
    let page = "/jobs/bench/big/builds/1";
    for views in [1, 4] {
        let (bytes, before, peak) = page_views(&child, port, page, views);
        println!(
            "  {views} view(s) of its page ({bytes} bytes): RSS before {before:.1} MB, peak {peak:.1} MB, added {:.1} MB (target ≤ 32 MB: {})",
            peak - before,
            if peak - before <= 32.0 { "met" } else { "NOT met" }
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    if std::env::args().any(|a| a == "long-lines") {
        long_lines_page();
        return;
    }
    forged_deliveries();
    big_log_page();
    long_lines_page();
}
