//! `kubeci render`: golden Jobs, and strict validation against Kubernetes' own OpenAPI
//! schema by an independent validator (`kubernetes-validate`, from PyPI).

use crate::common;

use std::process::Command;

use common::{assert_golden, kubeci, repo_root, require_python_module};

const COMMIT: &str = "8f3c2a1d9e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a";

/// (golden name, arguments): a manual, a pull request and a push build, the seed's
/// fingerprint variant, and a job that declares test reports and artifacts (its collector).
const CASES: [(&str, &[&str]); 6] = [
    (
        "seed-manual",
        &[
            "render",
            "examples/seed/start-helm-test.configmap.yaml",
            "--build-number",
            "1",
        ],
    ),
    (
        "seed-pull-request",
        &[
            "render",
            "examples/seed/start-helm-test.configmap.yaml",
            "--build-number",
            "12",
            "--pr",
            "7",
            "--commit",
            COMMIT,
            "--pr-author",
            "webvictim",
            "--source-branch",
            "feature/helm-3",
            "--target-branch",
            "gravitational/k8s",
        ],
    ),
    (
        "seed-fingerprint-manual",
        &[
            "render",
            "tests/fixtures/kube-jenkins/start-helm-test-fingerprint.configmap.yaml",
            "--build-number",
            "3",
        ],
    ),
    (
        "payments-push",
        &[
            "render",
            "tests/fixtures/helm-template-output.yaml",
            "--job",
            "payments-ci",
            "--build-number",
            "41",
            "--trigger",
            "push",
            "--branch",
            "release/2.3",
            "--commit",
            COMMIT,
            "--namespace",
            "payments",
        ],
    ),
    (
        "hello-cron",
        &[
            "render",
            "examples/hello.configmap.yaml",
            "--build-number",
            "100",
            "--trigger",
            "cron",
        ],
    ),
    (
        "outputs-collected",
        &[
            "render",
            "tests/fixtures/test-reports-and-artifacts.yaml",
            "--build-number",
            "5",
            "--collect-url",
            "http://kubeci.ci.svc:8080",
        ],
    ),
];

#[test]
fn rendered_jobs_match_the_golden_files_and_are_deterministic() {
    for (name, args) in CASES {
        let first = kubeci(args);
        assert_eq!(first.code, 0, "{name}: {}", first.stderr);
        assert_golden(&format!("tests/golden/render/{name}.yaml"), &first.stdout);
        let second = kubeci(args);
        assert_eq!(
            first.stdout, second.stdout,
            "{name}: the same inputs give the same Job"
        );
    }
}

#[test]
#[ignore = "needs Python's kubernetes-validate: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn rendered_jobs_pass_strict_kubernetes_openapi_validation() {
    require_python_module("kubernetes_validate", "kubernetes-validate");
    let dir = std::env::temp_dir().join(format!("kubeci-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (name, args) in CASES {
        let run = kubeci(args);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, run.stdout).unwrap();
        files.push(file);
    }
    let report = common::kubernetes_validate(&files);
    assert_eq!(
        report.matches("passed for resource job/").count(),
        CASES.len(),
        "{report}"
    );

    // The validator is not a rubber stamp: a Job with a wrong field fails it.
    let broken = dir.join("broken.yaml");
    let good = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(
        &broken,
        good.replace("restartPolicy: Never", "restartPolicy: 5"),
    )
    .unwrap();
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!output.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

// Long on purpose: the design's contract for the seed job's pull request build, field by field
// over one rendered Job, in the order docs/design.md lists it.
#[test]
fn the_seed_pull_request_build_carries_the_design_contract() {
    let run = kubeci(CASES[1].1);
    let job: serde_json::Value =
        serde_json::from_str(&kubeci(&[CASES[1].1, &["-o", "json"]].concat()).stdout).unwrap();
    assert!(run.stdout.contains("name: start-helm-test-12\n"));
    let meta = &job["metadata"];
    assert_eq!(meta["labels"]["kubeci.io/job"], "start-helm-test");
    assert_eq!(meta["labels"]["kubeci.io/build"], "12");
    assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], "kubeci");
    assert_eq!(meta["annotations"]["kubeci.io/trigger"], "pull-request");
    assert_eq!(meta["annotations"]["kubeci.io/pr"], "7");
    assert_eq!(meta["annotations"]["kubeci.io/pr-author"], "webvictim");
    assert_eq!(meta["annotations"]["kubeci.io/commit"], COMMIT);
    assert_eq!(
        meta["annotations"]["kubeci.io/spec-hash"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "gus-test-jenkins");
    let clone = &pod["initContainers"][0];
    assert_eq!(clone["name"], "clone");
    assert!(clone["args"].as_array().unwrap().contains(&"--pr=7".into()));
    let ssh_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ssh-key")
        .unwrap();
    // Only the two keys the clone step reads are mounted; the fingerprint may be absent.
    let sources = ssh_volume["projected"]["sources"].as_array().unwrap();
    let items: Vec<_> = sources
        .iter()
        .map(|s| {
            let secret = &s["secret"];
            assert_eq!(secret["name"], "github-key");
            let items = secret["items"].as_array().unwrap();
            assert_eq!(items.len(), 1);
            (
                items[0]["key"].as_str().unwrap(),
                secret["optional"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(items, [("private-key", false), ("ssh_fingerprint", true)]);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(clone["resources"]["requests"]["cpu"].is_string(), "{clone}");
    assert!(
        clone["resources"]["limits"]["memory"].is_string(),
        "{clone}"
    );
    // The job's service-account token reaches the build step only: the clone step, which
    // handles the checkout before any of its code runs, has no API credentials.
    assert_eq!(pod["automountServiceAccountToken"], false);
    let mounts = |c: &serde_json::Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect()
    };
    let token_path = "/var/run/secrets/kubernetes.io/serviceaccount".to_owned();
    assert!(!mounts(clone).contains(&token_path), "{clone}");
    assert!(mounts(&pod["containers"][0]).contains(&token_path));
    let build = &pod["containers"][0];
    assert_eq!(
        build["workingDir"],
        "/workspace/src/gravitational/kubernetes/helm"
    );
    let env = build["env"].as_array().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    for (name, expected) in [
        ("JOB_NAME", "start-helm-test"),
        ("BUILD_NUMBER", "12"),
        (
            "BUILD_URL",
            "http://localhost:8080/jobs/default/start-helm-test/builds/12",
        ),
        ("GIT_URL", "git@github.com:gravitational/helm-test.git"),
        ("GIT_BRANCH", "feature/helm-3"),
        ("GIT_COMMIT", COMMIT),
        ("ghprbPullId", "7"),
        ("ghprbActualCommit", COMMIT),
        ("ghprbSourceBranch", "feature/helm-3"),
        ("ghprbTargetBranch", "gravitational/k8s"),
        ("ghprbPullAuthorLogin", "webvictim"),
        ("sha1", COMMIT),
    ] {
        assert_eq!(value(name), Some(expected.into()), "{name}");
    }
    let aws = env
        .iter()
        .find(|e| e["name"] == "AWS_SECRET_ACCESS_KEY")
        .unwrap();
    assert_eq!(aws["valueFrom"]["secretKeyRef"]["name"], "aws-key");
    assert_eq!(
        aws["valueFrom"]["secretKeyRef"]["key"],
        "aws-secret-access-key"
    );
}

#[test]
fn timeouts_become_deadlines_and_retention_is_left_to_kubeci() {
    let job: serde_json::Value = serde_json::from_str(
        &kubeci(&[
            "render",
            "tests/fixtures/helm-template-output.yaml",
            "--job",
            "payments-ci",
            "-o",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 45 * 60);
    assert!(
        job["spec"].get("ttlSecondsAfterFinished").is_none(),
        "Kubernetes' TTL would delete builds whose state is not reported yet"
    );
    assert_eq!(
        job["metadata"]["annotations"]["kubeci.io/chart-version"],
        "2.3.1"
    );
    let build = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(build["resources"]["limits"]["memory"], "4Gi");
}

#[test]
fn an_invalid_job_is_not_rendered() {
    let run = kubeci(&["render", "tests/broken/01-misspelt-key.yaml"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("unknown key `brnach`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1 error(s) in the job definition"),
        "{}",
        run.stderr
    );
}

#[test]
fn choosing_among_several_jobs_needs_a_name() {
    let dir = std::env::temp_dir().join(format!("kubeci-two-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let both = dir.join("both.yaml");
    let hello = std::fs::read_to_string(repo_root().join("examples/hello.configmap.yaml")).unwrap();
    let stream =
        std::fs::read_to_string(repo_root().join("tests/fixtures/helm-template-output.yaml"))
            .unwrap();
    std::fs::write(&both, format!("{hello}---\n{stream}")).unwrap();
    let path = both.to_str().unwrap();
    let run = kubeci(&["render", path]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "holds 2 jobs (default/hello, default/payments-ci): choose one with --job NAME"
        ),
        "{}",
        run.stderr
    );
    let run = kubeci(&["render", path, "--job", "nope"]);
    assert!(run.stderr.contains("no job named `nope`"), "{}", run.stderr);
    assert_eq!(kubeci(&["render", path, "--job", "hello"]).code, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
