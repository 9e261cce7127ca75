//! Reading one source's documents: each YAML document as a bare job list or a Kubernetes
//! object (a job ConfigMap, a `List` of them, or something else, skipped), each job item
//! into its types and validated, every finding placed in the file.

use sha2::{Digest, Sha256};

use crate::diagnostic::{Diagnostic, FieldPath, Finding, Severity};
use crate::validate::{self, Context};
use crate::yaml::{self, Key, Node, Pos, PosMap, Value};

use super::typed::{check_keys, locate, read_typed, schema};
use super::{human_size, LoadOptions, LoadReport, LoadedJob, ObjectRef, JOB_KEY, MAX_JOB_BYTES};

/// Reads the documents of one source, `file`, with `options`.
pub(super) struct Reader<'a> {
    pub(super) file: &'a str,
    pub(super) options: &'a LoadOptions,
}

impl Reader<'_> {
    pub(super) fn diagnostic(
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
            source_line: None,
        }
    }

    /// One top-level document: a job list, a Kubernetes object, or a `List` of objects.
    pub(super) fn document(&self, node: &Node, whole_text: &str, report: &mut LoadReport) {
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

    /// A labelled ConfigMap that cannot be read is still a declared job: it is reported
    /// as an invalid one, so that it is shown with its error.
    pub(super) fn push_invalid(
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

    pub(super) fn empty_job(
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
            spec_hash: hex::encode(Sha256::digest(source.as_bytes())),
            source,
            chart_version,
            diagnostics: Vec::new(),
        }
    }

    /// The job in a ConfigMap's `job.yaml` string.
    pub(super) fn embedded_job(
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
    pub(super) fn job_list(
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
        if let Some(item) = self.first_item(root, source, object, &mut job.diagnostics) {
            self.read_item(item, object, &mut job);
        }
        job
    }

    /// The list's first item, which holds the job, with a warning for each other item;
    /// `None`, with the error, when the list holds no job.
    fn first_item<'n>(
        &self,
        root: &'n Node,
        source: &str,
        object: Option<&ObjectRef>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<&'n Node> {
        let mut push = |severity, code, pos: Pos, message: String, help: &str| {
            diagnostics.push(self.diagnostic(severity, code, pos, object, message, help));
        };
        let error = Severity::Error;
        if source.len() > MAX_JOB_BYTES {
            let message = format!(
                "the job is {}; a ConfigMap holds at most {}",
                human_size(source.len()),
                human_size(MAX_JOB_BYTES)
            );
            let help = "shorten run_command: move long scripts into the repository and call them";
            push(error, "too-large", root.pos, message, help);
            return None;
        }
        let items = match &root.value {
            Value::Seq(items) if !items.is_empty() => items,
            Value::Seq(_) => {
                let help = "write `- job:` with the job's fields below";
                push(
                    error,
                    "empty",
                    root.pos,
                    "the job list is empty".into(),
                    help,
                );
                return None;
            }
            Value::Map(_) if root.get("job").is_some() => {
                let message = "`job:` must be the first item of a list".into();
                let help = "write `- job:` (with a dash): job.yaml is a list whose first item holds the job";
                push(error, "not-a-list", root.pos, message, help);
                return None;
            }
            _ => {
                let message = format!(
                    "job.yaml must be a list whose first item is `job:`, not {}",
                    root.kind_name()
                );
                let help = "write `- job:` with the job's fields below";
                push(error, "not-a-list", root.pos, message, help);
                return None;
            }
        };
        for (index, extra) in items.iter().enumerate().skip(1) {
            let name = extra
                .get("job")
                .and_then(|j| j.get("name"))
                .and_then(Node::as_str)
                .map_or_else(|| format!("item {}", index + 1), |n| format!("job `{n}`"));
            push(
                Severity::Warning,
                "extra-job",
                extra.pos,
                format!("{name} is ignored: one ConfigMap holds one job, the first of the list"),
                "give each job its own ConfigMap",
            );
        }
        items.first()
    }

    /// Reads the job item `original` into its types and validates it; every finding is
    /// placed in the file. The job is kept only when there is no error.
    fn read_item(&self, original: &Node, object: Option<&ObjectRef>, job: &mut LoadedJob) {
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
                builds_run: self.options.builds_run,
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
            job.job = Some(std::sync::Arc::new(parsed.job));
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
                source_line: None,
            });
        }
        if job.has_errors() {
            job.job = None;
        }
    }
}

/// A misspelt required key (`run_comand`) is reported as unknown with "did you mean
/// `run_command`?"; the resulting "missing `run_command`" would only repeat it.
pub(super) fn drop_missing_fields_explained_by_misspellings(findings: &mut Vec<Finding>) {
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
pub(super) fn chart_version(label: &str) -> Option<String> {
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
