//! Reading jobs from the bytes of a file: a bare `job.yaml`, a ConfigMap manifest, a
//! multi-document stream (`helm template` output) or a `kind: List`.
//!
//! Nothing here touches the filesystem: callers hand in a name and the bytes.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, FieldPath, Finding, Segment, Severity};
use crate::model::{json_schema, Job, JobItem};
use crate::validate::{self, suggest, Context, NamespacePolicy};
use crate::yaml::{self, Key, Limits, Node, Pos, PosMap, Value};

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
    /// The builds run in a cluster: a local repository path is an error.
    pub remote_repositories_only: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_namespace: "default".into(),
            policy: NamespacePolicy::default(),
            limits: Limits::default(),
            remote_repositories_only: false,
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
    pub job: Option<Job>,
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
    job
}

struct Reader<'a> {
    file: &'a str,
    options: &'a LoadOptions,
}

impl Reader<'_> {
    fn diagnostic(
        &self,
        severity: Severity,
        code: &'static str,
        pos: Pos,
        object: Option<&ObjectRef>,
        message: String,
        help: &str,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            code,
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            object: object.map(ToString::to_string),
            field: FieldPath::default(),
            message,
            help: Some(help.to_owned()),
        }
    }

    /// One top-level document: a job list, a Kubernetes object, or a `List` of objects.
    fn document(&self, node: &Node, whole_text: &str, report: &mut LoadReport) {
        match &node.value {
            Value::Seq(_) => {
                let job = self.job_list(node, whole_text, None, None, None);
                report.jobs.push(job);
            }
            Value::Map(_) if node.get("kind").is_some() => self.object(node, report),
            Value::Map(_) if node.get("job").is_some() => report.diagnostics.push(self.diagnostic(
                Severity::Error,
                "not-a-list",
                node.pos,
                None,
                "`job:` must be the first item of a list".into(),
                "write `- job:` (with a dash): job.yaml is a list whose first item holds the job",
            )),
            _ => report.diagnostics.push(self.diagnostic(
                Severity::Error,
                "unknown-document",
                node.pos,
                None,
                format!(
                    "this document is {}, neither a job list nor a Kubernetes object",
                    node.kind_name()
                ),
                "a job file starts with `- job:`; a manifest has `apiVersion` and `kind`",
            )),
        }
    }

    fn object(&self, node: &Node, report: &mut LoadReport) {
        let kind = node.get("kind").and_then(Node::as_str).unwrap_or("");
        if kind == "List" {
            if let Some(Value::Seq(items)) = node.get("items").map(|n| &n.value) {
                for item in items {
                    self.object(item, report);
                }
            }
            return;
        }
        if kind != "ConfigMap" {
            report.skipped_objects += 1;
            return;
        }
        let metadata = node.get("metadata");
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(Node::as_str)
            .unwrap_or("")
            .to_owned();
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Node::as_str)
            .filter(|ns| !ns.is_empty())
            .unwrap_or(&self.options.default_namespace)
            .to_owned();
        let object = ObjectRef {
            kind: "ConfigMap".into(),
            namespace,
            name,
        };
        let labels = metadata.and_then(|m| m.get("labels"));
        let chart_version = labels
            .and_then(|l| l.get("helm.sh/chart"))
            .and_then(Node::as_str)
            .and_then(chart_version);
        let label = labels.and_then(|l| l.get(JOB_LABEL));
        match label.map(|l| (&l.value, l.pos)) {
            Some((Value::Scalar { text, style, .. }, pos)) if text == "true" => {
                if *style == yaml::ScalarStyle::Plain {
                    self.push_invalid(
                        report,
                        &object,
                        node.pos,
                        &chart_version,
                        self.diagnostic(
                        Severity::Error,
                        "label-not-string",
                        pos,
                        Some(&object),
                        format!("label `{JOB_LABEL}: true` is a boolean; Kubernetes label values are strings and the API server refuses this ConfigMap"),
                        "quote it: `ci-job-spec: \"true\"`",
                    ));
                    return;
                }
            }
            _ => {
                report.diagnostics.push(self.diagnostic(
                    Severity::Note,
                    "not-labelled",
                    node.pos,
                    Some(&object),
                    format!("skipped {object}: it has no `{JOB_LABEL}: \"true\"` label"),
                    "add the label if this ConfigMap holds a job",
                ));
                return;
            }
        }
        // The ConfigMap's own names: where they are refused, the job is shown invalid.
        let metadata_checks = [
            (
                "namespace",
                "invalid-namespace",
                crate::names::check_dns_label(&object.namespace)
                    .err()
                    .map(|why| {
                        format!(
                            "namespace `{}` is not valid: {why}",
                            object.namespace.escape_debug()
                        )
                    }),
                "a namespace is a DNS label: lowercase letters, digits and `-`, at most 63",
            ),
            (
                "name",
                "invalid-name",
                crate::names::check_dns_subdomain(&object.name)
                    .err()
                    .map(|why| format!("ConfigMap name `{}` is not valid: {why}", object.name)),
                "use lowercase letters, digits, `-` and `.`",
            ),
        ];
        for (field, code, problem, help) in metadata_checks {
            if let Some(message) = problem {
                let pos = metadata
                    .and_then(|m| m.get(field))
                    .map_or(node.pos, |n| n.pos);
                let diagnostic =
                    self.diagnostic(Severity::Error, code, pos, Some(&object), message, help);
                self.push_invalid(report, &object, node.pos, &chart_version, diagnostic);
                return;
            }
        }
        let data_entry = node.entry("data");
        let data = data_entry.map(|(_, v)| v);
        let data_pos = data_entry.map_or(node.pos, |(k, _)| k.pos);
        let total: usize = data
            .and_then(Node::as_map)
            .map(|entries| {
                entries
                    .iter()
                    .map(|(k, v)| k.text.len() + v.as_str().map_or(0, str::len))
                    .sum()
            })
            .unwrap_or(0);
        if total > MAX_JOB_BYTES {
            self.push_invalid(
                report,
                &object,
                node.pos,
                &chart_version,
                self.diagnostic(
                    Severity::Error,
                    "too-large",
                    data_pos,
                    Some(&object),
                    too_large(total).0,
                    too_large(total).1,
                ),
            );
            return;
        }
        let Some((key, job_node)) = data.and_then(|d| d.entry(JOB_KEY)) else {
            let keys: Vec<&str> = data
                .and_then(Node::as_map)
                .map(|entries| entries.iter().map(|(k, _)| k.text.as_str()).collect())
                .unwrap_or_default();
            let (misspelt, help) = missing_job_yaml(&keys);
            let pos = misspelt
                .and_then(|k| data.and_then(|d| d.entry(k)))
                .map_or(data_pos, |(key, _)| key.pos);
            self.push_invalid(
                report,
                &object,
                node.pos,
                &chart_version,
                self.diagnostic(
                    Severity::Error,
                    "missing-job-yaml",
                    pos,
                    Some(&object),
                    format!("{object} is labelled as a job but has no `{JOB_KEY}` key"),
                    &help,
                ),
            );
            return;
        };
        let mut job = match &job_node.value {
            Value::Scalar { text, .. } => self.embedded_job(
                text,
                PosMap::for_scalar(job_node),
                job_node.pos,
                key,
                &object,
                chart_version,
            ),
            _ => {
                let mut job =
                    self.empty_job(job_node.pos, Some(&object), String::new(), chart_version);
                job.diagnostics.push(self.diagnostic(
                    Severity::Error,
                    "job-yaml-not-string",
                    key.pos,
                    Some(&object),
                    format!(
                        "`{JOB_KEY}` holds {}; ConfigMap values are strings",
                        job_node.kind_name()
                    ),
                    "write `job.yaml: |` and indent the job below it",
                ));
                job
            }
        };
        for (other, _) in data.and_then(Node::as_map).unwrap_or_default() {
            if other.text != JOB_KEY {
                job.diagnostics.push(self.diagnostic(
                    Severity::Warning,
                    "ignored-key",
                    other.pos,
                    Some(&object),
                    format!(
                        "key `{}` is ignored: a job ConfigMap holds one job, in `{JOB_KEY}`",
                        other.text
                    ),
                    "move it into the job or into another ConfigMap",
                ));
            }
        }
        report.jobs.push(job);
    }

    /// A labelled ConfigMap that cannot be read is still a declared job: it is reported
    /// as an invalid one, so that it is shown with its error.
    fn push_invalid(
        &self,
        report: &mut LoadReport,
        object: &ObjectRef,
        pos: Pos,
        chart_version: &Option<String>,
        diagnostic: Diagnostic,
    ) {
        let mut job = self.empty_job(pos, Some(object), String::new(), chart_version.clone());
        job.diagnostics.push(diagnostic);
        report.jobs.push(job);
    }

    fn empty_job(
        &self,
        pos: Pos,
        configmap: Option<&ObjectRef>,
        source: String,
        chart_version: Option<String>,
    ) -> LoadedJob {
        LoadedJob {
            file: self.file.to_owned(),
            pos,
            configmap: configmap.cloned(),
            name: None,
            job: None,
            namespace: configmap.map_or_else(
                || self.options.default_namespace.clone(),
                |c| c.namespace.clone(),
            ),
            spec_hash: hex(&Sha256::digest(source.as_bytes())),
            source,
            chart_version,
            diagnostics: Vec::new(),
        }
    }

    /// The job in a ConfigMap's `job.yaml` string.
    fn embedded_job(
        &self,
        text: &str,
        map: PosMap,
        at: Pos,
        key: &Key,
        object: &ObjectRef,
        chart_version: Option<String>,
    ) -> LoadedJob {
        let error = |pos: Pos, code, message: String, help: &str| {
            let mut job = self.empty_job(at, Some(object), text.to_owned(), chart_version.clone());
            job.diagnostics.push(self.diagnostic(
                Severity::Error,
                code,
                pos,
                Some(object),
                message,
                help,
            ));
            job
        };
        let documents = match yaml::parse_stream(text, &map, self.options.limits) {
            Ok(documents) => documents,
            Err(err) => return error(err.pos, "yaml-syntax", err.message, &err.help),
        };
        let mut documents: Vec<Node> = documents.into_iter().flatten().collect();
        match documents.len() {
            0 => error(
                key.pos,
                "empty",
                format!("`{JOB_KEY}` is empty"),
                "write the job as a list: `- job:` with its fields below",
            ),
            1 => {
                let root = documents.remove(0);
                self.job_list(&root, text, Some(object), chart_version.clone(), Some(at))
            }
            n => error(
                key.pos,
                "several-documents",
                format!("`{JOB_KEY}` holds {n} YAML documents; a ConfigMap holds one job"),
                "remove the extra `---` documents, or give each job its own ConfigMap",
            ),
        }
    }

    /// A job list: the first item is the job; others are ignored with a warning.
    fn job_list(
        &self,
        root: &Node,
        source: &str,
        object: Option<&ObjectRef>,
        chart_version: Option<String>,
        at: Option<Pos>,
    ) -> LoadedJob {
        let mut job = self.empty_job(
            at.unwrap_or(root.pos),
            object,
            source.to_owned(),
            chart_version,
        );
        let push = |job: &mut LoadedJob, severity, code, pos: Pos, message: String, help: &str| {
            job.diagnostics
                .push(self.diagnostic(severity, code, pos, object, message, help));
        };
        if source.len() > MAX_JOB_BYTES {
            push(
                &mut job,
                Severity::Error,
                "too-large",
                root.pos,
                format!(
                    "the job is {}; a ConfigMap holds at most {}",
                    human_size(source.len()),
                    human_size(MAX_JOB_BYTES)
                ),
                "shorten run_command: move long scripts into the repository and call them",
            );
            return job;
        }
        let items = match &root.value {
            Value::Seq(items) if !items.is_empty() => items,
            Value::Seq(_) => {
                push(
                    &mut job,
                    Severity::Error,
                    "empty",
                    root.pos,
                    "the job list is empty".into(),
                    "write `- job:` with the job's fields below",
                );
                return job;
            }
            Value::Map(_) if root.get("job").is_some() => {
                push(&mut job, Severity::Error, "not-a-list", root.pos, "`job:` must be the first item of a list".into(), "write `- job:` (with a dash): job.yaml is a list whose first item holds the job");
                return job;
            }
            _ => {
                push(
                    &mut job,
                    Severity::Error,
                    "not-a-list",
                    root.pos,
                    format!(
                        "job.yaml must be a list whose first item is `job:`, not {}",
                        root.kind_name()
                    ),
                    "write `- job:` with the job's fields below",
                );
                return job;
            }
        };
        for (index, extra) in items.iter().enumerate().skip(1) {
            let name = extra
                .get("job")
                .and_then(|j| j.get("name"))
                .and_then(Node::as_str)
                .map_or_else(|| format!("item {}", index + 1), |n| format!("job `{n}`"));
            push(
                &mut job,
                Severity::Warning,
                "extra-job",
                extra.pos,
                format!("{name} is ignored: one ConfigMap holds one job, the first of the list"),
                "give each job its own ConfigMap",
            );
        }
        let original = &items[0];
        let mut item = original.clone();
        job.name = item
            .get("job")
            .and_then(|j| j.get("name"))
            .and_then(Node::as_str)
            .map(str::to_owned);
        let mut findings = Vec::new();
        let schema = schema();
        let item_schema = schema.get("items").unwrap_or(&serde_json::Value::Null);
        check_keys(
            &mut item,
            item_schema,
            schema,
            &FieldPath::default(),
            &mut findings,
        );
        if let Some(parsed) = read_typed(&item, &mut findings) {
            let namespace = parsed
                .job
                .namespace
                .clone()
                .unwrap_or_else(|| job.namespace.clone());
            let cx = Context {
                configmap_namespace: object.map(|o| o.namespace.as_str()),
                policy: &self.options.policy,
                remote_repositories_only: self.options.remote_repositories_only,
            };
            findings.extend(validate::validate(&parsed.job, &cx));
            // A namespace the job may not claim (refused by the cross-namespace policy, or
            // not a name) is not taken: the declaration stays its ConfigMap's, so it can
            // never stand over, or hide, another namespace's job.
            let namespace_refused = findings.iter().any(|f| {
                f.severity == Severity::Error && f.field == FieldPath::new(&["job", "namespace"])
            });
            if !namespace_refused {
                job.namespace = namespace;
            }
            job.name = Some(parsed.job.name.clone());
            job.job = Some(parsed.job);
        }
        drop_missing_fields_explained_by_misspellings(&mut findings);
        for finding in findings {
            let pos = locate(original, &finding.field, finding.at_key);
            job.diagnostics.push(Diagnostic {
                severity: finding.severity,
                code: finding.code,
                file: self.file.to_owned(),
                line: pos.line,
                column: pos.column,
                object: object.map(ToString::to_string),
                field: finding.field,
                message: finding.message,
                help: finding.help,
            });
        }
        if job.has_errors() {
            job.job = None;
        }
        job
    }
}

/// A misspelt required key (`run_comand`) is reported as unknown with "did you mean
/// `run_command`?"; the resulting "missing `run_command`" would only repeat it.
fn drop_missing_fields_explained_by_misspellings(findings: &mut Vec<Finding>) {
    let explained: Vec<(FieldPath, String)> = findings
        .iter()
        .filter(|f| f.code == "unknown-key")
        .filter_map(|f| {
            let help = f.help.as_deref()?;
            let name = help.strip_prefix("did you mean `")?.strip_suffix("`?")?;
            Some((f.field.parent(), name.to_owned()))
        })
        .collect();
    findings.retain(|f| {
        f.code != "missing-field"
            || !explained.iter().any(|(parent, name)| {
                *parent == f.field && f.message.contains(&format!("`{name}`"))
            })
    });
}

/// The version in a `helm.sh/chart` label (`name-1.2.3`); Helm writes `+` as `_`.
fn chart_version(label: &str) -> Option<String> {
    label
        .match_indices('-')
        .map(|(i, _)| &label[i + 1..])
        .find(|rest| {
            let mut parts = rest.splitn(3, '.');
            parts
                .next()
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                && parts
                    .next()
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|v| v.replace('_', "+"))
}

fn schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(json_schema)
}

fn resolve<'s>(
    mut schema: &'s serde_json::Value,
    root: &'s serde_json::Value,
) -> &'s serde_json::Value {
    for _ in 0..16 {
        let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) else {
            break;
        };
        let name = reference.trim_start_matches("#/$defs/");
        schema = root
            .pointer(&format!("/$defs/{name}"))
            .unwrap_or(&serde_json::Value::Null);
    }
    schema
}

/// The branch of `schema` (through `$ref` and `anyOf`) that describes a node of this shape.
fn branch<'s>(
    schema: &'s serde_json::Value,
    root: &'s serde_json::Value,
    want: &str,
) -> Option<&'s serde_json::Value> {
    let schema = resolve(schema, root);
    let has = |s: &serde_json::Value| match want {
        "object" => s.get("properties").is_some() || s.get("additionalProperties").is_some(),
        _ => s.get("items").is_some(),
    };
    if has(schema) {
        return Some(schema);
    }
    schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(|v| v.as_array())?
        .iter()
        .find_map(|s| branch(s, root, want))
}

/// Reports keys the schema does not know, with suggestions, and removes them so that the
/// typed reading can go on and report the remaining problems.
fn check_keys(
    node: &mut Node,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    match &mut node.value {
        Value::Map(entries) => {
            let Some(object) = branch(schema, root, "object") else {
                return;
            };
            let properties = object.get("properties").and_then(|p| p.as_object());
            let additional = object.get("additionalProperties");
            entries.retain_mut(|(key, value)| {
                let field = path.key(&key.text);
                if let Some(sub) = properties.and_then(|p| p.get(&key.text)) {
                    check_keys(value, sub, root, &field, out);
                    return true;
                }
                match additional {
                    Some(serde_json::Value::Bool(false)) => {
                        out.push(unknown_key(&key.text, path, properties, root));
                        false
                    }
                    Some(sub) if sub.is_object() => {
                        check_keys(value, sub, root, &field, out);
                        true
                    }
                    _ => true,
                }
            });
        }
        Value::Seq(items) => {
            if let Some(items_schema) = branch(schema, root, "array").and_then(|a| a.get("items")) {
                for (index, item) in items.iter_mut().enumerate() {
                    check_keys(item, items_schema, root, &path.index(index), out);
                }
            }
        }
        Value::Scalar { .. } => {}
    }
}

fn unknown_key(
    key: &str,
    path: &FieldPath,
    properties: Option<&serde_json::Map<String, serde_json::Value>>,
    root: &serde_json::Value,
) -> Finding {
    let known: Vec<&str> = properties
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let place = if path.is_empty() {
        "the job list item".to_owned()
    } else {
        format!("`{path}`")
    };
    let help = suggest(key, &known)
        .or_else(|| {
            // A known key in the wrong section: `branch` at the top instead of under `git`.
            properties?.iter().find_map(|(section, sub)| {
                let props = branch(sub, root, "object")?
                    .get("properties")?
                    .as_object()?;
                props
                    .contains_key(key)
                    .then(|| format!("`{key}` belongs under `{section}`"))
            })
        })
        .unwrap_or_else(|| format!("known keys here: {}", known.join(", ")));
    Finding::error(
        "unknown-key",
        path.key(key),
        format!("unknown key `{key}` in {place}"),
    )
    .help(help)
    .at_key()
}

/// How many typed-reading errors one job item reports at most.
const MAX_TYPE_FINDINGS: usize = 50;

/// Reads the job item into its types, reporting every value of the wrong type or shape in
/// one run: after each error the offending value is replaced by an empty one of the type
/// expected (or removed), and reading starts again. The job is returned only when
/// nothing was wrong: a job read around placeholders is never validated or built.
fn read_typed(item: &Node, findings: &mut Vec<Finding>) -> Option<JobItem> {
    let mut json = item.to_json();
    let mut reported: Vec<FieldPath> = Vec::new();
    for _ in 0..MAX_TYPE_FINDINGS {
        let err = match serde_path_to_error::deserialize::<_, JobItem>(&json) {
            Ok(parsed) => return reported.is_empty().then_some(parsed),
            Err(err) => err,
        };
        let finding = type_finding(&err, item);
        let field = finding.field.clone();
        // A required field removed below is not missing: its value was reported already.
        let removed_required = err
            .inner()
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|missing| reported.contains(&field.key(missing)));
        if removed_required || reported.contains(&field) {
            return None;
        }
        reported.push(field.clone());
        findings.push(finding);
        if !replace_with_placeholder(&mut json, &field, &err.inner().to_string()) {
            return None;
        }
    }
    None
}

/// Puts an empty value of the type serde expected at `field` (a string, list, map or
/// number), or removes the value; false when there is nothing there to change.
fn replace_with_placeholder(json: &mut serde_json::Value, field: &FieldPath, error: &str) -> bool {
    let pointer: String = field
        .0
        .iter()
        .map(|segment| match segment {
            Segment::Key(key) => format!("/{}", key.replace('~', "~0").replace('/', "~1")),
            Segment::Index(index) => format!("/{index}"),
        })
        .collect();
    let expected = error
        .split(", expected ")
        .nth(1)
        .map(|e| e.split(" at line ").next().unwrap_or(e));
    let placeholder = match expected {
        Some("a string") => Some(serde_json::json!("")),
        Some("a sequence") => Some(serde_json::json!([])),
        Some(e) if e.starts_with("struct ") || e == "a map" => Some(serde_json::json!({})),
        Some("u32" | "u64" | "i64" | "i32" | "u16" | "u8") => Some(serde_json::json!(0)),
        Some("a boolean") => Some(serde_json::json!(false)),
        _ => None,
    };
    if pointer.is_empty() {
        return false;
    }
    match placeholder {
        Some(placeholder) => match json.pointer_mut(&pointer) {
            Some(value) if *value != placeholder => {
                *value = placeholder;
                true
            }
            _ => false,
        },
        None => {
            let (parent, last) = pointer.rsplit_once('/').expect("a non-empty pointer");
            let last = last.replace("~1", "/").replace("~0", "~");
            match json.pointer_mut(parent) {
                Some(serde_json::Value::Object(map)) => map.remove(&last).is_some(),
                Some(serde_json::Value::Array(items)) => match last.parse::<usize>() {
                    Ok(i) if i < items.len() => {
                        items.remove(i);
                        true
                    }
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

/// A typed-reading error (wrong type, missing field) as a finding at the right field.
fn type_finding(err: &serde_path_to_error::Error<serde_json::Error>, item: &Node) -> Finding {
    let mut field = FieldPath::default();
    for segment in err.path().iter() {
        match segment {
            serde_path_to_error::Segment::Map { key } => field.0.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => field.0.push(Segment::Index(*index)),
            _ => {}
        }
    }
    let inner = err.inner().to_string();
    let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
    if let Some(missing) = inner
        .strip_prefix("missing field `")
        .and_then(|s| s.strip_suffix('`'))
    {
        let place = if field.is_empty() {
            "the job list item".to_owned()
        } else {
            format!("`{field}`")
        };
        let example = match missing {
            "job" => "- job:\n    name: my-job\n    ...",
            "name" => "name: my-job",
            "git" => "git:\n  url: git@github.com:org/repo.git",
            "url" => "url: git@github.com:org/repo.git",
            "run_command" => "run_command: make test",
            "branches" => "branches: [main]",
            _ => "",
        };
        let help = if example.is_empty() {
            format!("add `{missing}`")
        } else {
            format!("add `{example}`")
        };
        return Finding::error(
            "missing-field",
            field,
            format!("missing required field `{missing}` in {place}"),
        )
        .help(help)
        .at_key();
    }
    let value = locate_node(item, &field);
    let found = match value {
        Some(node) if inner.starts_with("invalid value") => node
            .as_str()
            .map_or(node.kind_name().to_owned(), |t| format!("`{t}`")),
        Some(node) => node.kind_name().to_owned(),
        None => "nothing".to_owned(),
    };
    let found = found.as_str();
    if let Some(expected) = inner.split(", expected ").nth(1) {
        let expected = match expected {
            e if e.starts_with("struct ") => "a map of fields",
            "a sequence" => "a list",
            "u32" | "u64" => "a whole number, 0 or more",
            "i64" | "i32" => "a whole number",
            "a string" => "a string",
            other => other,
        };
        let help = match (expected, found) {
            ("a string", "a number" | "a boolean") => match value.and_then(Node::as_str) {
                Some(text) => format!(
                    "put the value in quotes: `{}`",
                    serde_json::Value::String(text.to_owned())
                ),
                None => "put the value in quotes".to_owned(),
            },
            (_, "null") => "write a value after the colon, or remove the key".to_owned(),
            ("a list", "a string") => "write a list: `- item` per line, or `[a, b]`".to_owned(),
            ("a map of fields", _) => "write the fields indented below the key".to_owned(),
            ("a map", _) => "write `name: value` lines indented below the key".to_owned(),
            _ => format!("write {expected} here"),
        };
        return Finding::error(
            "wrong-type",
            field.clone(),
            format!("`{field}` must be {expected}, not {found}"),
        )
        .help(help);
    }
    let (message, help) = inner
        .split_once(crate::model::HELP_SEPARATOR)
        .unwrap_or((&inner, "see docs/job-spec.md for the allowed values"));
    Finding::error(
        "invalid-value",
        field.clone(),
        format!("`{field}`: {message}"),
    )
    .help(help)
}

fn locate_node<'n>(node: &'n Node, path: &FieldPath) -> Option<&'n Node> {
    let mut current = node;
    for segment in &path.0 {
        current = match (segment, &current.value) {
            (Segment::Key(key), Value::Map(_)) => current.get(key)?,
            (Segment::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

/// The position of a field: its value, or its key when `at_key`; the deepest existing
/// parent when the field is absent.
fn locate(node: &Node, path: &FieldPath, at_key: bool) -> Pos {
    let mut current = node;
    let mut key_pos = node.pos;
    for (depth, segment) in path.0.iter().enumerate() {
        let last = depth + 1 == path.0.len();
        match (segment, &current.value) {
            (Segment::Key(key), Value::Map(_)) => match current.entry(key) {
                Some((k, v)) => {
                    key_pos = k.pos;
                    current = v;
                    if last {
                        return if at_key { k.pos } else { v.pos };
                    }
                }
                None => return key_pos,
            },
            (Segment::Index(i), Value::Seq(items)) => match items.get(*i) {
                Some(item) => {
                    key_pos = item.pos;
                    current = item;
                }
                None => return key_pos,
            },
            _ => return key_pos,
        }
    }
    if at_key {
        key_pos
    } else {
        current.pos
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
