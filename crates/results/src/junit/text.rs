//! Character data read straight from the [`Source`], not through quick-xml, so that a text of
//! any length costs a bounded buffer: text (with its references), `CDATA` sections and
//! comments. What is kept goes to a [`TextBuf`], which stops storing at its limit and skips
//! the rest.

use std::io::Read;

use crate::error::{JunitError, Position};

use super::source::Source;

/// A text kept up to `limit` bytes, cut on a character boundary (then `…` is added).
#[derive(Debug, Default)]
pub(crate) struct TextBuf {
    text: String,
    limit: usize,
    cut: bool,
}

impl TextBuf {
    pub(crate) fn new(limit: usize) -> Self {
        TextBuf {
            text: String::new(),
            limit,
            cut: false,
        }
    }

    pub(crate) fn push(&mut self, more: &str) {
        if self.cut {
            return;
        }
        let room = self.limit - self.text.len();
        if more.len() <= room {
            self.text.push_str(more);
        } else {
            self.text.push_str(&more[..floor_char_boundary(more, room)]);
            self.cut = true;
        }
    }

    /// What comes next starts on a line of its own (a second output, a stack trace after
    /// a description).
    pub(crate) fn start_line(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.push("\n");
        }
    }

    /// The text, with `…` when it was cut.
    pub(crate) fn finish(mut self) -> String {
        if self.cut {
            self.text.push('…');
        }
        self.text
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, with `…` when cut.
pub(crate) fn cut_to(text: &str, limit: usize) -> String {
    let mut kept = TextBuf::new(limit);
    kept.push(text);
    kept.finish()
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

/// What ended a run of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TextEnd {
    /// A `<` is next (not consumed).
    Markup,
    /// The input ended.
    Eof,
}

/// Validates UTF-8 across chunk boundaries: a character cut by the end of a chunk waits
/// in `pending` for the rest of its bytes. The answer does not depend on where chunks end.
#[derive(Default)]
pub(crate) struct Utf8Check {
    pending: [u8; 4],
    pending_len: usize,
}

/// Where bytes that are not UTF-8 begin.
#[derive(Debug, PartialEq, Eq)]
enum Invalid {
    /// In the character left incomplete by an earlier chunk.
    Pending,
    /// At this index of the bytes fed.
    At(usize),
}

impl Utf8Check {
    /// Feeds `bytes`, hands on what is valid UTF-8 so far to `keep`.
    fn feed(&mut self, mut bytes: &[u8], keep: &mut dyn FnMut(&str)) -> Result<(), Invalid> {
        if self.pending_len > 0 {
            let need = utf8_len(self.pending[0]) - self.pending_len;
            let take = need.min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(text) => keep(text),
                // Still incomplete, and valid so far.
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(Invalid::Pending),
            }
            self.pending_len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => keep(text),
            Err(e) => {
                let valid = e.valid_up_to();
                // Only the prefix checked valid is handed on (no UTF-8 check twice).
                keep(std::str::from_utf8(&bytes[..valid]).unwrap_or_default());
                let rest = &bytes[valid..];
                if e.error_len().is_some() {
                    return Err(Invalid::At(valid));
                }
                self.pending[..rest.len()].copy_from_slice(rest);
                self.pending_len = rest.len();
            }
        }
        Ok(())
    }

    /// Whether a character was left incomplete.
    fn incomplete(&self) -> bool {
        self.pending_len > 0
    }

    /// Where the character left incomplete begins, the reader being just past its bytes
    /// (at `at`): only its lead byte counted as a column.
    fn incomplete_at(&self, at: Position) -> Position {
        Position {
            column: at.column.saturating_sub(1).max(1),
            ..at
        }
    }

    /// Feeds `len` bytes at the reader's position: on invalid bytes, the reader is moved to
    /// them and the error says where they are.
    fn feed_at<R: Read>(
        &mut self,
        source: &mut Source<R>,
        fed: Result<(), Invalid>,
        len: usize,
        declared: &Option<String>,
    ) -> Result<(), JunitError> {
        match fed {
            Ok(()) => {
                source.advance(len);
                Ok(())
            }
            Err(Invalid::Pending) => Err(invalid_utf8(
                self.incomplete_at(source.position()),
                declared,
            )),
            Err(Invalid::At(bad)) => {
                source.advance(bad);
                Err(invalid_utf8(source.position(), declared))
            }
        }
    }
}

/// The length of the UTF-8 sequence `lead` begins, 0 if it begins none.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

/// Reads text up to the next `<` or the end, decoding references, into `keep` when there
/// is one. At the top level (`top_level`), outside every element, only whitespace may
/// stand: anything else is [`JunitError::NotXml`], at its first character.
pub(crate) fn read_text<R: Read>(
    source: &mut Source<R>,
    mut keep: Option<&mut TextBuf>,
    top_level: bool,
    declared: &Option<String>,
) -> Result<TextEnd, JunitError> {
    let mut check = Utf8Check::default();
    loop {
        let at = source.position();
        let chunk = source.chunk().map_err(|e| read_error(at, e))?;
        if chunk.is_empty() {
            if check.incomplete() {
                return Err(invalid_utf8(check.incomplete_at(at), declared));
            }
            return Ok(TextEnd::Eof);
        }
        let stop = memchr::memchr2(b'<', b'&', chunk);
        let stopped_at = stop.map(|i| chunk[i]);
        let run = &chunk[..stop.unwrap_or(chunk.len())];
        if top_level {
            // A reference is text too (`&lt;` outside every element).
            let visible = match stopped_at {
                Some(b'&') => &chunk[..run.len() + 1],
                _ => run,
            };
            if let Some(first) = visible.iter().position(|b| !b.is_ascii_whitespace()) {
                source.advance(first);
                let at = source.position();
                let ahead = source.peek(40).map_err(|e| read_error(at, e))?;
                let start = String::from_utf8_lossy(ahead);
                // Up to a tag or the line's end; a character the 40 bytes cut is left out.
                let start = start.trim_end_matches(char::REPLACEMENT_CHARACTER);
                let start = start.split(['<', '\n']).next().unwrap_or_default();
                let start = start.replace(|c: char| c.is_control(), " ");
                return Err(JunitError::NotXml { at, start });
            }
        }
        let len = run.len();
        let fed = check.feed(run, &mut |text| {
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(text);
            }
        });
        check.feed_at(source, fed, len, declared)?;
        let Some(stopped_at) = stopped_at else {
            continue;
        };
        if check.incomplete() {
            return Err(invalid_utf8(
                check.incomplete_at(source.position()),
                declared,
            ));
        }
        if stopped_at == b'<' {
            return Ok(TextEnd::Markup);
        }
        let c = read_reference(source)?;
        if let Some(kept) = keep.as_deref_mut() {
            kept.push(c.encode_utf8(&mut [0; 4]));
        }
    }
}

/// Reads a reference at `&`: XML's five predefined entities and character references;
/// anything else is refused (no entity of any other kind is ever expanded).
fn read_reference<R: Read>(source: &mut Source<R>) -> Result<char, JunitError> {
    let at = source.position();
    // `&#x10FFFF;` is the longest reference read; a name is cut at 32 bytes.
    let ahead = source.peek(34).map_err(|e| read_error(at, e))?;
    let Some(end) = ahead.iter().position(|b| *b == b';') else {
        return Err(JunitError::StrayAmpersand { at });
    };
    let body = String::from_utf8_lossy(&ahead[1..end]).into_owned();
    let c = match body.as_str() {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ if body.starts_with('#') => {
            let number = &body[1..];
            let code = match number.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => number.parse(),
            };
            let digits_only = number
                .trim_start_matches('x')
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
            match code.ok().filter(|_| digits_only).and_then(char::from_u32) {
                Some(c) if c != '\0' => c,
                _ => {
                    return Err(JunitError::InvalidCharacterReference {
                        at,
                        reference: body,
                    })
                }
            }
        }
        _ if !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')) =>
        {
            return Err(JunitError::UnknownEntity { at, name: body })
        }
        _ => return Err(JunitError::StrayAmpersand { at }),
    };
    source.advance(end + 1);
    Ok(c)
}

/// Reads a `CDATA` section's content after its `<![CDATA[`, through its `]]>`.
pub(crate) fn read_cdata<R: Read>(
    source: &mut Source<R>,
    mut keep: Option<&mut TextBuf>,
    declared: &Option<String>,
) -> Result<(), JunitError> {
    let opened_at_line = source.position().line;
    let mut check = Utf8Check::default();
    loop {
        let at = source.position();
        let chunk = source.chunk().map_err(|e| read_error(at, e))?;
        if chunk.is_empty() {
            return Err(JunitError::CutShort {
                at,
                open: "![CDATA[".into(),
                opened_at_line,
            });
        }
        let stop = memchr::memchr(b']', chunk);
        let run = &chunk[..stop.unwrap_or(chunk.len())];
        let len = run.len();
        let mut push = |text: &str| {
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(text);
            }
        };
        let fed = check.feed(run, &mut push);
        check.feed_at(source, fed, len, declared)?;
        if stop.is_some() {
            let at = source.position();
            if source.peek(3).map_err(|e| read_error(at, e))? == b"]]>" {
                if check.incomplete() {
                    return Err(invalid_utf8(check.incomplete_at(at), declared));
                }
                source.advance(3);
                return Ok(());
            }
            let fed = check.feed(b"]", &mut push);
            check.feed_at(source, fed, 1, declared)?;
        }
    }
}

/// Skips a comment after its `<!--`, through its `-->`.
pub(crate) fn skip_comment<R: Read>(source: &mut Source<R>) -> Result<(), JunitError> {
    let opened_at_line = source.position().line;
    loop {
        let at = source.position();
        let chunk = source.chunk().map_err(|e| read_error(at, e))?;
        if chunk.is_empty() {
            return Err(JunitError::CutShort {
                at,
                open: "!--".into(),
                opened_at_line,
            });
        }
        let len = chunk.len();
        match memchr::memchr(b'-', chunk) {
            None => source.advance(len),
            Some(i) => {
                source.advance(i);
                let at = source.position();
                if source.peek(3).map_err(|e| read_error(at, e))? == b"-->" {
                    source.advance(3);
                    return Ok(());
                }
                source.advance(1);
            }
        }
    }
}

pub(crate) fn read_error(at: Position, source: std::io::Error) -> JunitError {
    JunitError::Read {
        line: at.line,
        source,
    }
}

pub(crate) fn invalid_utf8(at: Position, declared: &Option<String>) -> JunitError {
    JunitError::InvalidUtf8 {
        at,
        declared: declared.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_text_is_cut_on_a_character_boundary() {
        let mut kept = TextBuf::new(5);
        kept.push("ab");
        kept.push("çdé"); // ç is 2 bytes: "abçd" is 5
        kept.push("more, skipped");
        assert_eq!(kept.finish(), "abçd…");
        assert_eq!(cut_to("é", 1), "…");
        assert_eq!(cut_to("short", 16), "short");
    }

    fn text_of(xml: &str) -> Result<String, JunitError> {
        let mut source = Source::new(xml.as_bytes());
        let mut kept = TextBuf::new(1024);
        read_text(&mut source, Some(&mut kept), false, &None)?;
        Ok(kept.finish())
    }

    #[test]
    fn references_are_xmls_five_and_characters_only() {
        assert_eq!(
            text_of("a &lt;b&gt; &amp; &quot;&apos; &#10;&#x41;<").unwrap(),
            "a <b> & \"' \nA"
        );
        let unknown = text_of("x &lol9; y").unwrap_err();
        assert!(
            matches!(&unknown, JunitError::UnknownEntity { name, at } if name == "lol9" && at.column == 3),
            "{unknown:?}"
        );
        assert!(matches!(
            text_of("fish & chips").unwrap_err(),
            JunitError::StrayAmpersand { .. }
        ));
        for bad in ["&#xD800;", "&#0;", "&#x110000;", "&#12a;", "&#-1;"] {
            assert!(
                matches!(
                    text_of(bad).unwrap_err(),
                    JunitError::InvalidCharacterReference { .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_found_where_it_is() {
        let mut source = Source::new(&b"ok\nab\xFFcd"[..]);
        let error = read_text(&mut source, None, false, &Some("ISO-8859-1".into()));
        let Err(JunitError::InvalidUtf8 { at, declared }) = error else {
            panic!("{error:?}");
        };
        assert_eq!(at, Position { line: 2, column: 3 });
        assert_eq!(declared.as_deref(), Some("ISO-8859-1"));
        // A character cut by the end of the input.
        let mut source = Source::new(&b"caf\xC3"[..]);
        assert!(read_text(&mut source, None, false, &None).is_err());
        // Text outside every element.
        let mut source = Source::new("\n  PASS src/x.test.js".as_bytes());
        let error = read_text(&mut source, None, true, &None).unwrap_err();
        let JunitError::NotXml { at, start } = error else {
            panic!("{error:?}");
        };
        assert_eq!(
            (at.line, at.column, start.as_str()),
            (2, 3, "PASS src/x.test.js")
        );
    }

    #[test]
    fn cdata_ends_at_its_own_end_only() {
        let mut source = Source::new("a]b]]c]]]>rest".as_bytes());
        let mut kept = TextBuf::new(64);
        read_cdata(&mut source, Some(&mut kept), &None).unwrap();
        assert_eq!(kept.finish(), "a]b]]c]");
        assert_eq!(source.peek(4).unwrap(), b"rest");
        let mut cut = Source::new("never ends".as_bytes());
        assert!(matches!(
            read_cdata(&mut cut, None, &None),
            Err(JunitError::CutShort { .. })
        ));
    }

    #[test]
    fn comments_are_skipped_to_their_end() {
        let mut source = Source::new("a - b -- c --->x".as_bytes());
        skip_comment(&mut source).unwrap();
        assert_eq!(source.peek(1).unwrap(), b"x");
    }
}
