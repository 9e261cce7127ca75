//! `kubeci run` and `kubeci clone` with real git, a real sshd on loopback, and real
//! processes: the local engine as a job author uses it.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::git::{alive, job_file, sh, wait_for, Repo, Sshd};
use common::{kubeci, repo_root, Run};

fn run_job(job: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["run", job.to_str().unwrap()];
    args.extend_from_slice(extra);
    kubeci(&args)
}

/// `KEY=value` lines a script printed.
fn printed(run: &Run, key: &str) -> Option<String> {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

const PRINT_ENV: &str = "for v in JOB_NAME BUILD_NUMBER BUILD_URL GIT_URL GIT_BRANCH GIT_COMMIT ghprbPullId ghprbActualCommit sha1 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY EXTRA; do echo \"$v=${!v:-}\"; done\necho \"PWD=$PWD\"\ncat marker.txt";

#[test]
fn a_build_runs_its_script_in_workdir_with_the_build_environment() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let secrets = dir.path().join("secrets/aws-key");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("aws-access-key-id"), "AKIATEST").unwrap();
    std::fs::write(secrets.join("aws-secret-access-key"), "s3cr3t").unwrap();
    let url = repo.bare.to_str().unwrap();
    let job = job_file(
        dir.path(),
        url,
        "main",
        PRINT_ENV,
        &["workdir: sub/dir", "aws_secret: aws-key"],
    );
    let run = run_job(
        &job,
        &[
            "--build-number",
            "5",
            "--secrets",
            dir.path().join("secrets").to_str().unwrap(),
            "--env",
            "EXTRA=from --env",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let commit = repo.head();
    assert_eq!(printed(&run, "JOB_NAME").as_deref(), Some("test-job"));
    assert_eq!(printed(&run, "BUILD_NUMBER").as_deref(), Some("5"));
    assert_eq!(
        printed(&run, "BUILD_URL").as_deref(),
        Some("http://localhost:8080/jobs/default/test-job/builds/5")
    );
    assert_eq!(printed(&run, "GIT_URL").as_deref(), Some(url));
    assert_eq!(printed(&run, "GIT_BRANCH").as_deref(), Some("main"));
    assert_eq!(printed(&run, "GIT_COMMIT"), Some(commit));
    assert_eq!(
        printed(&run, "ghprbPullId").as_deref(),
        Some(""),
        "not a pull request"
    );
    assert_eq!(
        printed(&run, "AWS_ACCESS_KEY_ID").as_deref(),
        Some("AKIATEST")
    );
    assert_eq!(
        printed(&run, "AWS_SECRET_ACCESS_KEY").as_deref(),
        Some("s3cr3t")
    );
    assert_eq!(printed(&run, "EXTRA").as_deref(), Some("from --env"));
    assert!(
        printed(&run, "PWD").unwrap().ends_with("/src/sub/dir"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("inside sub/dir"),
        "ran in workdir: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("==> result: succeeded"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_script_stops_at_the_first_failing_command_and_its_code_decides() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let job = job_file(
        dir.path(),
        repo.bare.to_str().unwrap(),
        "main",
        "echo before\n(exit 7)\necho after",
        &[],
    );
    let run = run_job(&job, &[]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("before"));
    assert!(!run.stdout.contains("after"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("==> result: failed: container build exited with code 7"),
        "{}",
        run.stdout
    );

    let job = job_file(dir.path(), repo.bare.to_str().unwrap(), "main", "true", &[]);
    assert_eq!(run_job(&job, &[]).code, 0);
}

#[test]
fn a_pull_request_build_runs_the_head_of_refs_pull_n() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let main = repo.head();
    repo.write("pr.txt", "the pull request's change\n");
    let pr_head = repo.commit("the pull request");
    repo.push_head_to("refs/pull/7/head");
    assert_ne!(main, pr_head);
    let job = job_file(
        dir.path(),
        repo.bare.to_str().unwrap(),
        "main",
        &format!("{PRINT_ENV}\ncat ../../pr.txt"),
        &["workdir: sub/dir"],
    );
    let run = run_job(&job, &["--pr", "7"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(printed(&run, "GIT_COMMIT").as_ref(), Some(&pr_head));
    assert_eq!(printed(&run, "ghprbActualCommit").as_ref(), Some(&pr_head));
    assert_eq!(printed(&run, "sha1").as_ref(), Some(&pr_head));
    assert_eq!(printed(&run, "ghprbPullId").as_deref(), Some("7"));
    assert!(run.stdout.contains("the pull request's change"));

    // An exact commit of the branch, and a commit that does not exist.
    let run = run_job(&job, &["--commit", &main]);
    assert_eq!(printed(&run, "GIT_COMMIT").as_ref(), Some(&main));
    let run = run_job(
        &job,
        &["--commit", "0123456789abcdef0123456789abcdef01234567"],
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains(
            "not found: commit 0123456789abcdef0123456789abcdef01234567 is not in branch main"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("init container clone exited with code 12"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_branch_named_like_a_command_substitution_builds_without_running_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let pwned = std::env::temp_dir().join(format!("kubeci-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&pwned);
    let branch = format!("$(touch${{IFS}}{})", pwned.display());
    repo.push_head_to(&format!("refs/heads/{branch}"));
    let job = job_file(
        dir.path(),
        repo.bare.to_str().unwrap(),
        &branch,
        "echo \"GIT_BRANCH=$GIT_BRANCH\"",
        &[],
    );
    let lint = kubeci(&["lint", job.to_str().unwrap()]);
    assert_eq!(lint.code, 0, "a valid git branch name: {}", lint.stdout);
    let run = run_job(&job, &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(printed(&run, "GIT_BRANCH"), Some(branch));
    assert!(!pwned.exists(), "the branch name was executed");
}

#[test]
fn missing_secrets_fail_the_build_with_kubernetes_words() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let empty = dir.path().join("secrets");
    std::fs::create_dir_all(&empty).unwrap();
    let job = job_file(
        dir.path(),
        repo.bare.to_str().unwrap(),
        "main",
        "true",
        &["aws_secret: aws-key"],
    );
    let run = run_job(&job, &["--secrets", empty.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("error (CreateContainerConfigError): secret \"aws-key\" not found"),
        "{}",
        run.stdout
    );

    std::fs::create_dir_all(empty.join("aws-key")).unwrap();
    std::fs::write(empty.join("aws-key/aws-access-key-id"), "AKIA").unwrap();
    let run = run_job(&job, &["--secrets", empty.to_str().unwrap()]);
    assert!(
        run.stdout
            .contains("couldn't find key aws-secret-access-key in Secret default/aws-key"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let pids = dir.path().join("pids");
    let script = "sleep 300 & echo $! >> \"$PIDS\"\nbash -c 'sleep 300 & echo $! >> \"$PIDS\"; wait' &\necho $! >> \"$PIDS\"\necho $$ >> \"$PIDS\"\nsleep 300";
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        format!(
            "- job:\n    name: slow\n    git: {{url: {}}}\n    timeout: 2s\n    run_command: {}\n",
            serde_json::to_string(repo.bare.to_str().unwrap()).unwrap(),
            serde_json::to_string(script).unwrap()
        ),
    )
    .unwrap();
    let run = run_job(&job, &["--env", &format!("PIDS={}", pids.display())]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("DeadlineExceeded"), "{}", run.stdout);
    let pids: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4, "every process of the tree recorded itself");
    wait_for(
        Duration::from_secs(5),
        "the build's processes to be gone",
        || pids.iter().all(|p| !alive(*p)),
    );
}

#[test]
fn ctrl_c_cancels_cleanly_and_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let pids = dir.path().join("pids");
    let job = job_file(
        dir.path(),
        repo.bare.to_str().unwrap(),
        "main",
        "sleep 300 & echo $! >> \"$PIDS\"\necho $$ >> \"$PIDS\"\nsleep 300",
        &[],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args([
            "run",
            job.to_str().unwrap(),
            "--env",
            &format!("PIDS={}", pids.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "the build to start its processes",
        || std::fs::read_to_string(&pids).is_ok_and(|t| t.lines().count() == 2),
    );
    let recorded: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(recorded.iter().all(|p| alive(*p)));
    sh("kill", &["-INT", &child.id().to_string()], dir.path());
    let mut status = None;
    wait_for(
        Duration::from_secs(10),
        "kubeci to exit after Ctrl-C",
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(status.unwrap().code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("==> interrupted: stopping the build"),
        "{stdout}"
    );
    assert!(
        stdout.contains("==> result: aborted: cancelled"),
        "{stdout}"
    );
    wait_for(
        Duration::from_secs(5),
        "the build's processes to be gone",
        || recorded.iter().all(|p| !alive(*p)),
    );
}

/// The README's run command, on a fresh checkout: prepare the example repository, run.
#[test]
fn the_bundled_example_runs_offline() {
    let prepare = Command::new(repo_root().join("examples/hello/prepare.sh"))
        .output()
        .unwrap();
    assert!(
        prepare.status.success(),
        "{}",
        String::from_utf8_lossy(&prepare.stderr)
    );
    let run = kubeci(&["run", "examples/hello.configmap.yaml"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("Hello from kubeci: build 1 of hello at "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("all tests passed"));
}

mod ssh;

#[test]
fn clone_failures_have_distinct_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let dest = |name: &str| dir.path().join(name).display().to_string();
    let url = format!("--url={}", repo.bare.display());
    let ok = kubeci(&[
        "clone",
        &url,
        "--branch=main",
        &format!("--dest={}", dest("a")),
        &format!("--meta-dir={}", dest("meta")),
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("meta/commit")).unwrap(),
        repo.head()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("meta/branch")).unwrap(),
        "main"
    );
    // Without a branch, the remote's HEAD is built and its branch recorded.
    let head = kubeci(&[
        "clone",
        &url,
        &format!("--dest={}", dest("h")),
        &format!("--meta-dir={}", dest("hmeta")),
    ]);
    assert_eq!(head.code, 0, "{}", head.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hmeta/branch")).unwrap(),
        "main"
    );

    let cases: [(&[String], u8, &str); 4] = [
        (
            &[
                url.clone(),
                "--branch=nope".into(),
                format!("--dest={}", dest("b")),
            ],
            12,
            "not found",
        ),
        (
            &[
                url.clone(),
                "--branch=main".into(),
                format!("--dest={}", dest("a")),
            ],
            14,
            "it is not empty",
        ),
        (
            &[
                "--url=-oProxyCommand=x".into(),
                format!("--dest={}", dest("c")),
            ],
            2,
            "starts with `-`",
        ),
        (
            &[
                url.clone(),
                "--commit=xyz".into(),
                format!("--dest={}", dest("d")),
            ],
            2,
            "not a hexadecimal commit id",
        ),
    ];
    for (args, code, message) in cases {
        let mut argv = vec!["clone"];
        argv.extend(args.iter().map(String::as_str));
        let run = kubeci(&argv);
        assert_eq!(run.code, i32::from(code), "{argv:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{argv:?}: {}", run.stderr);
    }
}

#[test]
#[ignore = "needs ssh-keyscan (openssh-client): .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn network_failures_are_retried_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let run = kubeci(&[
        "clone",
        &format!("--url=ssh://git@127.0.0.1:{port}/repo.git"),
        &format!("--dest={}", dir.path().join("x").display()),
        "--attempts=3",
        "--retry-delay=0.05",
    ]);
    assert_eq!(run.code, 13, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout.matches("network failure (attempt").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("network failure after 3 attempt(s)"),
        "{}",
        run.stderr
    );
}

/// A git configuration that maps a URL to git's `ext::` helper (and allows it) cannot make
/// the clone step run a program: the step allows only kubeci's transports
/// (`GIT_ALLOW_PROTOCOL`), whatever git's configuration says.
#[test]
fn the_clone_step_allows_only_kubecis_transports() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let gitconfig = dir.path().join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!(
            "[protocol \"ext\"]\n\tallow = always\n[url \"ext::sh -c touch% {}\"]\n\tinsteadOf = https://evil.example/\n",
            marker.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args([
            "clone",
            "--url=https://evil.example/r.git",
            "--branch=main",
            &format!("--dest={}", dir.path().join("dest").display()),
        ])
        .env("GIT_CONFIG_GLOBAL", &gitconfig)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(!marker.exists(), "the ext:: helper ran a program: {said}");
    assert!(said.contains("transport 'ext' not allowed"), "{said}");
}
