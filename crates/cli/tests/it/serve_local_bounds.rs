//! `kubeci serve --local`, the real binary, against what an independent review (issue 27)
//! found unbounded or too open: a log line with no end, a log with no end, and files of
//! the data directory others could read.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

#[test]
fn a_build_past_its_log_limit_goes_on_and_its_log_says_the_rest_is_not_kept() {
    let (local, repo) = Local::new();
    // About 150 KB of output, then a line that must not be kept; the build then succeeds
    // only if it ran to its end.
    let script = "for i in $(seq 1 2500); do echo \"line $i of a long build, written to fill its log\"; done; echo never-stored >&2; test \"$i\" = 2500";
    local.write("chatty.yaml", &configmap("chatty", &repo.bare, script, ""));
    let kubeci = local.serve(&["--log-limit", "64Ki"], &[]);
    let build = trigger_and_finish(&kubeci, "chatty");
    assert_eq!(build["state"], "succeeded", "the build went on: {build}");

    let log = log(&kubeci, "chatty");
    let notice = "log cut at 64 KiB: the build went on; its later output is not kept";
    assert!(
        log.contains(notice),
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert!(
        log.contains("\nline 1 of a long build"),
        "its start is kept"
    );
    assert!(!log.contains("line 2500 "), "nothing past the limit");
    assert!(!log.contains("never-stored"), "nothing past the limit");
    assert!(log.len() <= 64 * 1024 + 1024, "{} bytes", log.len());
    let cut_at = log.find(notice).unwrap();
    assert!(
        log[cut_at..].contains("\n==> build: exited with code 0\n==> result: succeeded"),
        "kubeci's own step lines are kept: {}",
        &log[cut_at..]
    );
    let (status, page) = http(&kubeci, "GET", "/jobs/default/chatty/builds/1", &[]);
    assert_eq!(status, 200);
    assert!(page.contains(notice), "the build page says so");
}

/// The mode bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Makes `path` readable by everyone, as an older kubeci (or a umask) left it.
fn open_up(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_database_and_token_are_readable_by_their_owner_alone_and_tightened_at_start() {
    let (local, repo) = Local::new();
    local.write("quick.yaml", &configmap("quick", &repo.bare, "echo hi", ""));
    // A data directory made beforehand, as the umask gives it.
    std::fs::create_dir_all(&local.data).unwrap();
    open_up(&local.data, 0o755);
    let token_file = local.dir.path().join("token");
    open_up(&token_file, 0o644);
    let kubeci = local.serve(&[], &[]);
    trigger_and_finish(&kubeci, "quick");
    let files = ["kubeci.db", "kubeci.db-wal", "kubeci.db-shm"].map(|f| local.data.join(f));
    let check = |when: &str| {
        for file in files.iter().chain([&token_file]) {
            assert_eq!(mode(file), 0o600, "{} {when}", file.display());
        }
        // Others may at most pass through it to their build's directory.
        assert_eq!(mode(&local.data) & 0o066, 0, "the data directory {when}");
    };
    check("when made");

    kubeci.kill();
    for file in &files {
        open_up(file, 0o644);
    }
    open_up(&token_file, 0o644);
    open_up(&local.data, 0o755);
    let _kubeci = local.serve(&[], &[]);
    check("after a start");
}
