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

    /// `host/owner/repo`, lowercased and without `.git`, to compare repositories however
    /// their URLs are written.
    pub fn repository_key(&self) -> Option<String> {
        match self {
            GitUrl::Remote { host, path, .. } => {
                let path = path
                    .trim_matches('/')
                    .trim_end_matches(".git")
                    .trim_end_matches('/');
                Some(format!(
                    "{}/{}",
                    host.to_ascii_lowercase(),
                    path.to_ascii_lowercase()
                ))
            }
            GitUrl::Local { .. } => None,
        }
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
