//! `kubeci lint` as users run it: the seed fixtures, the examples, the broken corpus.

use crate::common;

use common::{assert_golden, kubeci, kubeci_with_input, repo_root};

/// The kube-jenkins fixtures, kept byte for byte: its example job and Secret in
/// `examples/seed/`, and the same job with a pinned host key (the same ConfigMap, so it
/// cannot sit in the same directory) in `tests/fixtures/kube-jenkins/`.
const SEED_FILES: [&str; 3] = [
    "examples/seed/start-helm-test.configmap.yaml",
    "tests/fixtures/kube-jenkins/start-helm-test-fingerprint.configmap.yaml",
    "examples/seed/github-ssh-key.secret.yaml",
];

#[test]
fn every_seed_fixture_lints_without_error_and_the_secret_is_skipped() {
    for file in SEED_FILES {
        let run = kubeci(&["lint", file]);
        assert_eq!(run.code, 0, "{file}:\n{}{}", run.stdout, run.stderr);
        assert!(!run.stdout.contains("error["), "{file}:\n{}", run.stdout);
    }
    // Together, the two job files are two versions of one ConfigMap: a warning, not two
    // jobs.
    let mut args = vec!["lint"];
    args.extend(SEED_FILES);
    let run = kubeci(&args);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("warning[duplicate-configmap]"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("checked 3 files: 2 jobs (2 valid), 0 errors, 4 warnings, 1 object skipped (not job ConfigMaps)\n"), "{}", run.stdout);
}

#[test]
fn lint_output_of_the_examples_matches_the_golden_files() {
    let human = kubeci(&["lint", "examples/"]);
    assert_eq!(human.code, 0);
    assert_golden("tests/golden/lint/examples.txt", &human.stdout);
    let json = kubeci(&["lint", "--output", "json", "examples/"]);
    assert_eq!(json.code, 0);
    assert_golden("tests/golden/lint/examples.json", &json.stdout);
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(parsed["summary"]["valid_jobs"], 2);
    assert!(
        !human.stdout.contains("duplicate-configmap")
            && !human.stdout.contains("skipped ConfigMap"),
        "the examples are one version of each job, all labelled: {}",
        human.stdout
    );
}

#[test]
fn errors_exit_1_and_are_reported_in_json_too() {
    let human = kubeci(&[
        "lint",
        "tests/broken/37-bad-toleration.yaml",
        "tests/broken/01-misspelt-key.yaml",
    ]);
    assert_eq!(human.code, 1);
    let json = kubeci(&[
        "lint",
        "-o",
        "json",
        "tests/broken/37-bad-toleration.yaml",
        "tests/broken/01-misspelt-key.yaml",
    ]);
    assert_eq!(json.code, 1);
    assert_golden("tests/golden/lint/errors.json", &json.stdout);
}

#[test]
fn two_configmaps_declaring_one_job_is_an_error_at_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let configmap = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{ci-job-spec: \"true\"}}\ndata:\n  job.yaml: |\n    - job:\n        name: demo\n        git: {{url: 'https://github.com/o/r'}}\n        run_command: make\n        timeout: 5m\n")
    };
    std::fs::write(dir.path().join("a.yaml"), configmap("first")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), configmap("second")).unwrap();
    let run = kubeci(&["lint", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("error[duplicate-job]: job `demo` is already declared in namespace default by ConfigMap default/first"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("b.yaml:8:"),
        "at the second: {}",
        run.stdout
    );
}

/// `test_reports` and `artifacts`, as the issue writes them, lint clean; the schema test
/// has a standard validator accept the same file.
#[test]
fn a_job_declaring_its_test_reports_and_artifacts_lints_clean() {
    let run = kubeci(&["lint", "tests/fixtures/test-reports-and-artifacts.yaml"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .ends_with("checked 1 file: 1 job (1 valid), 0 errors, 0 warnings\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn warnings_fail_only_with_strict() {
    let run = kubeci(&["lint", "examples/hello.configmap.yaml"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("warning[local-git-url]"));
    let strict = kubeci(&["lint", "--strict", "examples/hello.configmap.yaml"]);
    assert_eq!(strict.code, 1);
}

#[test]
fn unreadable_paths_exit_2_with_the_reason() {
    let run = kubeci(&["lint", "no/such/file.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read no/such/file.yaml"),
        "{}",
        run.stderr
    );
}

#[test]
fn standard_input_is_read_with_dash() {
    let job = std::fs::read(repo_root().join("tests/broken/01-misspelt-key.yaml")).unwrap();
    let run = kubeci_with_input(&["lint", "-"], Some(&job));
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("<stdin>:6:7"), "{}", run.stdout);
}

#[test]
fn namespace_pairs_can_be_allowed() {
    let file = "tests/broken/32-namespace-not-allowed.yaml";
    assert_eq!(kubeci(&["lint", file]).code, 1);
    let allowed = kubeci(&["lint", "--allow-namespace", "team-a=team-b", file]);
    assert_eq!(allowed.code, 0, "{}", allowed.stdout);
    let malformed = kubeci(&["lint", "--allow-namespace", "team-a", file]);
    assert_eq!(malformed.code, 2);
    assert!(
        malformed.stderr.contains("is not FROM=TO"),
        "{}",
        malformed.stderr
    );
}

/// Each file under tests/broken/ starts with `# error-line: N`; its first finding at or
/// after the top must be on line N, and the whole human output must match
/// `<name>.expected`.
#[test]
fn broken_inputs_get_their_expected_messages_at_the_right_line() {
    let dir = repo_root().join("tests/broken");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has {} inputs", files.len());
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let relative = format!("tests/broken/{name}");
        let bytes = std::fs::read(&path).unwrap();
        let expected_line: Option<usize> = String::from_utf8_lossy(&bytes)
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# error-line: "))
            .map(|n| n.trim().parse().unwrap());
        let expected_line = expected_line.unwrap_or(1);

        let human = kubeci(&["lint", &relative]);
        assert_golden(
            &format!("tests/broken/{}.expected", name.trim_end_matches(".yaml")),
            &human.stdout,
        );

        let json = kubeci(&["lint", "-o", "json", &relative]);
        let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let findings: Vec<&serde_json::Value> = report["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] != "note")
            .collect();
        assert!(!findings.is_empty(), "{name}: nothing reported");
        let lines: Vec<u64> = findings
            .iter()
            .map(|d| d["line"].as_u64().unwrap())
            .collect();
        assert!(
            lines.contains(&(expected_line as u64)),
            "{name}: expected a finding on line {expected_line}, got lines {lines:?}"
        );
        for finding in &findings {
            assert!(
                finding["help"].as_str().is_some_and(|h| !h.is_empty()),
                "{name}: every finding says how to fix it"
            );
        }
        let has_error = findings.iter().any(|d| d["severity"] == "error");
        assert_eq!(human.code, if has_error { 1 } else { 0 }, "{name}");
    }
}

/// Files too large to commit are made here (under the git-ignored `tests/out/`): a
/// 2 MiB job and a 2 MiB ConfigMap, with golden messages like the rest of the corpus.
#[test]
fn two_mebibyte_inputs_are_refused_cleanly() {
    let dir = repo_root().join("tests/out");
    std::fs::create_dir_all(&dir).unwrap();
    let script: String = (0..36_000)
        .map(|i| format!("          echo line {i:040}\n"))
        .collect();
    assert!(script.len() > 2 * 1024 * 1024);
    std::fs::write(
        dir.join("18-2mib-job.yaml"),
        format!("- job:\n    name: big\n    git: {{url: 'https://github.com/o/r'}}\n    timeout: 5m\n    run_command: |\n{script}"),
    )
    .unwrap();
    let run = kubeci(&["lint", "tests/out/18-2mib-job.yaml"]);
    assert_eq!(run.code, 1);
    assert_golden("tests/broken/18-2mib-job.expected", &run.stdout);
    assert!(
        run.stdout
            .contains("error[too-large]: the job is 2.1 MiB; a ConfigMap holds at most 1.0 MiB"),
        "{}",
        run.stdout
    );

    std::fs::write(
        dir.join("18-2mib-configmap.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  labels: {{ci-job-spec: \"true\"}}\ndata:\n  job.yaml: |\n    - job:\n        name: big\n        git: {{url: 'https://github.com/o/r'}}\n        run_command: |\n{}",
            script.replace("          echo", "              echo")
        ),
    )
    .unwrap();
    let run = kubeci(&["lint", "tests/out/18-2mib-configmap.yaml"]);
    assert_eq!(run.code, 1);
    assert_golden("tests/broken/18-2mib-configmap.expected", &run.stdout);
    assert!(
        run.stdout
            .contains("Kubernetes stores at most 1.0 MiB in a ConfigMap"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("18-2mib-configmap.yaml:6:1\n"),
        "points at `data:`: {}",
        run.stdout
    );
}

#[test]
fn bytes_of_a_binary_or_hostile_file_never_reach_the_terminal_as_escape_sequences() {
    // A title-setting OSC sequence, a colour, a bell, a NUL, a right-to-left override in a
    // key, and bytes that are not UTF-8.
    let hostile: &[(&[u8], &str)] = &[
        (
            b"\x1b]0;pwned\x07\x1b[31mred\x00\xff\xfe\n",
            "\\x1b]0;pwned\\x07",
        ),
        (
            b"- job:\n    name: x\n    evil\xe2\x80\xae: 1\n",
            "evil\\u{202e}",
        ),
    ];
    for (input, shown) in hostile {
        let run = kubeci_with_input(&["lint", "-"], Some(input));
        assert_eq!(run.code, 1, "{}", run.stdout);
        let output = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !output
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{output:?}"
        );
        assert!(output.contains(shown), "shown escaped: {output}");
    }
}

#[test]
fn every_value_of_the_wrong_type_is_reported_in_one_run_with_its_own_fix() {
    let input = "- job:\n    name: five-mistakes\n    git:\n      url: 42\n      branch: [a]\n    run_command: 42\n    timeout: {a: 1}\n    image: [1]\n";
    let run = kubeci_with_input(&["lint", "-"], Some(input.as_bytes()));
    assert_eq!(run.code, 1);
    for (line, field) in [
        (4, "job.git.url"),
        (5, "job.git.branch"),
        (6, "job.run_command"),
        (7, "job.timeout"),
        (8, "job.image"),
    ] {
        assert!(
            run.stdout
                .contains(&format!("error[wrong-type]: `{field}` must be")),
            "{field}:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains(&format!(":{line}:")),
            "line {line}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .contains("help: put the value in quotes: `\"42\"`"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("123"), "{}", run.stdout);
    assert!(
        run.stdout.contains("5 errors"),
        "no error twice, none invented: {}",
        run.stdout
    );
}
