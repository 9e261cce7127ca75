//! Git remote URLs in the forms git accepts, and the repository they name.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `git@host:path` (scp-like) or `ssh://`.
    Ssh,
    Https,
    /// Plain `http://` or `git://`: unauthenticated and unencrypted.
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitUrl {
    Remote {
        transport: Transport,
        user: Option<String>,
        /// A password or token is written into the URL.
        has_password: bool,
        host: String,
        port: Option<u16>,
        /// The path on the host, without leading `/`.
        path: String,
    },
    /// A repository on this machine (`/srv/repo.git`, `./repo`, `file:///srv/repo`): only the
    /// local engine can reach it.
    Local { path: String },
}

impl GitUrl {
    pub fn parse(url: &str) -> Result<GitUrl, String> {
        if url.is_empty() {
            return Err("it is empty".into());
        }
        if url.starts_with('-') {
            return Err("it starts with `-`, which git would read as an option".into());
        }
        if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("it contains {}", crate::names::describe_char(c)));
        }
        // git's remote-helper form `<transport>::<address>` (`ext::`, `fd::`) runs programs or
        // reads file descriptors instead of fetching: never a repository kubeci clones.
        if let Some((transport, _)) = url.split_once("::") {
            if !transport.is_empty()
                && transport
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            {
                return Err(format!(
                    "`{transport}::` is git's remote-helper syntax, which can run programs; use ssh://, https:// or git@host:path"
                ));
            }
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(GitUrl::Local {
                path: path.to_owned(),
            });
        }
        if url.starts_with('/') || url.starts_with("./") || url.starts_with("../") {
            return Ok(GitUrl::Local {
                path: url.to_owned(),
            });
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            let transport = match scheme {
                "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                "https" => Transport::Https,
                "http" | "git" => Transport::Insecure,
                other => {
                    return Err(format!(
                        "`{other}://` is not a git transport kubeci supports; use ssh://, https:// or git@host:path"
                    ))
                }
            };
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (userinfo, hostport) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (host, port) = split_port(hostport)?;
            let (user, has_password) = match userinfo {
                Some(info) => match info.split_once(':') {
                    Some((u, _)) => (Some(u.to_owned()), true),
                    None => (Some(info.to_owned()), false),
                },
                None => (None, false),
            };
            return remote(transport, user, has_password, host, port, path);
        }
        // scp-like: [user@]host:path, where the colon comes before any slash.
        match url.split_once(':') {
            Some((authority, path)) if !authority.contains('/') && !authority.is_empty() => {
                let (user, host) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u.to_owned()), h),
                    None => (None, authority),
                };
                remote(Transport::Ssh, user, false, host.to_owned(), None, path)
            }
            _ => Err("it is neither `git@host:org/repo.git`, `ssh://host/path`, `https://host/path` nor a local path starting with `/` or `./`".into()),
        }
    }

    /// The repository a remote URL names, spelled one way only: its host and its path as
    /// written, without a trailing `/` or `.git`. `None` for a local path, and for a path
    /// with anything but `/`-separated segments of ASCII letters, digits, `-`, `_` and `.`
    /// (not `.` or `..`): a `%`-escape or a dot segment is another spelling of some other
    /// path (`victim/rep%6F`, `mallory/../victim/repo` are `victim/repo` to an HTTP
    /// server), so such a URL names no repository kubeci can compare, match or report to.
    fn repository_parts(&self) -> Option<(&str, &str)> {
        let GitUrl::Remote { host, path, .. } = self else {
            return None;
        };
        let path = path.trim_end_matches('/');
        let path = match path.len().checked_sub(4) {
            Some(at) if path.is_char_boundary(at) && path[at..].eq_ignore_ascii_case(".git") => {
                &path[..at]
            }
            _ => path,
        };
        let segment_ok = |segment: &str| {
            !matches!(segment, "" | "." | "..")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        let name = path.rsplit('/').next().unwrap_or_default();
        // `repo.git.git` would be `repo.git` here but `repo` to a server that drops `.git`.
        let second_suffix = name.to_ascii_lowercase().ends_with(".git");
        (path.split('/').all(segment_ok) && !second_suffix).then_some((host.as_str(), path))
    }

    /// `host/owner/repo`, lowercased and without `.git`, to compare repositories however
    /// their URLs are written; `None` where the URL names no repository (see
    /// `repository_parts`: local paths, `%`-escapes, dot segments, other characters).
    pub fn repository_key(&self) -> Option<String> {
        let (host, path) = self.repository_parts()?;
        Some(format!(
            "{}/{}",
            host.to_ascii_lowercase(),
            path.to_ascii_lowercase()
        ))
    }

    /// `owner/name` (as written) of the GitHub repository this URL names on GitHub host
    /// `host`: the repository key's path, when it is on `host` and is one owner (ASCII
    /// letters, digits, `-`) and one repository name, as GitHub allows them. Derived from
    /// the same parts as [`GitUrl::repository_key`], so the repository reported to is
    /// always the one the key names (up to case, which GitHub ignores).
    pub fn github_repository(&self, host: &str) -> Option<String> {
        let (url_host, path) = self.repository_parts()?;
        let (owner, _name) = path.split_once('/').filter(|(_, n)| !n.contains('/'))?;
        let owner_ok = owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (url_host.eq_ignore_ascii_case(host) && owner_ok).then(|| path.to_owned())
    }

    pub fn is_ssh(&self) -> bool {
        matches!(
            self,
            GitUrl::Remote {
                transport: Transport::Ssh,
                ..
            }
        )
    }
}

fn split_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 host lacks its closing `]`")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("`{p}` is not a port number"))?,
            ),
            None => None,
        };
        return Ok((host.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, "")) => Ok((host.to_owned(), None)),
        Some((host, port)) => Ok((
            host.to_owned(),
            Some(
                port.parse()
                    .map_err(|_| format!("`{port}` is not a port number"))?,
            ),
        )),
        None => Ok((hostport.to_owned(), None)),
    }
}

fn remote(
    transport: Transport,
    user: Option<String>,
    has_password: bool,
    host: String,
    port: Option<u16>,
    path: &str,
) -> Result<GitUrl, String> {
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host.starts_with('-') {
        return Err("the host starts with `-`, which ssh would read as an option".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        return Err(format!(
            "the host contains {}",
            crate::names::describe_char(c)
        ));
    }
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Err("the repository path is missing (e.g. `org/repo.git`)".into());
    }
    Ok(GitUrl::Remote {
        transport,
        user,
        has_password,
        host,
        port,
        path: path.to_owned(),
    })
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Ssh => "ssh",
            Transport::Https => "https",
            Transport::Insecure => "insecure",
        })
    }
}

/// Hiding a URL's credentials, kept here too for the callers that show git URLs.
pub use crate::redact::{redact_credentials, redact_url};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_forms_name_the_same_repository() {
        let forms = [
            "git@github.com:gravitational/helm-test.git",
            "ssh://git@github.com/gravitational/helm-test.git",
            "ssh://git@github.com:22/gravitational/helm-test",
            "https://github.com/gravitational/helm-test.git",
            "https://GitHub.com/Gravitational/helm-test/",
        ];
        for form in forms {
            let url = GitUrl::parse(form).unwrap();
            assert_eq!(
                url.repository_key().as_deref(),
                Some("github.com/gravitational/helm-test"),
                "{form}"
            );
        }
    }

    #[test]
    fn a_path_spelled_another_way_names_no_repository() {
        for alias in [
            "https://github.com/victim/rep%6F.git",
            "https://github.com/victim/./repo.git",
            "https://github.com/mallory/../victim/repo.git",
            "https://github.com/victim//repo",
            "https://github.com/victim/repo.git.git",
            "https://github.com/victim/repo?x=1",
            "git@github.com:victim/r\u{e9}po.git",
            "git@github.com:victim/..",
        ] {
            let url = GitUrl::parse(alias).unwrap();
            assert_eq!(url.repository_key(), None, "{alias}");
            assert_eq!(url.github_repository("github.com"), None, "{alias}");
        }
        assert_eq!(GitUrl::parse("/srv/r").unwrap().repository_key(), None);
    }

    #[test]
    fn the_github_repository_reported_to_is_the_one_the_key_names() {
        for (url, reported) in [
            ("git@github.com:Org/Repo.git", Some("Org/Repo")),
            ("https://github.com/org/my_repo.v2/", Some("org/my_repo.v2")),
            ("https://github.com/org/.github", Some("org/.github")),
            ("https://github.com/org/repo.GIT", Some("org/repo")),
            // A key, but not a repository GitHub has: nothing is reported.
            ("https://github.com/my_org/repo", None),
            ("https://github.com/group/sub/repo", None),
            ("https://github.com/org", None),
            ("git@gitlab.com:org/repo.git", None),
        ] {
            let url = GitUrl::parse(url).unwrap();
            let on_github = url.github_repository("GitHub.com");
            assert_eq!(on_github.as_deref(), reported, "{url:?}");
            if let Some(repository) = on_github {
                assert_eq!(
                    url.repository_key(),
                    Some(format!("github.com/{repository}").to_ascii_lowercase())
                );
            }
        }
    }

    #[test]
    fn transports_and_local_paths() {
        assert!(GitUrl::parse("git@github.com:a/b.git").unwrap().is_ssh());
        assert!(matches!(
            GitUrl::parse("/srv/repo.git").unwrap(),
            GitUrl::Local { .. }
        ));
        assert!(matches!(
            GitUrl::parse("./repo").unwrap(),
            GitUrl::Local { .. }
        ));
        assert!(matches!(
            GitUrl::parse("file:///srv/r").unwrap(),
            GitUrl::Local { .. }
        ));
        assert!(matches!(
            GitUrl::parse("http://h/r").unwrap(),
            GitUrl::Remote {
                transport: Transport::Insecure,
                ..
            }
        ));
        let with_token = GitUrl::parse("https://user:tok@h.example/r.git").unwrap();
        assert!(matches!(
            with_token,
            GitUrl::Remote {
                has_password: true,
                ..
            }
        ));
    }

    #[test]
    fn hostile_or_broken_urls_are_refused() {
        for bad in [
            "",
            "-oProxyCommand=touch /tmp/x",
            "ssh://-oProxyCommand=x/r",
            "git@github.com:org/repo.git; touch /tmp/x",
            "ftp://h/r",
            "repo",
            "https://h",
            "ssh://h:notaport/r",
            "https://h$(id)/r",
            "ext::sh -c touch% /tmp/x",
            "fd::0",
            "fd::17/repo",
            "git-remote-x::whatever",
        ] {
            assert!(GitUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
