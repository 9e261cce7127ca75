//! `kubeci serve --local`, the real binary, against what an independent review (issue 27)
//! found unbounded: a log line with no end.

use crate::common;

use common::local::{configmap, Local};
use common::serve::{http, Kubeci, AUTHORIZED};

fn trigger_and_finish(kubeci: &Kubeci, job: &str) -> serde_json::Value {
    let path = format!("/api/v1/jobs/default/{job}/builds");
    assert_eq!(http(kubeci, "POST", &path, &[AUTHORIZED]).0, 201);
    let mut build = serde_json::Value::Null;
    common::serve::wait(&format!("build 1 of {job} to end"), || {
        build = common::serve::builds(kubeci, job)
            .into_iter()
            .find(|b| b["number"] == 1)
            .unwrap_or_default();
        !matches!(
            build["state"].as_str(),
            None | Some("queued" | "pending" | "running")
        )
    });
    build
}

fn log(kubeci: &Kubeci, job: &str) -> String {
    let path = format!("/api/v1/jobs/default/{job}/builds/1/log");
    let (status, body) = http(kubeci, "GET", &path, &[]);
    assert_eq!(status, 200, "{body}");
    common::serve::dechunk(&body)
}

/// The most memory process `pid` has held (`VmHWM`), in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kb / 1024.0
}

#[test]
fn a_build_printing_a_50_mb_line_keeps_it_cut_at_64_kib_and_kubeci_stays_small() {
    let (local, repo) = Local::new();
    local.write(
        "huge.yaml",
        &configmap(
            "huge",
            &repo.bare,
            "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo after the long line",
            "",
        ),
    );
    let kubeci = local.serve(&[], &[]);
    let build = trigger_and_finish(&kubeci, "huge");
    assert_eq!(build["state"], "succeeded", "{build}");

    let log = log(&kubeci, "huge");
    let long = log
        .lines()
        .find(|l| l.starts_with("xxx"))
        .unwrap_or_else(|| panic!("no long line in {:.2000}", log));
    let expected = format!("{} … [line cut at 65536 bytes]", "x".repeat(65536));
    assert!(
        long == expected,
        "cut at 64 KiB and marked: a line of {} bytes ending {:?}",
        long.len(),
        &long[long.len().saturating_sub(40)..]
    );
    assert!(log.contains("\nafter the long line\n"), "the log goes on");
    assert!(log.len() < 100_000, "{} bytes", log.len());
    let (status, page) = http(&kubeci, "GET", "/jobs/default/huge/builds/1", &[]);
    assert_eq!(status, 200);
    assert!(
        page.contains("[line cut at 65536 bytes]"),
        "the page shows the cut"
    );
    assert!(page.contains("after the long line"));
    // Held whole, the line took the server past 600 MB (issue 27).
    let peak = peak_rss_mb(kubeci.pid().unwrap());
    assert!(peak < 150.0, "kubeci's peak RSS {peak:.1} MB");
}
