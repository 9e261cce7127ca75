//! `kubeci lint`: every problem of every job, as a compiler would report it.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use kubeci_spec::{Diagnostic, Severity};
use serde::Serialize;

use crate::output;
use crate::sources::{self, Source, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Files or directories to check (`-` reads standard input).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Human)]
    output: Format,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    source: SourceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    jobs: Vec<JsonJob<'a>>,
    diagnostics: Vec<&'a Diagnostic>,
    summary: Summary,
}

#[derive(Serialize)]
struct JsonJob<'a> {
    file: &'a str,
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    configmap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chart_version: Option<&'a str>,
    valid: bool,
}

#[derive(Serialize, Default)]
struct Summary {
    files: usize,
    jobs: usize,
    valid_jobs: usize,
    errors: usize,
    warnings: usize,
    notes: usize,
    skipped_objects: usize,
}

pub fn run(args: &LintArgs) -> Result<ExitCode> {
    let options = args.source.options();
    let mut sources = Vec::new();
    for path in &args.paths {
        for file in sources::expand(path)? {
            sources.push(sources::read(&file, &options)?);
        }
    }
    kubeci_spec::mark_duplicates(sources.iter_mut().flat_map(|s| s.report.jobs.iter_mut()));
    kubeci_spec::checkname::mark_taken(sources.iter_mut().flat_map(|s| s.report.jobs.iter_mut()));
    let mut summary = Summary {
        files: sources.len(),
        ..Summary::default()
    };
    for source in &sources {
        let report = &source.report;
        summary.jobs += report.jobs.len();
        summary.valid_jobs += report.jobs.iter().filter(|j| !j.has_errors()).count();
        summary.errors += report.count(Severity::Error);
        summary.warnings += report.count(Severity::Warning);
        summary.notes += report.count(Severity::Note);
        summary.skipped_objects += report.skipped_objects;
    }
    let failed = summary.errors > 0 || (args.strict && summary.warnings > 0);
    match args.output {
        Format::Human => output::print(&human(&sources, &summary))?,
        Format::Json => {
            let report = JsonReport {
                jobs: sources
                    .iter()
                    .flat_map(|s| s.report.jobs.iter())
                    .map(|j| JsonJob {
                        file: &j.file,
                        line: j.pos.line,
                        name: j.name.as_deref(),
                        namespace: &j.namespace,
                        configmap: j.configmap.as_ref().map(ToString::to_string),
                        chart_version: j.chart_version.as_deref(),
                        valid: !j.has_errors(),
                    })
                    .collect(),
                diagnostics: sorted(&sources),
                summary,
            };
            output::print(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// All diagnostics, in file order, then by position.
fn sorted(sources: &[Source]) -> Vec<&Diagnostic> {
    let mut all: Vec<&Diagnostic> = sources
        .iter()
        .flat_map(|s| s.report.all_diagnostics())
        .collect();
    all.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity).cmp(&(&b.file, b.line, b.column, b.severity))
    });
    all
}

fn human(sources: &[Source], summary: &Summary) -> String {
    let mut out = String::new();
    for diagnostic in sorted(sources) {
        let text = sources
            .iter()
            .find(|s| s.name == diagnostic.file)
            .map(|s| String::from_utf8_lossy(&s.bytes));
        out.push_str(&render_diagnostic(diagnostic, text.as_deref()));
        out.push('\n');
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let _ = write!(
        out,
        "checked {}: {} ({} valid), {}, {}",
        plural(summary.files, "file"),
        plural(summary.jobs, "job"),
        summary.valid_jobs,
        plural(summary.errors, "error"),
        plural(summary.warnings, "warning"),
    );
    if summary.skipped_objects > 0 {
        let _ = write!(
            out,
            ", {} skipped (not job ConfigMaps)",
            plural(summary.skipped_objects, "object")
        );
    }
    out.push('\n');
    out
}

/// A diagnostic with the source line it points at, as rustc shows them.
pub fn render_diagnostic(d: &Diagnostic, text: Option<&str>) -> String {
    kubeci_spec::diagnostic::render(d, text)
}
