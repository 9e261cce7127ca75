//! A build's record: what was asked for (a [`BuildRequest`], what [`Trigger`]ed it, the
//! [`PullRequest`] it tests), the name and the labels and annotations ([`keys`]) it is
//! written under on its Job, how that request is read back ([`recorded_request`]), what the
//! clone step reports ([`clone_result`]), and the compact types a Job and its pod are read
//! as ([`record`]). Pure: the renderer writes a record, the engines and the webhooks read
//! it, and none of them owns its shape alone.

pub mod outputs;
pub mod record;

/// One job, as the commands name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobRef<'a> {
    pub namespace: &'a str,
    pub job: &'a str,
}

/// One build of one job, as the commands and the leader's acts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BuildRef<'a> {
    pub namespace: &'a str,
    pub job: &'a str,
    pub number: u64,
}

impl<'a> BuildRef<'a> {
    /// The name of its Kubernetes Job (and of the local engine's build).
    pub fn name(&self) -> String {
        build_name(self.job, self.number)
    }

    /// The job it is a build of.
    pub fn job_ref(&self) -> JobRef<'a> {
        JobRef {
            namespace: self.namespace,
            job: self.job,
        }
    }
}

/// `build 7 of job ci/web`, as messages name it.
impl std::fmt::Display for BuildRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "build {} of job {}/{}",
            self.number, self.namespace, self.job
        )
    }
}

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Labels and annotations kubeci puts on every build.
pub mod keys {
    pub const JOB: &str = "kubeci.io/job";
    pub const BUILD: &str = "kubeci.io/build";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGER: &str = "kubeci";
    pub const TRIGGER: &str = "kubeci.io/trigger";
    pub const REQUESTED_BY: &str = "kubeci.io/requested-by";
    pub const GIT_URL: &str = "kubeci.io/git-url";
    pub const BRANCH: &str = "kubeci.io/branch";
    pub const REF: &str = "kubeci.io/ref";
    pub const COMMIT: &str = "kubeci.io/commit";
    pub const PR: &str = "kubeci.io/pr";
    pub const PR_AUTHOR: &str = "kubeci.io/pr-author";
    pub const SPEC_HASH: &str = "kubeci.io/spec-hash";
    pub const CHART_VERSION: &str = "kubeci.io/chart-version";
    /// The identity of the request that started the build (a webhook's `pr:<n>:<head>`,
    /// an API `Idempotency-Key`): a request seen again finds its build by it.
    pub const REQUEST_KEY: &str = "kubeci.io/request-key";
    /// The name the build's job reported under on GitHub when kubeci created the build:
    /// what its reports go under should the job turn invalid before it ends
    /// (`kubeci_spec::checkname::report_name`).
    pub const CHECK_NAME: &str = "kubeci.io/check-name";
    /// Who cancelled the build (set when it is cancelled; empty when unknown).
    pub const CANCELLED_BY: &str = "kubeci.io/cancelled-by";
    /// The commit statuses already reported for the build, comma-separated.
    pub const REPORTED: &str = "kubeci.io/reported";
    /// Why kubeci stopped a build that could not run (`Reason: message`, Kubernetes' words).
    pub const ERROR: &str = "kubeci.io/error";
    /// When kubeci stopped (cancelled or failed) a build, RFC 3339.
    pub const FINISHED_AT: &str = "kubeci.io/finished-at";
    /// The finalizer each build pod carries from its Job's template: kubeci removes it
    /// once the pod's logs are archived (or it gave up), so no log goes before that.
    pub const ARCHIVE_FINALIZER: &str = "kubeci.io/archive";
    /// How far the build is archived (`--archive`): `first` once its first record is in
    /// the archive, `complete` once all of it is (`kubeci_engine::archive::Archived`).
    pub const ARCHIVED: &str = "kubeci.io/archived";
    /// The files the build collects once its `run_command` ended, as its job declared
    /// them when the build was made (`outputs::DeclaredOutputs`, JSON).
    pub const OUTPUTS: &str = "kubeci.io/outputs";
}

/// What the clone step reports in its termination message: the commit it checked out
/// (and the branch), one `key=value` per line, for the server to record on the build.
pub mod clone_result {
    /// The message for a checkout of `commit` (on `branch`).
    pub fn format(commit: &str, branch: Option<&str>) -> String {
        match branch {
            Some(branch) => format!("commit={commit}\nbranch={branch}\n"),
            None => format!("commit={commit}\n"),
        }
    }

    /// The commit a clone step's termination message names, if it names a well-formed one.
    pub fn commit(message: &str) -> Option<&str> {
        message
            .lines()
            .find_map(|line| line.strip_prefix("commit="))
            .filter(|c| is_commit(c))
    }

    /// Whether `text` is a commit id as git writes one: 7 to 64 hexadecimal digits (an
    /// abbreviated, SHA-1 or SHA-256 id) — nothing that could change a URL it is put in.
    pub fn is_commit(text: &str) -> bool {
        (7..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_commit_is_read_back_and_nothing_else_is_taken_for_one() {
            let sha = "4d7de2707d0240ba622e8f56097a34e57c61cb4d";
            assert_eq!(super::commit(&super::format(sha, Some("main"))), Some(sha));
            assert_eq!(super::commit(&super::format(sha, None)), Some(sha));
            assert_eq!(super::commit("commit=$(rm -rf /)\n"), None);
            assert_eq!(super::commit("fatal: not a git repository"), None);
        }

        #[test]
        fn only_hexadecimal_ids_of_git_lengths_are_commits() {
            for commit in ["4d7de27", &"a".repeat(40), &"A".repeat(64)] {
                assert!(super::is_commit(commit), "{commit}");
            }
            for text in [
                "4d7de2",
                &"a".repeat(65),
                "../../pulls",
                "4d7de27/x",
                "4d7de27?a=1",
                "",
            ] {
                assert!(!super::is_commit(text), "{text}");
            }
        }
    }
}

/// What started a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Manual,
    PullRequest,
    Comment,
    Push,
    Cron,
}

impl Trigger {
    /// The trigger named by [`Trigger::as_str`].
    pub fn parse(name: &str) -> Option<Trigger> {
        [
            Trigger::Manual,
            Trigger::PullRequest,
            Trigger::Comment,
            Trigger::Push,
            Trigger::Cron,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::PullRequest => "pull-request",
            Trigger::Comment => "comment",
            Trigger::Push => "push",
            Trigger::Cron => "cron",
        }
    }
}

/// The pull request a build tests.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub author: Option<String>,
    pub source_branch: Option<String>,
    pub target_branch: Option<String>,
}

/// One build to run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildRequest {
    /// The build number, unique and increasing per job, from 1.
    pub number: u64,
    pub trigger: Trigger,
    /// The exact commit, when known (webhooks know it; manual builds take the branch head).
    pub commit: Option<String>,
    /// A ref to fetch instead of the job's branch, e.g. `refs/tags/v1.2`.
    pub git_ref: Option<String>,
    /// The branch built, overriding the job's (a push to another matching branch).
    pub branch: Option<String>,
    pub pull_request: Option<PullRequest>,
    /// Who asked for a manual build or cancelled, as the server authenticated them.
    pub requested_by: Option<String>,
}

impl BuildRequest {
    pub fn manual(number: u64) -> BuildRequest {
        BuildRequest {
            number,
            trigger: Trigger::Manual,
            commit: None,
            git_ref: None,
            branch: None,
            pull_request: None,
            requested_by: None,
        }
    }
}

/// The request a build was rendered from, read back from its Job's annotations: what a
/// rebuild repeats (the same branch or ref, commit and pull request).
pub fn recorded_request(number: u64, annotations: &BTreeMap<String, String>) -> BuildRequest {
    let get = |key: &str| annotations.get(key).cloned();
    BuildRequest {
        number,
        trigger: get(keys::TRIGGER)
            .and_then(|t| Trigger::parse(&t))
            .unwrap_or(Trigger::Manual),
        commit: get(keys::COMMIT),
        git_ref: get(keys::REF),
        branch: get(keys::BRANCH),
        pull_request: get(keys::PR)
            .and_then(|n| n.parse().ok())
            .map(|number| PullRequest {
                number,
                author: get(keys::PR_AUTHOR),
                ..PullRequest::default()
            }),
        requested_by: get(keys::REQUESTED_BY),
    }
}

/// The Kubernetes name of build `number` of job `job_name`: `<job>-<number>`, shortened
/// with a hash of the job name when that would exceed 63 characters, so it stays a valid,
/// unique DNS-1123 label.
pub fn build_name(job_name: &str, number: u64) -> String {
    let suffix = format!("-{number}");
    if job_name.len() + suffix.len() <= 63 {
        return format!("{job_name}{suffix}");
    }
    let digest = Sha256::digest(job_name.as_bytes());
    let hash = hex::encode(&digest[..3]);
    let keep = 63 - suffix.len() - hash.len() - 1;
    let prefix = job_name[..keep].trim_end_matches('-');
    format!("{prefix}-{hash}{suffix}")
}

/// The URL of a build's page in the kubeci UI served at `base_url`.
pub fn build_url(base_url: &str, namespace: &str, job: &str, number: u64) -> String {
    format!(
        "{}/jobs/{namespace}/{job}/builds/{number}",
        base_url.trim_end_matches('/')
    )
}
