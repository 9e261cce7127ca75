//! A YAML reader that keeps the position of every node and refuses hostile input.
//!
//! `serde`-style YAML loaders forget where a value came from; every kubeci error must
//! say file:line:column, so documents are first read into a tree of [`Node`]s that carry
//! their [`Pos`]. The reader refuses duplicate keys, non-scalar keys, nesting deeper than
//! [`Limits::max_depth`] and alias expansion beyond [`Limits::max_alias_nodes`] (the
//! "billion laughs" bomb), each with an error that points at the offending place.

use std::collections::HashMap;
use std::fmt;

use libyaml_safer::{EventData, Mark, Parser, ScalarStyle as LibStyle};

/// A position in a source file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// How a scalar was written; quoting decides whether `true` is a boolean or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    Quoted,
    Literal,
    Folded,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar {
        text: String,
        style: ScalarStyle,
        /// `!!str` and friends; only `str` changes how a plain scalar is read.
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    /// Entries in document order; keys are scalars, unique after merge keys are applied.
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub text: String,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

/// What went wrong in a YAML document, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
    pub help: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of sequences and mappings accepted.
    pub max_depth: usize,
    /// Most nodes that aliases may add by expansion, over a whole stream.
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_alias_nodes: 10_000,
        }
    }
}

/// Maps positions of a document nested in a string scalar (a ConfigMap's `job.yaml`) back
/// to the enclosing file.
#[derive(Debug, Clone, Copy)]
pub enum PosMap {
    /// The text is the file itself.
    Identity,
    /// The text is a literal block scalar: line `n` of the text is line `first_line + n - 1`
    /// of the file, indented by `indent` columns.
    Shifted { first_line: usize, indent: usize },
    /// Positions inside cannot be mapped exactly (quoted or folded scalar): everything
    /// points at the scalar.
    Collapsed(Pos),
}

impl PosMap {
    /// A document stored in `node`, a string scalar of the enclosing file.
    pub fn for_scalar(node: &Node) -> PosMap {
        match &node.value {
            Value::Scalar {
                style: ScalarStyle::Literal,
                ..
            } => PosMap::Shifted {
                first_line: node.pos.line,
                indent: node.pos.column - 1,
            },
            _ => PosMap::Collapsed(node.pos),
        }
    }

    pub fn apply(&self, pos: Pos) -> Pos {
        match *self {
            PosMap::Identity => pos,
            PosMap::Shifted { first_line, indent } => Pos {
                line: first_line + pos.line - 1,
                column: indent + pos.column,
            },
            PosMap::Collapsed(at) => at,
        }
    }
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, style: ScalarStyle::Plain, tag: None }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(k, v)| (k, v))
    }

    /// A short name of the node's YAML type, for messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
            Value::Scalar { .. } => match self.to_json() {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                _ => "a string",
            },
        }
    }

    /// The node as JSON, resolving plain scalars with the YAML 1.2 core schema.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Scalar { text, style, tag } => resolve_scalar(text, *style, tag.as_deref()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    fn count(&self) -> usize {
        match &self.value {
            Value::Scalar { .. } => 1,
            Value::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + v.count()).sum::<usize>(),
        }
    }
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> serde_json::Value {
    use serde_json::Value as J;
    if style != ScalarStyle::Plain || tag == Some("str") {
        return J::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return J::Null,
        "true" | "True" | "TRUE" => return J::Bool(true),
        "false" | "False" | "FALSE" => return J::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return J::from(n);
        }
        if let Ok(n) = text.parse::<u64>() {
            return J::from(n);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(n) = u64::from_str_radix(hex, 16) {
            return J::from(n);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(n) = u64::from_str_radix(oct, 8) {
            return J::from(n);
        }
    }
    if looks_like_float(text) {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return J::Number(n);
        }
    }
    J::String(text.to_owned())
}

/// YAML 1.2 core schema floats (`.inf`/`.nan` are left as strings: JSON has no such numbers).
fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits_ok = {
        let mut parts = mantissa.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        match frac {
            Some(f) => all_digits(int) && all_digits(f) && !(int.is_empty() && f.is_empty()),
            None => !int.is_empty() && all_digits(int),
        }
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    digits_ok && exponent_ok && (mantissa.contains('.') || exponent.is_some())
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: Option<String>,
        items: Vec<Node>,
    },
    Map {
        pos: Option<Pos>,
        start: Pos,
        anchor: Option<String>,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        merged: Vec<(Key, Node)>,
    },
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    anchors: HashMap<String, Node>,
    alias_nodes: usize,
}

/// Parses every document of a YAML stream. An empty document (`---` alone) is `None`.
///
/// The parser is libyaml's (a safe port), the engine behind the Go YAML reader that
/// Kubernetes uses, so kubeci accepts exactly what `kubectl apply` accepts.
pub fn parse_stream(
    text: &str,
    map: &PosMap,
    limits: Limits,
) -> Result<Vec<Option<Node>>, YamlError> {
    // libyaml-safer 0.3 panics on a block scalar that ends the text without a line break
    // (`run_command: |\n  make`, common in JSON-written ConfigMaps): end the text with one.
    // It changes no position, and a clipped block scalar keeps one final line break anyway.
    let ended;
    let text = if text.is_empty() || text.ends_with(['\n', '\r']) {
        text
    } else {
        ended = format!("{text}\n");
        ended.as_str()
    };
    // Should the reader panic on some other input, the input is refused, the caller lives.
    std::panic::catch_unwind(|| parse_ended_stream(text, map, limits)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(YamlError {
            pos: map.apply(Pos { line: 1, column: 1 }),
            message: format!("the YAML reader failed on this text ({why})"),
            help: "this is a bug in the reader, not in the file: report it with the file; meanwhile, rewrite the part the reader trips on".into(),
        })
    })
}

fn parse_ended_stream(
    text: &str,
    map: &PosMap,
    limits: Limits,
) -> Result<Vec<Option<Node>>, YamlError> {
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut builder = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
    };
    let mut documents = Vec::new();
    let mut current: Option<Node> = None;
    loop {
        let event = parser.parse().map_err(|e| parse_error(&e, text, map))?;
        let pos = map.apply(to_pos(event.start_mark));
        let finished = match event.data {
            EventData::StreamStart { .. } => None,
            EventData::StreamEnd => break,
            EventData::DocumentStart { .. } => {
                current = None;
                None
            }
            EventData::DocumentEnd { .. } => {
                documents.push(current.take().filter(|n| !n.is_null()));
                builder.anchors.clear();
                None
            }
            EventData::Scalar {
                anchor,
                tag,
                value,
                style,
                ..
            } => {
                let style = match style {
                    LibStyle::SingleQuoted | LibStyle::DoubleQuoted => ScalarStyle::Quoted,
                    LibStyle::Literal => ScalarStyle::Literal,
                    LibStyle::Folded => ScalarStyle::Folded,
                    _ => ScalarStyle::Plain,
                };
                let pos = if style == ScalarStyle::Literal {
                    map.apply(block_content_start(text, event.start_mark))
                } else {
                    pos
                };
                let node = Node {
                    value: Value::Scalar {
                        text: value,
                        style,
                        tag: tag.map(|t| t.trim_start_matches("tag:yaml.org,2002:").to_owned()),
                    },
                    pos,
                };
                builder.remember(anchor, &node);
                Some(node)
            }
            EventData::Alias { anchor } => Some(builder.alias(&anchor, pos)?),
            EventData::SequenceStart { anchor, .. } => {
                builder.push(
                    Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    },
                    pos,
                )?;
                None
            }
            EventData::MappingStart { anchor, .. } => {
                builder.push(
                    Frame::Map {
                        pos: None,
                        start: pos,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        merged: Vec::new(),
                    },
                    pos,
                )?;
                None
            }
            EventData::SequenceEnd | EventData::MappingEnd => Some(builder.pop()?),
        };
        if let Some(node) = finished {
            if let Some(root) = builder.add(node)? {
                current = Some(root);
            }
        }
    }
    Ok(documents)
}

fn to_pos(mark: Mark) -> Pos {
    Pos {
        line: usize::try_from(mark.line).unwrap_or(usize::MAX - 1) + 1,
        column: usize::try_from(mark.column).unwrap_or(usize::MAX - 1) + 1,
    }
}

/// Where the text of a literal block (`|`) starts: the first non-blank line after the
/// indicator, at its indentation.
fn block_content_start(text: &str, indicator: Mark) -> Pos {
    let indicator_line = usize::try_from(indicator.line).unwrap_or(usize::MAX - 1);
    let start = usize::try_from(indicator.index).map_or(text.len(), |i| i.min(text.len()));
    let after = text[start..]
        .find('\n')
        .map_or(text.len(), |i| start + i + 1);
    let indent = text[after..]
        .split('\n')
        .find(|l| !l.trim().is_empty())
        .map_or(0, |l| l.len() - l.trim_start_matches(' ').len());
    Pos {
        line: indicator_line + 2,
        column: indent + 1,
    }
}

fn parse_error(error: &libyaml_safer::Error, text: &str, map: &PosMap) -> YamlError {
    let lines: Vec<&str> = text.split('\n').collect();
    // An unclosed quote or bracket is reported at the end of the text; where it was
    // opened is more useful.
    let mark = match error.context_mark() {
        Some(context) if error.problem().contains("unexpected end of stream") => context,
        _ => error.problem_mark().unwrap_or_default(),
    };
    let pos = to_pos(mark);
    let at = lines
        .get(pos.line - 1)
        .and_then(|l| l.chars().nth(pos.column - 1));
    let line_starts_with_tab = lines
        .get(pos.line - 1)
        .is_some_and(|l| l.trim_start_matches(' ').starts_with('\t'));
    let problem = error.problem();
    let (message, help) = if at == Some('\t')
        || (line_starts_with_tab && problem.contains("cannot start any token"))
    {
        (
            "a tab character is used for indentation".to_owned(),
            "YAML indents with spaces only: replace the tab with spaces".to_owned(),
        )
    } else if error.kind() == libyaml_safer::ErrorKind::Reader {
        (
            format!("the text cannot be read: {problem}"),
            "save the file as UTF-8 without control characters".to_owned(),
        )
    } else {
        let context = error.context().map(|c| format!(" {c}")).unwrap_or_default();
        (
            format!("invalid YAML: {problem}{context}"),
            match problem {
                p if p.contains("mapping values are not allowed") => {
                    "a `key: value` cannot follow a value on the same line: quote the value if it contains `: `, or fix the indentation".to_owned()
                }
                p if p.contains("did not find expected key") || p.contains("did not find expected '-'") => {
                    "check that this line is indented like the lines of the same level above it".to_owned()
                }
                p if p.contains("found unexpected end of stream") => {
                    "a quote or bracket is not closed".to_owned()
                }
                _ => "check the indentation, quotes and brackets at this place".to_owned(),
            },
        )
    };
    YamlError {
        pos: map.apply(pos),
        message,
        help,
    }
}

impl Builder {
    fn push(&mut self, frame: Frame, pos: Pos) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(YamlError {
                pos,
                message: format!(
                    "the YAML is nested more than {} levels deep",
                    self.limits.max_depth
                ),
                help: "a job needs only a few levels of nesting: look for unbalanced `[` or `{`"
                    .into(),
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    fn remember(&mut self, anchor: Option<String>, node: &Node) {
        if let Some(anchor) = anchor {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn alias(&mut self, name: &str, pos: Pos) -> Result<Node, YamlError> {
        let Some(target) = self.anchors.get(name) else {
            return Err(YamlError {
                pos,
                message: format!(
                    "alias `*{name}` refers to an anchor that is not defined before it"
                ),
                help: "define the anchor with `&name` before using `*name`".into(),
            });
        };
        self.alias_nodes += target.count();
        if self.alias_nodes > self.limits.max_alias_nodes {
            return Err(YamlError {
                pos,
                message: format!(
                    "YAML aliases expand to more than {} nodes (an alias bomb)",
                    self.limits.max_alias_nodes
                ),
                help: "write the values out instead of nesting aliases of aliases".into(),
            });
        }
        let mut node = target.clone();
        node.pos = pos;
        Ok(node)
    }

    fn pop(&mut self) -> Result<Node, YamlError> {
        let frame = self
            .stack
            .pop()
            .expect("the parser balances start and end events");
        let (node, anchor) = match frame {
            Frame::Seq { pos, anchor, items } => (
                Node {
                    value: Value::Seq(items),
                    pos,
                },
                anchor,
            ),
            Frame::Map {
                pos,
                start,
                anchor,
                mut entries,
                merged,
                ..
            } => {
                for (key, value) in merged {
                    if !entries.iter().any(|(k, _)| k.text == key.text) {
                        entries.push((key, value));
                    }
                }
                (
                    Node {
                        value: Value::Map(entries),
                        pos: pos.unwrap_or(start),
                    },
                    anchor,
                )
            }
        };
        self.remember(anchor, &node);
        Ok(node)
    }

    /// Adds a finished node to the enclosing collection; returns it if it is a root.
    fn add(&mut self, node: Node) -> Result<Option<Node>, YamlError> {
        match self.stack.last_mut() {
            None => Ok(Some(node)),
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(None)
            }
            Some(Frame::Map {
                pos,
                entries,
                pending_key,
                merged,
                ..
            }) => {
                let Some(key) = pending_key.take() else {
                    let text = match &node.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => {
                            return Err(YamlError {
                                pos: node.pos,
                                message: format!(
                                    "a map key must be a plain word, not {}",
                                    node.kind_name()
                                ),
                                help: "write the key as a string, e.g. `name: value`".into(),
                            })
                        }
                    };
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.text == text) {
                        return Err(YamlError {
                            pos: node.pos,
                            message: format!(
                                "duplicate key `{text}` (first defined at line {})",
                                first.pos.line
                            ),
                            help:
                                "a map keeps only one value per key: remove or rename one of them"
                                    .into(),
                        });
                    }
                    pos.get_or_insert(node.pos);
                    *pending_key = Some(Key {
                        text,
                        pos: node.pos,
                    });
                    return Ok(None);
                };
                if key.text == "<<" {
                    merge_into(merged, node)?;
                } else {
                    entries.push((key, node));
                }
                Ok(None)
            }
        }
    }
}

/// YAML merge keys (`<<: *base`), as Kubernetes' YAML reader supports them.
fn merge_into(merged: &mut Vec<(Key, Node)>, node: Node) -> Result<(), YamlError> {
    let pos = node.pos;
    let sources = match node.value {
        Value::Map(entries) => vec![entries],
        Value::Seq(items) => items
            .into_iter()
            .map(|item| match item.value {
                Value::Map(entries) => Ok(entries),
                _ => Err(item.pos),
            })
            .collect::<Result<Vec<_>, Pos>>()
            .map_err(merge_error)?,
        _ => return Err(merge_error(pos)),
    };
    for entries in sources {
        for (key, value) in entries {
            if !merged.iter().any(|(k, _)| k.text == key.text) {
                merged.push((key, value));
            }
        }
    }
    Ok(())
}

fn merge_error(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: "a merge key `<<` must be given a map or a list of maps".into(),
        help: "write `<<: *anchor` where the anchor names a map".into(),
    }
}

/// The position of byte `offset` of `text` (for errors found before YAML parsing).
pub fn pos_of_offset(text: &[u8], offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Pos { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Result<Node, YamlError> {
        parse_stream(text, &PosMap::Identity, Limits::default())
            .map(|mut docs| docs.remove(0).unwrap())
    }

    #[test]
    fn keys_and_values_keep_their_positions() {
        let root = parse_one("a: 1\nb:\n  c: |\n    hello\n  d: x\n").unwrap();
        let (key, b) = root.entry("b").unwrap();
        assert_eq!(key.pos, Pos { line: 2, column: 1 });
        assert_eq!(b.entry("d").unwrap().0.pos, Pos { line: 5, column: 3 });
        assert_eq!(b.get("c").unwrap().pos, Pos { line: 4, column: 5 });
    }

    #[test]
    fn a_block_scalar_at_the_very_end_of_the_text_reads() {
        // libyaml-safer 0.3 panicked on these (found by fuzzing).
        let node = parse_one("run_command: |\n  make test").unwrap();
        assert_eq!(node.to_json()["run_command"], "make test\n");
        for text in ["|\n -", "x: |\n  -", "a: >\n  folded", "- |\n  x"] {
            assert!(
                parse_stream(text, &PosMap::Identity, Limits::default()).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_the_second_one() {
        let err = parse_one("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 3, column: 1 });
        assert!(err
            .message
            .contains("duplicate key `a` (first defined at line 1)"));
    }

    #[test]
    fn quoting_decides_scalar_types() {
        let root = parse_one(
            "a: true\nb: \"true\"\nc: 12\nd: '12'\ne: 1.5\nf: ~\ng: !!str 7\nh: 1e3\ni: .5x\n",
        )
        .unwrap();
        let json = root.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a": true, "b": "true", "c": 12, "d": "12", "e": 1.5, "f": null, "g": "7", "h": 1000.0, "i": ".5x"})
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h"])
        {
            doc.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = parse_one(&doc).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = "- ".repeat(10_000) + "x\n";
        let err = parse_one(&deep).unwrap_err();
        assert!(err.message.contains("nested"), "{err:?}");
        let flow = "[".repeat(10_000);
        let err = parse_one(&flow).unwrap_err();
        assert!(err.message.contains("nested"), "{err:?}");
    }

    #[test]
    fn merge_keys_fill_in_missing_entries() {
        let root = parse_one("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\n").unwrap();
        assert_eq!(
            root.get("thing").unwrap().to_json(),
            serde_json::json!({"y": 3, "x": 1})
        );
    }

    #[test]
    fn literal_block_positions_map_back_to_the_file() {
        let outer = parse_one("data:\n  job.yaml: |\n    - job:\n        name: x\n").unwrap();
        let scalar = outer.get("data").unwrap().get("job.yaml").unwrap();
        let map = PosMap::for_scalar(scalar);
        let inner = parse_stream(scalar.as_str().unwrap(), &map, Limits::default()).unwrap();
        let root = inner[0].as_ref().unwrap();
        let Value::Seq(items) = &root.value else {
            panic!()
        };
        let (key, _) = items[0].get("job").unwrap().entry("name").unwrap();
        assert_eq!(key.pos, Pos { line: 4, column: 9 });
    }

    #[test]
    fn offsets_become_positions() {
        assert_eq!(pos_of_offset(b"ab\ncd\xffe", 5), Pos { line: 2, column: 3 });
    }
}
