//! `--archive URL` and the archive's default retention: where builds are kept once they
//! ended (docs/archive.md), opened from kubeci's own environment.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kubeci_engine::archive::{ArchiveRetention, Archiving};

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// Keep every build — its record and each step's log — in object storage once it
    /// ended: `s3://BUCKET[/PREFIX]` (any S3-compatible store; endpoint, region and keys
    /// from the `AWS_*` environment), `gs://BUCKET[/PREFIX]`, `az://CONTAINER[/PREFIX]` or
    /// `file:///PATH` [default with --local: file://DATA/archive, beside its database].
    #[arg(long, value_name = "URL")]
    archive: Option<String>,
    /// With --local: keep builds in its database only, never in an archive.
    #[arg(long, conflicts_with = "archive", requires = "local")]
    no_archive: bool,
    /// Archived builds that ended longer ago than this are deleted (`90d`, `12h`), unless
    /// their job's `archive.retention` says otherwise [default: kept].
    #[arg(long, value_name = "DURATION")]
    archive_max_age: Option<String>,
    /// Only the newest N archived builds of each job are kept, unless their job's
    /// `archive.retention` says otherwise [default: all].
    #[arg(long, value_name = "N")]
    archive_max_count: Option<u64>,
}

impl ArchiveArgs {
    /// The archive the flags name: `--archive URL`, else (for `--local`, unless
    /// `--no-archive`) `DATA/archive`; opened with its default retention.
    pub fn archiving(&self, local_data: Option<&Path>) -> Result<Archiving> {
        let retention = ArchiveRetention {
            max_age: self
                .archive_max_age
                .as_deref()
                .map(|age| super::duration_flag("--archive-max-age", age).map(|d| d.as_secs()))
                .transpose()?,
            max_count: self.archive_max_count,
        };
        let url = match (&self.archive, local_data) {
            (Some(url), _) => url.clone(),
            (None, Some(data)) if !self.no_archive => {
                let dir = std::path::absolute(data.join("archive"))
                    .with_context(|| format!("cannot find {}", data.display()))?;
                format!("file://{}", dir.display())
            }
            _ => {
                if retention != ArchiveRetention::default() {
                    bail!(
                        "--archive-max-age and --archive-max-count need an archive (--archive URL)"
                    );
                }
                return Ok(Archiving::default());
            }
        };
        let url: kubeci_archive::ArchiveUrl = url.parse().context("--archive")?;
        let archive = kubeci_archive::Archive::open(&url)
            .with_context(|| format!("cannot open the archive {url}"))?;
        tracing::info!(archive = %url, "builds are archived once they end");
        Ok(Archiving {
            archive: Some(Arc::new(archive)),
            retention,
            ..Archiving::default()
        })
    }

    /// Whether `--archive` was given.
    pub fn given(&self) -> bool {
        self.archive.is_some()
    }
}
