//! Real git repositories and a real sshd on loopback, for the local engine's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a program (no shell) and returns its trimmed stdout; panics with its stderr.
pub fn sh(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@kubeci.invalid")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@kubeci.invalid")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A bare repository with a `main` branch; `commit` adds commits to any ref.
pub struct Repo {
    pub bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    pub fn new(root: &Path) -> Repo {
        let work = root.join("work");
        let bare = root.join("repo.git");
        std::fs::create_dir_all(&work).unwrap();
        sh("git", &["init", "--quiet", "--initial-branch=main"], &work);
        let repo = Repo { bare, work };
        repo.write("README.md", "test repository\n");
        repo.write("sub/dir/marker.txt", "inside sub/dir\n");
        repo.commit("first commit");
        sh(
            "git",
            &[
                "clone",
                "--quiet",
                "--bare",
                repo.work.to_str().unwrap(),
                repo.bare.to_str().unwrap(),
            ],
            root,
        );
        repo
    }

    pub fn write(&self, path: &str, contents: &str) {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, contents).unwrap();
    }

    /// Commits the work tree and returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        sh("git", &["add", "-A"], &self.work);
        sh(
            "git",
            &["commit", "--quiet", "--allow-empty", "-m", message],
            &self.work,
        );
        sh("git", &["rev-parse", "HEAD"], &self.work)
    }

    /// Pushes the work tree's HEAD to `refspec` (e.g. `refs/pull/7/head`) of the bare repo.
    pub fn push_head_to(&self, target: &str) {
        sh(
            "git",
            &[
                "push",
                "--quiet",
                "--force",
                self.bare.to_str().unwrap(),
                &format!("HEAD:{target}"),
            ],
            &self.work,
        );
    }

    pub fn head(&self) -> String {
        sh("git", &["rev-parse", "HEAD"], &self.work)
    }
}

/// Writes a bare job.yaml; `extra` are further lines of the job (4-space indented).
pub fn job_file(dir: &Path, url: &str, branch: &str, run_command: &str, extra: &[&str]) -> PathBuf {
    let mut text = format!(
        "- job:\n    name: test-job\n    git:\n      url: {}\n      branch: {}\n    timeout: 2m\n    run_command: {}\n",
        serde_json::to_string(url).unwrap(),
        serde_json::to_string(branch).unwrap(),
        serde_json::to_string(run_command).unwrap(),
    );
    for line in extra {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    let path = dir.join("job.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether a process is running (a zombie, already dead, is not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Polls `condition` until it holds, for at most `limit`.
pub fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An sshd on a loopback port serving `root`'s repositories to one client key.
pub struct Sshd {
    pub port: u16,
    pub host_fingerprint: String,
    pub log: PathBuf,
    pub user: String,
    child: Child,
}

impl Sshd {
    /// Starts sshd; `client_public_key` may log in.
    pub fn start(dir: &Path, client_public_key: &Path) -> Sshd {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("this test needs sshd (apt-get install openssh-server; .ci/run installs it)");
        std::fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_ed25519");
        sh(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                host_key.to_str().unwrap(),
            ],
            dir,
        );
        let fingerprint_line = sh("ssh-keygen", &["-l", "-f", host_key.to_str().unwrap()], dir);
        let host_fingerprint = fingerprint_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_public_key, &authorized).unwrap();
        // sshd running as root wants its privilege separation directory.
        if sh("id", &["-u"], dir) == "0" {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = super::free_port();
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized.display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args([
                "-D",
                "-f",
                config.to_str().unwrap(),
                "-E",
                log.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("sshd starts");
        wait_for(Duration::from_secs(10), "sshd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sshd {
            port,
            host_fingerprint,
            log,
            user: sh("id", &["-un"], dir),
            child,
        }
    }

    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
