//! Kubernetes, git and GitHub naming rules, each returning what is wrong in words.

/// A DNS-1123 label (namespaces, job names): at most 63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "it is {} characters long; at most 63 are allowed",
            name.len()
        ));
    }
    check_label_chars(name)
}

/// A DNS-1123 subdomain (Secrets, ServiceAccounts, ConfigMaps): at most 253 characters of
/// dot-separated labels.
pub fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "it is {} characters long; at most 253 are allowed",
            name.len()
        ));
    }
    name.split('.').try_for_each(|part| {
        if part.is_empty() {
            Err("it has an empty part between dots".into())
        } else {
            check_label_chars(part)
        }
    })
}

fn check_label_chars(name: &str) -> Result<(), String> {
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "it contains {}; only lowercase letters, digits and `-` are allowed",
            describe_char(c)
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A lowercase, dash-separated version of `name`, offered as a fix.
pub fn suggest_dns_label(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    trimmed[..trimmed.len().min(63)]
        .trim_end_matches('-')
        .to_owned()
}

/// A label value: at most 63 characters of letters, digits, `-`, `_` and `.`, starting and
/// ending alphanumeric (or empty).
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "it is {} characters long; at most 63 are allowed",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "it contains {}; only letters, digits, `-`, `_` and `.` are allowed",
            describe_char(c)
        ));
    }
    if value.starts_with(['-', '_', '.']) || value.ends_with(['-', '_', '.']) {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name as a label value.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            check_dns_subdomain(prefix)
                .map_err(|e| format!("its prefix `{prefix}` is not a DNS subdomain: {e}"))?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("its name part is empty".into());
    }
    check_label_value(name)
}

/// An environment variable name a shell can read: letters, digits and `_`, not starting with
/// a digit.
pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "it contains {}; use letters, digits and `_`",
            describe_char(c)
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("it starts with a digit".into());
    }
    Ok(())
}

/// A GitHub user or organisation login: 1-39 letters, digits and single `-`, not at the
/// ends. Bots (`name[bot]`) are accepted.
pub fn check_github_login(login: &str) -> Result<(), String> {
    let name = login.strip_suffix("[bot]").unwrap_or(login);
    if name.is_empty() || name.len() > 39 {
        return Err("a GitHub login has 1 to 39 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "it contains {}; GitHub logins use letters, digits and `-`",
            describe_char(c)
        ));
    }
    if name.starts_with('-') {
        return Err("a GitHub login cannot start with `-`".into());
    }
    Ok(())
}

/// Git's rules for a branch name (`git check-ref-format --branch`).
pub fn check_branch_name(name: &str) -> Result<(), String> {
    let name = name.strip_prefix("refs/heads/").unwrap_or(name);
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err(format!(
            "git does not allow {} in a branch name",
            describe_char(c)
        ));
    }
    if name.starts_with('-') {
        return Err("a branch name cannot start with `-`".into());
    }
    for (bad, what) in [("..", "`..`"), ("@{", "`@{`"), ("//", "`//`")] {
        if name.contains(bad) {
            return Err(format!("git does not allow {what} in a branch name"));
        }
    }
    if name == "@" {
        return Err("`@` alone is not a branch name".into());
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return Err("a branch name cannot start or end with `/` or end with `.`".into());
    }
    if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return Err("no part of a branch name may start with `.` or end with `.lock`".into());
    }
    Ok(())
}

pub(crate) fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        '\n' => "a newline".into(),
        c if c.is_control() => format!("the control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("start-helm-test").is_ok());
        assert!(check_dns_label("a").is_ok());
        assert!(check_dns_label("Start").unwrap_err().contains("`S`"));
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label(&"a".repeat(64)).unwrap_err().contains("64"));
        assert!(check_dns_label("a.b").is_err());
        assert!(check_dns_subdomain("a.b").is_ok());
        assert!(check_dns_subdomain("a..b").is_err());
        assert_eq!(suggest_dns_label("My_Job Name!"), "my-job-name");
    }

    #[test]
    fn labels_and_env() {
        assert!(check_label_key("kubernetes.io/os").is_ok());
        assert!(check_label_key("disktype").is_ok());
        assert!(check_label_key("Bad Key").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_env_name("MY_VAR1").is_ok());
        assert!(check_env_name("1VAR").is_err());
        assert!(check_env_name("A-B").is_err());
    }

    #[test]
    fn branches_follow_git() {
        for ok in [
            "main",
            "gravitational/k8s",
            "release-1.2",
            "$(touch${IFS}x)",
            "feature/`id`",
        ] {
            assert!(check_branch_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a b", "a..b", "-x", "a/", "a.lock", "x:y", "a\nb", ".hidden", "@",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn github_logins() {
        assert!(check_github_login("webvictim").is_ok());
        assert!(check_github_login("dependabot[bot]").is_ok());
        assert!(check_github_login("-x").is_err());
        assert!(check_github_login("a b").is_err());
    }
}
