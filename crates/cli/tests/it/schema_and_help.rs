//! `kubeci schema` is usable by a standard JSON Schema validator, and the CLI's help text
//! is reviewed as golden files.

use crate::common;

use std::process::Command;

use common::{assert_golden, kubeci, repo_root, require_python_module};

#[test]
fn the_schema_matches_its_golden_file() {
    let run = kubeci(&["schema"]);
    assert_eq!(run.code, 0);
    assert_golden("tests/golden/schema.json", &run.stdout);
}

/// An editor's validator (Python `jsonschema`, draft 2020-12) accepts the examples' jobs
/// and refuses broken ones, so the schema says what the parser says.
#[test]
#[ignore = "needs Python's jsonschema and PyYAML: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn a_standard_validator_agrees_with_lint() {
    require_python_module("jsonschema", "jsonschema");
    require_python_module("yaml", "PyYAML");
    let schema = kubeci(&["schema"]).stdout;
    let dir = std::env::temp_dir().join(format!("kubeci-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema_file = dir.join("schema.json");
    std::fs::write(&schema_file, schema).unwrap();
    let script = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    for doc in docs:
        if isinstance(doc, dict):
            if doc.get("kind") != "ConfigMap" or doc["metadata"].get("labels", {}).get("ci-job-spec") != "true":
                continue
            doc = yaml.safe_load(doc["data"]["job.yaml"])
        errors = sorted(e.message for e in validator.iter_errors(doc))
        print(path, "valid" if not errors else "invalid: " + "; ".join(errors))
"#;
    let root = repo_root();
    let files = [
        "examples/seed/start-helm-test.configmap.yaml",
        "tests/fixtures/kube-jenkins/start-helm-test-fingerprint.configmap.yaml",
        "examples/hello.configmap.yaml",
        "tests/fixtures/helm-template-output.yaml",
        "tests/fixtures/test-reports-and-artifacts.yaml",
        "tests/broken/01-misspelt-key.yaml",
        "tests/broken/04-name-is-a-number.yaml",
        "tests/broken/08-missing-run-command.yaml",
        "tests/broken/34-bad-boolean.yaml",
    ];
    let output = Command::new("python3")
        .current_dir(&root)
        .args(["-c", script])
        .arg(&schema_file)
        .args(files)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), files.len(), "{report}");
    for (line, file) in lines.iter().zip(files) {
        let expect_valid = !file.starts_with("tests/broken/");
        assert_eq!(line.ends_with(" valid"), expect_valid, "{line}");
    }
    assert!(report.contains("'brnach' was unexpected"), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_texts_match_their_golden_files() {
    for (name, args) in [
        ("kubeci", &["--help"][..]),
        ("lint", &["lint", "--help"][..]),
        ("render", &["render", "--help"][..]),
        ("new", &["new", "--help"][..]),
        ("serve", &["serve", "--help"][..]),
        ("tests", &["tests", "--help"][..]),
        ("artifacts", &["artifacts", "--help"][..]),
    ] {
        let run = kubeci(args);
        assert_eq!(run.code, 0);
        assert_golden(&format!("tests/golden/help/{name}.txt"), &run.stdout);
    }
}

/// `kubeci schema | head` must not panic when the reader goes away.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(first[0], b'{');
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
