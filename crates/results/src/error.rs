//! The crate's one error: why a report file could not be read, or not whole. Its text is
//! what a build's page shows beside the file's name, so each says where (line and column,
//! counted in characters from 1), what, and how to fix it.

use std::fmt;

/// A place in a report file: line and column, both from 1, the column in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a JUnit file was refused or read only in part. The cases read before the error
/// stay valid (a reader hands them out as it goes).
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    /// Nothing in the file but whitespace, comments or an XML declaration.
    #[error("no report in it: the file has no XML element (a test run that wrote no report?)")]
    Empty,

    /// Text where the first element should be: a log, JSON, HTML without a tag first.
    #[error(
        "not XML: it begins with text (“{start}”) at {at}, not an element; a JUnit report \
         begins with <testsuites> or <testsuite>"
    )]
    NotXml {
        at: Position,
        /// Its first characters, up to 40 bytes, a tag or the line's end.
        start: String,
    },

    /// A top-level element other than `<testsuites>` or `<testsuite>`.
    #[error(
        "not a JUnit report: its root element is <{root}> ({at}); JUnit XML's is \
         <testsuites> or <testsuite>"
    )]
    NotJunit { at: Position, root: String },

    /// A byte-order mark of an encoding other than UTF-8.
    #[error(
        "the file is {encoding}; kubeci reads JUnit reports in UTF-8: write the report in UTF-8"
    )]
    UnsupportedEncoding { encoding: &'static str },

    /// Bytes that are not UTF-8.
    #[error(
        "bytes that are not UTF-8 at {at}{declared}; kubeci reads JUnit reports in UTF-8: \
         write the report in UTF-8",
        declared = declared.as_deref().map(|d| format!(" (the file declares {d})")).unwrap_or_default()
    )]
    InvalidUtf8 {
        at: Position,
        /// The encoding the XML declaration names, if any.
        declared: Option<String>,
    },

    /// A `<!DOCTYPE …>`: the only place entities are declared, refused before it is read.
    #[error(
        "refused: a DOCTYPE declaration at {at}; JUnit reports have none, and kubeci expands \
         no entity but XML's five (&lt; &gt; &amp; &quot; &apos;) and character references"
    )]
    Doctype { at: Position },

    /// `&name;` for a name XML does not define.
    #[error(
        "&{name}; at {at} is not an entity XML defines; only &lt; &gt; &amp; &quot; &apos; and \
         character references such as &#10; are read (write a literal & as &amp;)"
    )]
    UnknownEntity { at: Position, name: String },

    /// A `&` that begins no reference (`a & b`).
    #[error("a & at {at} that begins no reference: write a literal & as &amp;")]
    StrayAmpersand { at: Position },

    /// `&#…;` that names no Unicode character.
    #[error("&{reference}; at {at} names no Unicode character")]
    InvalidCharacterReference { at: Position, reference: String },

    /// Elements nested deeper than [`JunitLimits::max_depth`](crate::JunitLimits).
    #[error(
        "elements nested more than {limit} deep at {at}; a JUnit report nests a few levels \
         (suites, a case, its failure)"
    )]
    TooDeep { at: Position, limit: usize },

    /// One tag (its name and attributes) longer than
    /// [`JunitLimits::max_tag_bytes`](crate::JunitLimits).
    #[error(
        "a tag longer than {limit} bytes at {at}; kubeci reads tags (with their attributes) up \
         to that size: a long message belongs in the element's text"
    )]
    TagTooLong { at: Position, limit: usize },

    /// More cases than [`JunitLimits::max_cases`](crate::JunitLimits).
    #[error(
        "more than {limit} test cases: the rest, from {at}, is not read; split the report \
         into several files"
    )]
    TooManyCases { at: Position, limit: u64 },

    /// The file ends inside an element: the run that wrote it was cut short.
    #[error(
        "cut short at {at}: the file ends inside <{open}> (opened at line {opened_at_line}); \
         the cases before it are kept — did the test run stop before it finished writing \
         the report?"
    )]
    CutShort {
        at: Position,
        open: String,
        opened_at_line: u64,
    },

    /// Not well-formed XML: a tag left open or closed twice, an attribute without quotes, …
    #[error("not well-formed XML at {at}: {what}")]
    Malformed { at: Position, what: String },

    /// Reading the file itself failed.
    #[error("reading the file failed at line {line}: {source}")]
    Read {
        line: u64,
        #[source]
        source: std::io::Error,
    },
}

impl JunitError {
    /// Whether reading the same file again may succeed: only when the bytes did not arrive
    /// ([`JunitError::Read`]). Every other error is in the file itself and stays.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JunitError::Read { .. })
    }

    /// Where in the file it stopped, when the error is at a place.
    pub fn position(&self) -> Option<Position> {
        use JunitError as E;
        match self {
            E::NotXml { at, .. }
            | E::NotJunit { at, .. }
            | E::InvalidUtf8 { at, .. }
            | E::Doctype { at }
            | E::UnknownEntity { at, .. }
            | E::StrayAmpersand { at }
            | E::InvalidCharacterReference { at, .. }
            | E::TooDeep { at, .. }
            | E::TooManyCases { at, .. }
            | E::TagTooLong { at, .. }
            | E::CutShort { at, .. }
            | E::Malformed { at, .. } => Some(*at),
            E::Empty | E::UnsupportedEncoding { .. } | E::Read { .. } => None,
        }
    }
}
