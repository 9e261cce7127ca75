//! `kubeci serve --local`, the real binary, on a directory of job ConfigMap files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::serve::{http, Kubeci, TOKEN};

/// A job ConfigMap cloning `repo` (its `main` branch) and running `run_command`; `extra`
/// are more lines of the job (8-space indented).
pub fn configmap(name: &str, repo: &Path, run_command: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    ci-job-spec: \"true\"\ndata:\n  job.yaml: |\n    - job:\n        name: {name}\n        git:\n          url: {}\n          branch: main\n        run_command: {}\n        timeout: 5m\n{extra}",
        repo.display(),
        serde_json::to_string(run_command).unwrap()
    )
}

pub struct Local {
    pub jobs: PathBuf,
    pub data: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Local {
    pub fn new() -> (Local, super::git::Repo) {
        let dir = tempfile::tempdir().unwrap();
        let repo = super::git::Repo::new(&dir.path().join("git"));
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        let local = Local {
            jobs,
            data: dir.path().join("data"),
            dir,
        };
        (local, repo)
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.jobs.join(file), text).unwrap();
    }

    pub fn serve(&self, extra: &[&str], env: &[(&str, &str)]) -> Kubeci {
        let port = super::free_port();
        let log = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
            .args(["serve", "--local"])
            .arg(&self.jobs)
            .arg("--data")
            .arg(&self.data)
            .arg("--token-file")
            .arg(self.dir.path().join("token"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let kubeci = Kubeci::adopt(child, port, log);
        super::git::wait_for(Duration::from_secs(60), "kubeci to be ready", || {
            http(&kubeci, "GET", "/readyz", &[]).0 == 200
        });
        kubeci
    }
}
