//! The archive's own retention with `serve --local`: by count (the server's default
//! `--archive-max-count`) and by age (a job's `archive.retention.max_age`, which overrides
//! it), applied by the leader as builds are archived; the numbers retention deleted stay
//! taken, and deleting a job's file deletes nothing in the archive.

use crate::common;
use crate::serve_local_archive::{job, rows, state, trigger, wait};

use common::local::{configmap, Local};
use common::serve::{http, Kubeci};

fn numbers(kubeci: &Kubeci, job: &str) -> Vec<u64> {
    let (status, body) = http(
        kubeci,
        "GET",
        &format!("/api/v1/jobs/default/{job}/builds"),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    (listed["items"].as_array().unwrap().iter())
        .map(|b| b["number"].as_u64().unwrap())
        .collect()
}

fn gone(kubeci: &Kubeci, job: &str, number: u64) -> bool {
    let path = format!("/api/v1/jobs/default/{job}/builds/{number}");
    http(kubeci, "GET", &path, &[]).0 == 404
}

#[test]
fn the_server_keeps_the_newest_archived_builds_and_a_deleted_jobs_archive_stays() {
    let (local, repo) = Local::new();
    job(&local, &repo);
    let kubeci = local.serve(&["--archive-max-count", "2"], &[]);
    for _ in 0..3 {
        trigger(&kubeci, "quick");
    }
    wait("build 1 deleted from the archive, 2 and 3 kept", || {
        rows(&local.data) == (0, 0) && numbers(&kubeci, "quick") == [3, 2]
    });
    assert!(gone(&kubeci, "quick", 1));
    let build_1 = local.data.join("archive/v1/jobs/default/quick/builds/1");
    for object in ["record.json", "logs/clone.log", "logs/build.log"] {
        assert!(!build_1.join(object).exists(), "{object} deleted");
    }
    assert_eq!(
        trigger(&kubeci, "quick"),
        4,
        "numbers retention deleted stay taken"
    );
    wait("build 4 archived, 2 deleted", || {
        rows(&local.data) == (0, 0) && numbers(&kubeci, "quick") == [4, 3]
    });

    std::fs::remove_file(local.jobs.join("quick.yaml")).unwrap();
    wait("the job to be gone", || {
        common::serve::job_names(&kubeci).is_empty()
    });
    assert_eq!(
        numbers(&kubeci, "quick"),
        [4, 3],
        "its archived builds are still served"
    );
    assert_eq!(state(&kubeci, "quick", 4), "succeeded");
}

#[test]
fn a_jobs_own_retention_by_age_overrides_the_servers() {
    let (local, repo) = Local::new();
    let retention = "        archive:\n          retention:\n            max_age: 1s\n";
    local.write(
        "aged.yaml",
        &configmap("aged", &repo.bare, "echo hello", retention),
    );
    let kubeci = local.serve(&["--archive-max-count", "100"], &[]);
    trigger(&kubeci, "aged");
    wait("build 1 archived", || {
        rows(&local.data) == (0, 0) && state(&kubeci, "aged", 1) == "succeeded"
    });
    let (_, body) = http(&kubeci, "GET", "/api/v1/jobs/default/aged/builds/1", &[]);
    let ended: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ended: jiff::Timestamp = ended["finished_at"].as_str().unwrap().parse().unwrap();
    wait("more than a second since build 1 ended", || {
        jiff::Timestamp::now().as_second() > ended.as_second() + 1
    });
    // Retention goes over the job when its next build is archived.
    trigger(&kubeci, "aged");
    wait("build 1 deleted for its age", || gone(&kubeci, "aged", 1));
    assert!(numbers(&kubeci, "aged").iter().all(|n| *n == 2));
}

/// Build `number`'s state as its job's builds page lists it.
fn listed_state(kubeci: &Kubeci, job: &str, number: u64) -> String {
    let (status, body) = http(
        kubeci,
        "GET",
        &format!("/api/v1/jobs/default/{job}/builds"),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let builds = listed["items"].as_array().unwrap();
    let build = builds.iter().find(|b| b["number"].as_u64() == Some(number));
    build.map_or_else(String::new, |b| b["state"].as_str().unwrap().to_owned())
}

/// Each job's newest archived builds are kept a few seconds once read; what this server
/// archives forgets its job's. Its builds page, read over and over while a build runs, is
/// archived and leaves the database, shows the build's end the moment it has left: never
/// the first record archived when it started.
#[test]
fn a_build_that_left_the_database_is_listed_with_its_end_at_once() {
    let (local, repo) = Local::new();
    job(&local, &repo);
    let kubeci = local.serve(&[], &[]);
    let number = trigger(&kubeci, "quick");
    wait(
        "the build archived whole and gone from the database",
        || {
            listed_state(&kubeci, "quick", number);
            rows(&local.data) == (0, 0)
        },
    );
    assert_eq!(listed_state(&kubeci, "quick", number), "failed");
}
