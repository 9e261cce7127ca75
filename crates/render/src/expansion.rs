//! Kubernetes' `$(VAR)` expansion in `command`, `args` and `env[].value`.
//!
//! The kubelet replaces `$(NAME)` with the value of a variable defined earlier in the
//! container's `env`, and `$$` with `$`. A shell script containing `$(JOB_NAME)` (command
//! substitution) would silently run something else, so every string kubeci places in those
//! fields is escaped with [`escape`]; the local engine applies [`expand`] exactly as the
//! kubelet does, so both see the same text.

/// Escapes `text` so that Kubernetes' expansion gives back exactly `text`.
///
/// Only `$` followed by `$` or `(` needs doubling; `$VAR` and `${VAR}` stay readable.
pub fn escape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        out.push(c);
        if c == '$' && matches!(bytes.get(i + 1), Some(b'$') | Some(b'(')) {
            out.push('$');
        }
    }
    out
}

/// Expands `$(NAME)` references and `$$` escapes as the kubelet does: an unknown name is
/// left as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            out.push('$');
            rest = after;
            break;
        }
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            let c = after.chars().next().expect("not empty");
            out.push('$');
            out.push(c);
            rest = &after[c.len_utf8()..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        (name == "JOB_NAME").then(|| "demo".to_owned())
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        assert_eq!(expand("$(JOB_NAME)-$(OTHER)", vars), "demo-$(OTHER)");
        assert_eq!(
            expand("$$(JOB_NAME) $$ $x ${y} $", vars),
            "$(JOB_NAME) $ $x ${y} $"
        );
        assert_eq!(expand("$(unclosed", vars), "$(unclosed");
        assert_eq!(expand("é$é", vars), "é$é");
    }

    #[test]
    fn escaped_text_survives_expansion() {
        for text in [
            "echo $(JOB_NAME)",
            "$$",
            "$",
            "a$$(JOB_NAME)b",
            "$(touch /tmp/x)",
            "`id`; echo \"$HOME\" ${PATH} $$$",
            "plain",
        ] {
            assert_eq!(expand(&escape(text), vars), text, "{text}");
        }
        assert_eq!(escape("echo $HOME ${X}"), "echo $HOME ${X}");
    }
}
