//! Checks a real API server's audit log for one user (kubeci's ServiceAccount): at least
//! `--at-least` requests, none on Secrets, none answered 403. `.ci/run` runs it after the
//! tests on the control plane's `target/cluster/audit.log`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "audit-check", version)]
struct Args {
    /// The audit log (JSON lines).
    log: PathBuf,
    /// The user whose requests are checked.
    #[arg(long, default_value = "system:serviceaccount:kubeci:kubeci")]
    user: String,
    /// Fewer requests than this means the user was not exercised: a failure.
    #[arg(long, default_value_t = 1)]
    at_least: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let text = match std::fs::read_to_string(&args.log) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("audit-check: {}: {e}", args.log.display());
            return ExitCode::from(2);
        }
    };
    let summary = match kubeci_testkit::audit::summarize(&text, &args.user) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("audit-check: {}: {e}", args.log.display());
            return ExitCode::from(2);
        }
    };
    println!(
        "audit-check: {} requests by {}: {} on secrets, {} answered 403",
        summary.requests,
        args.user,
        summary.secrets.len(),
        summary.forbidden.len()
    );
    for (verb, resource) in &summary.used {
        println!("  used: {verb} {resource}");
    }
    for request in summary.secrets.iter().chain(&summary.forbidden) {
        println!("  refused or forbidden: {request}");
    }
    let ok = summary.requests >= args.at_least
        && summary.secrets.is_empty()
        && summary.forbidden.is_empty();
    if summary.requests < args.at_least {
        println!(
            "  fewer than {} requests: the user was not exercised",
            args.at_least
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
