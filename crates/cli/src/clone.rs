//! `kubeci clone`: the build pod's clone step.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kubeci_clone::CloneRequest;
use kubeci_spec::redact::redact_credentials;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 checked out; 2 bad usage; 10 host key mismatch; 11 authentication failed;\n12 repository, ref or commit not found; 13 network failure after retries; 14 workspace unusable;\n15 SSH key unreadable; 16 other git failure."
)]
pub struct CloneArgs {
    /// The repository: `git@host:org/repo.git`, `ssh://…`, `https://…` or a local path.
    #[arg(long, value_name = "URL")]
    url: String,
    /// The branch to check out (its head unless --commit is given).
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// A ref to fetch instead of the branch, e.g. `refs/tags/v1.0`.
    #[arg(long = "ref", value_name = "REF", conflicts_with = "pr")]
    git_ref: Option<String>,
    /// The exact commit to check out.
    #[arg(long, value_name = "SHA")]
    commit: Option<String>,
    /// A pull request: fetches `refs/pull/N/head`.
    #[arg(long, value_name = "N")]
    pr: Option<u64>,
    /// The SSH private key (a mounted Secret's `private-key`).
    #[arg(long, value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// The pinned host key fingerprint, `SHA256:…` as `ssh-keygen -l` prints it.
    #[arg(long, value_name = "SHA256")]
    fingerprint: Option<String>,
    /// A file holding the fingerprint (a mounted Secret's `ssh_fingerprint`), used when
    /// --fingerprint is not given and the file exists.
    #[arg(long, value_name = "FILE")]
    fingerprint_file: Option<PathBuf>,
    /// Where to check out; must be absent or empty.
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,
    /// Where to record the commit and branch for the build step.
    #[arg(long, value_name = "DIR")]
    meta_dir: Option<PathBuf>,
    /// Where to leave the commit checked out for the server's record (the container's
    /// `terminationMessagePath`; Kubernetes keeps it in the pod's status).
    #[arg(long, value_name = "FILE")]
    termination_message: Option<PathBuf>,
    /// How many times a network failure is tried in all.
    #[arg(long, default_value_t = 3, value_name = "N")]
    attempts: u32,
    /// Seconds to wait before retrying; doubled for each further attempt.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    retry_delay: f64,
}

pub fn run(args: &CloneArgs) -> ExitCode {
    let request = CloneRequest {
        url: args.url.clone(),
        branch: args.branch.clone(),
        git_ref: args.git_ref.clone(),
        commit: args.commit.clone(),
        pull_request: args.pr,
        ssh_key: args.ssh_key.clone(),
        fingerprint: args.fingerprint.clone(),
        fingerprint_file: args.fingerprint_file.clone(),
        dest: args.dest.clone(),
        meta_dir: args.meta_dir.clone(),
        attempts: args.attempts,
        retry_delay: Duration::from_secs_f64(args.retry_delay.max(0.0)),
    };
    // A build's log is read by everyone who reaches kubeci: what git or kubeci says about
    // a URL never repeats its credentials (issue 27 finding 1).
    let mut log = |line: &str| println!("{}", redact_credentials(line));
    match kubeci_clone::clone(&request, &mut log) {
        Ok(checkout) => {
            if let Some(path) = &args.termination_message {
                let message = kubeci_build::clone_result::format(
                    &checkout.commit,
                    checkout.branch.as_deref(),
                );
                // The checkout is done and the build step reads its own record of it, so
                // a failure here only costs the server's record of the commit.
                if let Err(e) = std::fs::write(path, message) {
                    eprintln!(
                        "kubeci clone: warning: cannot write {}: {e}",
                        path.display()
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("kubeci clone: {}", redact_credentials(&failure.to_string()));
            ExitCode::from(failure.exit_code())
        }
    }
}
