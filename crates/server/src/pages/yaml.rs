//! YAML as written, highlighted for reading: keys, quoted strings, numbers and booleans,
//! comments, and block scalars (a `run_command: |` script stays one string). A line-based
//! reading for the eye, not a parser: whatever it cannot place stays plain text, and every
//! piece of it is made by a `maud` template, so escaped.

use maud::{html, Markup, PreEscaped};

/// `text` in a span of `class`; nothing for no text.
fn span(class: &str, text: &str) -> Markup {
    html! {
        @if !text.is_empty() {
            span class=(class) { (text) }
        }
    }
}

/// Where an unquoted ` #` comment starts in `value`, if one does.
fn comment_start(value: &str) -> Option<usize> {
    let mut quote = None;
    let bytes = value.as_bytes();
    for (at, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'#') if at == 0 || bytes[at - 1] == b' ' => return Some(at),
            _ => {}
        }
    }
    None
}

/// A scalar value: quoted strings, numbers, booleans and null stand out.
fn value(text: &str) -> Markup {
    let lead = &text[..text.len() - text.trim_start().len()];
    let text = &text[lead.len()..];
    let (text, comment) = match comment_start(text) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let trimmed = text.trim_end();
    let padding = &text[trimmed.len()..];
    let class = match trimmed {
        t if t.starts_with('"') || t.starts_with('\'') => Some("y-s"),
        "true" | "false" | "null" | "~" | "yes" | "no" => Some("y-n"),
        t if !t.is_empty() && t.parse::<f64>().is_ok() => Some("y-n"),
        t if t.starts_with('|') || t.starts_with('>') => Some("y-p"),
        _ => None,
    };
    html! {
        (lead)
        @match class {
            Some(class) => (span(class, trimmed)),
            None => (trimmed),
        }
        (padding)
        (span("y-c", comment))
    }
}

/// The key of a `key: value` line (after indentation and list markers), and the rest.
fn split_key(rest: &str) -> Option<(&str, &str)> {
    let end = if rest.starts_with('"') || rest.starts_with('\'') {
        let quote = rest.as_bytes()[0] as char;
        rest[1..].find(quote)? + 2
    } else {
        rest.find(": ")
            .or_else(|| rest.strip_suffix(':').map(str::len))?
    };
    let (key, after) = rest.split_at(end);
    let after = after.strip_prefix(':')?;
    if key.is_empty() || key.contains('#') || (!after.is_empty() && !after.starts_with(' ')) {
        return None;
    }
    Some((key, after))
}

/// `source` as highlighted HTML, one line per line.
pub fn highlight(source: &str) -> Markup {
    let mut out = String::with_capacity(source.len() * 2);
    // Inside a block scalar: the indentation of the key that opened it.
    let mut block: Option<usize> = None;
    for line in source.lines() {
        let indent = line.len() - line.trim_start().len();
        let body = &line[indent..];
        if let Some(opened) = block {
            if body.is_empty() || indent > opened {
                out.push_str(&span("y-s", line).0);
                out.push('\n');
                continue;
            }
            block = None;
        }
        out.push_str(&" ".repeat(indent));
        if body.starts_with('#') {
            out.push_str(&span("y-c", body).0);
            out.push('\n');
            continue;
        }
        let mut rest = body;
        let mut key_at = indent;
        while let Some(after) = rest
            .strip_prefix("- ")
            .or(rest.strip_prefix('-').filter(|r| r.is_empty()))
        {
            out.push_str(&span("y-p", "-").0);
            out.push(' ');
            key_at += 2;
            rest = after;
        }
        match split_key(rest) {
            Some((key, after)) => {
                out.push_str(&span("y-k", key).0);
                out.push_str(&span("y-p", ":").0);
                let scalar = after.trim_start();
                if scalar.starts_with('|') || scalar.starts_with('>') {
                    block = Some(key_at);
                }
                out.push_str(&value(after).0);
            }
            None => out.push_str(&value(rest).0),
        }
        out.push('\n');
    }
    // Safe as HTML: every piece pushed is a template's output (escaped) or whitespace.
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_strings_numbers_and_comments_stand_out_and_a_script_stays_one_string() {
        let source = "# the job\n- job:\n    name: \"api\"\n    timeout: 30\n    run_command: |\n      make: all # not a key\n      <script>\n    cron: H * * * * # hourly\n";
        let html = highlight(source).into_string();
        let lines: Vec<&str> = html.lines().collect();
        assert_eq!(lines[0], "<span class=\"y-c\"># the job</span>");
        assert_eq!(
            lines[1],
            "<span class=\"y-p\">-</span> <span class=\"y-k\">job</span><span class=\"y-p\">:</span>"
        );
        assert_eq!(
            lines[2],
            "    <span class=\"y-k\">name</span><span class=\"y-p\">:</span> <span class=\"y-s\">&quot;api&quot;</span>"
        );
        assert!(
            lines[3].ends_with("<span class=\"y-n\">30</span>"),
            "{}",
            lines[3]
        );
        assert_eq!(
            lines[5],
            "<span class=\"y-s\">      make: all # not a key</span>"
        );
        assert_eq!(lines[6], "<span class=\"y-s\">      &lt;script&gt;</span>");
        assert!(
            lines[7].contains("<span class=\"y-k\">cron</span>")
                && lines[7].ends_with("<span class=\"y-c\"># hourly</span>"),
            "{}",
            lines[7]
        );
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn what_it_cannot_place_stays_plain_and_escaped() {
        assert_eq!(highlight("a: 'b # c'").into_string(), "<span class=\"y-k\">a</span><span class=\"y-p\">:</span> <span class=\"y-s\">'b # c'</span>\n");
        assert_eq!(
            highlight("http://x:y<z>").into_string(),
            "http://x:y&lt;z&gt;\n"
        );
        assert_eq!(
            highlight("k: \"<&>\" # <b>").into_string(),
            "<span class=\"y-k\">k</span><span class=\"y-p\">:</span> <span class=\"y-s\">&quot;&lt;&amp;&gt;&quot;</span> <span class=\"y-c\"># &lt;b&gt;</span>\n"
        );
    }
}
