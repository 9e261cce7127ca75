//! `kubeci new NAME --repo URL`: a job as a Helm chart — Chart.yaml with a version,
//! values.yaml holding the job, a template producing the labelled ConfigMap, NOTES.txt —
//! that `helm lint` accepts and that renders a job `kubeci lint` accepts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The job's name (a DNS-1123 label: lowercase letters, digits, `-`).
    #[arg(value_name = "NAME")]
    name: String,
    /// The repository to clone (`git@github.com:org/repo.git`, `https://…`).
    #[arg(long, value_name = "URL")]
    repo: String,
    /// The branch that manual, cron and push builds build [default: the remote's HEAD].
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// The Secret holding the SSH key (`private-key`, and `ssh_fingerprint` to pin the
    /// host key) for an SSH repository [default for SSH URLs: NAME-ssh-key].
    #[arg(long, value_name = "SECRET")]
    ssh_secret: Option<String>,
    /// What a build runs, in bash, in the checkout.
    #[arg(long, value_name = "SCRIPT", default_value = "make test")]
    command: String,
    /// The build step's image.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "docker.io/library/buildpack-deps:bookworm"
    )]
    image: String,
    /// Build GitHub pull requests (from trusted people; see docs/github.md).
    #[arg(long)]
    pull_requests: bool,
    /// A GitHub login that may approve untrusted pull requests (repeatable).
    #[arg(long = "admin", value_name = "LOGIN")]
    admins: Vec<String>,
    /// Where to write the chart [default: ./NAME].
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
}

/// A YAML scalar: JSON's double-quoted string is YAML's too.
fn quoted(value: &str) -> String {
    serde_json::to_string(value).expect("a string serializes")
}

/// The chart's files: (path in the chart, contents).
pub fn chart_files(args: &NewArgs) -> Result<Vec<(&'static str, String)>> {
    kubeci_spec::names::check_dns_label(&args.name)
        .map_err(|why| anyhow::anyhow!("NAME {:?}: {why}", args.name))?;
    let url = kubeci_spec::giturl::GitUrl::parse(&args.repo)
        .map_err(|why| anyhow::anyhow!("--repo {:?}: {why}", args.repo))?;
    if let Some(branch) = &args.branch {
        kubeci_spec::names::check_branch_name(branch)
            .map_err(|why| anyhow::anyhow!("--branch {branch:?}: {why}"))?;
    }
    for admin in &args.admins {
        kubeci_spec::names::check_github_login(admin)
            .map_err(|why| anyhow::anyhow!("--admin {admin:?}: {why}"))?;
    }
    let ssh_secret = match (&args.ssh_secret, url.is_ssh()) {
        (Some(secret), _) => Some(secret.clone()),
        (None, true) => Some(format!("{}-ssh-key", args.name)),
        (None, false) => None,
    };
    if let Some(secret) = &ssh_secret {
        kubeci_spec::names::check_dns_subdomain(secret)
            .map_err(|why| anyhow::anyhow!("--ssh-secret {secret:?}: {why}"))?;
    }
    let name = &args.name;
    let chart = format!(
        "apiVersion: v2\nname: {name}\ndescription: The kubeci job {name}\ntype: application\n# The job's version: bump it with every change; kubeci shows it on each build.\nversion: 0.1.0\n"
    );
    let mut git = format!("    url: {}\n", quoted(&args.repo));
    if let Some(branch) = &args.branch {
        git += &format!("    branch: {}\n", quoted(branch));
    }
    if let Some(secret) = &ssh_secret {
        git += &format!("    ssh_secret_ref: {}\n", quoted(secret));
    }
    let ghprb = if args.pull_requests {
        let admins = if args.admins.is_empty() {
            String::new()
        } else {
            format!("    admin_users: {}\n", quoted(&args.admins.join(" ")))
        };
        format!("  ghprb:\n    enabled: \"true\"\n{admins}")
    } else {
        String::new()
    };
    let values = format!(
        "# The job, as job.yaml declares it (docs/job-spec.md lists every field). The\n# template writes it into the ConfigMap kubeci reads.\njob:\n  name: {}\n  git:\n{git}{ghprb}  image: {}\n  timeout: 30m\n  run_command: {}\n",
        quoted(name),
        quoted(&args.image),
        quoted(&args.command),
    );
    Ok(vec![
        ("Chart.yaml", chart),
        ("values.yaml", values),
        (
            "templates/configmap.yaml",
            include_str!("new/configmap.yaml").to_owned(),
        ),
        (
            "templates/NOTES.txt",
            include_str!("new/NOTES.txt").to_owned(),
        ),
        (".helmignore", include_str!("new/helmignore").to_owned()),
    ])
}

pub fn run(args: &NewArgs) -> Result<ExitCode> {
    let files = chart_files(args)?;
    let secret_note = files
        .iter()
        .find(|(path, _)| *path == "values.yaml")
        .and_then(|(_, values)| values.lines().find(|l| l.contains("ssh_secret_ref")))
        .and_then(|l| l.split('"').nth(1))
        .map(|secret| format!("\n  the SSH key: kubectl create secret generic {secret} --from-file=private-key=KEY --from-literal=ssh_fingerprint=\"$(ssh-keygen -lf KEY.pub | cut -d' ' -f2)\""))
        .unwrap_or_default();
    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!(
            "{} exists already: choose another --output, or remove it",
            dir.display()
        );
    }
    for (path, text) in &files {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    println!(
        "wrote the chart of job {} in {}\n  check it:   helm lint {1} && helm template {1} | kubeci lint -\n  ship it:    helm package {1}, or helm install {0} {1}{secret_note}",
        args.name,
        dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}
