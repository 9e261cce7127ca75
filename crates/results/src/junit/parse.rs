//! The reading itself: quick-xml reads each tag (bounded by a budget), this module reads
//! the text between tags ([`super::text`]) and keeps track of the open elements, the suites
//! and the case being read; a case is handed out when its `</testcase>` is read.

use std::io::Read;

use quick_xml::events::{BytesStart, Event};
use quick_xml::XmlVersion;

use crate::error::{JunitError, Position};
use crate::model::TestCase;

use super::case::{CaseDraft, Verdict};
use super::source::Source;
use super::text::{self, cut_to, read_error, TextBuf, TextEnd};
use super::JunitLimits;

/// What an open element is to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Testsuites,
    /// A `<testsuite>`; the length of the suite path before it.
    Testsuite(usize),
    Testcase,
    /// A child that says how the case went; whether it decides the case's outcome.
    Verdict(bool),
    /// A `<stackTrace>` in such a child.
    StackTrace(bool),
    /// `<system-out>` or `<system-err>` of a case.
    Output,
    /// Anything else: read, checked, not kept.
    Other,
}

struct Frame {
    kind: Kind,
    /// Its name, for an error message (cut at 64 bytes).
    name: String,
    opened_at_line: u64,
}

/// Longest element name an error message repeats.
const NAME_IN_MESSAGES: usize = 64;

pub(crate) struct Parser<'l, R: Read> {
    xml: quick_xml::Reader<Source<R>>,
    limits: &'l JunitLimits,
    frames: Vec<Frame>,
    suite_path: String,
    case: Option<CaseDraft>,
    cases: u64,
    /// The encoding the XML declaration names, when it is not UTF-8.
    declared: Option<String>,
    seen_root: bool,
    buf: Vec<u8>,
}

impl<'l, R: Read> Parser<'l, R> {
    pub(crate) fn new(reader: R, limits: &'l JunitLimits) -> Self {
        let mut xml = quick_xml::Reader::from_reader(Source::new(reader));
        xml.config_mut().check_end_names = true;
        Parser {
            xml,
            limits,
            frames: Vec::new(),
            suite_path: String::new(),
            case: None,
            cases: 0,
            declared: None,
            seen_root: false,
            buf: Vec::new(),
        }
    }

    /// Reads the whole file, handing out each case as it ends; how many there were.
    pub(crate) fn run(mut self, on_case: &mut dyn FnMut(TestCase)) -> Result<u64, JunitError> {
        self.skip_byte_order_mark()?;
        loop {
            let top_level = self.frames.is_empty();
            let kept = text_sink(&self.frames, &mut self.case);
            let end = text::read_text(self.xml.get_mut(), kept, top_level, &self.declared)
                .map_err(|e| self.after_root(e))?;
            if end == TextEnd::Eof {
                return self.at_end();
            }
            let source = self.xml.get_mut();
            let at = source.position();
            let ahead = source.peek(9).map_err(|e| read_error(at, e))?;
            let markup = match ahead {
                [b'<', b'!', b'[', b'C', b'D', b'A', b'T', b'A', b'['] => Markup::CData,
                [b'<', b'!', b'-', b'-', ..] => Markup::Comment,
                [b'<', b'!', rest @ ..]
                    if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"DOCTYPE") =>
                {
                    return Err(JunitError::Doctype { at })
                }
                [b'<', b'!', ..] => {
                    return Err(malformed(
                        at,
                        "markup `<!` that is neither a comment nor CDATA",
                    ))
                }
                _ => Markup::Tag,
            };
            match markup {
                Markup::CData if top_level => {
                    return Err(malformed(at, "a CDATA section outside every element"));
                }
                Markup::CData => {
                    source.advance(9);
                    let kept = text_sink(&self.frames, &mut self.case);
                    text::read_cdata(self.xml.get_mut(), kept, &self.declared)?;
                }
                Markup::Comment => {
                    source.advance(4);
                    text::skip_comment(source)?;
                }
                Markup::Tag => self.markup(at, on_case)?,
            }
        }
    }

    /// Text after the report's last element is no reason to call the file not XML.
    fn after_root(&self, error: JunitError) -> JunitError {
        match error {
            JunitError::NotXml { at, start } if self.seen_root => JunitError::Malformed {
                at,
                what: format!("text after the report's end (“{start}”)"),
            },
            error => error,
        }
    }

    fn skip_byte_order_mark(&mut self) -> Result<(), JunitError> {
        let source = self.xml.get_mut();
        let at = source.position();
        let start = source.peek(4).map_err(|e| read_error(at, e))?;
        let encoding = match start {
            [0xEF, 0xBB, 0xBF, ..] => {
                source.advance(3);
                return Ok(());
            }
            [0xFF, 0xFE, 0, 0] | [0, 0, 0xFE, 0xFF] => "UTF-32",
            [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] | [b'<', 0, ..] | [0, b'<', ..] => "UTF-16",
            _ => return Ok(()),
        };
        Err(JunitError::UnsupportedEncoding { encoding })
    }

    fn at_end(&mut self) -> Result<u64, JunitError> {
        let at = self.xml.get_mut().position();
        if let Some(frame) = self.frames.last() {
            return Err(JunitError::CutShort {
                at,
                open: frame.name.clone(),
                opened_at_line: frame.opened_at_line,
            });
        }
        if !self.seen_root {
            return Err(JunitError::Empty);
        }
        Ok(self.cases)
    }

    /// Reads one tag at `at` through quick-xml, within the tag budget.
    fn markup(
        &mut self,
        at: Position,
        on_case: &mut dyn FnMut(TestCase),
    ) -> Result<(), JunitError> {
        self.xml.get_mut().set_budget(self.limits.max_tag_bytes);
        let mut buf = std::mem::take(&mut self.buf);
        let read = self.xml.read_event_into(&mut buf);
        let over_budget = self.xml.get_mut().clear_budget();
        let result = match read {
            _ if over_budget => Err(JunitError::TagTooLong {
                at,
                limit: self.limits.max_tag_bytes,
            }),
            Err(error) => Err(self.xml_error(at, error)),
            Ok(Event::Start(tag)) => self.open(at, &tag),
            Ok(Event::Empty(tag)) => self.open(at, &tag).and_then(|()| self.close(on_case)),
            Ok(Event::End(_)) => self.close(on_case),
            Ok(Event::Decl(decl)) => {
                let encoding = decl.encoding().and_then(Result::ok);
                let encoding = encoding.map(|e| String::from_utf8_lossy(&e).into_owned());
                self.declared = encoding.filter(|e| !e.eq_ignore_ascii_case("utf-8"));
                Ok(())
            }
            Ok(Event::DocType(_)) => Err(JunitError::Doctype { at }),
            Ok(_) => Ok(()),
        };
        // A long tag's buffer is not kept for the rest of the file.
        if buf.capacity() <= 64 * 1024 {
            buf.clear();
            self.buf = buf;
        }
        result
    }

    fn xml_error(&mut self, at: Position, error: quick_xml::Error) -> JunitError {
        use quick_xml::errors::{IllFormedError, SyntaxError};
        let end = self.xml.get_mut().position();
        match error {
            quick_xml::Error::Io(io) => JunitError::Read {
                line: at.line,
                source: std::io::Error::new(io.kind(), io.to_string()),
            },
            quick_xml::Error::Syntax(syntax) if syntax != SyntaxError::InvalidBangMarkup => {
                // Every other syntax error is the input ending inside a tag.
                let (open, opened_at_line) = match self.frames.last() {
                    Some(frame) => (frame.name.clone(), frame.opened_at_line),
                    None => ("the first tag".into(), at.line),
                };
                JunitError::CutShort {
                    at: end,
                    open,
                    opened_at_line,
                }
            }
            quick_xml::Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
                let opened = self.frames.last().map_or(0, |f| f.opened_at_line);
                malformed(
                    at,
                    &format!("</{found}> closes <{expected}> (opened at line {opened})"),
                )
            }
            quick_xml::Error::IllFormed(IllFormedError::UnmatchedEndTag(name)) => {
                malformed(at, &format!("</{name}> closes no open element"))
            }
            other => malformed(at, &other.to_string()),
        }
    }

    /// An element opens (`<name …>`, or `<name …/>` before [`Parser::close`]).
    fn open(&mut self, at: Position, tag: &BytesStart<'_>) -> Result<(), JunitError> {
        if self.frames.len() >= self.limits.max_depth {
            return Err(JunitError::TooDeep {
                at,
                limit: self.limits.max_depth,
            });
        }
        let local = tag.local_name();
        let name = local.as_ref();
        let parent = self.frames.last().map(|f| f.kind);
        let kind = match (parent, name) {
            (None, b"testsuites") => Kind::Testsuites,
            (None | Some(Kind::Testsuites | Kind::Testsuite(_)), b"testsuite") => {
                self.open_suite(at, tag)?
            }
            (None, _) => {
                return Err(JunitError::NotJunit {
                    at,
                    root: element_name(name),
                })
            }
            (Some(Kind::Testsuites | Kind::Testsuite(_)), b"testcase") => {
                self.open_case(at, tag)?;
                Kind::Testcase
            }
            (Some(Kind::Testcase), _) => match Verdict::of(name) {
                Some(verdict) => {
                    let message = self.attribute(at, tag, b"message")?;
                    let kind = self.attribute(at, tag, b"type")?;
                    let case = self.case.as_mut().expect("a case is open");
                    Kind::Verdict(case.verdict(verdict, message, kind))
                }
                None => self.other_in_case(name),
            },
            (Some(Kind::Verdict(deciding)), b"stackTrace") => {
                if let Some(details) = self.case.as_mut().and_then(|c| c.details()) {
                    if deciding {
                        details.start_line();
                    }
                }
                Kind::StackTrace(deciding)
            }
            (Some(Kind::Verdict(_)), _) => self.other_in_case(name),
            _ => Kind::Other,
        };
        self.seen_root = true;
        self.frames.push(Frame {
            kind,
            name: element_name(name),
            opened_at_line: at.line,
        });
        Ok(())
    }

    /// `<system-out>`, `<system-err>` (output) or anything else in a case.
    fn other_in_case(&mut self, name: &[u8]) -> Kind {
        match (name, self.case.as_mut()) {
            (b"system-out" | b"system-err", Some(case)) => {
                case.output().start_line();
                Kind::Output
            }
            _ => Kind::Other,
        }
    }

    /// A suite opens: its name joins the path of suites its cases name, which is cut at
    /// the text limit like any name (every case holds a copy of it: suites nested deep
    /// with long names would make each case of a small report hold a megabyte).
    fn open_suite(&mut self, at: Position, tag: &BytesStart<'_>) -> Result<Kind, JunitError> {
        let before = self.suite_path.len();
        let limit = self.limits.max_text_bytes;
        if let Some(name) = self.attribute(at, tag, b"name")? {
            // A path already cut (longer than the limit with its `…`) takes no more.
            if !name.is_empty() && before <= limit {
                if before > 0 {
                    self.suite_path.push_str(" / ");
                }
                self.suite_path.push_str(&name);
                if self.suite_path.len() > limit {
                    self.suite_path = cut_to(&self.suite_path, limit);
                }
            }
        }
        Ok(Kind::Testsuite(before))
    }

    fn open_case(&mut self, at: Position, tag: &BytesStart<'_>) -> Result<(), JunitError> {
        if self.cases >= self.limits.max_cases {
            return Err(JunitError::TooManyCases {
                at,
                limit: self.limits.max_cases,
            });
        }
        let mut case = TestCase {
            suite: self.suite_path.clone(),
            ..TestCase::default()
        };
        let mut class = None;
        for attribute in tag.attributes() {
            let attribute = attribute.map_err(|e| malformed(at, &e.to_string()))?;
            let key = attribute.key.local_name();
            let field = match key.as_ref() {
                b"name" => &mut case.name,
                b"classname" => &mut case.classname,
                b"class" => class.get_or_insert_with(String::new),
                b"time" | b"file" | b"line" => {
                    let value = self.value(at, &attribute)?;
                    match key.as_ref() {
                        b"time" => {
                            case.time = value
                                .trim()
                                .parse()
                                .ok()
                                .filter(|t: &f64| t.is_finite() && *t >= 0.0)
                        }
                        b"file" => case.file = Some(value).filter(|f| !f.is_empty()),
                        _ => case.line = value.trim().parse().ok().filter(|n| *n > 0),
                    }
                    continue;
                }
                _ => continue,
            };
            *field = self.value(at, &attribute)?;
        }
        if case.classname.is_empty() {
            case.classname = class.unwrap_or_default();
        }
        self.case = Some(CaseDraft::new(case, self.limits.max_text_bytes));
        Ok(())
    }

    /// An attribute's value, references decoded, cut to the text limit.
    fn attribute(
        &self,
        at: Position,
        tag: &BytesStart<'_>,
        name: &[u8],
    ) -> Result<Option<String>, JunitError> {
        for attribute in tag.attributes() {
            let attribute = attribute.map_err(|e| malformed(at, &e.to_string()))?;
            if attribute.key.local_name().as_ref() == name {
                return self.value(at, &attribute).map(Some);
            }
        }
        Ok(None)
    }

    fn value(
        &self,
        at: Position,
        attribute: &quick_xml::events::attributes::Attribute<'_>,
    ) -> Result<String, JunitError> {
        use quick_xml::encoding::EncodingError;
        use quick_xml::escape::EscapeError;
        match attribute.normalized_value(XmlVersion::Implicit1_0) {
            Ok(value) => Ok(cut_to(&value, self.limits.max_text_bytes)),
            Err(quick_xml::Error::Encoding(EncodingError::Utf8(_))) => {
                Err(text::invalid_utf8(at, &self.declared))
            }
            Err(quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(_, name))) => {
                Err(JunitError::UnknownEntity { at, name })
            }
            Err(quick_xml::Error::Escape(EscapeError::UnterminatedEntity(_))) => {
                Err(JunitError::StrayAmpersand { at })
            }
            Err(quick_xml::Error::Escape(EscapeError::InvalidCharRef(e))) => {
                Err(JunitError::InvalidCharacterReference {
                    at,
                    reference: e.to_string(),
                })
            }
            Err(other) => Err(malformed(at, &other.to_string())),
        }
    }

    /// The innermost open element ends.
    fn close(&mut self, on_case: &mut dyn FnMut(TestCase)) -> Result<(), JunitError> {
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        match frame.kind {
            Kind::Testsuite(before) => self.suite_path.truncate(before),
            Kind::Testcase => {
                if let Some(case) = self.case.take() {
                    self.cases += 1;
                    on_case(case.finish());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// What comes at a `<`.
enum Markup {
    CData,
    Comment,
    Tag,
}

/// Where the text being read goes: the deciding child's details or the case's output.
fn text_sink<'c>(frames: &[Frame], case: &'c mut Option<CaseDraft>) -> Option<&'c mut TextBuf> {
    let kind = frames.last()?.kind;
    let case = case.as_mut()?;
    match kind {
        Kind::Verdict(true) | Kind::StackTrace(true) => case.details(),
        Kind::Output => Some(case.output()),
        _ => None,
    }
}

fn element_name(name: &[u8]) -> String {
    cut_to(&String::from_utf8_lossy(name), NAME_IN_MESSAGES)
}

fn malformed(at: Position, what: &str) -> JunitError {
    JunitError::Malformed {
        at,
        what: what.to_string(),
    }
}
