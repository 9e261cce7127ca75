//! `kubeci jobs`, `builds`, `logs`, `trigger`, `cancel` against a running `kubeci serve
//! --local`: what a person or a script sees, and the errors they get.

use crate::common;

use std::time::Duration;

use common::local::{configmap, Local};
use common::{assert_golden, kubeci};

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
fn the_cli_client_lists_starts_follows_and_cancels_builds() {
    let (local, repo) = Local::new();
    local.write(
        "web.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  labels: {ci-job-spec: \"true\", helm.sh/chart: web-1.4.0}\ndata:\n  job.yaml: |\n    - job:\n        name: web\n        git: {url: 'https://github.com/example/web.git', branch: main}\n        run_command: make test\n",
    );
    local.write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n  labels: {ci-job-spec: \"true\"}\ndata:\n  job.yaml: \"- job: {name: broken}\"\n");
    let server = local.serve(&[], &[]);
    let url = format!("http://127.0.0.1:{}", server.port);
    let token = local.dir.path().join("token").display().to_string();
    let jobs_dir = local.jobs.display().to_string();

    let listed = kubeci(&["jobs", "--server", &url]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert_golden(
        "tests/golden/client/jobs.txt",
        &listed.stdout.replace(&jobs_dir, "<jobs>"),
    );
    let as_json = kubeci(&["jobs", "--server", &url, "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&as_json.stdout).unwrap();
    assert_eq!(value["items"].as_array().unwrap().len(), 2);

    local.write(
        "quick.yaml",
        &configmap(
            "quick",
            &repo.bare,
            "for i in 1 2 3; do echo line $i; sleep 0.2; done",
            "",
        ),
    );
    common::git::wait_for(Duration::from_secs(30), "the new job", || {
        kubeci(&["jobs", "--server", &url]).stdout.contains("quick")
    });
    let started = kubeci(&[
        "trigger",
        "quick",
        "--server",
        &url,
        "--token-file",
        &token,
        "--key",
        "k-1",
    ]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert_eq!(started.stdout, "build 1 of default/quick started: queued\n");
    let again = kubeci(&[
        "trigger",
        "quick",
        "--server",
        &url,
        "--token-file",
        &token,
        "--key",
        "k-1",
    ]);
    assert!(
        again
            .stdout
            .starts_with("build 1 of default/quick already started by this key"),
        "{}",
        again.stdout
    );
    let followed = kubeci(&["logs", "quick", "1", "-f", "--server", &url]);
    assert_eq!(followed.code, 0, "{}", followed.stderr);
    assert!(
        followed.stdout.contains("line 1\nline 2\nline 3\n"),
        "followed to the end: {}",
        followed.stdout
    );
    common::git::wait_for(Duration::from_secs(30), "build 1 to succeed", || {
        kubeci(&["builds", "quick", "--server", &url])
            .stdout
            .contains("succeeded")
    });
    let builds = kubeci(&["builds", "quick", "--server", &url]);
    let lines: Vec<&str> = builds.stdout.lines().collect();
    assert!(lines[0].starts_with("BUILD  STATE"), "{}", builds.stdout);
    assert!(
        lines[1].starts_with("1      succeeded  manual"),
        "{}",
        builds.stdout
    );
    let log = kubeci(&["logs", "quick", "1", "--server", &url]);
    assert_eq!(
        log.stdout, followed.stdout,
        "the stored log is the followed one"
    );

    // Errors: said plainly, exit 1 for the server's refusals, 2 for the rest.
    let finished = kubeci(&[
        "cancel",
        "quick",
        "1",
        "--server",
        &url,
        "--token-file",
        &token,
    ]);
    assert_eq!(finished.code, 1);
    assert!(
        finished
            .stderr
            .contains("already finished (succeeded) (409)"),
        "{}",
        finished.stderr
    );
    let missing = kubeci(&["builds", "absent", "--server", &url]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (1, "kubeci: no job default/absent (404)\n")
    );
    let no_token = kubeci(&["trigger", "quick", "--server", &url]);
    assert_eq!(no_token.code, 2);
    assert!(
        no_token.stderr.contains("needs a token"),
        "{}",
        no_token.stderr
    );
    drop(server);
    let down = kubeci(&["jobs", "--server", &url]);
    assert_eq!(down.code, 2);
    assert!(
        down.stderr
            .contains(&format!("cannot reach kubeci at {url}")),
        "{}",
        down.stderr
    );
}
