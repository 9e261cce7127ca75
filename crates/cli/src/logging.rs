//! What `kubeci serve` says on stderr, through `tracing`: `kubeci: message key=value`
//! lines for people, or one JSON object per line (`--log-format json`) for a log pipeline
//! (Loki, Elasticsearch, Cloud Logging). Either way a line carries the fields of its
//! event and of every span it happened in (a request's `request_id`, a build's
//! `namespace`, `job` and `build`), so nothing said in a field is lost to a person, and a
//! pipeline can filter on them.
//!
//! A `tracing-subscriber` `Registry` keeps the spans; the layer here writes the lines.
//! (tracing-subscriber's own JSON formatter nests the fields, names the time `timestamp`
//! and shows only the current span; this keeps the keys kubeci documented and flattens
//! every span's fields.) Records of crates that still write through `log` (rustls,
//! hyper-rustls) reach it through `tracing-log`.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `kubeci: message key=value …`.
    Text,
    /// `{"time":"…","level":"info","target":"kubeci_k8s::controller","message":"…",…}`.
    Json,
}

/// The keys every JSON line has; a field of the same name does not replace them.
const RESERVED: [&str; 4] = ["time", "level", "target", "message"];

/// Where finished lines go (stderr, or a test's buffer).
type Sink = Box<dyn Fn(&str) + Send + Sync>;

/// The layer that writes one line per event.
struct Lines {
    format: LogFormat,
    sink: Sink,
}

/// The fields recorded on a span so far, kept in its extensions.
#[derive(Default)]
struct SpanFields(Vec<(&'static str, Value)>);

/// Collects the fields of an event or a span; `message` apart when it is asked for.
struct Collect<'a> {
    message: Option<&'a mut Option<String>>,
    fields: &'a mut Vec<(&'static str, Value)>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name.starts_with("log.") {
            // tracing-log's copy of a `log` record's metadata, already in the line's own.
            return;
        }
        if name == "message" {
            if let Some(message) = self.message.as_deref_mut() {
                *message = Some(match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                });
                return;
            }
        }
        match self.fields.iter_mut().find(|(key, _)| *key == name) {
            Some((_, old)) => *old = value,
            None => self.fields.push((name, value)),
        }
    }
}

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }
}

impl<S> Layer<S> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanFields::default();
        attributes.record(&mut Collect {
            message: None,
            fields: &mut fields.0,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut Collect {
                message: None,
                fields: &mut fields.0,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // A `log` record's own level and target, not tracing-log's stand-ins.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut message = None;
        let mut fields = Vec::new();
        event.record(&mut Collect {
            message: Some(&mut message),
            fields: &mut fields,
        });
        // Innermost span first, so that of two fields of one name the inner one is kept.
        let mut spans = Vec::new();
        for span in ctx.event_scope(event).into_iter().flatten() {
            let mut kept = Vec::new();
            if let Some(own) = span.extensions().get::<SpanFields>() {
                for (name, value) in &own.0 {
                    let taken = fields.iter().chain(spans.iter().flatten());
                    if !taken.chain(&kept).any(|(key, _)| key == name) {
                        kept.push((*name, value.clone()));
                    }
                }
            }
            spans.push(kept);
        }
        fields.extend(spans.into_iter().rev().flatten());
        let line = Line {
            level: *metadata.level(),
            target: metadata.target(),
            message: message.as_deref().unwrap_or(""),
            fields: &fields,
        };
        (self.sink)(&line.format(self.format, jiff::Timestamp::now()));
    }
}

/// One event: its own fields, then its spans' (outermost first); each name once, the
/// event's or the innermost span's.
struct Line<'a> {
    level: Level,
    target: &'a str,
    message: &'a str,
    fields: &'a [(&'static str, Value)],
}

impl Line<'_> {
    fn format(&self, format: LogFormat, now: jiff::Timestamp) -> String {
        match format {
            LogFormat::Text => self.text(),
            LogFormat::Json => self.json(now),
        }
    }

    /// `kubeci: message key=value key="a value with spaces"`, as logfmt quotes.
    fn text(&self) -> String {
        let mut line = format!("kubeci: {}", self.message);
        for (name, value) in self.fields {
            let value = match value {
                Value::String(text) if needs_quotes(text) => format!("{text:?}"),
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let _ = write!(line, " {name}={value}");
        }
        line
    }

    /// One JSON object: the four keys every line has, then the fields in their order.
    fn json(&self, now: jiff::Timestamp) -> String {
        let quoted = |text: &str| Value::from(text).to_string();
        let mut line = format!(
            "{{\"time\":{},\"level\":{},\"target\":{},\"message\":{}",
            quoted(&now.to_string()),
            quoted(&self.level.as_str().to_ascii_lowercase()),
            quoted(self.target),
            quoted(self.message),
        );
        for (name, value) in self.fields {
            if !RESERVED.contains(name) {
                let _ = write!(line, ",{}:{value}", quoted(name));
            }
        }
        line.push('}');
        line
    }
}

/// Whether a text value must be quoted to read as one value.
fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

/// kubeci's own events from `info`, other crates' (kube, hyper, rustls…) from `warn`.
fn filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("kubeci", Level::INFO)
        .with_default(Level::WARN)
}

/// Sends the events of every crate, and the `log` records of those that use `log`, to
/// stderr in `format`.
pub fn init(format: LogFormat) {
    let sink: Sink = Box::new(|line| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
    let lines = Lines { format, sink };
    let installed = tracing_subscriber::registry()
        .with(lines.with_filter(filter()))
        .try_init();
    if installed.is_ok() {
        let _ = tracing_log::LogTracer::init_with_filter(log::LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The lines `f` logs in `format`, through the same layer and filter as `init`.
    fn logged(format: LogFormat, f: impl FnOnce()) -> Vec<String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let into = lines.clone();
        let layer = Lines {
            format,
            sink: Box::new(move |line| into.lock().unwrap().push(line.to_owned())),
        };
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter()));
        tracing::subscriber::with_default(subscriber, f);
        let lines = lines.lock().unwrap().clone();
        lines
    }

    fn build_event() {
        let request = tracing::info_span!(target: "kubeci_server", "request", request_id = 7u64, method = "POST");
        let _request = request.enter();
        let span = tracing::info_span!(target: "kubeci_engine::scheduler", "release", namespace = "ci", job = "web", build = 3u64);
        let _build = span.enter();
        let e = "no such Job \"web-3\"";
        tracing::warn!(target: "kubeci_engine::scheduler", error = %e, retry = true, "cannot update the build");
    }

    #[test]
    fn text_reads_as_before_with_the_fields_of_the_event_and_its_spans_after_the_message() {
        assert_eq!(
            logged(LogFormat::Text, build_event),
            [
                r#"kubeci: cannot update the build error="no such Job \"web-3\"" retry=true request_id=7 method=POST namespace=ci job=web build=3"#
            ]
        );
    }

    #[test]
    fn json_lines_carry_the_fields_of_the_event_and_its_spans() {
        let lines = logged(LogFormat::Json, build_event);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(!lines[0].contains('\n'), "one line: {}", lines[0]);
        let mut line: Value = serde_json::from_str(&lines[0]).unwrap();
        let time = line["time"].as_str().unwrap();
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
        line.as_object_mut().unwrap().remove("time");
        assert_eq!(
            line,
            serde_json::json!({
                "level": "warn",
                "target": "kubeci_engine::scheduler",
                "message": "cannot update the build",
                "request_id": 7,
                "method": "POST",
                "namespace": "ci",
                "job": "web",
                "build": 3,
                "error": "no such Job \"web-3\"",
                "retry": true,
            })
        );
        // Keys in order: the line's own, the event's, the outer span's, the inner's.
        let keys: Vec<&str> = lines[0]
            .split(",\"")
            .map(|part| part.trim_start_matches("{\"").split('"').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "time",
                "level",
                "target",
                "message",
                "error",
                "retry",
                "request_id",
                "method",
                "namespace",
                "job",
                "build"
            ]
        );
    }

    #[test]
    fn a_multi_line_message_stays_one_json_line_and_each_key_is_there_once() {
        let lines = logged(LogFormat::Json, || {
            let outer =
                tracing::info_span!(target: "kubeci_k8s", "pass", level = "mine", job = "outer");
            let _outer = outer.enter();
            let inner =
                tracing::info_span!(target: "kubeci_k8s", "build", job = "inner", build = 1u64);
            let _inner = inner.enter();
            tracing::info!(target: "kubeci_k8s", target = "mine", build = 2u64, "two\nlines: \"quoted\"");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(!lines[0].contains('\n'), "{}", lines[0]);
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["message"], "two\nlines: \"quoted\"");
        assert_eq!(line["level"], "info");
        assert_eq!(line["target"], "kubeci_k8s");
        assert_eq!(
            line["job"], "inner",
            "the inner span's field over the outer's"
        );
        assert_eq!(line["build"], 2, "the event's field over its span's");
        for key in ["\"job\"", "\"build\"", "\"level\"", "\"target\""] {
            assert_eq!(lines[0].matches(key).count(), 1, "{}", lines[0]);
        }
    }

    #[test]
    fn kubeci_speaks_from_info_other_crates_from_warn() {
        let lines = logged(LogFormat::Text, || {
            tracing::info!(target: "kubeci_local::workload", "ours");
            tracing::debug!(target: "kubeci_local::workload", "our details");
            tracing::info!(target: "kube_client::client", "theirs");
            tracing::warn!(target: "hyper_util::client", "their warning");
        });
        assert_eq!(lines, ["kubeci: ours", "kubeci: their warning"]);
    }

    #[test]
    fn log_records_of_other_crates_keep_their_target_and_level() {
        let record = |target: &'static str, level: log::Level, text: &'static str| {
            let args = format_args!("{text}");
            let record = log::Record::builder()
                .args(args)
                .level(level)
                .target(target)
                .build();
            tracing_log::format_trace(&record).unwrap();
        };
        let lines = logged(LogFormat::Json, || {
            record("rustls::client", log::Level::Info, "handshake");
            record("rustls::client", log::Level::Warn, "a bad certificate");
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["target"], "rustls::client");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["message"], "a bad certificate");
        assert!(!lines[0].contains("log."), "{}", lines[0]);
    }

    #[test]
    fn a_field_recorded_later_on_a_span_is_on_the_lines_after() {
        let lines = logged(LogFormat::Text, || {
            let span = tracing::info_span!(target: "kubeci_server", "request", status = tracing::field::Empty);
            let _span = span.enter();
            tracing::info!(target: "kubeci_server", "before");
            span.record("status", 404u64);
            tracing::info!(target: "kubeci_server", "after");
        });
        assert_eq!(lines, ["kubeci: before", "kubeci: after status=404"]);
    }

    #[test]
    fn text_values_are_quoted_only_when_they_would_not_read_as_one() {
        for (value, quoted) in [
            ("web", false),
            ("ci/web-3", false),
            ("", true),
            ("two words", true),
            ("a=b", true),
            ("say \"hi\"", true),
            ("tab\there", true),
        ] {
            assert_eq!(needs_quotes(value), quoted, "{value:?}");
        }
    }
}
