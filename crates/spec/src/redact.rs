//! Hiding the credentials of URLs in any text kubeci shows: a URL's userinfo is never
//! repeated, whether the URL parses or not (issue 27 finding 1: a password in a URL with a
//! bad port was shown whole in the pages, the API, Events and the log).
//!
//! Linear in the text's length. Where a text is ambiguous it errs towards hiding: prose
//! such as `https://host, or ask me@corp` loses `host, or ask me`.

use std::borrow::Cow;

/// What a hidden userinfo shows as.
const HIDDEN: &str = "***";

/// `url`, a single value meant as a URL (however broken), with its userinfo hidden:
/// everything between `://` (or its start) and its last `@` when that holds a `:` (a
/// password), or for `http(s)://` a user name alone (GitHub takes a token there).
/// `git@host:org/repo` and `ssh://git@host/…` keep their user.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(at) = url.rfind('@') else {
        return redact_credentials(url);
    };
    let (scheme, start) = match url.find("://") {
        Some(i) if i < at => (&url[..i], i + 3),
        _ => ("", 0),
    };
    if hides(scheme, &url[start..at], false) {
        Cow::Owned(format!("{}{HIDDEN}{}", &url[..start], &url[at..]))
    } else {
        Cow::Borrowed(url)
    }
}

/// `text` with the userinfo of every URL in it hidden, in both forms:
/// `scheme://user:password@host…` (`https://***@host…`) and `user:password@host`
/// (`***@host`). A `http(s)://` user name alone is hidden too; an SSH user name
/// (`git@github.com:o/r`, `ssh://git@host/r`) is not a secret and stays.
///
/// A password may hold what a URL may not (a space, a `/`, a quote): after `://` the
/// userinfo runs up to the last `@` before the first `/`, `?`, `#`, line break, backtick or
/// angle bracket, spaces included; failing that, up to the last `@` of the word (slashes
/// included); and `scheme://user:password` with no `@` at all hides what follows the `:`
/// unless it is a port number.
pub fn redact_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains('@') && !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let after_schemes = redact_after_schemes(text);
    let redacted = redact_without_scheme(&after_schemes);
    if redacted == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(redacted)
    }
}

/// Whether a userinfo is hidden: one holding a password always; a lone user name for
/// `http(s)://` when it looks like one (no `/` or space: else it is a path or prose).
fn hides(scheme: &str, userinfo: &str, from_word: bool) -> bool {
    if userinfo.contains(':') {
        return true;
    }
    let web = scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
    web && !from_word
        && !userinfo.is_empty()
        && !userinfo.contains(|c: char| c == '/' || c.is_whitespace())
}

/// Ends the authority part of a URL in a text (spaces do not: a password may hold one).
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '\n' | '\r' | '`' | '<' | '>')
}

/// The scheme written just before `://` at `at`.
fn scheme_before(text: &str, at: usize) -> &str {
    let start = text[..at]
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &text[start..at]
}

/// The `scheme://userinfo@` form.
fn redact_after_schemes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    // The word being looked at (up to whitespace): where it ends, and its last `@` after
    // the place it was first looked at from. Kept so that many `://` in one word cost one
    // scan of it, not one each.
    let mut word: Option<(usize, Option<usize>)> = None;
    while let Some(found) = text[search..].find("://") {
        let separator = search + found;
        let start = separator + 3;
        let scheme = scheme_before(text, separator);
        let authority_end = text[start..]
            .find(ends_authority)
            .map_or(text.len(), |i| start + i);
        let in_authority = text[start..authority_end].rfind('@').map(|i| start + i);
        let (at, from_word) = match in_authority {
            Some(at) => (Some(at), false),
            None => {
                let (end, last_at) = match word {
                    Some((end, last_at)) if start < end => (end, last_at),
                    _ => {
                        let end = text[start..]
                            .find(char::is_whitespace)
                            .map_or(text.len(), |i| start + i);
                        (end, text[start..end].rfind('@').map(|i| start + i))
                    }
                };
                word = Some((end, last_at));
                (last_at.filter(|&at| at >= start), true)
            }
        };
        match at {
            Some(at) if hides(scheme, &text[start..at], from_word) => {
                out.push_str(&text[copied..start]);
                out.push_str(HIDDEN);
                copied = at;
                search = at;
            }
            Some(at) => search = at,
            None => {
                let word_end = text[start..authority_end]
                    .find(char::is_whitespace)
                    .map_or(authority_end, |i| start + i);
                if looks_like_a_password(&text[start..word_end]) {
                    out.push_str(&text[copied..start]);
                    out.push_str(HIDDEN);
                    copied = word_end;
                    search = word_end;
                } else {
                    search = start;
                }
            }
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `user:password` with no host after it (`https://user:pw` cut short): a `:` followed by
/// anything but a port number.
fn looks_like_a_password(authority: &str) -> bool {
    if authority.starts_with('[') || authority.starts_with(HIDDEN) {
        return false;
    }
    authority
        .split_once(':')
        .is_some_and(|(_, after)| !after.is_empty() && !after.chars().all(|c| c.is_ascii_digit()))
}

/// The `user:password@host` form (no scheme), word by word. A password with a space in
/// it (`user:pass word@host`) spans two words: a word with an `@` but no `:` before it
/// takes the word before it on the same line when that one holds a `:` inside it.
fn redact_without_scheme(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut previous_end = 0;
    // The previous word on this line when it may begin a userinfo: where it begins.
    let mut open: Option<usize> = None;
    for (start, word) in words(text) {
        if text[previous_end..start].contains(['\n', '\r']) {
            open = None;
        }
        previous_end = start + word.len();
        // A userinfo begins after the quote or bracket a word may open with.
        let lead = word.len()
            - word
                .trim_start_matches(['`', '"', '\'', '(', '[', '{', '<'])
                .len();
        let (word, start) = (&word[lead..], start + lead);
        if word.contains("://") {
            open = None;
            continue;
        }
        let Some(at) = word.rfind('@') else {
            open = (word.contains(':') && !word.ends_with(':') && !word.starts_with(HIDDEN))
                .then_some(start);
            continue;
        };
        let userinfo = &word[..at];
        let begins = if userinfo.is_empty() || userinfo.starts_with(HIDDEN) {
            None
        } else if userinfo.contains(':') {
            Some(start)
        } else {
            open
        };
        if let Some(begins) = begins {
            out.push_str(&text[copied..begins]);
            out.push_str(HIDDEN);
            copied = start + at;
        }
        open = None;
    }
    out.push_str(&text[copied..]);
    out
}

/// The words of `text` (split at whitespace) with where each begins.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = 0;
    std::iter::from_fn(move || {
        let start = rest + text[rest..].find(|c: char| !c.is_whitespace())?;
        let end = text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |i| start + i);
        rest = end;
        Some((start, &text[start..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";

    #[test]
    fn credentials_in_urls_are_hidden_wherever_they_are_in_a_text() {
        let text = "url: https://user:TOKEN123@github.com/o/r.git\nother: \"http://ghp_abc@h/x\"\nssh://git@h/r ssh://u:pw@h/r git@github.com:o/r";
        assert_eq!(
            redact_credentials(text),
            "url: https://***@github.com/o/r.git\nother: \"http://***@h/x\"\nssh://git@h/r ssh://***@h/r git@github.com:o/r"
        );
        assert!(matches!(redact_credentials("no urls"), Cow::Borrowed(_)));
        let plain = "https://github.com/o/r.git, git@github.com:o/r and ssh://git@h:22/r; mail a@b.example at 10:30";
        assert!(matches!(redact_credentials(plain), Cow::Borrowed(_)));
    }

    /// A scheme after a character of several bytes (a byte order mark, found by the fuzzer:
    /// it panicked, slicing inside it).
    #[test]
    fn a_scheme_after_a_multibyte_character_is_read_whole() {
        assert_eq!(
            redact_credentials("\u{feff}ftp://example.com/demo.git"),
            "\u{feff}ftp://example.com/demo.git"
        );
        assert_eq!(
            redact_credentials("é·https://user:pw@host/r"),
            "é·https://***@host/r"
        );
    }

    /// Every shape a password was seen in, or could be written in, leaves no trace of it;
    /// what is around the userinfo stays.
    #[test]
    fn hostile_shapes_show_no_password() {
        for (text, shown) in [
            // Does not parse: a port out of range, a trailing space.
            (
                "https://user:s3cret@github.com:99999/o/r",
                "https://***@github.com:99999/o/r",
            ),
            (
                "git URL `https://user:s3cret@h/o/r ` is not valid",
                "git URL `https://***@h/o/r ` is not valid",
            ),
            // The token as the user (GitHub's `TOKEN:x-oauth-basic`).
            (
                "https://s3cret:x-oauth-basic@github.com/o/r",
                "https://***@github.com/o/r",
            ),
            (
                "https://s3cret@github.com/o/r",
                "https://***@github.com/o/r",
            ),
            // A space, a slash, an `@`, a quote, a backtick or a control in the password.
            ("https://user:s3cret x@h/o/r", "https://***@h/o/r"),
            (
                "url: \"https://user:pa/s3cret@h/o/r\"",
                "url: \"https://***@h/o/r\"",
            ),
            ("https://user:s3cret@x@h/o/r", "https://***@h/o/r"),
            ("https://user:s3\"cret@h/o/r", "https://***@h/o/r"),
            ("`https://user:s3`cret@h/o/r`", "`https://***@h/o/r`"),
            ("https://user:s3\u{1b}cret@h/o/r", "https://***@h/o/r"),
            ("https://user:s3\\tcret@h/o/r", "https://***@h/o/r"),
            // Scheme written oddly, or several URLs in one word.
            ("HTTPS://user:s3cret@h/o", "HTTPS://***@h/o"),
            ("git+ssh://user:s3cret@h/o", "git+ssh://***@h/o"),
            ("x://a://b://user:s3cret@h/o", "x://***@h/o"),
            ("https://h/?next=https://user:s3cret@e/x", "https://***@e/x"),
            // Cut short: no host.
            ("https://user:s3cret", "https://***"),
            (
                "see https://user:s3cret and more",
                "see https://*** and more",
            ),
            // Without a scheme (scp-like, or in a key=value).
            ("user:s3cret@github.com:o/r", "***@github.com:o/r"),
            ("url=user:s3cret@h:o/r next", "***@h:o/r next"),
            ("{url: user:s3cret@h:o/r}", "{url: ***@h:o/r}"),
            ("user:s3cret x@h:o/r", "***@h:o/r"),
            ("line `user:s3cret@h:o/r ` end", "line `***@h:o/r ` end"),
        ] {
            let redacted = redact_credentials(text);
            assert!(
                !redacted.contains("s3") && !redacted.contains("cret"),
                "{text} → {redacted}"
            );
            assert_eq!(redacted, shown, "{text}");
            assert_eq!(
                redact_credentials(&redacted),
                redacted,
                "hiding twice changes nothing: {text}"
            );
        }
    }

    #[test]
    fn what_is_not_a_credential_stays() {
        for text in [
            "https://github.com:443/o/r.git",
            "https://[::1]:8443/o/r",
            "ssh://git@github.com:22/o/r",
            "git@github.com:o/r.git",
            "https://github.com/o/r@v1 and user@example.org",
            "email: admin@corp.example",
            "time 10:30 at noon, owner@corp",
            "ssh://deploy@h/r",
        ] {
            assert_eq!(redact_credentials(text), text);
        }
    }

    #[test]
    fn a_single_url_is_hidden_whole_however_broken() {
        for (url, shown) in [
            (
                "https://user:s3cret@github.com:99999/o/r",
                "https://***@github.com:99999/o/r",
            ),
            ("https://user:s3 c\"r`et@h/o/r ", "https://***@h/o/r "),
            ("user:s3cret@h:o/r", "***@h:o/r"),
            ("https://s3cret@h/o/r", "https://***@h/o/r"),
            ("https://user:s3cret", "https://***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        for url in [
            "git@github.com:o/r",
            "ssh://git@h/r",
            "https://h/o/r",
            "/srv/r.git",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    /// Long hostile texts take time in proportion to their length.
    #[test]
    fn many_schemes_in_one_word_are_read_once() {
        let text = format!("{}{SECRET}@h", "a://".repeat(200_000));
        let redacted = redact_credentials(&text);
        assert!(
            redacted.ends_with("***@h"),
            "{}",
            &redacted[redacted.len() - 20..]
        );
        let text = format!("{} user:{SECRET}@h", "x:y ".repeat(200_000));
        assert!(!redact_credentials(&text).contains(SECRET));
    }
}
