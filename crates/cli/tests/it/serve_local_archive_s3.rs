//! `kubeci serve --local --archive s3://…` against a real S3 server (versitygw on
//! loopback): the store away for whole builds, then back; the builds archived, gone from
//! the database, and read back exactly as they were live.

use crate::common;
use crate::serve_local_archive::{job, the_store_away_for_whole_builds_then_back};

use common::local::Local;
use kubeci_testkit::S3Server;

#[test]
#[ignore = "needs versitygw (scripts/s3 build)"]
fn over_s3_builds_are_archived_once_the_store_is_back_and_served_as_they_were() {
    let mut s3 = S3Server::start();
    let (local, repo) = Local::new();
    job(&local, &repo);
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = format!("{}/ci/archive", s3.url());
    let kubeci = local.serve(&["--archive", &url], &env);
    s3.stop();
    let root = s3.root();
    the_store_away_for_whole_builds_then_back(&local, &kubeci, || s3.restart());
    let record = root.join("kubeci/ci/archive/v1/jobs/default/quick/builds/2/record.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(record["complete"], true, "{record}");
    assert!(
        !local.data.join("archive").exists(),
        "--archive replaces the default"
    );
}
