//! `kubeci run` and `kubeci clone` over SSH: a real sshd on loopback, its host key checked
//! before any credential is used.

use super::*;

struct Setup {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    repo: Repo,
    sshd: Sshd,
    secrets: std::path::PathBuf,
    private_key: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let repo = Repo::new(&root);
    let secrets = root.join("secrets");
    let key_dir = secrets.join("github-key");
    std::fs::create_dir_all(&key_dir).unwrap();
    let key = key_dir.join("private-key");
    sh(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kubeci-test",
            "-f",
            key.to_str().unwrap(),
        ],
        &root,
    );
    let public = root.join("client.pub");
    std::fs::rename(key_dir.join("private-key.pub"), &public).unwrap();
    let sshd = Sshd::start(&root.join("sshd"), &public);
    let private_key = std::fs::read_to_string(&key).unwrap();
    Setup {
        _dir: dir,
        root,
        repo,
        sshd,
        secrets,
        private_key,
    }
}

fn assert_no_key_material(run: &Run, key: &str) {
    for line in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
    {
        assert!(
            !run.stdout.contains(line) && !run.stderr.contains(line),
            "key material printed"
        );
    }
}

#[test]
#[ignore = "needs sshd and ssh-keyscan (openssh-server): .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn a_pinned_host_key_clones_over_ssh_and_builds() {
    let s = setup();
    let url = s.sshd.url(&s.repo.bare);
    let job = job_file(
        &s.root,
        &url,
        "main",
        "echo \"GIT_COMMIT=$GIT_COMMIT\"",
        &[],
    );
    // Put the SSH settings into the job's git section.
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "      branch: \"main\"\n",
        &format!("      branch: \"main\"\n      ssh_secret_ref: github-key\n      ssh_fingerprint: \"{}\"\n", s.sshd.host_fingerprint),
    );
    std::fs::write(&job, text).unwrap();
    let run = run_job(&job, &["--secrets", s.secrets.to_str().unwrap()]);
    assert_eq!(
        run.code,
        0,
        "{}{}\nsshd log:\n{}",
        run.stdout,
        run.stderr,
        s.sshd.log_text()
    );
    assert_eq!(printed(&run, "GIT_COMMIT"), Some(s.repo.head()));
    assert!(
        run.stdout
            .contains(&format!("matches the pinned {}", s.sshd.host_fingerprint)),
        "{}",
        run.stdout
    );
    assert!(
        s.sshd.log_text().contains("Accepted publickey"),
        "the key authenticated"
    );
    assert_no_key_material(&run, &s.private_key);

    // The fingerprint may instead come from the Secret's ssh_fingerprint key.
    std::fs::write(
        s.secrets.join("github-key/ssh_fingerprint"),
        format!("{}\n", s.sshd.host_fingerprint),
    )
    .unwrap();
    let text = std::fs::read_to_string(&job).unwrap();
    let without_pin: String = text
        .lines()
        .filter(|l| !l.contains("ssh_fingerprint"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&job, without_pin).unwrap();
    let run = run_job(&job, &["--secrets", s.secrets.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("matches the pinned"), "{}", run.stdout);
}

#[test]
#[ignore = "needs sshd and ssh-keyscan (openssh-server): .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn the_wrong_fingerprint_fails_before_authentication() {
    let s = setup();
    let other = s.root.join("other_host_key");
    sh(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            other.to_str().unwrap(),
        ],
        &s.root,
    );
    let wrong = sh(
        "ssh-keygen",
        &["-l", "-f", other.to_str().unwrap()],
        &s.root,
    )
    .split_whitespace()
    .nth(1)
    .unwrap()
    .to_owned();
    let url = s.sshd.url(&s.repo.bare);
    let job = job_file(&s.root, &url, "main", "echo built", &[]);
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "      branch: \"main\"\n",
        &format!("      branch: \"main\"\n      ssh_secret_ref: github-key\n      ssh_fingerprint: \"{wrong}\"\n"),
    );
    std::fs::write(&job, text).unwrap();
    let run = run_job(&job, &["--secrets", s.secrets.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    let expected = format!(
        "kubeci clone: host key verification failed for [127.0.0.1]:{}: expected {wrong}, the server presented {} (ssh-ed25519)",
        s.sshd.port, s.sshd.host_fingerprint
    );
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("init container clone exited with code 10"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("built"));
    let log = s.sshd.log_text();
    assert!(
        log.contains("Connection from 127.0.0.1"),
        "sshd saw the host key query: {log}"
    );
    assert!(
        !log.contains("publickey") && !log.contains("Accepted") && !log.contains("Failed"),
        "no credential was offered: {log}"
    );
    assert_no_key_material(&run, &s.private_key);
}

#[test]
#[ignore = "needs sshd and ssh-keyscan (openssh-server): .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn a_missing_ssh_secret_fails_with_secret_not_found() {
    let s = setup();
    let url = s.sshd.url(&s.repo.bare);
    let job = job_file(&s.root, &url, "main", "echo built", &[]);
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "      branch: \"main\"\n",
        "      branch: \"main\"\n      ssh_secret_ref: missing-key\n",
    );
    std::fs::write(&job, text).unwrap();
    let run = run_job(&job, &["--secrets", s.secrets.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("error (FailedMount): MountVolume.SetUp failed for volume \"ssh-key\" : secret \"missing-key\" not found"),
        "{}",
        run.stdout
    );
}
