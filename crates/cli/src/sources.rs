//! Reading job sources from paths: files, directories (recursively), standard input.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kubeci_spec::{LoadOptions, LoadReport, NamespacePolicy};

/// Options shared by the commands that read jobs.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Namespace of ConfigMaps that name none (as `kubectl apply -n` would apply them).
    #[arg(long, short = 'n', default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// Allow jobs declared in namespace FROM to run their builds in namespace TO
    /// (repeatable; FROM may be `*`).
    #[arg(long = "allow-namespace", value_name = "FROM=TO", value_parser = NamespacePolicy::parse_pair)]
    pub allow_namespace: Vec<(String, String)>,
}

impl SourceArgs {
    pub fn options(&self) -> LoadOptions {
        LoadOptions {
            default_namespace: self.namespace.clone(),
            policy: NamespacePolicy {
                allowed: self.allow_namespace.clone(),
            },
            ..LoadOptions::default()
        }
    }
}

/// A file that was read, with its text kept for showing source lines.
pub struct Source {
    pub name: String,
    pub bytes: Vec<u8>,
    pub report: LoadReport,
}

/// The files a path stands for: itself, or the YAML files below a directory, sorted.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    if path.as_os_str() == "-" {
        return Ok(vec![path.to_owned()]);
    }
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    Ok(kubeci_jobfiles::job_files(path)?)
}

/// Reads one file (at most one byte more than the loader accepts, so a huge file is
/// refused without being read whole) and loads its jobs.
pub fn read(path: &Path, options: &LoadOptions) -> Result<Source> {
    use kubeci_jobfiles::read_bounded;
    let (name, bytes) = if path.as_os_str() == "-" {
        let bytes = read_bounded(std::io::stdin()).context("cannot read standard input")?;
        ("<stdin>".to_owned(), bytes)
    } else {
        let bytes = std::fs::File::open(path)
            .and_then(read_bounded)
            .with_context(|| format!("cannot read {}", path.display()))?;
        (path.display().to_string(), bytes)
    };
    let report = kubeci_spec::load(&name, &bytes, options);
    Ok(Source {
        name,
        bytes,
        report,
    })
}
