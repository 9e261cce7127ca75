//! `--archive URL`: where the archive lives, parsed without touching the store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ArchiveError;

/// The store an archive URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// `s3://BUCKET`: AWS S3 or any S3-compatible store (endpoint, region and keys from
    /// the `AWS_*` environment variables).
    S3 { bucket: String },
    /// `gs://BUCKET`: Google Cloud Storage (credentials from `GOOGLE_*`).
    Gcs { bucket: String },
    /// `az://CONTAINER`: Azure Blob Storage (account and credentials from `AZURE_*`).
    Azure { container: String },
    /// `file:///PATH`: a directory on this machine.
    File { root: PathBuf },
}

/// A parsed `--archive` URL: a store and the prefix every key is written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveUrl {
    pub store: Store,
    /// Segments joined by `/`, without a leading or trailing `/`; empty for none (always
    /// empty for `file://`, whose whole path is the root).
    pub prefix: String,
}

const FORMS: &str =
    "s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], az://CONTAINER[/PREFIX] or file:///PATH";

impl FromStr for ArchiveUrl {
    type Err = ArchiveError;

    fn from_str(url: &str) -> Result<Self, ArchiveError> {
        parse(url).map_err(|problem| ArchiveError::Url {
            url: url.to_owned(),
            problem,
        })
    }
}

fn parse(url: &str) -> Result<ArchiveUrl, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(if url.starts_with('/') {
            format!("a directory is written as a file URL: file://{url}")
        } else {
            format!("not a URL; write one of {FORMS}")
        });
    };
    if let Some(at) = rest.find(['?', '#']) {
        return Err(format!(
            "`{}` has no meaning here: settings come from the environment (AWS_*, GOOGLE_*, \
             AZURE_*), not from the URL; remove it",
            &rest[at..]
        ));
    }
    let store = match scheme.to_ascii_lowercase().as_str() {
        "file" => return parse_file(rest),
        "s3" => Store::S3 {
            bucket: bucket(rest, "bucket", "s3://BUCKET[/PREFIX]")?,
        },
        "gs" => Store::Gcs {
            bucket: bucket(rest, "bucket", "gs://BUCKET[/PREFIX]")?,
        },
        "az" => Store::Azure {
            container: bucket(rest, "container", "az://CONTAINER[/PREFIX]")?,
        },
        "http" | "https" => {
            return Err(format!(
                "an endpoint is not an archive URL: name the bucket (s3://BUCKET[/PREFIX]) and \
                 give the endpoint in AWS_ENDPOINT_URL={scheme}://{rest}"
            ))
        }
        other => return Err(format!("unknown scheme `{other}://`; write one of {FORMS}")),
    };
    let prefix = match rest.split_once('/') {
        Some((_, prefix)) => normalise_prefix(prefix)?,
        None => String::new(),
    };
    Ok(ArchiveUrl { store, prefix })
}

/// The bucket (or container) of `s3://BUCKET/...`.
fn bucket(rest: &str, what: &str, form: &str) -> Result<String, String> {
    let name = rest.split('/').next().unwrap_or_default();
    if name.contains('@') {
        return Err(
            "credentials do not belong in the URL (it is logged and shown): give them in the \
             environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_*, AZURE_*)"
                .to_owned(),
        );
    }
    if name.is_empty() {
        return Err(format!("no {what}: write {form}"));
    }
    if name.contains(':') {
        return Err(format!(
            "`{name}` is not a {what} name: a host and port go in AWS_ENDPOINT_URL, the URL \
             names the {what}: {form}"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{what} `{name}` has `{bad}`: {what} names are lowercase letters, digits, `.`, `-` \
             and `_`"
        ));
    }
    Ok(name.to_owned())
}

/// `a/b/` → `a/b`, each segment a plain name.
fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    if prefix.is_empty() {
        return Ok(String::new());
    }
    for segment in prefix.split('/') {
        check_segment(segment).map_err(|problem| format!("prefix `{prefix}`: {problem}"))?;
    }
    Ok(prefix.to_owned())
}

/// One segment of a prefix: a plain, portable name.
fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("has an empty segment (`//`); remove the extra `/`".to_owned());
    }
    if segment == "." || segment == ".." {
        return Err(format!(
            "has a `{segment}` segment; write the path it means"
        ));
    }
    if let Some(bad) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "has `{bad}`: prefixes are letters, digits, `.`, `-` and `_` between `/`s"
        ));
    }
    Ok(())
}

fn parse_file(rest: &str) -> Result<ArchiveUrl, String> {
    if !rest.starts_with('/') {
        let host = rest.split('/').next().unwrap_or_default();
        return Err(if host.is_empty() || host == "." || host == ".." {
            "a file URL takes an absolute path: file:///PATH (three slashes)".to_owned()
        } else {
            format!(
                "`{host}` would be a host; a file URL takes an absolute path and no host: \
                 file:///PATH (three slashes), e.g. file:///var/lib/kubeci/archive"
            )
        });
    }
    let path = rest
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(rest);
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "`{path}` has a `.` or `..` segment; write the path it means"
        ));
    }
    Ok(ArchiveUrl {
        store: Store::File {
            root: PathBuf::from(path),
        },
        prefix: String::new(),
    })
}

/// The URL in its canonical form (no trailing `/`).
impl fmt::Display for ArchiveUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, name) = match &self.store {
            Store::S3 { bucket } => ("s3", bucket.as_str()),
            Store::Gcs { bucket } => ("gs", bucket.as_str()),
            Store::Azure { container } => ("az", container.as_str()),
            Store::File { root } => return write!(f, "file://{}", root.display()),
        };
        write!(f, "{scheme}://{name}")?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> ArchiveUrl {
        url.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn problem(url: &str) -> String {
        match url.parse::<ArchiveUrl>() {
            Ok(parsed) => panic!("{url} parsed as {parsed:?}"),
            Err(ArchiveError::Url {
                url: named,
                problem,
            }) => {
                assert_eq!(named, url, "the error names the URL as given");
                problem
            }
            Err(other) => panic!("{url}: {other}"),
        }
    }

    #[test]
    fn each_store_with_and_without_a_prefix() {
        let s3 = ok("s3://ci-archive/kubeci/prod/");
        assert_eq!(
            s3.store,
            Store::S3 {
                bucket: "ci-archive".into()
            }
        );
        assert_eq!(s3.prefix, "kubeci/prod");
        assert_eq!(s3.to_string(), "s3://ci-archive/kubeci/prod");
        assert_eq!(ok("s3://b").prefix, "");
        assert_eq!(ok("s3://b/").to_string(), "s3://b");
        assert_eq!(
            ok("gs://logs.example.com/x").store,
            Store::Gcs {
                bucket: "logs.example.com".into()
            }
        );
        assert_eq!(
            ok("AZ://builds/ci").store,
            Store::Azure {
                container: "builds".into()
            }
        );
        let file = ok("file:///var/lib/kubeci/archive/");
        assert_eq!(
            file.store,
            Store::File {
                root: "/var/lib/kubeci/archive".into()
            }
        );
        assert_eq!(file.to_string(), "file:///var/lib/kubeci/archive");
        assert_eq!(ok("file:///").store, Store::File { root: "/".into() });
    }

    #[test]
    fn a_store_url_without_its_bucket_says_how_to_write_it() {
        assert_eq!(problem("s3://"), "no bucket: write s3://BUCKET[/PREFIX]");
        assert_eq!(
            problem("s3:///prefix"),
            "no bucket: write s3://BUCKET[/PREFIX]"
        );
        assert_eq!(problem("gs://"), "no bucket: write gs://BUCKET[/PREFIX]");
        assert_eq!(
            problem("az://"),
            "no container: write az://CONTAINER[/PREFIX]"
        );
    }

    #[test]
    fn unknown_schemes_and_endpoints_are_refused_with_the_forms_that_work() {
        let unknown = problem("s4://bucket");
        assert!(unknown.starts_with("unknown scheme `s4://`"), "{unknown}");
        assert!(unknown.contains("s3://BUCKET[/PREFIX]"), "{unknown}");
        let endpoint = problem("http://127.0.0.1:7070/ci");
        assert!(
            endpoint.contains("AWS_ENDPOINT_URL=http://127.0.0.1:7070/ci"),
            "{endpoint}"
        );
        assert!(problem("ci-archive").starts_with("not a URL"));
        assert!(problem("s3://minio:9000/ci").contains("AWS_ENDPOINT_URL"));
    }

    #[test]
    fn file_urls_take_an_absolute_path() {
        assert_eq!(
            problem("/var/archive"),
            "a directory is written as a file URL: file:///var/archive"
        );
        assert!(problem("file://archive/builds").contains("`archive` would be a host"));
        assert!(problem("file://./archive").contains("three slashes"));
        assert!(problem("file://").contains("absolute path"));
        assert!(problem("file:///srv/../etc").contains("`..`"));
    }

    #[test]
    fn credentials_queries_and_odd_prefixes_are_refused() {
        assert!(problem("s3://AKID:secret@bucket/x").contains("AWS_ACCESS_KEY_ID"));
        assert!(problem("s3://bucket/x?region=eu-west-1").contains("`?region=eu-west-1`"));
        assert!(problem("s3://bucket#x").contains("`#x`"));
        assert!(problem("s3://Bucket").contains("bucket `Bucket` has `B`"));
        assert!(problem("s3://b/a//c").contains("empty segment"));
        assert!(problem("s3://b/a/../c").contains("`..` segment"));
        assert!(problem("s3://b/a b").contains("has ` `"));
    }
}
