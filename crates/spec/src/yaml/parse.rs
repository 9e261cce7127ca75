//! Building the tree of positioned nodes from libyaml's events: anchors and aliases
//! (bounded), merge keys, duplicate and non-scalar keys, errors with their place.

use super::*;
use libyaml_safer::{EventData, Mark, Parser, ScalarStyle as LibStyle};
use std::collections::HashMap;

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

impl Frame {
    fn seq(pos: Pos, anchor: Option<String>) -> Frame {
        Frame::Seq {
            pos,
            anchor,
            items: Vec::new(),
        }
    }

    fn map(start: Pos, anchor: Option<String>) -> Frame {
        Frame::Map {
            pos: None,
            start,
            anchor,
            entries: Vec::new(),
            pending_key: None,
            merged: Vec::new(),
        }
    }
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
                let pos = match style {
                    LibStyle::Literal => map.apply(block_content_start(text, event.start_mark)),
                    _ => pos,
                };
                let node = scalar(value, style, tag, pos);
                builder.remember(anchor, &node);
                Some(node)
            }
            EventData::Alias { anchor } => Some(builder.alias(&anchor, pos)?),
            EventData::SequenceStart { anchor, .. } => {
                builder.push(Frame::seq(pos, anchor), pos)?;
                None
            }
            EventData::MappingStart { anchor, .. } => {
                builder.push(Frame::map(pos, anchor), pos)?;
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

/// A scalar node: its text, its style, its tag (without YAML's own prefix).
fn scalar(text: String, style: LibStyle, tag: Option<String>, pos: Pos) -> Node {
    let style = match style {
        LibStyle::SingleQuoted | LibStyle::DoubleQuoted => ScalarStyle::Quoted,
        LibStyle::Literal => ScalarStyle::Literal,
        LibStyle::Folded => ScalarStyle::Folded,
        _ => ScalarStyle::Plain,
    };
    Node {
        value: Value::Scalar {
            text,
            style,
            tag: tag.map(|t| t.trim_start_matches("tag:yaml.org,2002:").to_owned()),
        },
        pos,
    }
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
                _ if context.contains("while scanning an alias") => {
                    "a value starting with `*` is read as a YAML alias: quote it, e.g. `- \"**/junit*.xml\"`".to_owned()
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
