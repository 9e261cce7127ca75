//! Reading jobs from the bytes of a file: a bare `job.yaml`, a ConfigMap manifest, a
//! multi-document stream (`helm template` output) or a `kind: List`.
//!
//! Nothing here touches the filesystem: callers hand in a name and the bytes.

use std::sync::Arc;

use crate::diagnostic::{Diagnostic, FieldPath, Severity};
use crate::model::Job;
use crate::validate::{suggest, NamespacePolicy};
use crate::yaml::{self, Key, Limits, Pos, PosMap};

mod configmap;
mod reader;
mod typed;

use reader::{chart_version, Reader};

/// The most a ConfigMap may hold (Kubernetes' limit), and so the most a job may be.
pub const MAX_JOB_BYTES: usize = 1024 * 1024;
/// The largest file read (a stream of many ConfigMaps may exceed one ConfigMap's limit).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// The label that marks a ConfigMap as a job.
pub const JOB_LABEL: &str = "ci-job-spec";
/// The ConfigMap key holding the job.
pub const JOB_KEY: &str = "job.yaml";

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Namespace of ConfigMaps that do not name one (as `kubectl apply -n` would).
    pub default_namespace: String,
    pub policy: NamespacePolicy,
    pub limits: Limits,
    /// Where the builds run, which decides what a local repository path is.
    pub builds_run: BuildsRun,
}

/// Where a job's builds run: a local repository path is expected on this machine, an
/// error in a cluster, and worth a warning when it is not known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuildsRun {
    /// Not known (`kubeci lint`, `render`).
    #[default]
    Anywhere,
    /// On this machine (`kubeci run`, `serve --local`).
    OnThisMachine,
    /// In a cluster (`serve --kubernetes`): a path on kubeci's machine is out of reach.
    InACluster,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".into(),
            policy: NamespacePolicy::default(),
            limits: Limits::default(),
            builds_run: BuildsRun::Anywhere,
        }
    }
}

/// A ConfigMap (or other object) by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One job found in a source, valid or not.
#[derive(Debug, Clone)]
pub struct LoadedJob {
    pub file: String,
    /// Where the job starts in the file.
    pub pos: Pos,
    /// The ConfigMap that declares it; `None` for a bare `job.yaml`.
    pub configmap: Option<ObjectRef>,
    /// The job's name, as far as it could be read (also for invalid jobs).
    pub name: Option<String>,
    /// The job, if it has no errors.
    pub job: Option<Arc<Job>>,
    /// The namespace its builds run in.
    pub namespace: String,
    /// The `job.yaml` text as written.
    pub source: String,
    /// `sha256` of `source`, in hex: recorded on builds to tell which spec they ran.
    pub spec_hash: String,
    /// The Helm chart version, from the ConfigMap's `helm.sh/chart` label.
    pub chart_version: Option<String>,
    /// Findings about this job (errors, warnings).
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadedJob {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// `namespace/name` of the job, or of its ConfigMap when the name is unreadable.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.configmap) {
            (Some(name), _) => format!("{}/{}", self.namespace, name),
            (None, Some(cm)) => cm.to_string(),
            (None, None) => self.file.clone(),
        }
    }
}

/// The declarations that repeat a job: for each valid job whose name an earlier valid
/// declaration already took in the same namespace, its replacement — the same text with an
/// error naming the first, and no job. The first wins (the cluster's ConfigMaps in name
/// order, files in path order), so every replica and `kubeci lint` agree without state.
/// Two versions of the same ConfigMap (two files declaring one object) are not two jobs:
/// the later gets a warning that it is ignored, and keeps its job for `kubeci lint`'s
/// count; the local engine drops it (see [`same_object`]).
pub fn shadowed(declarations: &[&LoadedJob]) -> Vec<Option<LoadedJob>> {
    let mut first: std::collections::HashMap<(&str, &str), &LoadedJob> =
        std::collections::HashMap::new();
    declarations
        .iter()
        .map(|loaded| {
            let name = loaded.name.as_deref().filter(|_| loaded.job.is_some())?;
            let Some(winner) = first.get(&(loaded.namespace.as_str(), name)) else {
                first.insert((&loaded.namespace, name), loaded);
                return None;
            };
            let mut repeat = (*loaded).clone();
            let at = format!("{}:{}", winner.file, winner.pos.line);
            let diagnostic = |severity, code, message: String, help: &str| Diagnostic {
                severity,
                code,
                file: loaded.file.clone(),
                line: loaded.pos.line,
                column: loaded.pos.column,
                object: loaded.configmap.as_ref().map(ToString::to_string),
                field: crate::FieldPath::new(&["job", "name"]),
                message,
                help: Some(help.into()),
                source_line: None,
            };
            if same_object(winner, loaded) {
                repeat.diagnostics.push(diagnostic(
                    Severity::Warning,
                    "duplicate-configmap",
                    format!(
                        "{} is also declared at {at}, which comes first: this version is ignored",
                        winner.configmap.as_ref().map_or_else(String::new, ToString::to_string)
                    ),
                    "keep one version of each ConfigMap in a directory (in a cluster, the one applied last replaces the other)",
                ));
                return Some(repeat);
            }
            let by = winner
                .configmap
                .as_ref()
                .map_or_else(|| winner.file.clone(), ToString::to_string);
            repeat.job = None;
            repeat.diagnostics.push(diagnostic(
                Severity::Error,
                "duplicate-job",
                format!(
                    "job `{name}` is already declared in namespace {} by {by} ({at}), which comes first: this declaration is ignored",
                    loaded.namespace
                ),
                "give one of the two jobs another name, or delete one",
            ));
            Some(repeat)
        })
        .collect()
}

/// Whether two declarations come from the same ConfigMap (two versions of one object).
pub fn same_object(a: &LoadedJob, b: &LoadedJob) -> bool {
    a.configmap.is_some() && a.configmap == b.configmap
}

/// Applies [`shadowed`] in place: the repeats of a job become invalid, with the error.
pub fn mark_duplicates<'a>(declarations: impl IntoIterator<Item = &'a mut LoadedJob>) {
    let mut declarations: Vec<&mut LoadedJob> = declarations.into_iter().collect();
    let replacements = shadowed(&declarations.iter().map(|j| &**j).collect::<Vec<_>>());
    for (declaration, replacement) in declarations.iter_mut().zip(replacements) {
        if let Some(replacement) = replacement {
            **declaration = replacement;
        }
    }
}

/// Everything read from one source.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub jobs: Vec<LoadedJob>,
    /// Findings that belong to no single job (unreadable file, skipped objects).
    pub diagnostics: Vec<Diagnostic>,
    /// Objects that are not job ConfigMaps (Secrets, Deployments, ...), skipped silently.
    pub skipped_objects: usize,
}

impl LoadReport {
    pub fn all_diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .chain(self.jobs.iter().flat_map(|j| j.diagnostics.iter()))
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.all_diagnostics()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Reads every job in `bytes`, the content of the file called `file`.
pub fn load(file: &str, bytes: &[u8], options: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    let file_error = |pos: Pos, code: &'static str, message: String, help: &str| Diagnostic {
        severity: Severity::Error,
        code,
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        object: None,
        field: FieldPath::default(),
        message,
        help: Some(help.to_owned()),
        source_line: None,
    };
    if bytes.len() > MAX_FILE_BYTES {
        report.diagnostics.push(file_error(
            Pos::START,
            "too-large",
            format!(
                "the file is {}; kubeci reads files of at most {}",
                human_size(bytes.len()),
                human_size(MAX_FILE_BYTES)
            ),
            "split it into several files",
        ));
        return report;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let bad = bytes[err.valid_up_to()];
            report.diagnostics.push(file_error(
                yaml::pos_of_offset(bytes, err.valid_up_to()),
                "not-utf8",
                format!(
                    "the file is not valid UTF-8: byte 0x{bad:02x} cannot start a character here"
                ),
                "save the file as UTF-8",
            ));
            return report;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let documents = match yaml::parse_stream(text, &PosMap::Identity, options.limits) {
        Ok(documents) => documents,
        Err(err) => {
            report
                .diagnostics
                .push(file_error(err.pos, "yaml-syntax", err.message, &err.help));
            crate::diagnostic::keep_source_lines(&mut report.diagnostics, file, text);
            return report;
        }
    };
    if documents.iter().all(Option::is_none) {
        report.diagnostics.push(file_error(
            Pos::START,
            "empty",
            "the file holds no YAML document, so no job".into(),
            "a job file starts with `- job:`, or is a ConfigMap labelled `ci-job-spec: \"true\"`",
        ));
        return report;
    }
    let single = documents.len() == 1;
    let reader = Reader { file, options };
    for document in documents.into_iter().flatten() {
        reader.document(&document, if single { text } else { "" }, &mut report);
    }
    for job in &mut report.jobs {
        crate::diagnostic::keep_source_lines(&mut job.diagnostics, file, text);
    }
    crate::diagnostic::keep_source_lines(&mut report.diagnostics, file, text);
    report
}

/// What is wrong with a ConfigMap whose data exceeds Kubernetes' limit, and the fix.
fn too_large(total: usize) -> (String, &'static str) {
    (
        format!(
            "the ConfigMap's data is {}; Kubernetes stores at most {} in a ConfigMap",
            human_size(total),
            human_size(MAX_JOB_BYTES)
        ),
        "shorten run_command: move long scripts into the repository and call them",
    )
}

/// For a labelled ConfigMap without `job.yaml`: the key that looks like a misspelling of
/// it, if any, and the fix.
fn missing_job_yaml<'k>(keys: &[&'k str]) -> (Option<&'k str>, String) {
    let misspelt = keys
        .iter()
        .copied()
        .find(|k| suggest(k, &[JOB_KEY]).is_some());
    let help = misspelt.map_or_else(
        || format!("put the job under `data:` as `{JOB_KEY}: |`"),
        |k| format!("rename `{k}` to `{JOB_KEY}`"),
    );
    (misspelt, help)
}

/// A job ConfigMap as the Kubernetes API returns it (already selected by its label).
#[derive(Debug, Clone, Copy)]
pub struct ConfigMapData<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub data: &'a std::collections::BTreeMap<String, String>,
}

/// Reads the job of a ConfigMap fetched from the API. Positions are in its `job.yaml`
/// (reported as file `job.yaml` of the ConfigMap).
pub fn load_configmap(configmap: ConfigMapData<'_>, options: &LoadOptions) -> LoadedJob {
    let reader = Reader {
        file: JOB_KEY,
        options,
    };
    let object = ObjectRef {
        kind: "ConfigMap".into(),
        namespace: configmap.namespace.to_owned(),
        name: configmap.name.to_owned(),
    };
    let chart_version = configmap
        .labels
        .get("helm.sh/chart")
        .and_then(|l| chart_version(l));
    let key = Key {
        text: JOB_KEY.to_owned(),
        pos: Pos::START,
    };
    let total: usize = configmap.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut job = match configmap.data.get(JOB_KEY) {
        _ if total > MAX_JOB_BYTES => {
            let mut job = reader.empty_job(Pos::START, Some(&object), String::new(), chart_version);
            let (message, help) = too_large(total);
            job.diagnostics.push(reader.diagnostic(
                Severity::Error,
                "too-large",
                Pos::START,
                Some(&object),
                message,
                help,
            ));
            job
        }
        Some(text) => reader.embedded_job(
            text,
            PosMap::Identity,
            Pos::START,
            &key,
            &object,
            chart_version,
        ),
        None => {
            let mut job = reader.empty_job(Pos::START, Some(&object), String::new(), chart_version);
            let keys: Vec<&str> = configmap.data.keys().map(String::as_str).collect();
            let (_, help) = missing_job_yaml(&keys);
            job.diagnostics.push(reader.diagnostic(
                Severity::Error,
                "missing-job-yaml",
                Pos::START,
                Some(&object),
                format!("{object} is labelled as a job but has no `{JOB_KEY}` key"),
                &help,
            ));
            job
        }
    };
    for other in configmap.data.keys().filter(|k| *k != JOB_KEY) {
        job.diagnostics.push(reader.diagnostic(
            Severity::Warning,
            "ignored-key",
            Pos::START,
            Some(&object),
            format!("key `{other}` is ignored: a job ConfigMap holds one job, in `{JOB_KEY}`"),
            "move it into the job or into another ConfigMap",
        ));
    }
    if let Some(text) = configmap.data.get(JOB_KEY) {
        crate::diagnostic::keep_source_lines(&mut job.diagnostics, JOB_KEY, text);
    }
    job
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn errors(report: &LoadReport) -> Vec<String> {
        report
            .all_diagnostics()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect()
    }

    const MINIMAL: &str = "- job:\n    name: demo\n    git:\n      url: https://github.com/org/repo.git\n    run_command: make\n    timeout: 10m\n";

    #[test]
    fn a_bare_job_file_is_read() {
        let report = load("job.yaml", MINIMAL.as_bytes(), &LoadOptions::default());
        assert!(errors(&report).is_empty(), "{:?}", errors(&report));
        let job = report.jobs[0].job.as_ref().unwrap();
        assert_eq!(job.name, "demo");
        assert_eq!(report.jobs[0].namespace, "default");
        assert_eq!(report.jobs[0].spec_hash.len(), 64);
    }

    #[test]
    fn misspelt_keys_are_all_reported_with_suggestions() {
        let text = "- job:\n    name: demo\n    git:\n      url: https://github.com/org/repo.git\n      brnach: main\n    run_comand: make\n";
        let report = load("job.yaml", text.as_bytes(), &LoadOptions::default());
        let diags: Vec<&Diagnostic> = report
            .all_diagnostics()
            .filter(|d| d.code == "unknown-key")
            .collect();
        assert_eq!(diags.len(), 2);
        assert_eq!((diags[0].line, diags[0].column), (5, 7));
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `branch`?"));
        assert_eq!(diags[1].field.to_string(), "job.run_comand");
        // The misspelling explains why run_command is missing: no second error repeats it.
        assert_eq!(errors(&report).len(), 2, "{:?}", errors(&report));
    }

    #[test]
    fn keys_in_the_wrong_section_are_pointed_to_their_section() {
        let text = "- job:\n    name: demo\n    branch: main\n    git:\n      url: https://github.com/org/repo.git\n    run_command: make\n";
        let report = load("job.yaml", text.as_bytes(), &LoadOptions::default());
        let d = report
            .all_diagnostics()
            .find(|d| d.code == "unknown-key")
            .unwrap();
        assert_eq!(d.help.as_deref(), Some("`branch` belongs under `git`"));
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let text = "- job:\n    name: 123\n    git:\n      url: https://github.com/org/repo.git\n    run_command: make\n";
        let report = load("job.yaml", text.as_bytes(), &LoadOptions::default());
        assert_eq!(
            errors(&report),
            ["2:11 `job.name` must be a string, not a number"]
        );
    }

    #[test]
    fn string_lists_and_booleans_are_read_as_the_seed_wrote_them() {
        let text = "- job:\n    name: demo\n    git: {url: 'git@github.com:o/r.git', ssh_secret_ref: k, ssh_fingerprint: 'SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8'}\n    run_command: make\n    timeout: 1h\n    ghprb:\n      enabled: \"yes\"\n      admin_users: \"alice, bob\n        carol\"\n      whitelisted_orgs: [acme, 'x y']\n";
        let report = load("job.yaml", text.as_bytes(), &LoadOptions::default());
        assert!(errors(&report).is_empty(), "{:?}", errors(&report));
        let ghprb = report.jobs[0].job.as_ref().unwrap().ghprb.clone().unwrap();
        assert!(ghprb.enabled.0);
        assert_eq!(ghprb.admin_users.0, ["alice", "bob", "carol"]);
        assert_eq!(ghprb.whitelisted_orgs.0, ["acme", "x", "y"]);
    }

    #[test]
    fn configmap_positions_point_into_the_manifest() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: team\n  labels: {ci-job-spec: \"true\", helm.sh/chart: demo-job-1.4.0}\ndata:\n  job.yaml: |\n    - job:\n        name: demo\n        git:\n          url: https://github.com/org/repo.git\n          brnach: x\n        run_command: make\n";
        let report = load("cm.yaml", text.as_bytes(), &LoadOptions::default());
        let d = report
            .all_diagnostics()
            .find(|d| d.code == "unknown-key")
            .unwrap();
        assert_eq!((d.line, d.column), (13, 11));
        assert_eq!(d.object.as_deref(), Some("ConfigMap team/demo"));
        assert_eq!(report.jobs[0].namespace, "team");
        assert_eq!(report.jobs[0].chart_version.as_deref(), Some("1.4.0"));
    }

    #[test]
    fn namespace_policy_is_enforced() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: team-a\n  labels: {ci-job-spec: \"true\"}\ndata:\n  job.yaml: |\n    - job:\n        name: demo\n        namespace: team-b\n        git: {url: 'https://github.com/o/r'}\n        run_command: make\n";
        let report = load("cm.yaml", text.as_bytes(), &LoadOptions::default());
        assert_eq!(errors(&report), ["11:20 a job declared in namespace `team-a` may not run its builds in namespace `team-b`"]);
        let allowed = LoadOptions {
            policy: NamespacePolicy {
                allowed: vec![("team-a".into(), "team-b".into())],
            },
            ..LoadOptions::default()
        };
        let report = load("cm.yaml", text.as_bytes(), &allowed);
        assert!(errors(&report).is_empty());
        assert_eq!(report.jobs[0].namespace, "team-b");
    }

    #[test]
    fn streams_skip_other_objects_and_note_unlabelled_configmaps() {
        let text = format!(
            "# Source: x\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plain}}\ndata: {{a: b}}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: j, labels: {{ci-job-spec: 'true'}}}}\n  data:\n    job.yaml: {:?}\n",
            MINIMAL
        );
        let report = load("stream.yaml", text.as_bytes(), &LoadOptions::default());
        assert_eq!(report.skipped_objects, 1);
        assert_eq!(report.jobs.len(), 1);
        assert!(report.jobs[0].job.is_some());
        let note = report
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Note)
            .unwrap();
        assert!(note.message.contains("ConfigMap default/plain"));
    }

    #[test]
    fn configmaps_from_the_api_are_read_with_positions_in_job_yaml() {
        let labels = std::collections::BTreeMap::from([
            ("ci-job-spec".to_owned(), "true".to_owned()),
            ("helm.sh/chart".to_owned(), "demo-0.2.0".to_owned()),
        ]);
        let data = std::collections::BTreeMap::from([(
            "job.yaml".to_owned(),
            MINIMAL.replace("name: demo", "name: demo\n    brnach: x"),
        )]);
        let cm = ConfigMapData {
            namespace: "team",
            name: "demo-cm",
            labels: &labels,
            data: &data,
        };
        let job = load_configmap(cm, &LoadOptions::default());
        assert_eq!(job.chart_version.as_deref(), Some("0.2.0"));
        assert_eq!(job.namespace, "team");
        let d = &job.diagnostics[0];
        assert_eq!(
            (d.file.as_str(), d.line, d.column, d.code),
            ("job.yaml", 3, 5, "unknown-key")
        );
        assert_eq!(d.object.as_deref(), Some("ConfigMap team/demo-cm"));
        let valid = BTreeMap::from([("job.yaml".to_owned(), MINIMAL.to_owned())]);
        let job = load_configmap(
            ConfigMapData { data: &valid, ..cm },
            &LoadOptions::default(),
        );
        assert_eq!(job.job.unwrap().name, "demo");
        let empty = BTreeMap::new();
        let job = load_configmap(
            ConfigMapData { data: &empty, ..cm },
            &LoadOptions::default(),
        );
        assert_eq!(job.diagnostics[0].code, "missing-job-yaml");
    }

    #[test]
    fn chart_versions_come_from_the_helm_label() {
        assert_eq!(
            chart_version("my-job-chart-0.3.1").as_deref(),
            Some("0.3.1")
        );
        assert_eq!(
            chart_version("x-1.0.0-rc.1_build.5").as_deref(),
            Some("1.0.0-rc.1+build.5")
        );
        assert_eq!(chart_version("nochart"), None);
    }
}
