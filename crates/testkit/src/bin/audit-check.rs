//! Checks a real API server's audit log for one user (kubeci's ServiceAccount): at least
//! `--at-least` requests, none on Secrets, none answered 403 (its RBAC is enough) and, with
//! `--granted`, every permission of the installed ClusterRole used (its RBAC is least).
//! `.ci/run` runs it after the tests on the control plane's `target/cluster/audit.log`.

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
    /// Manifests holding the user's ClusterRole: a permission it grants that no request
    /// used is a failure.
    #[arg(long, value_name = "FILE")]
    granted: Option<PathBuf>,
    /// A permission granted for another path than the one this log shows, as
    /// `VERB RESOURCE` (e.g. `list pods`, used only where the API server cannot stream a
    /// watch's first list): not a failure when unused.
    #[arg(long, value_name = "VERB RESOURCE")]
    used_elsewhere: Vec<String>,
}

/// The rules of the first ClusterRole in the manifests at `path`.
fn cluster_role_rules(path: &PathBuf) -> Result<Vec<serde_json::Value>, String> {
    use kubeci_spec::yaml::{parse_stream, PosMap};
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let documents = parse_stream(&text, &PosMap::Identity, Default::default())
        .map_err(|e| format!("{}:{}: {}", path.display(), e.pos, e.message))?;
    documents
        .into_iter()
        .flatten()
        .map(|d| d.to_json())
        .find(|d| d["kind"] == "ClusterRole")
        .and_then(|role| role["rules"].as_array().cloned())
        .ok_or_else(|| format!("{}: no ClusterRole with rules", path.display()))
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
    for request in &summary.secrets {
        println!("  on secrets: {request}");
    }
    for request in &summary.forbidden {
        println!("  answered 403: {request}");
    }
    let mut unused = Vec::new();
    if let Some(path) = &args.granted {
        let rules = match cluster_role_rules(path) {
            Ok(rules) => rules,
            Err(e) => {
                eprintln!("audit-check: {e}");
                return ExitCode::from(2);
            }
        };
        unused = kubeci_testkit::audit::granted(&rules)
            .difference(&summary.used)
            .filter(|(verb, resource)| !args.used_elsewhere.contains(&format!("{verb} {resource}")))
            .cloned()
            .collect();
        for (verb, resource) in &unused {
            println!("  granted but never used: {verb} {resource}");
        }
    }
    let ok = summary.requests >= args.at_least
        && summary.secrets.is_empty()
        && summary.forbidden.is_empty()
        && unused.is_empty();
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
