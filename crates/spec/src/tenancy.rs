//! Tenancy: which namespaces let jobs build, and with which ServiceAccounts, Secrets and
//! repositories — read from the Namespace object, as Pod Security Admission reads its
//! labels, never from the ConfigMap (whoever writes ConfigMaps cannot widen their own
//! rights).
//!
//! A pure rule: [`check`] takes a job, the namespace of its ConfigMap, the namespace its
//! builds run in, and what each Namespace allows ([`NamespaceRules`]), and returns every
//! [`Violation`] with the rule, the Namespace and how to allow it.

use std::collections::BTreeMap;

use crate::diagnostic::{Diagnostic, FieldPath, Severity};
use crate::giturl::GitUrl;
use crate::load::LoadedJob;
use crate::model::Job;

/// The label that opens a Namespace to builds, and its value.
pub const BUILDS_LABEL: &str = "kubeci.io/builds";
pub const BUILDS_ENABLED: &str = "enabled";
/// The annotation listing the ServiceAccounts (besides `default`) jobs may name.
pub const SERVICE_ACCOUNTS_ANNOTATION: &str = "kubeci.io/service-accounts";
/// The annotation listing the Secrets jobs may name.
pub const SECRETS_ANNOTATION: &str = "kubeci.io/secrets";
/// The annotation listing the repositories (`github.com/org/*`) jobs may build; absent:
/// any repository.
pub const REPOSITORIES_ANNOTATION: &str = "kubeci.io/repositories";

/// What one Namespace allows, as its labels and annotations say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceRules {
    pub name: String,
    /// Labelled `kubeci.io/builds: enabled`.
    pub enabled: bool,
    /// ServiceAccounts jobs may use besides `default`.
    pub service_accounts: Vec<String>,
    /// Secrets jobs may name.
    pub secrets: Vec<String>,
    /// Repository patterns jobs may build; `None` (no annotation): any repository.
    pub repositories: Option<Vec<String>>,
}

/// Items of a comma-separated annotation, trimmed, empty ones left out.
fn items(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl NamespaceRules {
    /// The rules of Namespace `name` from its labels and annotations.
    pub fn from_metadata(
        name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> NamespaceRules {
        let list = |key: &str| annotations.get(key).map(|v| items(v));
        NamespaceRules {
            name: name.to_owned(),
            enabled: labels.get(BUILDS_LABEL).map(String::as_str) == Some(BUILDS_ENABLED),
            service_accounts: list(SERVICE_ACCOUNTS_ANNOTATION).unwrap_or_default(),
            secrets: list(SECRETS_ANNOTATION).unwrap_or_default(),
            repositories: list(REPOSITORIES_ANNOTATION),
        }
    }

    /// Whether repository `key` (`host/owner/name`, see `GitUrl::repository_key`) may be
    /// built here.
    pub fn allows_repository(&self, key: Option<&str>) -> bool {
        match (&self.repositories, key) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(patterns), Some(key)) => patterns.iter().any(|p| repository_matches(p, key)),
        }
    }
}

/// Whether `pattern` (`github.com/org/*`: `*` matches within one path segment,
/// case-insensitive) matches repository `key`.
pub fn repository_matches(pattern: &str, key: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let pattern = pattern.trim_end_matches(".git");
    let key = key.to_ascii_lowercase();
    let (patterns, parts): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), key.split('/').collect());
    patterns.len() == parts.len()
        && patterns
            .iter()
            .zip(&parts)
            .all(|(p, part)| glob(p.as_bytes(), part.as_bytes()))
}

/// `*` matches any run of characters (here never a `/`: segments are matched apart).
/// Greedy, going back only to the last `*`: O(len(pattern) × len(text)), never
/// exponential, whatever the pattern.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            last_star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = last_star {
            p = star + 1;
            t = matched + 1;
            last_star = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Which rule a job breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A namespace not labelled `kubeci.io/builds: enabled`.
    NamespaceNotEnabled,
    /// A ServiceAccount other than `default` not in `kubeci.io/service-accounts`.
    ServiceAccount,
    /// A Secret not in `kubeci.io/secrets`.
    Secret,
    /// A repository no pattern of `kubeci.io/repositories` matches.
    Repository,
}

impl Rule {
    /// The diagnostic code: every tenancy code begins with `tenancy-`.
    pub fn code(self) -> &'static str {
        match self {
            Rule::NamespaceNotEnabled => "tenancy-namespace-not-enabled",
            Rule::ServiceAccount => "tenancy-service-account",
            Rule::Secret => "tenancy-secret",
            Rule::Repository => "tenancy-repository",
        }
    }
}

/// One rule a job breaks: which, in which Namespace, and how to allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub namespace: String,
    /// The field of the job that breaks it.
    pub field: FieldPath,
    pub message: String,
    pub help: String,
}

/// Every Secret the job names, with its field: the SSH key and the AWS keys (the job's
/// `env` holds plain values only). The rendered pod names exactly these (tested in
/// `kubeci-render`).
pub fn secrets_named(job: &Job) -> Vec<(FieldPath, &str)> {
    let mut found = Vec::new();
    if let Some(secret) = &job.git.ssh_secret_ref {
        found.push((
            FieldPath::new(&["job", "git", "ssh_secret_ref"]),
            secret.as_str(),
        ));
    }
    if let Some(secret) = &job.aws_secret {
        found.push((FieldPath::new(&["job", "aws_secret"]), secret.as_str()));
    }
    found
}

/// The `kubectl annotate` that adds `item` to annotation `key` of `namespace`, keeping
/// what it lists already.
fn annotate(namespace: &str, key: &str, present: &[String], item: &str) -> String {
    let mut value: Vec<&str> = present.iter().map(String::as_str).collect();
    value.push(item);
    let overwrite = if present.is_empty() {
        ""
    } else {
        " --overwrite"
    };
    format!(
        "kubectl annotate{overwrite} namespace {namespace} {key}={}",
        value.join(",")
    )
}

fn not_enabled(namespace: &str, role: &str) -> Violation {
    Violation {
        rule: Rule::NamespaceNotEnabled,
        namespace: namespace.to_owned(),
        field: FieldPath::new(&["job"]),
        message: format!(
            "namespace {namespace} ({role}) is not enabled for kubeci builds: its Namespace is not labelled {BUILDS_LABEL}={BUILDS_ENABLED}"
        ),
        help: format!(
            "a cluster administrator enables it: kubectl label namespace {namespace} {BUILDS_LABEL}={BUILDS_ENABLED}"
        ),
    }
}

/// What job `job`, declared by a ConfigMap in `configmap_namespace` and building in
/// `build_namespace`, breaks. Both namespaces must be enabled; the namespace the builds run
/// in must allow the ServiceAccount, every Secret and the repository (its pods use them).
/// `rules_of` gives what a Namespace allows, `None` for a Namespace not seen.
pub fn check<'a>(
    job: &Job,
    configmap_namespace: &str,
    build_namespace: &str,
    rules_of: impl Fn(&str) -> Option<&'a NamespaceRules>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    if configmap_namespace != build_namespace
        && !rules_of(configmap_namespace).is_some_and(|r| r.enabled)
    {
        out.push(not_enabled(configmap_namespace, "the job's ConfigMap"));
    }
    let Some(rules) = rules_of(build_namespace).filter(|r| r.enabled) else {
        out.push(not_enabled(build_namespace, "where its builds run"));
        return out;
    };
    let ns = build_namespace;
    if let Some(account) = job.service_account_name.as_deref() {
        if account != "default" && !rules.service_accounts.iter().any(|a| a == account) {
            let key = SERVICE_ACCOUNTS_ANNOTATION;
            out.push(Violation {
                rule: Rule::ServiceAccount,
                namespace: ns.to_owned(),
                field: FieldPath::new(&["job", "service_account_name"]),
                message: format!("namespace {ns} does not allow ServiceAccount {account}"),
                help: format!(
                    "add it to the annotation {key} of Namespace {ns} ({})",
                    annotate(ns, key, &rules.service_accounts, account)
                ),
            });
        }
    }
    let mut allowed_secrets = rules.secrets.clone();
    for (field, secret) in secrets_named(job) {
        if !allowed_secrets.iter().any(|s| s == secret) {
            let key = SECRETS_ANNOTATION;
            out.push(Violation {
                rule: Rule::Secret,
                namespace: ns.to_owned(),
                field,
                message: format!("namespace {ns} does not allow Secret {secret}"),
                help: format!(
                    "add it to the annotation {key} of Namespace {ns} ({})",
                    annotate(ns, key, &allowed_secrets, secret)
                ),
            });
            // One command that allows them all, when the job names several.
            allowed_secrets.push(secret.to_owned());
        }
    }
    let repository = GitUrl::parse(&job.git.url)
        .ok()
        .and_then(|u| u.repository_key());
    if !rules.allows_repository(repository.as_deref()) {
        let key = REPOSITORIES_ANNOTATION;
        let shown = repository.as_deref().unwrap_or(&job.git.url);
        let present = rules.repositories.as_deref().unwrap_or_default();
        out.push(Violation {
            rule: Rule::Repository,
            namespace: ns.to_owned(),
            field: FieldPath::new(&["job", "git", "url"]),
            message: format!("namespace {ns} does not allow repository {shown}"),
            help: format!(
                "add it, or a pattern matching it such as `host/owner/*`, to the annotation {key} of Namespace {ns} ({})",
                annotate(ns, key, present, shown)
            ),
        });
    }
    out
}

/// What a build's pod uses, as it was rendered when the build was queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUses {
    pub service_account: Option<String>,
    pub secrets: Vec<String>,
    /// The repository it builds (`GitUrl::repository_key`).
    pub repository: Option<String>,
}

/// Why a build's pod, rendered earlier, may not start now in `namespace` (`rules`: what
/// it allows now, `None` for a Namespace not seen): a queued build is checked again when
/// it is released, whatever its job's declaration says by then (changed, invalid, gone).
pub fn pod_refusal(
    namespace: &str,
    uses: &PodUses,
    rules: Option<&NamespaceRules>,
) -> Option<String> {
    let Some(rules) = rules.filter(|r| r.enabled) else {
        return Some(not_enabled(namespace, "where the build runs").message);
    };
    let mut why = Vec::new();
    if let Some(account) = uses.service_account.as_deref() {
        if account != "default" && !rules.service_accounts.iter().any(|a| a == account) {
            why.push(format!(
                "namespace {namespace} does not allow ServiceAccount {account}"
            ));
        }
    }
    for secret in &uses.secrets {
        if !rules.secrets.contains(secret) {
            why.push(format!(
                "namespace {namespace} does not allow Secret {secret}"
            ));
        }
    }
    if !rules.allows_repository(uses.repository.as_deref()) {
        let shown = uses.repository.as_deref().unwrap_or("(none)");
        why.push(format!(
            "namespace {namespace} does not allow repository {shown}"
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// `loaded` refused for `violations`: the same declaration with an error for each and no
/// job, so it is shown invalid and never built.
pub fn refuse(loaded: &LoadedJob, violations: &[Violation]) -> LoadedJob {
    let mut refused = loaded.clone();
    refused.job = None;
    refused
        .diagnostics
        .extend(violations.iter().map(|v| Diagnostic {
            severity: Severity::Error,
            code: v.rule.code(),
            file: loaded.file.clone(),
            line: loaded.pos.line,
            column: loaded.pos.column,
            object: loaded.configmap.as_ref().map(ToString::to_string),
            field: v.field.clone(),
            message: v.message.clone(),
            help: Some(v.help.clone()),
            source_line: None,
        }));
    refused
}

/// Why tenancy refuses `loaded`, when it does: its tenancy errors, joined.
pub fn refusal(loaded: &LoadedJob) -> Option<String> {
    let reasons: Vec<&str> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error && d.code.starts_with("tenancy-"))
        .map(|d| d.message.as_str())
        .collect();
    (loaded.job.is_none() && !reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests;
