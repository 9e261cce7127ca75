//! Metrics in Prometheus' text format: families of samples, rendered with their help and
//! type, label values escaped. Pure: the server gathers the samples and renders them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A metric family's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One family: its name, help, kind, and samples (labels → value).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn sample(mut self, labels: Vec<(&'static str, String)>, value: f64) -> Family {
        self.samples.push((labels, value));
        self
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text exposition of `families`.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for (labels, value) in &family.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            let _ = writeln!(out, "{}{labels} {value}", family.name);
        }
    }
    out
}

/// Counters by label values, incremented by the parts that see the events (webhook
/// deliveries, reconcile errors).
#[derive(Debug, Default)]
pub struct Counters {
    values: Mutex<BTreeMap<(&'static str, Vec<String>), u64>>,
}

impl Counters {
    pub fn increment(&self, name: &'static str, labels: &[&str]) {
        let key = (name, labels.iter().map(|l| (*l).to_owned()).collect());
        *self.values.lock().expect("lock").entry(key).or_insert(0) += 1;
    }

    /// The samples of counter `name`, labelled with `label_names`.
    pub fn samples(
        &self,
        name: &'static str,
        label_names: &[&'static str],
    ) -> Vec<(Vec<(&'static str, String)>, f64)> {
        self.values
            .lock()
            .expect("lock")
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|((_, values), count)| {
                (
                    label_names
                        .iter()
                        .copied()
                        .zip(values.iter().cloned())
                        .collect(),
                    *count as f64,
                )
            })
            .collect()
    }
}

/// Builds by (namespace, job, state), and queued builds, from the builds an engine holds.
pub fn build_families(builds: &[(String, String, &'static str)]) -> Vec<Family> {
    let mut by_state: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for (namespace, job, state) in builds {
        *by_state.entry((namespace, job, state)).or_insert(0) += 1;
    }
    let mut builds_family = Family::new(
        "kubeci_builds",
        "Builds kubeci holds, by job and state (retention removes old ones).",
        Kind::Gauge,
    );
    let mut queued = 0;
    for ((namespace, job, state), count) in by_state {
        if state == "queued" {
            queued += count;
        }
        builds_family = builds_family.sample(
            vec![
                ("namespace", namespace.to_owned()),
                ("job", job.to_owned()),
                ("state", state.to_owned()),
            ],
            count as f64,
        );
    }
    vec![
        builds_family,
        Family::new(
            "kubeci_queue_length",
            "Builds waiting for a concurrency slot.",
            Kind::Gauge,
        )
        .sample(Vec::new(), queued as f64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_as_prometheus_text_with_escaped_labels() {
        let builds = [
            ("ci".to_owned(), "web".to_owned(), "succeeded"),
            ("ci".to_owned(), "web".to_owned(), "succeeded"),
            ("ci".to_owned(), "web".to_owned(), "queued"),
            ("ci".to_owned(), "we\"ird\nname".to_owned(), "failed"),
        ];
        let text = render(&build_families(&builds));
        assert_eq!(
            text,
            "# HELP kubeci_builds Builds kubeci holds, by job and state (retention removes old ones).\n\
             # TYPE kubeci_builds gauge\n\
             kubeci_builds{namespace=\"ci\",job=\"we\\\"ird\\nname\",state=\"failed\"} 1\n\
             kubeci_builds{namespace=\"ci\",job=\"web\",state=\"queued\"} 1\n\
             kubeci_builds{namespace=\"ci\",job=\"web\",state=\"succeeded\"} 2\n\
             # HELP kubeci_queue_length Builds waiting for a concurrency slot.\n\
             # TYPE kubeci_queue_length gauge\n\
             kubeci_queue_length 1\n"
        );
        let counters = Counters::default();
        counters.increment("deliveries", &["pull_request", "200"]);
        counters.increment("deliveries", &["pull_request", "200"]);
        counters.increment("deliveries", &["push", "401"]);
        assert_eq!(
            counters.samples("deliveries", &["event", "status"]),
            [
                (
                    vec![
                        ("event", "pull_request".to_owned()),
                        ("status", "200".to_owned())
                    ],
                    2.0
                ),
                (
                    vec![("event", "push".to_owned()), ("status", "401".to_owned())],
                    1.0
                ),
            ]
        );
    }
}
