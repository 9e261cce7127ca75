//! `kubeci serve --local DIR`, the real binary: jobs from ConfigMap files, builds by the
//! local engine against real git repositories, history and logs in SQLite — which survive
//! `kill -9`, as the numbering does; a build that was running is marked as interrupted.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{http, http_with_body, Kubeci, AUTHORIZED};
use serde_json::{json, Value};

pub(crate) fn wait(what: &str, check: impl FnMut() -> bool) {
    common::git::wait_for(Duration::from_secs(60), what, check);
}

pub(crate) fn trigger(kubeci: &Kubeci, job: &str) -> (u16, Value) {
    let path = format!("/api/v1/jobs/default/{job}/builds");
    let (status, body) = http(kubeci, "POST", &path, &[AUTHORIZED]);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub(crate) fn build(kubeci: &Kubeci, job: &str, number: u64) -> Value {
    common::serve::builds(kubeci, job)
        .into_iter()
        .find(|b| b["number"] == number)
        .unwrap_or(Value::Null)
}

pub(crate) fn log(kubeci: &Kubeci, job: &str, number: u64) -> String {
    let path = format!("/api/v1/jobs/default/{job}/builds/{number}/log");
    http(kubeci, "GET", &path, &[]).1
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
fn history_logs_and_numbers_survive_kill_9_and_a_running_build_is_marked_interrupted() {
    let (local, repo) = Local::new();
    local.write(
        "quick.yaml",
        &configmap(
            "quick",
            &repo.bare,
            "cat README.md; echo \"build $BUILD_NUMBER at $GIT_COMMIT\"",
            "",
        ),
    );
    local.write(
        "slow.yaml",
        &configmap("slow", &repo.bare, "echo started; sleep 60", ""),
    );
    // The database alone keeps the history here (builds archived once they end leave it:
    // serve_local_archive proves that history); the metrics count the builds it holds.
    let kubeci = local.serve(&["--no-archive"], &[]);
    let names = common::serve::job_names(&kubeci);
    assert_eq!(names, ["quick", "slow"]);

    assert_eq!(trigger(&kubeci, "quick").0, 201);
    wait("build 1 to succeed", || {
        build(&kubeci, "quick", 1)["state"] == "succeeded"
    });
    let first_log = log(&kubeci, "quick", 1);
    assert!(first_log.contains("test repository\n"), "{first_log}");
    // A branch build: the commit the clone step checked out reaches the build's
    // environment and its record (the API, the pages and `kubeci builds` show it).
    let head = repo.head();
    assert!(
        first_log.contains(&format!("build 1 at {head}\n")),
        "{first_log}"
    );
    assert_eq!(build(&kubeci, "quick", 1)["commit"], head.as_str());
    assert_eq!(trigger(&kubeci, "slow").0, 201);
    wait("the slow build to run", || {
        build(&kubeci, "slow", 1)["state"] == "running"
            && log(&kubeci, "slow", 1).contains("started")
    });

    kubeci.kill();
    let kubeci = local.serve(&["--no-archive"], &[]);
    assert_eq!(
        build(&kubeci, "quick", 1)["state"],
        "succeeded",
        "history kept"
    );
    assert_eq!(log(&kubeci, "quick", 1), first_log, "and its log");
    let (status, stamped) = http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/quick/builds/1/log?timestamps=true",
        &[],
    );
    assert_eq!(status, 200, "{stamped}");
    common::serve::assert_timestamped(
        &common::serve::dechunk(&stamped),
        &common::serve::dechunk(&first_log),
    );
    let interrupted = build(&kubeci, "slow", 1);
    assert_eq!(interrupted["state"], "error");
    assert!(
        interrupted["message"]
            .as_str()
            .unwrap()
            .contains("kubeci stopped while this build ran"),
        "{interrupted}"
    );
    let (status, next) = trigger(&kubeci, "quick");
    assert_eq!(
        (status, next["number"].as_u64()),
        (201, Some(2)),
        "numbers continue"
    );
    wait("build 2 to succeed", || {
        build(&kubeci, "quick", 2)["state"] == "succeeded"
    });
    assert!(log(&kubeci, "quick", 2).contains(&format!("build 2 at {head}\n")));
    assert_eq!(
        build(&kubeci, "quick", 1)["commit"],
        head.as_str(),
        "the commit is kept with the history"
    );
    let (_, metrics) = http(&kubeci, "GET", "/metrics", &[]);
    for line in [
        "kubeci_builds{namespace=\"default\",job=\"quick\",state=\"succeeded\"} 2",
        "kubeci_builds{namespace=\"default\",job=\"slow\",state=\"error\"} 1",
        "# TYPE kubeci_build_duration_seconds histogram",
        "kubeci_build_duration_seconds_bucket{namespace=\"default\",job=\"quick\",le=\"+Inf\"} 2",
        "kubeci_build_duration_seconds_count{namespace=\"default\",job=\"quick\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
fn edited_files_apply_to_the_next_build_and_queues_and_cancel_work() {
    let (local, repo) = Local::new();
    local.write(
        "one.yaml",
        &configmap(
            "one",
            &repo.bare,
            "echo spec-one; sleep 30",
            "        max_concurrency: 1\n",
        ),
    );
    let kubeci = local.serve(&[], &[]);
    assert_eq!(trigger(&kubeci, "one").0, 201);
    assert_eq!(trigger(&kubeci, "one").0, 201);
    wait("build 1 to run", || {
        build(&kubeci, "one", 1)["state"] == "running"
    });
    assert_eq!(build(&kubeci, "one", 2)["state"], "queued", "one at a time");

    // An edit: the queued build keeps the spec it was requested with; the next one does not.
    local.write(
        "one.yaml",
        &configmap(
            "one",
            &repo.bare,
            "echo spec-two",
            "        max_concurrency: 1\n",
        ),
    );
    wait("the edit to be read", || {
        common::serve::json(&kubeci, "/api/v1/jobs")["items"][0]["spec_hash"]
            != build(&kubeci, "one", 1)["spec_hash"]
    });
    assert_eq!(trigger(&kubeci, "one").0, 201);

    // Cancel the running build: the queue moves on.
    let (status, cancelled) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/one/builds/1/cancel",
        &[AUTHORIZED],
    );
    assert_eq!(status, 200, "{cancelled}");
    wait("build 1 to be aborted", || {
        build(&kubeci, "one", 1)["state"] == "aborted"
    });
    wait(
        "build 2, with the spec it was requested with, to run",
        || {
            build(&kubeci, "one", 2)["state"] == "running"
                && log(&kubeci, "one", 2).contains("spec-one")
        },
    );
    assert_eq!(build(&kubeci, "one", 3)["state"], "queued");
    let cancel_2 = "/api/v1/jobs/default/one/builds/2/cancel";
    assert_eq!(
        http(&kubeci, "POST", cancel_2, &[]).0,
        401,
        "actions need the token"
    );
    assert_eq!(
        build(&kubeci, "one", 2)["state"],
        "running",
        "and nothing happened"
    );
    assert_eq!(http(&kubeci, "POST", cancel_2, &[AUTHORIZED]).0, 200);
    wait("build 3 to succeed", || {
        build(&kubeci, "one", 3)["state"] == "succeeded"
    });
    assert_eq!(build(&kubeci, "one", 2)["state"], "aborted");
    assert!(
        log(&kubeci, "one", 3).contains("spec-two"),
        "the next build has the new spec"
    );
    let (status, _) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/one/builds/3/cancel",
        &[AUTHORIZED],
    );
    assert_eq!(status, 409, "a finished build cannot be cancelled");

    // A removed file removes its job; a broken one is shown with its error.
    local.write("one.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n  labels: {ci-job-spec: \"true\"}\ndata:\n  job.yaml: \"- job: {name: one}\"\n");
    wait("the broken job to be shown", || {
        common::serve::json(&kubeci, "/api/v1/jobs")["items"][0]["valid"] == false
    });
    assert_eq!(trigger(&kubeci, "one").0, 422);
    std::fs::remove_file(local.jobs.join("one.yaml")).unwrap();
    wait("the job to be gone", || {
        common::serve::job_names(&kubeci).is_empty()
    });
}

/// `serve --local` as the README starts it: no token file given.
fn serve_without_token(local: &Local, extra: &[&str]) -> Kubeci {
    let port = common::free_port();
    let log = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args(["serve", "--local"])
        .arg(&local.jobs)
        .arg("--data")
        .arg(&local.data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let kubeci = Kubeci::adopt(child, port, log);
    wait("kubeci to be ready", || {
        http(&kubeci, "GET", "/readyz", &[]).0 == 200
    });
    kubeci
}

// Long on purpose: one user's story read top to bottom (a token made, then each log line
// checked in JSON and in text), each step needing the state the one before left.
#[test]
fn without_a_token_file_local_makes_one_and_logs_can_be_json() {
    use std::os::unix::fs::PermissionsExt;
    let (local, repo) = Local::new();
    local.write("quick.yaml", &configmap("quick", &repo.bare, "echo hi", ""));
    let kubeci = serve_without_token(&local, &["--log-format", "json"]);
    let token_file = local.data.join("token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    assert!(token.len() >= 32, "{token}");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600,
        "readable by its owner only"
    );
    let bearer = format!("Bearer {token}");
    let path = "/api/v1/jobs/default/quick/builds";
    assert_eq!(http(&kubeci, "POST", path, &[]).0, 401);
    assert_eq!(
        http(&kubeci, "POST", path, &[("Authorization", &bearer)]).0,
        201
    );
    wait("the build to succeed", || {
        build(&kubeci, "quick", 1)["state"] == "succeeded"
    });

    let stderr = kubeci.log();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        for field in ["time", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} in {line}");
        }
    }
    let serving = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("serving on http://127.0.0.1:")
        })
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        serving["message"].as_str().unwrap().contains(&format!(
            "sign in with the token in {}",
            token_file.display()
        )),
        "{serving}"
    );
    assert_eq!(serving["level"], "info");
    // A line about a build carries its ids as fields a log pipeline filters on, and one
    // logged while a request was answered carries that request's.
    let line = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {stderr}"))
            .clone()
    };
    let requested = line("build requested");
    for (field, value) in [
        ("namespace", json!("default")),
        ("job", json!("quick")),
        ("build", json!(1)),
        ("method", json!("POST")),
        ("path", json!(path)),
        ("route", json!("/api/v1/jobs/{namespace}/{name}/builds")),
    ] {
        assert_eq!(requested[field], value, "{field} in {requested}");
    }
    assert!(requested["request_id"].is_u64(), "{requested}");
    let released = line("released the build from the queue");
    for (field, value) in [
        ("namespace", json!("default")),
        ("job", json!("quick")),
        ("build", json!(1)),
        ("action", json!("release")),
    ] {
        assert_eq!(released[field], value, "{field} in {released}");
    }

    // Started again, it keeps its token; its text lines read as before, fields after.
    kubeci.kill();
    let kubeci = serve_without_token(&local, &[]);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert_eq!(
        http(&kubeci, "POST", path, &[("Authorization", &bearer)]).0,
        201
    );
    wait("the build to be released", || {
        kubeci.log().contains("kubeci: released the build from the queue namespace=default job=quick build=2 action=release\n")
    });
    let log = kubeci.log();
    assert!(
        log.contains("kubeci: serving on http://127.0.0.1:"),
        "{log}"
    );
    let requested = log
        .lines()
        .find(|l| l.starts_with("kubeci: build requested "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        requested.contains(" method=POST path=/api/v1/jobs/default/quick/builds "),
        "{requested}"
    );
    assert!(
        requested.contains(" namespace=default job=quick build=2"),
        "{requested}"
    );
}

#[test]
fn users_an_authenticating_proxy_names_act_when_on_the_allow_list() {
    let (local, repo) = Local::new();
    local.write("quick.yaml", &configmap("quick", &repo.bare, "echo hi", ""));
    let users = local.dir.path().join("users");
    std::fs::write(&users, "# who may build\nalice   # team lead\n\n").unwrap();
    let kubeci = local.serve(
        &[
            "--auth-user-header",
            "X-Forwarded-User",
            "--allowed-users-file",
            users.to_str().unwrap(),
            "--allow-user",
            "carol",
        ],
        &[],
    );
    let path = "/api/v1/jobs/default/quick/builds";
    let as_user = |user: &str| {
        let (status, body) = http(&kubeci, "POST", path, &[("X-Forwarded-User", user)]);
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
        )
    };
    let (status, body) = as_user("bob");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "user-not-allowed");
    for user in ["alice", "carol"] {
        let (status, body) = as_user(user);
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["requested_by"], user);
    }
    assert_eq!(
        common::serve::builds(&kubeci, "quick").len(),
        2,
        "bob started nothing"
    );
}

#[test]
fn a_followed_log_of_a_queued_build_streams_once_the_build_runs() {
    let (local, repo) = Local::new();
    let gate = local.dir.path().join("gate");
    let script = format!(
        "echo \"build $BUILD_NUMBER waits\"; while [ ! -e {} ]; do sleep 0.1; done; echo \"build $BUILD_NUMBER done\"",
        gate.display()
    );
    local.write(
        "one.yaml",
        &configmap("one", &repo.bare, &script, "        max_concurrency: 1\n"),
    );
    let kubeci = local.serve(&[], &[]);
    assert_eq!(trigger(&kubeci, "one").0, 201);
    assert_eq!(trigger(&kubeci, "one").0, 201);
    wait("build 1 to run and build 2 to queue", || {
        build(&kubeci, "one", 1)["state"] == "running"
            && build(&kubeci, "one", 2)["state"] == "queued"
    });
    // The follower is answered (headers) while build 2 still waits in the queue.
    use std::io::Read;
    let (mut stream, head) =
        common::serve::open_get(&kubeci, "/api/v1/jobs/default/one/builds/2/log?follow=true");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(build(&kubeci, "one", 2)["state"], "queued", "still queued");
    std::fs::write(&gate, "").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(body.contains("build 2 waits"), "{body}");
    assert!(body.contains("build 2 done"), "{body}");
    assert!(!body.contains("build 1"), "{body}");
}

/// Reads until the server closes `stream`; what it sent. Fails the test after 60 s.
fn read_until_closed(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection is still open after 60 s ({e}); received {received:?}"),
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn slow_clients_are_cut_off_and_kubeci_keeps_serving_everyone_else() {
    use std::io::Write;
    use std::net::TcpStream;

    let (local, repo) = Local::new();
    let gitconfig = fixture_repo_alias(&local, &repo);
    local.write(
        "pushed.yaml",
        &configmap(
            "pushed",
            Path::new(HELLO_WORLD),
            "echo built",
            "        triggers:\n          push:\n            branches: [main]\n",
        ),
    );
    std::fs::write(local.dir.path().join("secret"), "slow-webhook-secret").unwrap();
    let secret = local.dir.path().join("secret").display().to_string();
    let kubeci = local.serve(
        &[
            "--read-timeout",
            "1s",
            "--github-webhook-secret-file",
            secret.as_str(),
        ],
        &[("GIT_CONFIG_GLOBAL", gitconfig.as_str())],
    );

    let fixture = common::repo_root().join("tests/fixtures/github-webhooks/push.json");
    let mut payload: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    payload["ref"] = "refs/heads/main".into();
    payload["after"] = repo.head().into();
    payload["deleted"] = false.into();
    let body = serde_json::to_vec(&payload).unwrap();
    let signature = kubeci_github::signature::sign(b"slow-webhook-secret", &body);
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: kubeci\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: slow-1\r\nX-Hub-Signature-256: {signature}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );

    let connect = || TcpStream::connect(("127.0.0.1", kubeci.port)).unwrap();
    let mut half_heads: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = connect();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: ")
                .unwrap();
            stream
        })
        .collect();
    let mut silent = connect();
    let mut slow_delivery = connect();
    slow_delivery.write_all(head.as_bytes()).unwrap();
    slow_delivery.write_all(&body[..body.len() / 2]).unwrap();

    assert_eq!(http(&kubeci, "GET", "/healthz", &[]).0, 200);
    assert_eq!(http(&kubeci, "GET", "/", &[]).0, 200);

    let answer = read_until_closed(&mut slow_delivery);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    for stream in half_heads.iter_mut().chain([&mut silent]) {
        assert_eq!(read_until_closed(stream), "", "closed without an answer");
    }
    assert!(
        common::serve::builds(&kubeci, "pushed").is_empty(),
        "a delivery that never arrived whole started a build"
    );

    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "slow-1"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let (status, answer) = http_with_body(&kubeci, "POST", "/hooks/github", &headers, &body);
    assert_eq!(status, 200, "the same delivery sent at once: {answer}");
    wait("the pushed build", || {
        build(&kubeci, "pushed", 1)["state"] == "succeeded"
    });
}

/// The webhook fixtures' repository URL, cloned from `repo` instead: a git config file
/// for GIT_CONFIG_GLOBAL.
pub(crate) fn fixture_repo_alias(local: &Local, repo: &common::git::Repo) -> String {
    let gitconfig = local.dir.path().join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!(
            "[url \"{}\"]\n\tinsteadOf = {HELLO_WORLD}\n",
            repo.bare.display()
        ),
    )
    .unwrap();
    gitconfig.display().to_string()
}

pub(crate) const HELLO_WORLD: &str = "https://github.com/Codertocat/Hello-World.git";
