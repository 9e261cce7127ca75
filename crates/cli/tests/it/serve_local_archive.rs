//! `kubeci serve --local` with an archive (the default `DATA/archive`, a `file://` URL, or
//! S3 in `serve_local_archive_s3`): builds that ended are archived, leave the database,
//! and are served from the archive exactly as they were live — the job page, the build
//! page, `GET …/builds[/{n}[/log]]` (with and without `?timestamps=true`) and `kubeci
//! builds|logs`. The store away for a whole build, then back; kubeci killed while
//! archiving; objects that are not kubeci's; numbers once the archive is all that is left.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{dechunk, http, Kubeci};
use serde_json::Value;

pub(crate) fn wait(what: &str, check: impl FnMut() -> bool) {
    common::git::wait_for(Duration::from_secs(120), what, check);
}

fn get(kubeci: &Kubeci, path: &str) -> (u16, String) {
    http(kubeci, "GET", path, &[])
}

fn json(kubeci: &Kubeci, path: &str) -> Value {
    let (status, body) = get(kubeci, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The `<main>` of a page, its times-ago (which move with the clock) left out.
fn main_of(page: &str) -> String {
    let start = page.find("<main>").expect("a <main>");
    let end = page.find("</main>").expect("a </main>");
    let mut main = page[start..end].to_owned();
    while let Some(open) = main.find("<time ") {
        let Some(close) = main[open..].find("</time>") else {
            break;
        };
        main.replace_range(open..open + close + "</time>".len(), "<time/>");
    }
    main
}

/// Everything a user reads of job `job`'s builds `numbers`, through the pages, the API and
/// the CLI.
#[derive(Debug)]
pub(crate) struct Seen {
    list: Value,
    cli_list: Value,
    job_page: String,
    /// The jobs page, with each job's strip of recent builds.
    jobs_page: String,
    builds: Vec<(Value, String, String, String, String)>,
    /// The job's page and its list said archived builds may be missing, and each build's
    /// page that what it left cannot be read (taken out of them: the rest is compared).
    said_missing: bool,
}

/// `archived` is what was seen `live`, part by part (a failure names the part).
pub(crate) fn assert_same(archived: &Seen, live: &Seen) {
    assert_eq!(archived.list, live.list, "GET …/builds");
    assert_eq!(archived.cli_list, live.cli_list, "kubeci builds -o json");
    assert_eq!(archived.job_page, live.job_page, "the job page");
    assert_eq!(archived.jobs_page, live.jobs_page, "the jobs page");
    assert_eq!(archived.builds.len(), live.builds.len());
    for (archived, live) in archived.builds.iter().zip(&live.builds) {
        let number = &live.0["number"];
        assert_eq!(archived.0, live.0, "GET …/builds/{number}");
        assert_eq!(archived.2, live.2, "GET …/builds/{number}/log");
        assert_eq!(
            archived.3, live.3,
            "GET …/builds/{number}/log?timestamps=true"
        );
        assert_eq!(archived.4, live.4, "kubeci logs quick {number}");
        assert_eq!(archived.1, live.1, "the page of build {number}");
    }
}

/// Takes out of `page` the paragraph whose id is `id`; whether there was one.
fn without(page: &mut String, id: &str) -> bool {
    let Some(start) = page.find(&format!("<p class=\"warning\" id=\"{id}\"")) else {
        return false;
    };
    let end = start + page[start..].find("</p>").expect("its end") + "</p>".len();
    page.replace_range(start..end, "");
    true
}

pub(crate) fn seen(kubeci: &Kubeci, job: &str, numbers: &[u64]) -> Seen {
    let url = format!("http://127.0.0.1:{}", kubeci.port);
    let base = format!("/api/v1/jobs/default/{job}/builds");
    let cli = common::kubeci(&["builds", job, "--server", &url, "-o", "json"]);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    let (status, job_page) = get(kubeci, &format!("/jobs/default/{job}"));
    assert_eq!(status, 200, "{job_page}");
    let (status, jobs_page) = get(kubeci, "/");
    assert_eq!(status, 200, "{jobs_page}");
    let mut outputs_unread = Vec::new();
    let builds = numbers
        .iter()
        .map(|n| {
            let (status, page) = get(kubeci, &format!("/jobs/default/{job}/builds/{n}"));
            assert_eq!(status, 200, "{page}");
            // What the build left is read from the archive: while it is away the page
            // says so (taken out of it: the rest is compared).
            let mut page = main_of(&page);
            outputs_unread.push(without(&mut page, "outputs-error"));
            let (plain_status, plain) = get(kubeci, &format!("{base}/{n}/log"));
            let (stamped_status, stamped) = get(kubeci, &format!("{base}/{n}/log?timestamps=true"));
            assert_eq!((plain_status, stamped_status), (200, 200), "{plain}");
            let logs = common::kubeci(&["logs", job, &n.to_string(), "--server", &url]);
            assert_eq!(logs.code, 0, "{}", logs.stderr);
            (
                json(kubeci, &format!("{base}/{n}")),
                page,
                dechunk(&plain),
                dechunk(&stamped),
                logs.stdout,
            )
        })
        .collect();
    let mut list = json(kubeci, &base);
    let mut cli_list: Value = serde_json::from_str(&cli.stdout).unwrap();
    let mut job_page = main_of(&job_page);
    let said = [
        list.as_object_mut()
            .unwrap()
            .remove("archive_error")
            .is_some(),
        cli_list
            .as_object_mut()
            .unwrap()
            .remove("archive_error")
            .is_some(),
        without(&mut job_page, "archive-error"),
    ]
    .into_iter()
    .chain(outputs_unread)
    .collect::<Vec<_>>();
    assert!(said.iter().all(|s| *s == said[0]), "{said:?}");
    Seen {
        list,
        cli_list,
        job_page,
        jobs_page: main_of(&jobs_page),
        builds,
        said_missing: said[0],
    }
}

/// How many rows the local engine's database holds of builds and of log lines.
pub(crate) fn rows(data: &Path) -> (i64, i64) {
    let db = rusqlite::Connection::open_with_flags(
        data.join("kubeci.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |table: &str| {
        db.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    (count("builds"), count("log_lines"))
}

pub(crate) fn metric(kubeci: &Kubeci, name: &str) -> Option<f64> {
    let (_, metrics) = get(kubeci, "/metrics");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
}

pub(crate) fn trigger(kubeci: &Kubeci, job: &str) -> u64 {
    let (status, build) = crate::serve_local::trigger(kubeci, job);
    assert_eq!(status, 201, "{build}");
    build["number"].as_u64().unwrap()
}

pub(crate) fn state(kubeci: &Kubeci, job: &str, number: u64) -> String {
    let (_, body) = get(
        kubeci,
        &format!("/api/v1/jobs/default/{job}/builds/{number}"),
    );
    let build: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    build["state"].as_str().unwrap_or_default().to_owned()
}

/// A job whose builds write a few lines (one coloured, one long) and end as `$END` says.
pub(crate) fn job(local: &Local, repo: &common::git::Repo) {
    let script = "echo first; printf '\\033[31mred\\033[0m\\n'; head -c 3000 /dev/zero | tr '\\0' x; echo; echo \"build $BUILD_NUMBER\"; exit $(( BUILD_NUMBER % 2 ))";
    local.write("quick.yaml", &configmap("quick", &repo.bare, script, ""));
}

/// Builds `numbers` of `quick` run and end while the archive's store is away (`down`
/// was called): their first and final records wait, `/readyz` stays ready, the metric
/// and the pages say archiving is behind. What users read of them then is read again
/// once the store is back (`up`) and they are archived and gone from the database: the
/// same, byte for byte.
pub(crate) fn the_store_away_for_whole_builds_then_back(
    local: &Local,
    kubeci: &Kubeci,
    up: impl FnOnce(),
) {
    let numbers = [trigger(kubeci, "quick"), trigger(kubeci, "quick")];
    wait("both builds to end", || {
        numbers.iter().all(|n| {
            let state = state(kubeci, "quick", *n);
            state == "succeeded" || state == "failed"
        })
    });
    wait("archiving to be behind", || {
        metric(kubeci, "kubeci_archive_pending").is_some_and(|n| n >= 2.0)
    });
    assert_eq!(
        get(kubeci, "/readyz").0,
        200,
        "ready while the store is away"
    );
    let (_, page) = get(kubeci, "/jobs/default/quick");
    assert!(
        page.contains("Archiving is behind: 2 builds wait to be archived"),
        "{page}"
    );
    let live = seen(kubeci, "quick", &numbers);
    assert!(
        live.builds[0].2.contains("build 1\n"),
        "{:?}",
        live.builds[0]
    );
    assert_ne!(rows(&local.data), (0, 0));

    up();
    wait("the builds to be archived and leave the database", || {
        rows(&local.data) == (0, 0)
    });
    assert_eq!(metric(kubeci, "kubeci_archive_pending"), Some(0.0));
    let archived = seen(kubeci, "quick", &numbers);
    assert!(
        live.said_missing,
        "while the store was away, the page and the API said so"
    );
    assert!(!archived.said_missing);
    assert_same(&archived, &live);
    let (_, page) = get(kubeci, "/jobs/default/quick");
    assert!(!page.contains("Archiving is behind"), "{page}");
    let (_, jobs) = get(kubeci, "/?state=succeeded");
    assert!(
        jobs.contains("href=\"/jobs/default/quick\""),
        "the state filter knows the newest build, archived: {jobs}"
    );
    assert_eq!(trigger(kubeci, "quick"), 3, "numbers go on");
}

#[test]
fn the_default_archive_serves_ended_builds_as_they_were_and_the_database_keeps_only_what_is_live() {
    let (local, repo) = Local::new();
    job(&local, &repo);
    // The store away: where the archive's objects go, a file stands.
    let archive = local.data.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("v1"), "in the way").unwrap();
    let kubeci = local.serve(&[], &[]);
    the_store_away_for_whole_builds_then_back(&local, &kubeci, || {
        std::fs::remove_file(archive.join("v1")).unwrap();
    });
    let record = archive.join("v1/jobs/default/quick/builds/1/record.json");
    let record: Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(
        (&record["complete"], &record["state"]["phase"]),
        (&Value::Bool(true), &Value::from("failed"))
    );
    let steps: Vec<&str> = (record["log"].as_array().unwrap().iter())
        .map(|step| step["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["clone", "build"], "each step's log apart");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the default archive is kubeci's user's alone"
    );
}

/// The objects under `dir`, relative, sorted: its files but the staging files of uploads
/// cut short (`NAME#1`), which the archive never reads or lists.
fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.to_string_lossy().into_owned();
                let staged = name
                    .rsplit_once('#')
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !staged {
                    found.push(path.strip_prefix(dir).unwrap().to_owned());
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn killed_while_archiving_kubeci_archives_one_complete_copy_after_restart() {
    let (local, repo) = Local::new();
    // A log of 6 MB: its upload (in parts) takes a while after the clone step's log is in.
    let script = "echo start; yes 'a line of a long build log, one of very many' | head -c 6000000; echo done";
    local.write("long.yaml", &configmap("long", &repo.bare, script, ""));
    let archive = local.dir.path().join("archive");
    let url = format!("file://{}", archive.display());
    let kubeci = local.serve(&["--archive", &url], &[]);
    let number = trigger(&kubeci, "long");
    let logs = archive.join("v1/jobs/default/long/builds/1/logs");
    wait("the archive to take the clone step's log", || {
        logs.join("clone.log").exists()
    });
    kubeci.kill();
    let kubeci = local.serve(&["--archive", &url], &[]);
    wait("build 1 to be archived whole", || {
        rows(&local.data) == (0, 0)
    });
    let dir = archive.join("v1/jobs/default/long/builds/1");
    assert_eq!(
        objects(&dir),
        [
            PathBuf::from("logs/build.log"),
            PathBuf::from("logs/clone.log"),
            PathBuf::from("record.json")
        ],
        "one copy, nothing half-written left beside it"
    );
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join("record.json")).unwrap()).unwrap();
    assert_eq!(record["complete"], true);
    let page = json(&kubeci, "/api/v1/jobs/default/long/builds");
    let listed: Vec<&Value> = page["items"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1, "one entry: {page}");
    assert_eq!(
        (&listed[0]["number"], &listed[0]["state"]),
        (&Value::from(number), &Value::from("succeeded"))
    );
    let (status, log) = get(&kubeci, "/api/v1/jobs/default/long/builds/1/log");
    assert_eq!(status, 200);
    let log = dechunk(&log);
    assert!(
        log.starts_with("==> clone: init container started ("),
        "{}",
        &log[..200]
    );
    assert!(
        log.contains("done\n==> build: exited with code 0\n"),
        "the whole log"
    );
}

#[test]
fn an_object_that_is_not_kubecis_is_an_error_on_that_build_only() {
    let (local, repo) = Local::new();
    job(&local, &repo);
    let kubeci = local.serve(&[], &[]);
    for _ in 0..3 {
        trigger(&kubeci, "quick");
    }
    wait("three builds archived", || {
        rows(&local.data) == (0, 0) && {
            let listed = json(&kubeci, "/api/v1/jobs/default/quick/builds");
            listed["items"].as_array().is_some_and(|b| b.len() == 3)
        }
    });
    let builds = local.data.join("archive/v1/jobs/default/quick/builds");
    let cut = builds.join("1/record.json");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(builds.join("3/record.json"), builds.join("2/record.json")).unwrap();

    for (number, said) in [(1, "builds/1/record.json"), (2, "not of build 2")] {
        let path = format!("/api/v1/jobs/default/quick/builds/{number}");
        let (status, body) = get(&kubeci, &path);
        assert_eq!(status, 502, "{body}");
        assert!(
            body.contains("archive-unreadable") && body.contains(said),
            "{body}"
        );
        let (status, page) = get(&kubeci, &format!("/jobs/default/quick/builds/{number}"));
        assert_eq!(status, 502);
        assert!(
            page.contains("its archive cannot be read") && page.contains(said),
            "{page}"
        );
        let (status, log) = get(&kubeci, &format!("{path}/log"));
        assert_eq!(status, 502, "{log}");
    }
    // The job's page and list, and the other build, are as they were.
    let listed = json(&kubeci, "/api/v1/jobs/default/quick/builds");
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    assert_eq!(get(&kubeci, "/jobs/default/quick").0, 200);
    assert_eq!(state(&kubeci, "quick", 3), "failed");
    let (status, log) = get(&kubeci, "/api/v1/jobs/default/quick/builds/3/log");
    assert_eq!(status, 200);
    assert!(dechunk(&log).contains("build 3\n"));
}

#[test]
fn numbers_never_repeat_when_the_archive_is_all_that_is_left() {
    let (local, repo) = Local::new();
    job(&local, &repo);
    let archive = local.dir.path().join("archive");
    let url = format!("file://{}", archive.display());
    let kubeci = local.serve(&["--archive", &url], &[]);
    trigger(&kubeci, "quick");
    trigger(&kubeci, "quick");
    wait("both archived", || {
        rows(&local.data) == (0, 0) && state(&kubeci, "quick", 2) == "succeeded"
    });
    kubeci.kill();
    std::fs::remove_dir_all(&local.data).unwrap();

    let kubeci = local.serve(&["--archive", &url], &[]);
    assert_eq!(trigger(&kubeci, "quick"), 3, "above the archive's highest");
    let listed = json(&kubeci, "/api/v1/jobs/default/quick/builds");
    let numbers: Vec<u64> = (listed["items"].as_array().unwrap().iter())
        .map(|b| b["number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1], "the new build, then the archived ones");
}

/// The Kubernetes engine archives too (crates/cli/tests/it/archive_kubernetes*.rs); a
/// wrong URL stops it at start, said as such.
#[test]
fn the_kubernetes_engine_refuses_a_wrong_archive_url_at_start() {
    let bad = common::kubeci(&["serve", "--kubernetes", "--archive", "s3://key:secret@ci"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("--archive") && bad.stderr.contains("credentials"),
        "a wrong URL is said as such first: {}",
        bad.stderr
    );
}

#[test]
fn a_retried_request_gets_its_archived_build_and_a_foreign_index_leaves_the_live_builds_listed() {
    let (local, repo) = Local::new();
    job(&local, &repo);
    let kubeci = local.serve(&[], &[]);
    let (status, first) = common::serve::trigger(&kubeci, "quick", Some("deliver-1"));
    assert_eq!((status, &first["number"]), (201, &Value::from(1)));
    wait("build 1 archived", || {
        rows(&local.data) == (0, 0) && state(&kubeci, "quick", 1) == "failed"
    });
    let (status, again) = common::serve::trigger(&kubeci, "quick", Some("deliver-1"));
    assert_eq!(status, 200, "the same request, the same build: {again}");
    assert_eq!(
        (&again["number"], &again["state"]),
        (&Value::from(1), &Value::from("failed"))
    );

    // The job's index is not kubeci's: the live builds are listed, and the answer says why
    // archived ones are missing.
    let chunk = local
        .data
        .join("archive/v1/jobs/default/quick/index/0.json");
    std::fs::write(&chunk, "not json").unwrap();
    let live = trigger(&kubeci, "quick");
    let listed = json(&kubeci, "/api/v1/jobs/default/quick/builds");
    let items = listed["items"].as_array().unwrap();
    assert!(items.iter().any(|b| b["number"] == live), "{listed}");
    let error = listed["archive_error"].as_str().unwrap();
    assert!(error.contains("index/0.json"), "{error}");
    let (status, page) = get(&kubeci, "/jobs/default/quick");
    assert_eq!(status, 200);
    assert!(page.contains("Archived builds may be missing"), "{page}");
}

#[test]
fn a_log_read_while_its_build_leaves_the_database_is_read_whole_from_the_archive() {
    use std::io::Read;
    let (local, repo) = Local::new();
    // Longer than what the socket and the server hold while the reader waits.
    let script =
        "yes 'a line of a long build log, one of very many' | head -c 12000000; echo; echo done";
    local.write("long.yaml", &configmap("long", &repo.bare, script, ""));
    let archive = local.data.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("v1"), "in the way").unwrap();
    let kubeci = local.serve(&[], &[]);
    trigger(&kubeci, "long");
    wait("the build to end", || {
        state(&kubeci, "long", 1) == "succeeded"
    });
    for timestamps in [false, true] {
        let path = format!("/api/v1/jobs/default/long/builds/1/log?timestamps={timestamps}");
        // The reader begins from the database, then stops reading a while.
        let (mut reader, head) = common::serve::open_get(&kubeci, &path);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut begun = vec![0; 64 * 1024];
        reader.read_exact(&mut begun).unwrap();
        if !timestamps {
            std::fs::remove_file(archive.join("v1")).unwrap();
            wait("the build archived and gone from the database", || {
                rows(&local.data) == (0, 0)
            });
        }
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        begun.extend(rest);
        let read = dechunk(&String::from_utf8_lossy(&begun));
        let (status, whole) = get(&kubeci, &path);
        assert_eq!(status, 200);
        let whole = dechunk(&whole);
        let end = "done\n==> build: exited with code 0\n";
        assert!(
            whole.contains(end) || whole.contains(" done\n"),
            "the whole log"
        );
        assert_eq!(read.len(), whole.len(), "timestamps: {timestamps}");
        assert!(read == whole, "the same log, read across the hand-over");
    }
}
