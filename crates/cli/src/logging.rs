//! What `kubeci serve` says on stderr: `kubeci: message` lines for people, or one JSON
//! object per line (`--log-format json`) for a log pipeline (Loki, Elasticsearch, Cloud
//! Logging).

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `kubeci: message`.
    Text,
    /// `{"time":"…","level":"info","target":"kubeci_k8s::controller","message":"…"}`.
    Json,
}

struct Logger {
    format: LogFormat,
}

impl log::Log for Logger {
    /// kubeci's own messages from `info`, other crates' from `warn`.
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let threshold = if metadata.target().starts_with("kubeci") {
            log::Level::Info
        } else {
            log::Level::Warn
        };
        metadata.level() <= threshold
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = line(self.format, record, jiff::Timestamp::now());
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    fn flush(&self) {}
}

/// One record as a line of `format`.
fn line(format: LogFormat, record: &log::Record<'_>, now: jiff::Timestamp) -> String {
    match format {
        LogFormat::Text => format!("kubeci: {}", record.args()),
        LogFormat::Json => serde_json::json!({
            "time": now.to_string(),
            "level": record.level().as_str().to_ascii_lowercase(),
            "target": record.target(),
            "message": record.args().to_string(),
        })
        .to_string(),
    }
}

/// Sends the `log` records of every crate to stderr in `format`.
pub fn init(format: LogFormat) {
    if log::set_boxed_logger(Box::new(Logger { format })).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_as_text_or_as_one_json_object_per_line() {
        let now: jiff::Timestamp = "2026-11-24T01:02:03Z".parse().unwrap();
        let args = format_args!("build 3 of ci/web: \"quoted\"\nand a second line");
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("kubeci_k8s::controller")
            .build();
        assert_eq!(
            line(LogFormat::Text, &record, now),
            "kubeci: build 3 of ci/web: \"quoted\"\nand a second line"
        );
        let json = line(LogFormat::Json, &record, now);
        assert!(!json.contains('\n'), "one line: {json}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({
                "time": "2026-11-24T01:02:03Z",
                "level": "warn",
                "target": "kubeci_k8s::controller",
                "message": "build 3 of ci/web: \"quoted\"\nand a second line",
            })
        );
    }
}
