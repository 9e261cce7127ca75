//! What both systems of versus_prow share on the real control plane of `scripts/cluster
//! up`: the plane itself (its administrator's kubectl, namespaces, identities' kubeconfigs,
//! the node agent's git configuration, the audit log) and the [`World`]: the fake GitHub
//! both call with a token (it records every call) and the repository both build, a bare
//! repository on this machine that git's `insteadOf` puts behind GitHub's URL for the node
//! agent's pods, with one pull request after another.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeci_testkit::FakeGitHub;
use serde_json::{json, Value};

pub const REPO: &str = "Codertocat/Hello-World";
pub const REPO_URL: &str = "https://github.com/Codertocat/Hello-World.git";
/// The trusted author of every pull request: a member of the repository's organisation
/// (Prow's trigger asks GitHub; it would trust the owner of a personal repository without
/// asking), listed in the kubeci job's `whitelisted_users`.
pub const AUTHOR: &str = "octocat";
/// The token both systems call GitHub with.
pub const GITHUB_TOKEN: &str = "versus-prow-github-token";

/// The control plane of `scripts/cluster up` (its `env` lines read).
pub struct Plane {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub gitconfig_dir: PathBuf,
    pub api_server: String,
    pub ca: PathBuf,
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: the real control plane, eval \"$(scripts/cluster up)\" first"
            )
        })
}

impl Plane {
    pub fn from_env(runtime: &tokio::runtime::Runtime) -> Plane {
        let kubeconfig = env_path("KUBECI_E2E_KUBECONFIG");
        let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let cluster = config.clusters[0].cluster.clone().unwrap();
        let client = runtime.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                .await
                .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        Plane {
            client,
            audit_log: env_path("KUBECI_E2E_AUDIT_LOG"),
            gitconfig_dir: env_path("KUBECI_E2E_GITCONFIG_DIR"),
            api_server: cluster.server.unwrap(),
            ca: cluster.certificate_authority.unwrap().into(),
            kubeconfig,
        }
    }

    /// Runs the kubectl on PATH (`scripts/cluster env` puts the built one first) as the
    /// administrator, feeding it `input`; its output.
    pub fn kubectl(&self, args: &[&str], input: &str) -> String {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH (scripts/cluster env)");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates namespace `name` (labelled with `labels`) and waits for its `default`
    /// ServiceAccount (pods are refused until the controller made it).
    pub fn namespace(&self, name: &str, labels: Value) {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}});
        self.kubectl(&["apply", "-f", "-"], &namespace.to_string());
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .kubectl(&["get", "serviceaccounts", "-n", name, "-o", "name"], "")
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "no default ServiceAccount in {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A kubeconfig (JSON) acting as `token`, in `namespace`.
    pub fn kubeconfig_as(&self, token: &str, namespace: &str) -> String {
        json!({"apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "plane", "cluster": {"server": self.api_server,
                "certificate-authority": self.ca.display().to_string()}}],
            "users": [{"name": "bench", "user": {"token": token}}],
            "contexts": [{"name": "default", "context": {"cluster": "plane", "user": "bench",
                "namespace": namespace}}],
            "current-context": "default"})
        .to_string()
    }

    /// Makes the node agent's pods of `namespace` clone `local` for GitHub's URL.
    pub fn map_repository(&self, namespace: &str, local: &Path) {
        std::fs::write(
            self.gitconfig_dir.join(format!("{namespace}.gitconfig")),
            format!("[url \"{}\"]\n\tinsteadOf = {REPO_URL}\n", local.display()),
        )
        .unwrap();
    }

    /// The audit log's length now: requests after it are read with [`Plane::audit_since`].
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(&self.audit_log).map_or(0, |m| m.len())
    }

    /// The requests `user` made between two marks.
    pub fn audit_between(
        &self,
        (start, end): (u64, u64),
        user: &str,
    ) -> kubeci_testkit::audit::AuditSummary {
        use std::io::Seek;
        // From the byte before `start`, to see whether a line begins there.
        let from = start.saturating_sub(1);
        let mut file = std::fs::File::open(&self.audit_log).unwrap();
        file.seek(std::io::SeekFrom::Start(from)).unwrap();
        let mut bytes = Vec::new();
        file.take(end - from).read_to_end(&mut bytes).unwrap();
        // Either mark may fall inside a line the API server was writing: the events whole
        // between them are counted.
        let first = match (start, bytes.first()) {
            (0, _) => 0,
            (_, Some(b'\n')) => 1,
            _ => bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| i + 1),
        };
        let last = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let complete = String::from_utf8_lossy(&bytes[first.min(last)..last]);
        kubeci_testkit::audit::summarize(&complete, user).unwrap()
    }
}

/// Runs git in `dir`; its output.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What both systems share: the plane, the fake GitHub, the repository.
pub struct World {
    pub runtime: tokio::runtime::Runtime,
    pub plane: Plane,
    pub github: FakeGitHub,
    work: PathBuf,
    /// The repository GitHub's URL stands for.
    pub bare: PathBuf,
    fixture: Value,
    _dir: tempfile::TempDir,
}

impl World {
    /// How many of `heads` GitHub shows a final status of `context` for (each asserted
    /// `success`: `system` is named if one is not).
    pub fn ended(&self, context: &str, heads: &BTreeSet<&str>, system: &str) -> usize {
        let statuses = self.github.statuses();
        let ended: BTreeSet<&str> = statuses
            .iter()
            .filter(|s| s.context == context && s.state != "pending")
            .filter(|s| heads.contains(s.sha.as_str()))
            .inspect(|s| assert_eq!(s.state, "success", "{system}: {s:?}"))
            .map(|s| s.sha.as_str())
            .collect();
        ended.len()
    }

    pub fn new() -> World {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let plane = Plane::from_env(&runtime);
        let dir = tempfile::tempdir().unwrap();
        let (work, bare) = (dir.path().join("work"), dir.path().join("repo.git"));
        std::fs::create_dir_all(&work).unwrap();
        let fixture: Value = serde_json::from_slice(
            &std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../tests/fixtures/github-webhooks/pull_request.opened.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let base = fixture["pull_request"]["base"]["ref"].as_str().unwrap();
        git(&work, &["init", "-q", &format!("--initial-branch={base}")]);
        std::fs::write(
            work.join("README.md"),
            "the repository both systems build\n",
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first commit"]);
        git(dir.path(), &["clone", "-q", "--bare", "work", "repo.git"]);
        let github = runtime.block_on(FakeGitHub::start(GITHUB_TOKEN, "ci-bot"));
        github.add_member("Codertocat", AUTHOR);
        github.set_branch(REPO, base, &git(&work, &["rev-parse", "HEAD"]));
        World {
            runtime,
            plane,
            github,
            work,
            bare,
            fixture,
            _dir: dir,
        }
    }

    /// Opens pull request `number`: a new commit on `refs/pull/N/head`, shown by the fake
    /// GitHub; its head and its `opened` delivery (GitHub's real payload, renumbered).
    pub fn pull_request(&self, number: u64) -> (String, Vec<u8>) {
        std::fs::write(self.work.join("change"), format!("change {number}\n")).unwrap();
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "-m", &format!("change {number}")],
        );
        let head = git(&self.work, &["rev-parse", "HEAD"]);
        let bare = self.bare.display().to_string();
        let refspec = format!("HEAD:refs/pull/{number}/head");
        git(&self.work, &["push", "-q", "--force", &bare, &refspec]);
        let mut payload = self.fixture.clone();
        payload["number"] = number.into();
        let pr = &mut payload["pull_request"];
        pr["number"] = number.into();
        pr["user"]["login"] = AUTHOR.into();
        pr["head"]["sha"] = head.clone().into();
        pr["head"]["ref"] = format!("change-{number}").into();
        self.github.set_pull_request(REPO, pr.clone());
        (head, serde_json::to_vec(&payload).unwrap())
    }

    /// Opens `count` pull requests (numbers from `first`): each one's number, head and
    /// delivery.
    pub fn pull_requests(&self, first: u64, count: u64) -> Vec<(u64, String, Vec<u8>)> {
        (first..first + count)
            .map(|number| {
                let (head, body) = self.pull_request(number);
                (number, head, body)
            })
            .collect()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request on a new connection; the status (0 without an answer).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    // A system that never answers fails the run instead of holding it.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(answer.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

/// The CPU time (user and system) a process has used, from `/proc` (zero once it is gone).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces), from the third: utime is the 14th
    // field, stime the 15th, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A process's resident memory in MB, from `/proc` (zero once it is gone).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
