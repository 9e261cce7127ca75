//! `kubeci clone`: the build pod's clone step, also used by the local engine.
//!
//! It checks out one exact commit with the real `git`. For SSH remotes it first asks the
//! server for its host keys with `ssh-keyscan` (which offers no credential) and compares
//! them with the pinned fingerprint; only a matching key is written to a private
//! `known_hosts`, and `ssh` then refuses any other key before authenticating. The private
//! key is copied to a `0600` file of its own, never printed. Each class of failure has its
//! own exit code ([`Failure::exit_code`]); network failures are retried a bounded number
//! of times.

pub mod hostkey;
mod ssh;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kubeci_spec::giturl::GitUrl;

use ssh::{ssh_config, Scratch};

/// What to check out, and with which credentials.
#[derive(Debug, Clone, Default)]
pub struct CloneRequest {
    pub url: String,
    /// The branch to build (its head, unless `commit` is given).
    pub branch: Option<String>,
    /// A ref to fetch instead of the branch, e.g. `refs/tags/v1.0`.
    pub git_ref: Option<String>,
    /// The exact commit to check out.
    pub commit: Option<String>,
    /// A pull request: fetches `refs/pull/N/head`.
    pub pull_request: Option<u64>,
    pub ssh_key: Option<PathBuf>,
    /// The pinned host key fingerprint (`SHA256:…`).
    pub fingerprint: Option<String>,
    /// A file holding the fingerprint (a mounted Secret's `ssh_fingerprint`), used when
    /// `fingerprint` is not given and the file exists.
    pub fingerprint_file: Option<PathBuf>,
    /// Where the checkout goes; must be absent or empty.
    pub dest: PathBuf,
    /// Where to record the commit and branch checked out, for the build step.
    pub meta_dir: Option<PathBuf>,
    /// How many times a network failure is tried in all.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub retry_delay: Duration,
}

/// What was checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub commit: String,
    pub branch: Option<String>,
}

/// Why a clone failed. Each class has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The request itself is wrong (bad URL, conflicting options). Not worth retrying.
    #[error("{0}")]
    Usage(String),
    /// The server's host key is not the pinned one. Not worth retrying.
    #[error("host key verification failed for {host}: expected {expected}, the server presented {presented}")]
    HostKeyMismatch {
        host: String,
        expected: String,
        presented: String,
    },
    /// The server refused the credentials. Not worth retrying.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The repository, ref or commit does not exist. Not worth retrying.
    #[error("not found: {0}")]
    NotFound(String),
    /// The network failed on every attempt. Worth retrying later.
    #[error("network failure after {attempts} attempt(s): {message}")]
    Network { attempts: u32, message: String },
    /// The workspace cannot be used (not empty, not writable). Not worth retrying.
    #[error("workspace {path}: {message}")]
    Workspace { path: String, message: String },
    /// The SSH key cannot be read. Not worth retrying.
    #[error("SSH key {path}: {message}")]
    Credentials { path: String, message: String },
    /// git failed otherwise.
    #[error("git failed: {0}")]
    Git(String),
}

impl Failure {
    /// The process exit code of this failure class (documented in `docs/job-spec.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::HostKeyMismatch { .. } => 10,
            Failure::Authentication(_) => 11,
            Failure::NotFound(_) => 12,
            Failure::Network { .. } => 13,
            Failure::Workspace { .. } => 14,
            Failure::Credentials { .. } => 15,
            Failure::Git(_) => 16,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Failure::Network { .. })
    }
}

/// How git's (or ssh's) complaint is classified.
pub fn classify(stderr: &str) -> Failure {
    let message = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect::<Vec<_>>()
        .join("; ");
    let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
    if has(&[
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
    ]) {
        Failure::HostKeyMismatch {
            host: "the server".into(),
            expected: "the pinned key".into(),
            presented: "another key".into(),
        }
    } else if has(&[
        "Permission denied",
        "Authentication failed",
        "could not read Username",
        "terminal prompts disabled",
    ]) {
        Failure::Authentication(message)
    } else if has(&[
        "Could not resolve host",
        "Connection refused",
        "Connection timed out",
        "Connection reset",
        "Operation timed out",
        "Network is unreachable",
        "early EOF",
        "The remote end hung up unexpectedly",
        "RPC failed",
        "kex_exchange_identification",
        "Connection closed by",
    ]) {
        Failure::Network {
            attempts: 1,
            message,
        }
    } else if has(&[
        "Repository not found",
        "does not appear to be a git repository",
        "couldn't find remote ref",
        "not our ref",
        "unadvertised object",
        "No such file or directory",
        "not a valid object name",
    ]) {
        Failure::NotFound(message)
    } else {
        Failure::Git(message)
    }
}

/// Runs a program with arguments (never through a shell) and captures its output.
fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    dir: Option<&Path>,
) -> Result<Output, Failure> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .output()
        .map_err(|e| Failure::Git(format!("cannot run {program}: {e}")))
}

/// The git transports the clone step allows (`GIT_ALLOW_PROTOCOL`).
pub const ALLOWED_PROTOCOLS: &str = "ssh:https:http:git:file";

/// Git's dialogue with a repository, by argument list.
type Git<'a> = &'a dyn Fn(&[&str]) -> Result<Output, Failure>;

/// Checks out the requested commit into `request.dest`. Progress goes to `log`.
pub fn clone(request: &CloneRequest, log: &mut dyn FnMut(&str)) -> Result<Checkout, Failure> {
    let url = checked_url(request)?;
    prepare_dest(&request.dest)?;
    // Removed when `clone` returns, after the last git command.
    let scratch = Scratch::new()?;
    let env = git_env(request, &url, &scratch, log)?;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let git = |args: &[&str]| run("git", args, &env, Some(&request.dest));

    expect_ok(git(&["init", "--quiet"])?)?;
    expect_ok(git(&["remote", "add", "origin", &remote(request, &url)?])?)?;
    let (refspec, target, what) = fetch_spec(request);
    log(&format!("fetching {what} from {}", request.url));
    with_retries(request, log, || {
        expect_ok(git(&["fetch", "--no-tags", "--quiet", "origin", &refspec])?).map(|_| ())
    })?;
    let commit = match &request.commit {
        Some(commit) => fetch_commit(request, &git, commit, &what, log)?,
        None => resolve(&git, &target)?,
    };
    expect_ok(git(&[
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "--quiet",
        "--force",
        "--detach",
        &commit,
    ])?)?;

    let branch = match (&request.branch, request.pull_request, &request.git_ref) {
        (_, Some(_), _) | (_, _, Some(_)) => None,
        (Some(branch), _, _) => Some(branch.clone()),
        (None, None, None) => remote_head_branch(&git),
    };
    if let Some(meta) = &request.meta_dir {
        write_meta(meta, &commit, branch.as_deref())?;
    }
    log(&format!("checked out {commit} ({what})"));
    Ok(Checkout { commit, branch })
}

/// The request's URL, once the request is known to make sense.
fn checked_url(request: &CloneRequest) -> Result<GitUrl, Failure> {
    let url = GitUrl::parse(&request.url)
        .map_err(|why| Failure::Usage(format!("git URL `{}` is not valid: {why}", request.url)))?;
    if request.git_ref.is_some() && request.pull_request.is_some() {
        return Err(Failure::Usage("give either --ref or --pr, not both".into()));
    }
    if let Some(commit) = &request.commit {
        if commit.len() < 7 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Failure::Usage(format!(
                "commit `{commit}` is not a hexadecimal commit id"
            )));
        }
    }
    Ok(url)
}

/// Git's environment: no prompts, no system config, only kubeci's transports, and for SSH
/// a config of the clone's own (its key, its pinned host key) in `scratch`.
fn git_env(
    request: &CloneRequest,
    url: &GitUrl,
    scratch: &Scratch,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<(String, String)>, Failure> {
    let mut env: Vec<(String, String)> = vec![
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("GIT_ASKPASS".into(), "true".into()),
        // Only the transports kubeci supports, also for submodules and redirects: never
        // git's remote helpers (`ext::`, `fd::`) or anything else a URL could name.
        ("GIT_ALLOW_PROTOCOL".into(), ALLOWED_PROTOCOLS.into()),
    ];
    if let GitUrl::Remote { host, port, .. } = url {
        if url.is_ssh() {
            let config = ssh_config(request, scratch, host, *port, log)?;
            let config = config.to_str().filter(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))).ok_or_else(|| Failure::Workspace {
                path: config.display().to_string(),
                message: "the temporary directory's path has characters ssh's command line cannot carry; set TMPDIR to a plain path".into(),
            })?;
            // A fixed command line with our own, checked path: no spec value is in it.
            env.push(("GIT_SSH_COMMAND".into(), format!("ssh -F {config}")));
        }
    }
    Ok(env)
}

/// The remote as git, running inside the checkout, must see it: a relative local path is
/// made absolute, so it is not read from there.
fn remote(request: &CloneRequest, url: &GitUrl) -> Result<String, Failure> {
    Ok(match url {
        GitUrl::Local { path } if !path.starts_with('/') && !request.url.starts_with("file://") => {
            let cwd = std::env::current_dir().map_err(|e| Failure::Workspace {
                path: ".".into(),
                message: format!("cannot read the current directory: {e}"),
            })?;
            cwd.join(path).display().to_string()
        }
        _ => request.url.clone(),
    })
}

/// What to fetch: the refspec, the ref it lands in, and what it is, in words.
fn fetch_spec(request: &CloneRequest) -> (String, String, String) {
    match (request.pull_request, &request.git_ref, &request.branch) {
        (Some(n), _, _) => (
            format!("+refs/pull/{n}/head:refs/kubeci/target"),
            "refs/kubeci/target".to_owned(),
            format!("pull request #{n} (refs/pull/{n}/head)"),
        ),
        (None, Some(r), _) => (
            format!("+{r}:refs/kubeci/target"),
            "refs/kubeci/target".to_owned(),
            format!("ref {r}"),
        ),
        (None, None, Some(b)) => (
            format!("+refs/heads/{b}:refs/kubeci/target"),
            "refs/kubeci/target".to_owned(),
            format!("branch {b}"),
        ),
        (None, None, None) => (
            "HEAD".to_owned(),
            "FETCH_HEAD".to_owned(),
            "the remote's HEAD".to_owned(),
        ),
    }
}

/// The full id of the requested `commit`, fetched by id when the fetched ref (`what`) does
/// not hold it.
fn fetch_commit(
    request: &CloneRequest,
    git: Git<'_>,
    commit: &str,
    what: &str,
    log: &mut dyn FnMut(&str),
) -> Result<String, Failure> {
    let present = git(&["cat-file", "-e", &format!("{commit}^{{commit}}")])?
        .status
        .success();
    if !present {
        log(&format!(
            "commit {commit} is not in {what}; fetching it by id"
        ));
        let fetched = with_retries(request, log, || {
            expect_ok(git(&["fetch", "--no-tags", "--quiet", "origin", commit])?).map(|_| ())
        });
        if let Err(err) = fetched {
            if err.is_transient() {
                return Err(err);
            }
            return Err(Failure::NotFound(format!(
                "commit {commit} is not in {what} of {}",
                request.url
            )));
        }
    }
    resolve(git, commit)
}

fn prepare_dest(dest: &Path) -> Result<(), Failure> {
    let workspace = |message: String| Failure::Workspace {
        path: dest.display().to_string(),
        message,
    };
    if dest.exists() {
        let mut entries =
            std::fs::read_dir(dest).map_err(|e| workspace(format!("cannot read it: {e}")))?;
        if entries.next().is_some() {
            return Err(workspace("it is not empty".into()));
        }
    } else {
        std::fs::create_dir_all(dest).map_err(|e| workspace(format!("cannot create it: {e}")))?;
    }
    Ok(())
}

fn write_meta(meta: &Path, commit: &str, branch: Option<&str>) -> Result<(), Failure> {
    let workspace = |e: std::io::Error| Failure::Workspace {
        path: meta.display().to_string(),
        message: format!("cannot record the checkout: {e}"),
    };
    std::fs::create_dir_all(meta).map_err(workspace)?;
    std::fs::write(meta.join("commit"), commit).map_err(workspace)?;
    if let Some(branch) = branch {
        std::fs::write(meta.join("branch"), branch).map_err(workspace)?;
    }
    Ok(())
}

fn expect_ok(output: Output) -> Result<Output, Failure> {
    if output.status.success() {
        Ok(output)
    } else {
        Err(classify(&String::from_utf8_lossy(&output.stderr)))
    }
}

fn resolve(git: Git<'_>, rev: &str) -> Result<String, Failure> {
    let output = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])?;
    if !output.status.success() {
        return Err(Failure::NotFound(format!("`{rev}` is not a commit")));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The branch the remote's HEAD points to, for builds of the default branch.
fn remote_head_branch(git: Git<'_>) -> Option<String> {
    let output = git(&["ls-remote", "--symref", "origin", "HEAD"]).ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix("ref: refs/heads/")
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
        })
}

fn with_retries(
    request: &CloneRequest,
    log: &mut dyn FnMut(&str),
    mut attempt: impl FnMut() -> Result<(), Failure>,
) -> Result<(), Failure> {
    let attempts = request.attempts.max(1);
    let mut delay = request.retry_delay;
    for n in 1..=attempts {
        match attempt() {
            Ok(()) => return Ok(()),
            Err(Failure::Network { message, .. }) if n < attempts => {
                log(&format!(
                    "network failure (attempt {n} of {attempts}): {message}; retrying in {delay:?}"
                ));
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(Failure::Network { message, .. }) => {
                return Err(Failure::Network { attempts, message })
            }
            Err(other) => return Err(other),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_what_git_says() {
        assert_eq!(classify("git@github.com: Permission denied (publickey).\nfatal: Could not read from remote repository.").exit_code(), 11);
        assert_eq!(
            classify("ssh: connect to host 127.0.0.1 port 1: Connection refused").exit_code(),
            13
        );
        assert_eq!(
            classify("fatal: couldn't find remote ref refs/heads/nope").exit_code(),
            12
        );
        assert_eq!(
            classify("fatal: '/srv/none' does not appear to be a git repository").exit_code(),
            12
        );
        assert_eq!(classify("Host key verification failed.").exit_code(), 10);
        assert_eq!(classify("fatal: something else").exit_code(), 16);
        assert!(classify("fatal: early EOF").is_transient());
    }
}
