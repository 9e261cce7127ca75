//! Log lines with ANSI colours, as HTML a browser shows inert: text is escaped, SGR colour
//! and bold codes become `<span class="...">`, and every other escape sequence (cursor
//! moves, window titles, hyperlinks, bells) is dropped.

/// `text` with `&`, `<`, `>`, `"` and `'` escaped, for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Style {
    bold: bool,
    /// 0-7, 8-15 for the bright ones.
    colour: Option<u8>,
}

impl Style {
    fn classes(self) -> Option<String> {
        let mut classes = Vec::new();
        if self.bold {
            classes.push("b".to_owned());
        }
        if let Some(c) = self.colour {
            classes.push(format!("c{c}"));
        }
        (!classes.is_empty()).then(|| classes.join(" "))
    }

    fn apply(&mut self, parameters: &str) {
        let codes: Vec<u32> = if parameters.is_empty() {
            vec![0]
        } else {
            parameters
                .split(';')
                .map(|p| p.parse().unwrap_or(u32::MAX))
                .collect()
        };
        let mut codes = codes.into_iter();
        while let Some(code) = codes.next() {
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                30..=37 => self.colour = Some((code - 30) as u8),
                90..=97 => self.colour = Some((code - 90 + 8) as u8),
                39 => self.colour = None,
                // 256-colour and true-colour forms: their arguments are skipped.
                38 | 48 => match codes.next() {
                    Some(5) => {
                        codes.next();
                    }
                    Some(2) => {
                        codes.nth(2);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

/// One log line (without its newline) as HTML.
pub fn line_to_html(line: &str) -> String {
    let mut out = String::new();
    let mut style = Style::default();
    let mut open = false;
    let mut text = String::new();
    let mut chars = line.chars().peekable();
    let flush = |text: &mut String, out: &mut String| {
        out.push_str(&escape(text));
        text.clear();
    };
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            // Other control characters (bell, backspace, carriage return) are dropped.
            if !c.is_control() || c == '\t' {
                text.push(c);
            }
            continue;
        }
        match chars.next() {
            // CSI: parameters, intermediates, one final byte.
            Some('[') => {
                let mut parameters = String::new();
                let mut last = None;
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        last = Some(c);
                        break;
                    }
                    parameters.push(c);
                }
                if last == Some('m') {
                    flush(&mut text, &mut out);
                    if open {
                        out.push_str("</span>");
                        open = false;
                    }
                    style.apply(&parameters);
                    if let Some(classes) = style.classes() {
                        out.push_str(&format!("<span class=\"{classes}\">"));
                        open = true;
                    }
                }
            }
            // OSC (titles, hyperlinks): up to BEL or ST.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Any other escape: it and its one following character are dropped.
            _ => {}
        }
    }
    flush(&mut text, &mut out);
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_become_classes_and_everything_else_is_inert() {
        assert_eq!(line_to_html("plain"), "plain");
        assert_eq!(
            line_to_html("\u{1b}[1;31merror\u{1b}[0m: bad"),
            "<span class=\"b c1\">error</span>: bad"
        );
        assert_eq!(
            line_to_html("\u{1b}[92mok\u{1b}[39m done"),
            "<span class=\"c10\">ok</span> done"
        );
        assert_eq!(
            line_to_html("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        // A title change, a hyperlink, cursor moves, a bell, a clear screen: all dropped.
        assert_eq!(
            line_to_html("\u{1b}]0;owned\u{7}a\u{1b}]8;;http://evil\u{1b}\\b\u{1b}]8;;\u{1b}\\\u{1b}[2J\u{1b}[10;10Hc\u{7}"),
            "abc"
        );
        // An escape sequence cannot smuggle markup in: its parameters are never copied.
        assert_eq!(
            line_to_html("\u{1b}[31\"><img src=x onerror=alert(1)>mx"),
            "mg src=x onerror=alert(1)&gt;mx"
        );
        assert_eq!(line_to_html("\u{1b}[38;5;196mred\u{1b}[m"), "red");
        assert_eq!(line_to_html("unterminated \u{1b}["), "unterminated ");
    }
}
