//! `kubeci serve --local` with a job that declares `test_reports` and `artifacts` (issue
//! 30): a real pytest run in a real build writes its JUnit report and files; once the
//! build ended its counts, failures (with file and line) and files are served from the
//! archive, a declared file that is a link out of the workspace is refused with why, and
//! an artifact downloads byte for byte, as an attachment.

use crate::common;

use common::local::{configmap, Local};
use common::serve::{http, Kubeci};
use serde_json::Value;

use crate::serve_local_archive::{state, trigger, wait};

fn json(kubeci: &Kubeci, path: &str) -> Value {
    let (status, body) = http(kubeci, "GET", path, &[]);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The Python this test runs with pytest (a build's environment has no `pyenv` shims'
/// settings, so the interpreter is named by its path).
fn python() -> String {
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
