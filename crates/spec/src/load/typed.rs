//! A job item against the schema derived from the model: unknown keys (with suggestions),
//! values of the wrong type (all of them, in one run), and where each finding is in the
//! YAML.

use std::sync::OnceLock;

use crate::diagnostic::{FieldPath, Finding, Segment};
use crate::model::{json_schema, JobItem};
use crate::validate::suggest;
use crate::yaml::{Node, Pos, Value};

pub(super) fn schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(json_schema)
}

pub(super) fn resolve<'s>(
    mut schema: &'s serde_json::Value,
    root: &'s serde_json::Value,
) -> &'s serde_json::Value {
    for _ in 0..16 {
        let Some(reference) = schema.get("$ref").and_then(|r| r.as_str()) else {
            break;
        };
        let name = reference.trim_start_matches("#/$defs/");
        schema = root
            .pointer(&format!("/$defs/{name}"))
            .unwrap_or(&serde_json::Value::Null);
    }
    schema
}

/// The branch of `schema` (through `$ref` and `anyOf`) that describes a node of this shape.
pub(super) fn branch<'s>(
    schema: &'s serde_json::Value,
    root: &'s serde_json::Value,
    want: &str,
) -> Option<&'s serde_json::Value> {
    let schema = resolve(schema, root);
    let has = |s: &serde_json::Value| match want {
        "object" => s.get("properties").is_some() || s.get("additionalProperties").is_some(),
        _ => s.get("items").is_some(),
    };
    if has(schema) {
        return Some(schema);
    }
    schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(|v| v.as_array())?
        .iter()
        .find_map(|s| branch(s, root, want))
}

/// Reports keys the schema does not know, with suggestions, and removes them so that the
/// typed reading can go on and report the remaining problems.
pub(super) fn check_keys(
    node: &mut Node,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    match &mut node.value {
        Value::Map(entries) => {
            let Some(object) = branch(schema, root, "object") else {
                return;
            };
            let properties = object.get("properties").and_then(|p| p.as_object());
            let additional = object.get("additionalProperties");
            entries.retain_mut(|(key, value)| {
                let field = path.key(&key.text);
                if let Some(sub) = properties.and_then(|p| p.get(&key.text)) {
                    check_keys(value, sub, root, &field, out);
                    return true;
                }
                match additional {
                    Some(serde_json::Value::Bool(false)) => {
                        out.push(unknown_key(&key.text, path, properties, root));
                        false
                    }
                    Some(sub) if sub.is_object() => {
                        check_keys(value, sub, root, &field, out);
                        true
                    }
                    _ => true,
                }
            });
        }
        Value::Seq(items) => {
            if let Some(items_schema) = branch(schema, root, "array").and_then(|a| a.get("items")) {
                for (index, item) in items.iter_mut().enumerate() {
                    check_keys(item, items_schema, root, &path.index(index), out);
                }
            }
        }
        Value::Scalar { .. } => {}
    }
}

pub(super) fn unknown_key(
    key: &str,
    path: &FieldPath,
    properties: Option<&serde_json::Map<String, serde_json::Value>>,
    root: &serde_json::Value,
) -> Finding {
    let known: Vec<&str> = properties
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let place = if path.is_empty() {
        "the job list item".to_owned()
    } else {
        format!("`{path}`")
    };
    let help = suggest(key, &known)
        .or_else(|| {
            // A known key in the wrong section: `branch` at the top instead of under `git`.
            properties?.iter().find_map(|(section, sub)| {
                let props = branch(sub, root, "object")?
                    .get("properties")?
                    .as_object()?;
                props
                    .contains_key(key)
                    .then(|| format!("`{key}` belongs under `{section}`"))
            })
        })
        .unwrap_or_else(|| format!("known keys here: {}", known.join(", ")));
    Finding::error(
        "unknown-key",
        path.key(key),
        format!("unknown key `{key}` in {place}"),
    )
    .help(help)
    .at_key()
}

/// How many typed-reading errors one job item reports at most.
pub(super) const MAX_TYPE_FINDINGS: usize = 50;

/// Reads the job item into its types, reporting every value of the wrong type or shape in
/// one run: after each error the offending value is replaced by an empty one of the type
/// expected (or removed), and reading starts again. The job is returned only when
/// nothing was wrong: a job read around placeholders is never validated or built.
pub(super) fn read_typed(item: &Node, findings: &mut Vec<Finding>) -> Option<JobItem> {
    let mut json = item.to_json();
    let mut reported: Vec<FieldPath> = Vec::new();
    for _ in 0..MAX_TYPE_FINDINGS {
        let err = match serde_path_to_error::deserialize::<_, JobItem>(&json) {
            Ok(parsed) => return reported.is_empty().then_some(parsed),
            Err(err) => err,
        };
        let finding = type_finding(&err, item);
        let field = finding.field.clone();
        // A required field removed below is not missing: its value was reported already.
        let removed_required = err
            .inner()
            .to_string()
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .is_some_and(|missing| reported.contains(&field.key(missing)));
        if removed_required || reported.contains(&field) {
            return None;
        }
        reported.push(field.clone());
        findings.push(finding);
        if !replace_with_placeholder(&mut json, &field, &err.inner().to_string()) {
            return None;
        }
    }
    None
}

/// Puts an empty value of the type serde expected at `field` (a string, list, map or
/// number), or removes the value; false when there is nothing there to change.
pub(super) fn replace_with_placeholder(
    json: &mut serde_json::Value,
    field: &FieldPath,
    error: &str,
) -> bool {
    let pointer: String = field
        .0
        .iter()
        .map(|segment| match segment {
            Segment::Key(key) => format!("/{}", key.replace('~', "~0").replace('/', "~1")),
            Segment::Index(index) => format!("/{index}"),
        })
        .collect();
    let expected = error
        .split(", expected ")
        .nth(1)
        .map(|e| e.split(" at line ").next().unwrap_or(e));
    let placeholder = match expected {
        Some("a string") => Some(serde_json::json!("")),
        Some("a sequence") => Some(serde_json::json!([])),
        Some(e) if e.starts_with("struct ") || e == "a map" => Some(serde_json::json!({})),
        Some("u32" | "u64" | "i64" | "i32" | "u16" | "u8") => Some(serde_json::json!(0)),
        Some("a boolean") => Some(serde_json::json!(false)),
        _ => None,
    };
    if pointer.is_empty() {
        return false;
    }
    match placeholder {
        Some(placeholder) => match json.pointer_mut(&pointer) {
            Some(value) if *value != placeholder => {
                *value = placeholder;
                true
            }
            _ => false,
        },
        None => {
            let (parent, last) = pointer.rsplit_once('/').expect("a non-empty pointer");
            let last = last.replace("~1", "/").replace("~0", "~");
            match json.pointer_mut(parent) {
                Some(serde_json::Value::Object(map)) => map.remove(&last).is_some(),
                Some(serde_json::Value::Array(items)) => match last.parse::<usize>() {
                    Ok(i) if i < items.len() => {
                        items.remove(i);
                        true
                    }
                    _ => false,
                },
                _ => false,
            }
        }
    }
}

/// A typed-reading error (wrong type, missing field) as a finding at the right field.
pub(super) fn type_finding(
    err: &serde_path_to_error::Error<serde_json::Error>,
    item: &Node,
) -> Finding {
    let mut field = FieldPath::default();
    for segment in err.path().iter() {
        match segment {
            serde_path_to_error::Segment::Map { key } => field.0.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => field.0.push(Segment::Index(*index)),
            _ => {}
        }
    }
    let inner = err.inner().to_string();
    let inner = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
    if let Some(missing) = inner
        .strip_prefix("missing field `")
        .and_then(|s| s.strip_suffix('`'))
    {
        return missing_field(missing, field);
    }
    let value = locate_node(item, &field);
    if let Some(expected) = inner.split(", expected ").nth(1) {
        return wrong_type(expected, value, field, inner.starts_with("invalid value"));
    }
    let (message, help) = inner
        .split_once(crate::model::HELP_SEPARATOR)
        .unwrap_or((&inner, "see docs/job-spec.md for the allowed values"));
    Finding::error(
        "invalid-value",
        field.clone(),
        format!("`{field}`: {message}"),
    )
    .help(help)
}

/// A required field that is missing, with an example of it.
fn missing_field(missing: &str, field: FieldPath) -> Finding {
    let place = if field.is_empty() {
        "the job list item".to_owned()
    } else {
        format!("`{field}`")
    };
    let example = match missing {
        "job" => "- job:\n    name: my-job\n    ...",
        "name" => "name: my-job",
        "git" => "git:\n  url: git@github.com:org/repo.git",
        "url" => "url: git@github.com:org/repo.git",
        "run_command" => "run_command: make test",
        "branches" => "branches: [main]",
        _ => "",
    };
    let help = if example.is_empty() {
        format!("add `{missing}`")
    } else {
        format!("add `{example}`")
    };
    Finding::error(
        "missing-field",
        field,
        format!("missing required field `{missing}` in {place}"),
    )
    .help(help)
    .at_key()
}

/// A value of the wrong type at `field` (`value`, if there is one), with how to write it.
fn wrong_type(
    expected: &str,
    value: Option<&Node>,
    field: FieldPath,
    invalid_value: bool,
) -> Finding {
    let found = match value {
        Some(node) if invalid_value => node
            .as_str()
            .map_or(node.kind_name().to_owned(), |t| format!("`{t}`")),
        Some(node) => node.kind_name().to_owned(),
        None => "nothing".to_owned(),
    };
    let found = found.as_str();
    let expected = match expected {
        e if e.starts_with("struct ") => "a map of fields",
        "a sequence" => "a list",
        "u32" | "u64" => "a whole number, 0 or more",
        "i64" | "i32" => "a whole number",
        "a string" => "a string",
        other => other,
    };
    let help = match (expected, found) {
        ("a string", "a number" | "a boolean") => match value.and_then(Node::as_str) {
            Some(text) => format!(
                "put the value in quotes: `{}`",
                serde_json::Value::String(text.to_owned())
            ),
            None => "put the value in quotes".to_owned(),
        },
        (_, "null") => "write a value after the colon, or remove the key".to_owned(),
        ("a list", "a string") => "write a list: `- item` per line, or `[a, b]`".to_owned(),
        ("a map of fields", _) => "write the fields indented below the key".to_owned(),
        ("a map", _) => "write `name: value` lines indented below the key".to_owned(),
        _ => format!("write {expected} here"),
    };
    Finding::error(
        "wrong-type",
        field.clone(),
        format!("`{field}` must be {expected}, not {found}"),
    )
    .help(help)
}

pub(super) fn locate_node<'n>(node: &'n Node, path: &FieldPath) -> Option<&'n Node> {
    let mut current = node;
    for segment in &path.0 {
        current = match (segment, &current.value) {
            (Segment::Key(key), Value::Map(_)) => current.get(key)?,
            (Segment::Index(i), Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

/// The position of a field: its value, or its key when `at_key`; the deepest existing
/// parent when the field is absent.
pub(super) fn locate(node: &Node, path: &FieldPath, at_key: bool) -> Pos {
    let mut current = node;
    let mut key_pos = node.pos;
    for (depth, segment) in path.0.iter().enumerate() {
        let last = depth + 1 == path.0.len();
        match (segment, &current.value) {
            (Segment::Key(key), Value::Map(_)) => match current.entry(key) {
                Some((k, v)) => {
                    key_pos = k.pos;
                    current = v;
                    if last {
                        return if at_key { k.pos } else { v.pos };
                    }
                }
                None => return key_pos,
            },
            (Segment::Index(i), Value::Seq(items)) => match items.get(*i) {
                Some(item) => {
                    key_pos = item.pos;
                    current = item;
                }
                None => return key_pos,
            },
            _ => return key_pos,
        }
    }
    if at_key {
        key_pos
    } else {
        current.pos
    }
}
