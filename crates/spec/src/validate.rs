//! Semantic checks of a job: a pure function from the job to its findings.

use crate::diagnostic::{FieldPath, Finding};
use crate::giturl::{GitUrl, Transport};
use crate::model::{Git, Job};
use crate::names;

mod files;
mod pod;
mod triggers;

use files::check_files;
use pod::check_pod;
use triggers::check_triggers;
pub use triggers::{phrase_regex, PHRASE_SIZE_LIMIT};

/// Which ConfigMap namespaces may run builds in which other namespaces. A ConfigMap must
/// not launch pods with another team's service accounts and secrets unless allowed here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePolicy {
    /// (ConfigMap namespace, build namespace) pairs; `*` as the first matches any.
    pub allowed: Vec<(String, String)>,
}

impl NamespacePolicy {
    /// Parses `FROM=TO` pairs, as given on the command line.
    pub fn parse_pair(text: &str) -> Result<(String, String), String> {
        match text.split_once('=') {
            Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                Ok((from.to_owned(), to.to_owned()))
            }
            _ => Err(format!(
                "`{text}` is not FROM=TO (e.g. `team-a=team-a-builds`)"
            )),
        }
    }

    pub fn allows(&self, from: &str, to: &str) -> bool {
        from == to
            || self
                .allowed
                .iter()
                .any(|(f, t)| (f == from || f == "*") && t == to)
    }
}

/// Where the job was declared, as far as validation needs it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The namespace of the ConfigMap holding the job; `None` for a bare `job.yaml`.
    pub configmap_namespace: Option<&'a str>,
    pub policy: &'a NamespacePolicy,
    /// Where the builds run: a local repository is an error in a cluster, a warning when
    /// not known, and expected on this machine.
    pub builds_run: crate::BuildsRun,
}

/// Environment variables kubeci sets itself; a job may not override them.
pub const RESERVED_ENV: [&str; 15] = [
    "KUBECI_WORKSPACE",
    "JOB_NAME",
    "BUILD_NUMBER",
    "BUILD_URL",
    "GIT_URL",
    "GIT_BRANCH",
    "GIT_COMMIT",
    "ghprbPullId",
    "ghprbActualCommit",
    "ghprbSourceBranch",
    "ghprbTargetBranch",
    "ghprbPullAuthorLogin",
    "sha1",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// Placeholders a log URL template may use.
pub const LOG_URL_PLACEHOLDERS: [&str; 6] = ["namespace", "pod", "job", "build", "start", "end"];

pub fn validate(job: &Job, cx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let root = FieldPath::new(&["job"]);
    check_names(job, cx, &root, &mut out);
    check_git(job, &root.key("git"), cx.builds_run, &mut out);
    check_script(job, &root, &mut out);
    check_pod(job, &root, &mut out);
    check_triggers(job, &root, &mut out);
    check_files(job, &root, &mut out);
    out
}

fn check_names(job: &Job, cx: &Context<'_>, root: &FieldPath, out: &mut Vec<Finding>) {
    if let Err(why) = names::check_dns_label(&job.name) {
        out.push(
            Finding::error(
                "invalid-name",
                root.key("name"),
                format!("job name `{}` is not valid: {why}", job.name),
            )
            .help(name_help(&job.name)),
        );
    }
    if let Some(namespace) = &job.namespace {
        if let Err(why) = names::check_dns_label(namespace) {
            out.push(
                Finding::error(
                    "invalid-name",
                    root.key("namespace"),
                    format!("namespace `{namespace}` is not valid: {why}"),
                )
                .help(name_help(namespace)),
            );
        } else if let Some(home) = cx.configmap_namespace {
            if !cx.policy.allows(home, namespace) {
                out.push(
                    Finding::error(
                        "namespace-not-allowed",
                        root.key("namespace"),
                        format!("a job declared in namespace `{home}` may not run its builds in namespace `{namespace}`"),
                    )
                    .help(format!(
                        "remove `namespace` to build in `{home}`, move the ConfigMap to `{namespace}`, or have the kubeci administrator allow `{home}={namespace}`"
                    )),
                );
            }
        }
    }
    for (field, value) in [
        ("aws_secret", &job.aws_secret),
        ("service_account_name", &job.service_account_name),
    ] {
        if let Some(value) = value {
            if let Err(why) = names::check_dns_subdomain(value) {
                out.push(
                    Finding::error("invalid-name", root.key(field), format!("`{value}` is not a valid Kubernetes object name: {why}"))
                        .help("use the name exactly as `kubectl get` shows it: lowercase letters, digits, `-` and `.`"),
                );
            }
        }
    }
}

fn name_help(name: &str) -> String {
    let suggestion = names::suggest_dns_label(name);
    if suggestion.is_empty() {
        "use lowercase letters, digits and `-`, at most 63 characters".into()
    } else {
        format!("use lowercase letters, digits and `-`, at most 63 characters, e.g. `{suggestion}`")
    }
}

fn check_git(job: &Job, path: &FieldPath, builds_run: crate::BuildsRun, out: &mut Vec<Finding>) {
    let url = check_git_url(&job.git.url, path, builds_run, out);
    check_git_names(&job.git, path, out);
    check_ssh_settings(&job.git, url.as_ref(), path, out);
}

/// `git.url`: a URL or path kubeci can clone, without credentials, reachable by the engine;
/// the URL when it can be read.
fn check_git_url(
    text: &str,
    path: &FieldPath,
    builds_run: crate::BuildsRun,
    out: &mut Vec<Finding>,
) -> Option<GitUrl> {
    let url = match GitUrl::parse(text) {
        Ok(url) => Some(url),
        Err(why) => {
            // Quoted with its credentials hidden, and the reason found in what is quoted:
            // the reason for the URL itself could quote a part of its password.
            let shown = crate::redact::redact_url(text);
            let why = if shown == text {
                why
            } else {
                GitUrl::parse(&shown)
                    .err()
                    .unwrap_or_else(|| "what comes before its `@` is not a user name".into())
            };
            out.push(
                Finding::error("invalid-git-url", path.key("url"), format!("git URL `{}` is not valid: {why}", shown.escape_debug()))
                    .help("write `git@github.com:org/repo.git`, `ssh://git@host/org/repo.git`, `https://host/org/repo.git`, or a local path"),
            );
            None
        }
    };
    match &url {
        Some(GitUrl::Remote { transport: Transport::Insecure, .. }) => out.push(
            Finding::warning("insecure-git-url", path.key("url"), "this URL is neither encrypted nor authenticated: anyone on the network path can change the code that is built")
                .help("use https:// or ssh"),
        ),
        Some(GitUrl::Remote { has_password: true, .. }) => out.push(
            Finding::error("credentials-in-url", path.key("url"), "the URL contains a password or token, which everyone who can read ConfigMaps, kubeci's pages or a build's log could read")
                .help("remove it from the URL and give the clone an SSH key through `ssh_secret_ref` (a Secret only the build's pod reads)"),
        ),
        Some(GitUrl::Local { .. }) if builds_run == crate::BuildsRun::InACluster => out.push(
            Finding::error("local-git-url", path.key("url"), "a build pod cannot reach a path on kubeci's machine: with --kubernetes a job's repository is a remote URL")
                .help("use the repository's remote URL (`git@host:org/repo.git`, `ssh://…` or `https://…`)"),
        ),
        Some(GitUrl::Local { .. }) if builds_run == crate::BuildsRun::Anywhere => out.push(
            Finding::warning("local-git-url", path.key("url"), "a local path works only with the local engine (`kubeci run`, `kubeci serve --local`)")
                .help("use the repository's remote URL for jobs that run in a cluster"),
        ),
        _ => {}
    }
    url
}

/// `git.branch`, `git.ssh_secret_ref`, `git.ssh_fingerprint`: well-formed when given.
fn check_git_names(git: &Git, path: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(branch) = &git.branch {
        if let Err(why) = names::check_branch_name(branch) {
            out.push(
                Finding::error(
                    "invalid-branch",
                    path.key("branch"),
                    format!("branch `{}` is not valid: {why}", branch.escape_debug()),
                )
                .help("write the branch name as `git branch` shows it, e.g. `main`"),
            );
        }
    }
    if let Some(secret) = &git.ssh_secret_ref {
        if let Err(why) = names::check_dns_subdomain(secret) {
            out.push(
                Finding::error(
                    "invalid-name",
                    path.key("ssh_secret_ref"),
                    format!("`{secret}` is not a valid Secret name: {why}"),
                )
                .help("use the Secret's name exactly as `kubectl get secrets` shows it"),
            );
        }
    }
    if let Some(fingerprint) = &git.ssh_fingerprint {
        if let Err(why) = check_fingerprint(fingerprint) {
            out.push(
                Finding::error("invalid-fingerprint", path.key("ssh_fingerprint"), format!("`{fingerprint}` is not an SSH host key fingerprint: {why}"))
                    .help("write it as `ssh-keygen -lf <(ssh-keyscan HOST)` prints it, e.g. `SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8`"),
            );
        }
    }
}

/// SSH settings that match the URL: a key and a pinned host key for SSH, none otherwise.
fn check_ssh_settings(git: &Git, url: Option<&GitUrl>, path: &FieldPath, out: &mut Vec<Finding>) {
    let is_ssh = url.is_some_and(GitUrl::is_ssh);
    if is_ssh && git.ssh_secret_ref.is_none() {
        out.push(
            Finding::warning("ssh-without-key", path.key("url"), "an SSH URL without `ssh_secret_ref`: the clone has no key and works only for public repositories over SSH, which GitHub does not offer")
                .help("add `ssh_secret_ref` naming the Secret with `private-key`, or use an https:// URL"),
        );
    }
    if is_ssh && git.ssh_fingerprint.is_none() {
        out.push(
            Finding::warning("unpinned-host-key", path.key("url"), "the SSH host key is not pinned: the clone trusts whatever key the server presents unless the Secret has `ssh_fingerprint`")
                .help("add `ssh_fingerprint` (as `ssh-keygen -l` prints it) here or to the Secret"),
        );
    }
    if !is_ssh && url.is_some() {
        for field in ["ssh_secret_ref", "ssh_fingerprint"] {
            let set = if field == "ssh_secret_ref" {
                &git.ssh_secret_ref
            } else {
                &git.ssh_fingerprint
            };
            if set.is_some() {
                out.push(
                    Finding::warning(
                        "unused-ssh-setting",
                        path.key(field),
                        format!("`{field}` has no effect: the URL does not use SSH"),
                    )
                    .help("remove it, or use the repository's SSH URL"),
                );
            }
        }
    }
}

fn check_fingerprint(text: &str) -> Result<(), String> {
    let Some(hash) = text.strip_prefix("SHA256:") else {
        return Err(
            if text.starts_with("MD5:") || text.contains(':') && text.len() == 47 {
                "MD5 fingerprints are not accepted; kubeci pins SHA256 fingerprints".into()
            } else {
                "it does not start with `SHA256:`".into()
            },
        );
    };
    let valid = hash.len() == 43
        && hash
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/');
    if valid {
        Ok(())
    } else {
        Err("after `SHA256:` come 43 base64 characters".into())
    }
}

fn check_script(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    if job.run_command.trim().is_empty() {
        out.push(
            Finding::error(
                "empty-run-command",
                root.key("run_command"),
                "`run_command` is empty: the build would do nothing",
            )
            .help("write the build script, e.g. `run_command: make test`"),
        );
    }
    if let Some(workdir) = &job.workdir {
        if let Err(why) = check_workdir(workdir) {
            out.push(
                Finding::error("workdir-outside-checkout", root.key("workdir"), format!("workdir `{}` {why}", workdir.escape_debug()))
                    .help("write a path relative to the repository root, without `..` leaving it, e.g. `gravitational/kubernetes/helm`"),
            );
        }
    }
}

/// The checkout-relative form of a valid `workdir` (`a/./b/../c` → `a/c`), or why it is not.
pub fn normalize_workdir(workdir: &str) -> Result<String, String> {
    if workdir.starts_with('/') {
        return Err("is an absolute path; it must be inside the checkout".into());
    }
    if let Some(c) = workdir.chars().find(|c| c.is_control()) {
        return Err(format!("contains {}", names::describe_char(c)));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in workdir.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("leaves the checkout through `..`".into());
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

fn check_workdir(workdir: &str) -> Result<(), String> {
    normalize_workdir(workdir).map(|_| ())
}

fn check_log_url(template: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if !(template.starts_with("https://") || template.starts_with("http://")) {
        out.push(
            Finding::error(
                "invalid-log-url",
                path.clone(),
                "`log_url` must be an http(s) URL",
            )
            .help("write e.g. `https://logs.example.com/?q=pod:{pod}`"),
        );
    }
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            out.push(
                Finding::error(
                    "invalid-log-url",
                    path.clone(),
                    "a `{` in `log_url` is never closed",
                )
                .help("write placeholders as `{pod}`"),
            );
            return;
        };
        let name = &rest[start + 1..start + len];
        if !LOG_URL_PLACEHOLDERS.contains(&name) {
            out.push(
                Finding::error(
                    "invalid-log-url",
                    path.clone(),
                    format!("`{{{name}}}` is not a log URL placeholder"),
                )
                .help(format!(
                    "use {}",
                    LOG_URL_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                )),
            );
        }
        rest = &rest[start + len + 1..];
    }
}

/// "did you mean `x`?" for the closest candidate, if one is close enough.
pub fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}
