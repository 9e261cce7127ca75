//! Findings about a job source: where (file, position, object, field), what, and how to fix.

use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The job cannot be used.
    Error,
    /// The job works, but something about it is risky or probably unintended.
    Warning,
    /// Information, such as an object that was skipped.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        })
    }
}

/// A path to a field inside `job.yaml`, such as `job.git.url` or `job.tolerations[0].effect`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn new(keys: &[&str]) -> FieldPath {
        FieldPath(keys.iter().map(|k| Segment::Key((*k).to_owned())).collect())
    }

    pub fn key(&self, key: &str) -> FieldPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> FieldPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn parent(&self) -> FieldPath {
        let mut path = self.clone();
        path.0.pop();
        path
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

impl Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A finding about one field of a job, before it is placed in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable identifier of the rule, e.g. `unknown-key`.
    pub code: &'static str,
    pub field: FieldPath,
    /// Points at the key rather than the value (for keys that are wrong or missing).
    pub at_key: bool,
    pub message: String,
    pub help: Option<String>,
}

impl Finding {
    pub fn error(code: &'static str, field: FieldPath, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            code,
            field,
            at_key: false,
            message: message.into(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, field: FieldPath, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(code, field, message)
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Finding {
        self.help = Some(help.into());
        self
    }

    pub fn at_key(mut self) -> Finding {
        self.at_key = true;
        self
    }
}

/// A finding placed in its source: what `kubeci lint` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The Kubernetes object, e.g. `ConfigMap default/start-helm-test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The field inside `job.yaml`, e.g. `job.git.url`.
    #[serde(skip_serializing_if = "FieldPath::is_empty")]
    pub field: FieldPath,
    /// Written out with the credentials of any URL in it hidden ([`shown`]).
    #[serde(serialize_with = "serialize_shown")]
    pub message: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_shown_option"
    )]
    pub help: Option<String>,
    /// The line of the source it points at, kept by the loader so it can be shown where
    /// the source is not at hand (a job's page).
    #[serde(skip)]
    pub source_line: Option<String>,
}

/// Keeps with each diagnostic about `file` the line of `text` it points at (at most 120
/// characters of it, with the credentials of URLs hidden before it is cut).
pub fn keep_source_lines(diagnostics: &mut [Diagnostic], file: &str, text: &str) {
    for d in diagnostics
        .iter_mut()
        .filter(|d| d.file == file && d.source_line.is_none())
    {
        d.source_line = text.lines().nth(d.line.saturating_sub(1)).map(|line| {
            crate::redact::redact_credentials(line)
                .chars()
                .take(120)
                .collect()
        });
    }
}

/// A diagnostic with the source line it points at (its own, else the line of `text`), as
/// rustc shows them: what `kubeci lint` prints, and a job's page shows.
///
/// Every text taken from the input (the line, names and values quoted in messages) is
/// [`shown`]: with the credentials of URLs hidden, and control and bidirectional-override
/// characters escaped (`\x1b`, `\u{202e}`), so a file's bytes never reach a terminal as
/// escape sequences.
pub fn render(d: &Diagnostic, text: Option<&str>) -> String {
    let mut out = format!("{}[{}]: {}\n", d.severity, d.code, shown(&d.message));
    let line_text = d
        .source_line
        .as_deref()
        .or_else(|| text.and_then(|t| t.lines().nth(d.line.saturating_sub(1))));
    let gutter = " ".repeat(d.line.to_string().len());
    let _ = writeln!(
        out,
        "{gutter}--> {}:{}:{}",
        printable(&d.file),
        d.line,
        d.column
    );
    if let Some(line) = line_text {
        // Credentials are hidden before the line is cut, so that no cut leaves a part of a
        // password that no longer looks like one.
        let line: String = crate::redact::redact_credentials(line)
            .chars()
            .take(120)
            .collect();
        let before: String = line.chars().take(d.column.saturating_sub(1)).collect();
        let _ = writeln!(out, "{gutter} |");
        let _ = writeln!(out, "{} | {}", d.line, printable(&line).trim_end());
        let _ = writeln!(
            out,
            "{gutter} | {}^",
            " ".repeat(printable(&before).chars().count().min(120))
        );
    }
    let mut context = Vec::new();
    if let Some(object) = &d.object {
        context.push(object.clone());
    }
    if !d.field.is_empty() {
        context.push(format!("field {}", d.field));
    }
    if !context.is_empty() {
        let _ = writeln!(out, "{gutter} = in: {}", printable(&context.join(", ")));
    }
    if let Some(help) = &d.help {
        let _ = writeln!(out, "{gutter} = help: {}", shown(help));
    }
    out
}

impl Diagnostic {
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }
}

impl fmt::Display for Diagnostic {
    /// One line per diagnostic plus its help, as compilers print them; text from the input
    /// is [`printable`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            printable(&self.file),
            self.line,
            self.column,
            self.severity,
            shown(&self.message)
        )?;
        if let Some(help) = &self.help {
            write!(f, " (help: {})", shown(help))?;
        }
        Ok(())
    }
}

/// A text from the input as kubeci shows it anywhere (a terminal, a page, the API, an
/// Event, the log): the credentials of every URL in it hidden (a message quoting a URL that
/// does not parse repeated its password — issue 27 finding 1), then [`printable`].
pub fn shown(text: &str) -> String {
    printable(&crate::redact::redact_credentials(text))
}

fn serialize_shown<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&crate::redact::redact_credentials(text))
}

fn serialize_shown_option<S: serde::Serializer>(
    text: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => serialize_shown(text, serializer),
        None => serializer.serialize_none(),
    }
}

/// `text` with every character that could act on a terminal escaped: C0 and C1 controls
/// but the line break (a tab shows as a space, keeping the caret's column; a carriage
/// return, which could overwrite what a line shows, is escaped) and the bidirectional
/// overrides that reorder what is shown.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\t' => out.push(' '),
            '\n' => out.push('\n'),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}
