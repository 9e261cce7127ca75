//! A YAML reader that keeps the position of every node and refuses hostile input.
//!
//! `serde`-style YAML loaders forget where a value came from; every kubeci error must
//! say file:line:column, so documents are first read into a tree of [`Node`]s that carry
//! their [`Pos`]. The reader refuses duplicate keys, non-scalar keys, nesting deeper than
//! [`Limits::max_depth`] and alias expansion beyond [`Limits::max_alias_nodes`] (the
//! "billion laughs" bomb), each with an error that points at the offending place.

use std::fmt;

mod parse;
pub use parse::{parse_stream, pos_of_offset};

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

#[cfg(test)]
mod tests;
