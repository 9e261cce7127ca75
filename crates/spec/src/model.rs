//! The job model: `job.yaml` as kube-jenkins defined it, plus kubeci's optional extensions.
//!
//! These types are the one source of truth: the parser deserializes into them and
//! `kubeci schema` derives the JSON Schema from them. Field documentation here becomes the
//! schema's `description`s that editors show.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

use crate::glob::{Pattern, PatternError, MAX_PATTERNS, MAX_PATTERN_CHARS};

/// The document in a ConfigMap's `job.yaml` key: a list whose first item holds the job.
/// Further items are ignored with a warning, as kube-jenkins did.
pub type JobList = Vec<JobItem>;

/// One item of the job list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JobItem {
    /// The job definition.
    pub job: Job,
}

/// A CI job: where its code comes from, what to run, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Job {
    /// Job name, unique in its namespace: a DNS-1123 label (lowercase letters, digits and
    /// `-`, at most 63 characters), shown everywhere and used to name its builds' Jobs.
    #[schemars(example = "start-helm-test")]
    pub name: String,
    /// Namespace the builds run in. Defaults to the ConfigMap's own; another namespace is
    /// refused unless the server's policy allows that pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The repository to build.
    pub git: Git,
    /// The GitHub pull request builder (ghprb) settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ghprb: Option<Ghprb>,
    /// Name of a Secret with keys `aws-access-key-id` and `aws-secret-access-key`, given to
    /// the build as `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_secret: Option<String>,
    /// Service account of the build pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The build script, run by bash in `workdir`; the build stops at the first failing
    /// command, whose exit code fails the build.
    pub run_command: String,
    /// Directory inside the checkout to run in; relative, and it must stay inside the
    /// checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Container image of the build step (default: the server's `--default-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "docker.io/library/buildpack-deps:bookworm")]
    pub image: Option<String>,
    /// Longest a build may run, e.g. `30m`, `1h30m`, `90s`; then it is killed and fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "45m")]
    pub timeout: Option<String>,
    /// Extra environment variables of the build step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// CPU and memory of the build step, in Kubernetes quantities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Node labels the build pod must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the build pod tolerates, as Kubernetes tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Most builds of this job running at once; more are queued in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// A new build of the same pull request or branch cancels the running ones (default:
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_superseded: Option<Flag>,
    /// What starts builds besides pull requests and manual requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    /// Link to this build's logs in the cluster's log store, overriding the server's
    /// `--log-url-template`. Placeholders: `{namespace}`, `{pod}`, `{job}`, `{build}`,
    /// `{start}`, `{end}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// How long finished builds are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// What the archive (the server's `--archive`) keeps of this job's builds once they
    /// ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<Archive>,
    /// JUnit XML reports the build writes, as glob patterns relative to `workdir`: `*`
    /// within a name, `**` any directories, `?`, `[a-z]`, `[!a]`; a pattern ending in `/` is
    /// every file under that directory; hidden names only where the pattern writes their
    /// `.`. Once `run_command` ends, the matching files leave for the build's archive, as
    /// its test results. At most 32 patterns of 256 characters; quote those starting with
    /// `*` or `[` in YAML.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_PATTERNS),
        inner(length(min = 1, max = MAX_PATTERN_CHARS)),
        example = test_reports_example()
    )]
    pub test_reports: Vec<String>,
    /// Files the build leaves to download, as glob patterns relative to `workdir` (the
    /// syntax of `test_reports`): `dist/*.tar.gz`, or `coverage/` for every file under
    /// it. Once `run_command` ends, the matching files leave for the build's archive and
    /// are kept as long as the build is. At most 32 patterns of 256 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_PATTERNS),
        inner(length(min = 1, max = MAX_PATTERN_CHARS)),
        example = artifacts_example()
    )]
    pub artifacts: Vec<String>,
}

/// The repository to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Git {
    /// `git@host:org/repo.git`, `ssh://[user@]host[:port]/path`, `https://host/path`, or a
    /// local path (local engine only).
    #[schemars(example = "git@github.com:gravitational/helm-test.git")]
    pub url: String,
    /// Branch built by manual, cron and push builds (default: the remote's HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Secret holding the SSH key (`private-key`) and optionally `ssh_fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_secret_ref: Option<String>,
    /// The server's SSH host key fingerprint, as `ssh-keygen -l` prints it (`SHA256:…`).
    /// A clone from a host presenting another key fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8")]
    pub ssh_fingerprint: Option<String>,
}

/// The GitHub pull request builder, with ghprb's semantics.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ghprb {
    /// Build pull requests.
    #[serde(default)]
    pub enabled: Flag,
    /// May approve untrusted pull requests and always trigger builds.
    #[serde(default, skip_serializing_if = "NameList::is_empty")]
    pub admin_users: NameList,
    /// Their pull requests build automatically.
    #[serde(default, skip_serializing_if = "NameList::is_empty")]
    pub whitelisted_users: NameList,
    /// Members of these GitHub organisations have their pull requests built automatically.
    #[serde(default, skip_serializing_if = "NameList::is_empty")]
    pub whitelisted_orgs: NameList,
    /// A comment matching this regular expression (case-insensitive) triggers a build;
    /// when set, pull requests build only on this phrase (ghprb's `onlyTriggerPhrase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_phrase: Option<String>,
    /// A pull request whose title or body matches this regular expression
    /// (case-insensitive) is not built (default: `[skip ci]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_phrase: Option<String>,
    /// Commit status context (default: `kubeci/<job name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// What starts builds besides pull requests and manual requests.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Triggers {
    /// Jenkins cron syntax: five fields, `H` for a stable per-job spread, `@daily` and
    /// friends; one schedule per line, `#` comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "H H(0-6) * * 1-5")]
    pub cron: Option<String>,
    /// Build pushes to these branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushTrigger>,
}

/// Build pushes to matching branches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PushTrigger {
    /// Branch names or glob patterns (`*` matches within a path segment, `**` across).
    pub branches: NameList,
}

/// Requests and limits of the build step, as in a Kubernetes container.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Resources {
    /// Guaranteed resources, e.g. `cpu: 500m`, `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// Upper bounds, e.g. `cpu: "2"`, `memory: 4Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// A Kubernetes toleration (field names as in a pod spec).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty matches all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// How long finished builds are kept.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Retention {
    /// Keep at most this many finished builds of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Delete a finished build after this long, e.g. `7d` (done by kubeci, never before
    /// the build's final state is reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// What the archive keeps of a job's builds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Archive {
    /// How long archived builds are kept (default: the server's `--archive-max-age` and
    /// `--archive-max-count`, else forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<ArchiveRetention>,
}

/// How long a job's archived builds are kept: a build goes when either says so.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ArchiveRetention {
    /// Delete an archived build this long after it ended, e.g. `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "90d")]
    pub max_age: Option<String>,
    /// Keep only the newest this many archived builds of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
}

fn test_reports_example() -> [&'static str; 2] {
    ["**/junit*.xml", "target/nextest/**/*.xml"]
}

fn artifacts_example() -> [&'static str; 2] {
    ["dist/*.tar.gz", "coverage/"]
}

/// Separates the message of a custom deserialization error from its fix.
pub(crate) const HELP_SEPARATOR: &str = "\u{1f}";

/// A boolean written as kube-jenkins users wrote it: `true`, `"true"`, `"yes"`, `"no"`...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Flag(pub bool);

const TRUE_WORDS: [&str; 3] = ["true", "yes", "on"];
const FALSE_WORDS: [&str; 3] = ["false", "no", "off"];

/// `word`, `Word` and `WORD`: the spellings YAML and kube-jenkins users write.
fn spellings(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .flat_map(|w| {
            let mut capital = w.to_string();
            capital[..1].make_ascii_uppercase();
            [w.to_string(), capital, w.to_ascii_uppercase()]
        })
        .collect()
}

impl Flag {
    /// Reads a flag from its string form: true/yes/on or false/no/off, in lower case,
    /// capitalized or upper case.
    pub fn from_word(word: &str) -> Option<Flag> {
        let word = word.trim();
        if spellings(&TRUE_WORDS).iter().any(|w| w == word) {
            Some(Flag(true))
        } else if spellings(&FALSE_WORDS).iter().any(|w| w == word) {
            Some(Flag(false))
        } else {
            None
        }
    }
}

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Bool(b)) => Ok(Flag(b)),
            Ok(Raw::Text(text)) => Flag::from_word(&text).ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not a boolean{HELP_SEPARATOR}write true or false (or \"yes\"/\"no\")"))
            }),
            Err(_) => Err(serde::de::Error::custom(format!("expected a boolean{HELP_SEPARATOR}write true or false"))),
        }
    }
}

impl JsonSchema for Flag {
    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let words = spellings(&[&TRUE_WORDS[..], &FALSE_WORDS[..]].concat());
        json_schema!({
            "description": "A boolean: true/false, or the strings \"true\", \"false\", \"yes\", \"no\", \"on\", \"off\".",
            "anyOf": [
                { "type": "boolean" },
                { "type": "string", "enum": words }
            ]
        })
    }
}

/// A list of names, written as a YAML list or as one string separated by spaces, commas or
/// newlines (`"alice, bob"`), as kube-jenkins accepted them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct NameList(pub Vec<String>);

impl NameList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Splits a string of names on spaces, commas and newlines.
    pub fn split(text: &str) -> NameList {
        NameList(
            text.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Text(text)) => Ok(NameList::split(&text)),
            Ok(Raw::List(items)) => Ok(NameList(
                items
                    .iter()
                    .flat_map(|item| NameList::split(item).0)
                    .collect(),
            )),
            Err(_) => Err(serde::de::Error::custom(format!(
                "expected a list of names{HELP_SEPARATOR}write `[alice, bob]` or \"alice, bob\""
            ))),
        }
    }
}

impl JsonSchema for NameList {
    fn schema_name() -> Cow<'static, str> {
        "NameList".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Names as a YAML list, or one string separated by spaces, commas or newlines.",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

impl Job {
    /// Whether a newer build of the same pull request or branch cancels running ones.
    pub fn cancels_superseded(&self) -> bool {
        self.cancel_superseded.is_none_or(|f| f.0)
    }

    pub fn pull_requests_enabled(&self) -> bool {
        self.ghprb.as_ref().is_some_and(|g| g.enabled.0)
    }

    /// `test_reports`, parsed. Only a job with errors (which never builds) has an error
    /// here: validation refuses every pattern that does not parse.
    pub fn test_report_patterns(&self) -> Result<Vec<Pattern>, PatternError> {
        self.test_reports
            .iter()
            .map(|p| Pattern::parse(p))
            .collect()
    }

    /// `artifacts`, parsed; as [`Job::test_report_patterns`].
    pub fn artifact_patterns(&self) -> Result<Vec<Pattern>, PatternError> {
        self.artifacts.iter().map(|p| Pattern::parse(p)).collect()
    }
}

/// The JSON Schema of `job.yaml`.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<JobList>();
    schema.insert("title".into(), "kubeci job.yaml".into());
    schema.insert(
        "description".into(),
        "A kubeci job: the `job.yaml` key of a ConfigMap labelled `ci-job-spec: \"true\"`. A list whose first item is `job:`.".into(),
    );
    schema.insert("minItems".into(), 1.into());
    schema.to_value()
}
