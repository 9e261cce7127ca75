//! `kubeci serve --local` with a job that declares `test_reports` and `artifacts` (issue
//! 30): a real pytest run in a real build writes its JUnit report and files; once the
//! build ended its counts, failures (with file and line) and files are served from the
//! archive, a declared file that is a link out of the workspace is refused with why, and
//! an artifact downloads byte for byte, as an attachment.

use crate::common;

use std::path::Path;

use common::local::{configmap, Local};
use common::serve::{http, http_with_body, Kubeci};
use serde_json::Value;

use crate::serve_local::{fixture_repo_alias, HELLO_WORLD};

use crate::serve_local_archive::{state, trigger, wait};

fn json(kubeci: &Kubeci, path: &str) -> Value {
    let (status, body) = http(kubeci, "GET", path, &[]);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The Python that runs pytest here (a build's environment — a local build's, or a pod the
/// node agent runs on this machine — has no `pyenv` shims' settings, so the interpreter is
/// named by its path).
pub(crate) fn python() -> String {
    let found = std::process::Command::new("python3")
        .args(["-c", "import sys, pytest; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    assert!(
        found.status.success(),
        "pytest is needed: python3 -m pip install pytest==9.2.0 ({})",
        String::from_utf8_lossy(&found.stderr)
    );
    String::from_utf8(found.stdout).unwrap().trim().to_owned()
}

const TESTS: &str = "def test_adds():\n    assert 1 + 1 == 2\n\n\ndef test_breaks():\n    assert 1 + 1 == 3, 'one and one'\n";

#[test]
#[ignore = "needs pytest (python3 -m pip install pytest==9.2.0; .ci/run installs it)"]
fn a_builds_test_results_and_files_are_taken_from_its_workspace_into_the_archive() {
    let (local, repo) = Local::new();
    repo.write("app/tests/test_app.py", TESTS);
    repo.commit("tests");
    repo.push_head_to("refs/heads/main");
    let script = "mkdir -p dist && printf built > dist/app.txt && ln -s /etc/passwd dist/leak \
                  && \"$PYTHON\" -m pytest -q -p no:cacheprovider --junitxml=reports/junit.xml tests";
    let extra = format!(
        "        workdir: app\n        test_reports: [\"reports/*.xml\"]\n        artifacts: [\"dist/\"]\n        env:\n          PYTHON: {}\n",
        serde_json::to_string(&python()).unwrap()
    );
    local.write(
        "tested.yaml",
        &configmap("tested", &repo.bare, script, &extra),
    );
    // Builds run as kubeci's user: the machine's pytest may live where only root can
    // reach (a pyenv under /root), and `nobody` could not run it.
    let kubeci = local.serve(&["--build-user", "root"], &[]);
    let number = trigger(&kubeci, "tested");
    wait("the build to fail on its broken test", || {
        state(&kubeci, "tested", number) == "failed"
    });
    let build = format!("/api/v1/jobs/default/tested/builds/{number}");

    let tests = json(&kubeci, &format!("{build}/tests"));
    if tests["files"].as_array().is_none_or(Vec::is_empty) {
        let (_, log) = http(&kubeci, "GET", &format!("{build}/log"), &[]);
        panic!("no report was found; the build's log:\n{log}");
    }
    assert_eq!(tests["counts"]["passed"], 1, "{tests}");
    assert_eq!(tests["counts"]["failed"], 1, "{tests}");
    assert_eq!(tests["files"][0]["path"], "reports/junit.xml", "{tests}");
    let failure = &tests["detailed"][0];
    assert_eq!(failure["name"], "test_breaks", "{tests}");
    assert!(
        failure["message"]
            .as_str()
            .unwrap_or("")
            .contains("one and one"),
        "{tests}"
    );
    assert_eq!(failure["file"], "tests/test_app.py", "{tests}");
    assert_eq!(failure["line"], 6, "{tests}");

    let listed = json(&kubeci, &format!("{build}/artifacts"));
    assert_eq!(
        listed["artifacts"],
        serde_json::json!([{"path": "dist/app.txt", "size": 5}]),
        "{listed}"
    );
    let refused = listed["refused"].as_array().unwrap();
    assert!(
        refused
            .iter()
            .any(|r| r["path"] == "dist/leak" && r["why"].as_str().unwrap_or("").contains("link")),
        "a link out of the workspace is refused with why: {listed}"
    );

    let (status, body) = http(
        &kubeci,
        "GET",
        &format!("{build}/artifacts/dist/app.txt"),
        &[],
    );
    assert_eq!((status, body.as_str()), (200, "built"));
    let (status, _) = http(&kubeci, "GET", &format!("{build}/artifacts/dist/leak"), &[]);
    assert_eq!(status, 404, "a refused file is not served");
    let (status, _) = http(
        &kubeci,
        "GET",
        &format!("{build}/artifacts/dist%2F..%2F..%2Frecord.json"),
        &[],
    );
    assert_eq!(status, 404, "nothing but the build's files is served");
}

/// A pull request's build with a broken test, reported as a check run by a GitHub App: the
/// check run's title gives the counts, and the failed test is an annotation on its file
/// and line in the repository (the report names it relative to the job's `workdir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs pytest (python3 -m pip install pytest==9.2.0; .ci/run installs it)"]
async fn a_pull_requests_failed_test_is_an_annotation_on_its_check_run() {
    let (local, repo) = Local::new();
    let key = local.dir.path().join("app.pem");
    let public_key = kubeci_testkit::github::make_app_key(&key);
    let github = kubeci_testkit::FakeGitHub::start_app(1717, public_key, "kubeci-bot").await;
    github.install("Codertocat", 5);
    let gitconfig = fixture_repo_alias(&local, &repo);
    repo.write("app/tests/test_app.py", TESTS);
    let head = repo.commit("a broken test");
    repo.push_head_to("refs/pull/2/head");
    let script = "\"$PYTHON\" -m pytest -q -p no:cacheprovider --junitxml=reports/junit.xml tests";
    let extra = format!(
        "        workdir: app\n        test_reports: [\"reports/*.xml\"]\n        env:\n          PYTHON: {}\n        ghprb:\n          enabled: true\n          whitelisted_users: [friend]\n",
        serde_json::to_string(&python()).unwrap()
    );
    local.write(
        "tested.yaml",
        &configmap("tested", Path::new(HELLO_WORLD), script, &extra),
    );
    std::fs::write(local.dir.path().join("secret"), "local-webhook-secret").unwrap();
    let secret = local.dir.path().join("secret").display().to_string();
    let (key, url) = (key.display().to_string(), github.url());
    let flags = [
        "--github-webhook-secret-file",
        secret.as_str(),
        "--github-app-id",
        "1717",
        "--github-app-key-file",
        key.as_str(),
        "--github-url",
        url.as_str(),
        "--github-host",
        "github.com",
        "--github-resync",
        "0s",
        "--build-user",
        "root",
    ];
    let kubeci = local.serve(&flags, &[("GIT_CONFIG_GLOBAL", gitconfig.as_str())]);
    let fixture =
        common::repo_root().join("tests/fixtures/github-webhooks/pull_request.opened.json");
    let mut payload: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    payload["pull_request"]["user"]["login"] = "friend".into();
    payload["pull_request"]["head"]["sha"] = head.clone().into();
    let body = serde_json::to_vec(&payload).unwrap();
    github.set_pull_request("Codertocat/Hello-World", payload["pull_request"].clone());
    let signature = kubeci_github::signature::sign(b"local-webhook-secret", &body);
    let headers = [
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "t-1"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let (status, answer) = http_with_body(&kubeci, "POST", "/hooks/github", &headers, &body);
    assert_eq!(status, 200, "{answer}");
    wait("the check run to complete", || {
        github
            .check_runs()
            .iter()
            .any(|run| run.head_sha == head && run.status == "completed")
    });
    let run = github
        .check_runs()
        .into_iter()
        .find(|run| run.head_sha == head)
        .unwrap();
    assert_eq!(run.conclusion.as_deref(), Some("failure"), "{run:?}");
    let title = run.output["title"].as_str().unwrap_or_default();
    assert!(title.contains("1 passed, 1 failed"), "{title}");
    assert_eq!(run.annotations.len(), 1, "{:#?}", run.annotations);
    let annotation = &run.annotations[0];
    assert_eq!(annotation["path"], "app/tests/test_app.py", "{annotation}");
    assert_eq!(annotation["start_line"], 6, "{annotation}");
    assert_eq!(annotation["annotation_level"], "failure", "{annotation}");
    assert!(
        annotation["message"]
            .as_str()
            .unwrap_or("")
            .contains("one and one"),
        "{annotation}"
    );
}
