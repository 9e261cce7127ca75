//! A small, deterministic YAML writer for rendered manifests.
//!
//! Block style, keys in the order given, multi-line strings as literal blocks so scripts
//! stay readable, and every string that any YAML 1.1 or 1.2 reader could take for another
//! type double-quoted.

use serde_json::Value;

/// Writes `value` as a YAML document (without a leading `---`).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            write_scalar(&mut out, scalar, 0);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (key, value) in map {
        indent(out, level);
        write_string(out, key, level);
        out.push(':');
        write_child(out, value, level);
    }
}

fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line; the rest align under it.
                let mut first = true;
                for (key, value) in map {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    write_string(out, key, level + 2);
                    out.push(':');
                    write_child(out, value, level + 2);
                }
            }
            other => write_child(out, other, level),
        }
    }
}

/// Writes what follows `key:` or `-`: a scalar on the same line, a collection below.
fn write_child(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, level);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar, level + 2);
            out.push('\n');
        }
    }
}

fn write_scalar(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s, level),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

fn write_string(out: &mut String, s: &str, level: usize) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else if is_literal_safe(s) {
        write_literal(out, s, level);
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialize"));
    }
}

/// Plain scalars only for simple words no reader can mistake for anything else.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let special = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    );
    (first.is_ascii_alphabetic() || first == '/')
        && !special
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

/// Multi-line text without characters a literal block cannot hold.
fn is_literal_safe(s: &str) -> bool {
    s.contains('\n')
        && !s
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{feff}')
        && !s.starts_with([' ', '\t', '\n'])
        && !s.lines().any(|line| line.ends_with([' ', '\t']))
}

fn write_literal(out: &mut String, s: &str, level: usize) {
    let trailing = s.len() - s.trim_end_matches('\n').len();
    out.push('|');
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    let body = s.trim_end_matches('\n');
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_block_yaml() {
        let value = json!({
            "a": "plain",
            "b": {"c": [1, "two", {"d": true, "e": "x: y"}], "empty": {}},
            "script": "echo 1\n\necho 2\n",
            "num": "123",
        });
        assert_eq!(
            to_yaml(&value),
            "a: plain\nb:\n  c:\n  - 1\n  - two\n  - d: true\n    e: \"x: y\"\n  empty: {}\nnum: \"123\"\nscript: |\n  echo 1\n\n  echo 2\n"
        );
    }

    #[test]
    fn strings_that_look_like_other_types_are_quoted() {
        for s in [
            "yes", "1.0", "", " x", "a: b", "- x", "#", "0755", "$(x)", "a\rb", "tab\t",
        ] {
            let out = to_yaml(&json!({ "k": s }));
            assert!(out.starts_with("k: \""), "{s:?} -> {out}");
        }
    }
}
