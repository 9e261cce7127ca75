//! Writing a step's log holds about one part ([`PART_SIZE`]) in memory, whatever the log's
//! length (docs/archive.md), on two worker threads as kubeci runs it: measured as this
//! process's peak resident memory. A test binary of its own with one test, so nothing
//! else allocates meanwhile.

use kubeci_archive::{Archive, LogLine, PART_SIZE};
use kubeci_build::BuildRef;

/// A field of /proc/self/status, in bytes.
fn status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `count` lines of 100 bytes, each with its time, made as they are taken.
fn lines(count: u64) -> impl futures_core::Stream<Item = Result<LogLine, std::io::Error>> {
    let at = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    futures_util::stream::iter((0..count).map(move |n| {
        let text = format!("{n:>12} {}", "x".repeat(87)).into_bytes();
        Ok(LogLine::new(at, text))
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_a_30_mb_log_holds_about_one_part() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display()).parse().unwrap();
    let archive = Archive::open(&url).unwrap();
    let build = BuildRef {
        namespace: "ci",
        job: "web",
        number: 1,
    };
    // The store and the runtime set up, as a second log finds them.
    archive.put_log(build, "clone", lines(10)).await.unwrap();
    // Resets the peak (VmHWM) to what is resident now.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status("VmRSS");
    let written = archive
        .put_log(build, "build", lines(300_000))
        .await
        .unwrap();
    let added = status("VmHWM").saturating_sub(before);
    assert_eq!(written.lines, 300_000);
    assert!(
        added < PART_SIZE * 9 / 8,
        "writing a {} MB log added {:.1} MiB to the peak: more than one part ({} MiB) and an eighth",
        written.bytes / 1_000_000,
        added as f64 / 1048576.0,
        PART_SIZE / 1048576
    );
}
