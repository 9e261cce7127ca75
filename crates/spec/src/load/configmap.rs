//! A Kubernetes object in a source: a `List` is opened, a job ConfigMap is read in
//! stages — its label, its names, its data, its `job.yaml` — and whatever refuses it at a
//! stage either skips it (not labelled) or declares it as an invalid job with the reason.

use crate::diagnostic::{Diagnostic, Severity};
use crate::yaml::{self, Key, Node, Pos, PosMap, Value};

use super::reader::Reader;
use super::{
    chart_version, missing_job_yaml, too_large, LoadReport, LoadedJob, ObjectRef, JOB_KEY,
    JOB_LABEL, MAX_JOB_BYTES,
};

/// Why a ConfigMap yields no job to read.
enum Refused {
    /// It is not a job's: a note, no job.
    Skipped(Box<Diagnostic>),
    /// It is a job's, but cannot be read: an invalid job with this error.
    Invalid(Box<Diagnostic>),
}

/// A job ConfigMap's `job.yaml` entry, found.
struct JobEntry<'n> {
    key: &'n Key,
    value: &'n Node,
    /// The whole `data` map.
    data: &'n Node,
}

impl Reader<'_> {
    pub(super) fn object(&self, node: &Node, report: &mut LoadReport) {
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
        let (object, chart_version) = self.configmap_ref(node);
        let entry = self
            .labelled(node, &object)
            .and_then(|()| self.names_valid(node, &object))
            .and_then(|()| self.job_entry(node, &object));
        match entry {
            Ok(entry) => {
                let job = self.configmap_job(&entry, &object, chart_version);
                report.jobs.push(job);
            }
            Err(Refused::Skipped(note)) => report.diagnostics.push(*note),
            Err(Refused::Invalid(error)) => {
                self.push_invalid(report, &object, node.pos, &chart_version, *error)
            }
        }
    }

    /// The ConfigMap's namespace (the default one when it names none) and name, and the
    /// version of the chart that shipped it.
    fn configmap_ref(&self, node: &Node) -> (ObjectRef, Option<String>) {
        let metadata = node.get("metadata");
        let text = |field: &str| metadata.and_then(|m| m.get(field)).and_then(Node::as_str);
        let namespace = text("namespace")
            .filter(|ns| !ns.is_empty())
            .unwrap_or(&self.options.default_namespace)
            .to_owned();
        let object = ObjectRef {
            kind: "ConfigMap".into(),
            namespace,
            name: text("name").unwrap_or("").to_owned(),
        };
        let chart = metadata
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.get("helm.sh/chart"))
            .and_then(Node::as_str)
            .and_then(chart_version);
        (object, chart)
    }

    /// Whether it carries the job label, as a string.
    fn labelled(&self, node: &Node, object: &ObjectRef) -> Result<(), Refused> {
        let label = node
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(|l| l.get(JOB_LABEL));
        match label.map(|l| (&l.value, l.pos)) {
            Some((Value::Scalar { text, style, .. }, pos)) if text == "true" => {
                if *style == yaml::ScalarStyle::Plain {
                    return Err(Refused::Invalid(Box::new(self.diagnostic(
                        Severity::Error,
                        "label-not-string",
                        pos,
                        Some(object),
                        format!("label `{JOB_LABEL}: true` is a boolean; Kubernetes label values are strings and the API server refuses this ConfigMap"),
                        "quote it: `ci-job-spec: \"true\"`",
                    ))));
                }
                Ok(())
            }
            _ => Err(Refused::Skipped(Box::new(self.diagnostic(
                Severity::Note,
                "not-labelled",
                node.pos,
                Some(object),
                format!("skipped {object}: it has no `{JOB_LABEL}: \"true\"` label"),
                "add the label if this ConfigMap holds a job",
            )))),
        }
    }

    /// The ConfigMap's own names: where they are refused, the job is shown invalid.
    fn names_valid(&self, node: &Node, object: &ObjectRef) -> Result<(), Refused> {
        let namespace = crate::names::check_dns_label(&object.namespace)
            .err()
            .map(|why| {
                format!(
                    "namespace `{}` is not valid: {why}",
                    object.namespace.escape_debug()
                )
            });
        let name = crate::names::check_dns_subdomain(&object.name)
            .err()
            .map(|why| format!("ConfigMap name `{}` is not valid: {why}", object.name));
        let checks = [
            (
                "namespace",
                "invalid-namespace",
                namespace,
                "a namespace is a DNS label: lowercase letters, digits and `-`, at most 63",
            ),
            (
                "name",
                "invalid-name",
                name,
                "use lowercase letters, digits, `-` and `.`",
            ),
        ];
        for (field, code, problem, help) in checks {
            if let Some(message) = problem {
                let pos = node
                    .get("metadata")
                    .and_then(|m| m.get(field))
                    .map_or(node.pos, |n| n.pos);
                let error =
                    self.diagnostic(Severity::Error, code, pos, Some(object), message, help);
                return Err(Refused::Invalid(Box::new(error)));
            }
        }
        Ok(())
    }

    /// Its `job.yaml`, within the size limit.
    fn job_entry<'n>(&self, node: &'n Node, object: &ObjectRef) -> Result<JobEntry<'n>, Refused> {
        let data_entry = node.entry("data");
        let data_pos = data_entry.map_or(node.pos, |(k, _)| k.pos);
        let entries = data_entry.and_then(|(_, d)| d.as_map()).unwrap_or_default();
        let total: usize = entries
            .iter()
            .map(|(k, v)| k.text.len() + v.as_str().map_or(0, str::len))
            .sum();
        let invalid = |code, pos: Pos, (message, help): (String, String)| {
            Refused::Invalid(Box::new(self.diagnostic(
                Severity::Error,
                code,
                pos,
                Some(object),
                message,
                &help,
            )))
        };
        if total > MAX_JOB_BYTES {
            let (message, help) = too_large(total);
            return Err(invalid("too-large", data_pos, (message, help.to_owned())));
        }
        let found = data_entry.and_then(|(_, d)| Some((d, d.entry(JOB_KEY)?)));
        let Some((data, (key, value))) = found else {
            let keys: Vec<&str> = entries.iter().map(|(k, _)| k.text.as_str()).collect();
            let (misspelt, help) = missing_job_yaml(&keys);
            let pos = misspelt
                .and_then(|k| entries.iter().find(|(key, _)| key.text == k))
                .map_or(data_pos, |(key, _)| key.pos);
            let message = format!("{object} is labelled as a job but has no `{JOB_KEY}` key");
            return Err(invalid("missing-job-yaml", pos, (message, help)));
        };
        Ok(JobEntry { key, value, data })
    }

    /// The job its `job.yaml` declares, with a warning for each other key.
    fn configmap_job(
        &self,
        entry: &JobEntry<'_>,
        object: &ObjectRef,
        chart_version: Option<String>,
    ) -> LoadedJob {
        let mut job = match &entry.value.value {
            Value::Scalar { text, .. } => self.embedded_job(
                text,
                PosMap::for_scalar(entry.value),
                entry.value.pos,
                entry.key,
                object,
                chart_version,
            ),
            _ => {
                let mut job =
                    self.empty_job(entry.value.pos, Some(object), String::new(), chart_version);
                job.diagnostics.push(self.diagnostic(
                    Severity::Error,
                    "job-yaml-not-string",
                    entry.key.pos,
                    Some(object),
                    format!(
                        "`{JOB_KEY}` holds {}; ConfigMap values are strings",
                        entry.value.kind_name()
                    ),
                    "write `job.yaml: |` and indent the job below it",
                ));
                job
            }
        };
        for (other, _) in entry.data.as_map().unwrap_or_default() {
            if other.text != JOB_KEY {
                job.diagnostics.push(self.diagnostic(
                    Severity::Warning,
                    "ignored-key",
                    other.pos,
                    Some(object),
                    format!(
                        "key `{}` is ignored: a job ConfigMap holds one job, in `{JOB_KEY}`",
                        other.text
                    ),
                    "move it into the job or into another ConfigMap",
                ));
            }
        }
        job
    }
}
