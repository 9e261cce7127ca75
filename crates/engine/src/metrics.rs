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
    Histogram,
}

/// Observations counted in buckets: `counts[i]` are those ≤ `bounds[i]` and above the
/// bound before; the last count is those above every bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }
}

/// One family: its name, help, kind, and samples (labels → value).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
    /// The histograms of a [`Kind::Histogram`] family, by labels.
    pub histograms: Vec<(Vec<(&'static str, String)>, Histogram)>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
            histograms: Vec::new(),
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

fn label_text(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", labels.join(","))
}

/// The text exposition of `families`.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for family in families {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let name = family.name;
        let _ = writeln!(out, "# HELP {name} {}", family.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in &family.samples {
            let _ = writeln!(out, "{name}{} {value}", label_text(labels));
        }
        for (labels, histogram) in &family.histograms {
            let mut cumulative = 0;
            let bounds = histogram.bounds.iter().map(|b| b.to_string());
            for (bound, count) in bounds
                .chain(std::iter::once("+Inf".to_owned()))
                .zip(&histogram.counts)
            {
                cumulative += count;
                let mut labels = labels.clone();
                labels.push(("le", bound));
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", label_text(&labels));
            }
            let labels = label_text(labels);
            let _ = writeln!(out, "{name}_sum{labels} {}", histogram.sum);
            let _ = writeln!(out, "{name}_count{labels} {cumulative}");
        }
    }
    out
}

/// A build as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildFact {
    pub namespace: String,
    pub job: String,
    pub state: crate::Phase,
    /// How long it ran, from start to finish, once it has finished.
    pub seconds: Option<f64>,
}

/// The bounds of the build duration histogram, in seconds: 10 s to 2 h.
pub const DURATION_BOUNDS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

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

/// The writes of the leader's passes that failed, by what they were doing
/// ([`crate::scheduler::RECONCILE_ERRORS`]).
pub fn reconcile_errors(counters: &Counters) -> Family {
    Family {
        samples: counters.samples(crate::scheduler::RECONCILE_ERRORS, &["action"]),
        ..Family::new(
            crate::scheduler::RECONCILE_ERRORS,
            "Writes of the leader's passes that failed (retried on the next pass).",
            Kind::Counter,
        )
    }
}

/// The gauge of builds still to archive.
pub const ARCHIVE_PENDING: &str = "kubeci_archive_pending";

/// How many builds the last pass left to archive (while the archive's store is
/// unreachable, every build that ended since), when builds are archived.
pub fn archive_pending(pending: u64) -> Family {
    Family {
        samples: vec![(Vec::new(), pending as f64)],
        ..Family::new(
            ARCHIVE_PENDING,
            "Builds the leader's last pass could not archive yet (archived on a later pass).",
            Kind::Gauge,
        )
    }
}

/// The gauge of build pods' uploads being written.
pub const COLLECTOR_UPLOADS: &str = "kubeci_collector_uploads";

/// How many files build pods' collectors are sending to this kubeci now (each holds a
/// slot: see `service::uploads`).
pub fn collector_uploads(writing: usize) -> Family {
    Family {
        samples: vec![(Vec::new(), writing as f64)],
        ..Family::new(
            COLLECTOR_UPLOADS,
            "Files build pods' collectors are sending to this kubeci now.",
            Kind::Gauge,
        )
    }
}

/// Builds by (namespace, job, state), queued builds, and how long finished builds ran,
/// from the builds an engine holds. Recomputed from the builds at each scrape (kubeci keeps
/// no state of its own): the duration histogram covers the builds retention keeps, so it
/// can shrink when old builds are deleted.
pub fn build_families(builds: &[BuildFact]) -> Vec<Family> {
    let mut by_state: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let mut durations: BTreeMap<(&str, &str), Histogram> = BTreeMap::new();
    for build in builds {
        *by_state
            .entry((&build.namespace, &build.job, build.state.as_str()))
            .or_insert(0) += 1;
        if let Some(seconds) = build.seconds {
            durations
                .entry((&build.namespace, &build.job))
                .or_insert_with(|| Histogram::new(DURATION_BOUNDS))
                .observe(seconds);
        }
    }
    let mut builds_family = Family::new(
        "kubeci_builds",
        "Builds kubeci holds, by job and state (retention removes old ones).",
        Kind::Gauge,
    );
    let mut queued = 0;
    for ((namespace, job, state), count) in by_state {
        if state == crate::Phase::Queued.as_str() {
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
        Family {
            histograms: durations
                .into_iter()
                .map(|((namespace, job), histogram)| {
                    (
                        vec![("namespace", namespace.to_owned()), ("job", job.to_owned())],
                        histogram,
                    )
                })
                .collect(),
            ..Family::new(
                "kubeci_build_duration_seconds",
                "How long finished builds ran, start to finish, by job (the builds kubeci holds).",
                Kind::Histogram,
            )
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Phase;

    #[test]
    fn families_render_as_prometheus_text_with_escaped_labels() {
        let build = |job: &str, state, seconds| BuildFact {
            namespace: "ci".into(),
            job: job.into(),
            state,
            seconds,
        };
        let builds = [
            build("web", Phase::Succeeded, Some(12.0)),
            build("web", Phase::Succeeded, Some(7200.5)),
            build("web", Phase::Queued, None),
            build("we\"ird\nname", Phase::Failed, Some(3.0)),
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
             kubeci_queue_length 1\n\
             # HELP kubeci_build_duration_seconds How long finished builds ran, start to finish, by job (the builds kubeci holds).\n\
             # TYPE kubeci_build_duration_seconds histogram\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"10\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"30\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"60\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"120\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"300\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"600\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"1200\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"1800\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"3600\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"7200\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"we\\\"ird\\nname\",le=\"+Inf\"} 1\n\
             kubeci_build_duration_seconds_sum{namespace=\"ci\",job=\"we\\\"ird\\nname\"} 3\n\
             kubeci_build_duration_seconds_count{namespace=\"ci\",job=\"we\\\"ird\\nname\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"10\"} 0\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"30\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"60\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"120\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"300\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"600\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"1200\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"1800\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"3600\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"7200\"} 1\n\
             kubeci_build_duration_seconds_bucket{namespace=\"ci\",job=\"web\",le=\"+Inf\"} 2\n\
             kubeci_build_duration_seconds_sum{namespace=\"ci\",job=\"web\"} 7212.5\n\
             kubeci_build_duration_seconds_count{namespace=\"ci\",job=\"web\"} 2\n"
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
