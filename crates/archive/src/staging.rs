//! A build pod's files on their way in (issue 30): each upload of a collector is written
//! under its own name in the build's `staging/` — never where the build's files are read
//! from — and only its build's `done` moves the uploads it finds there into place, one
//! `done` at a time (`committing.json`), before `outputs.json` is created. So an upload
//! that ends after its build's files were committed is never one of them, and nothing
//! replaces a file of a build once it is committed.

use bytes::Bytes;
use futures_core::Stream;
use futures_util::StreamExt;
use kubeci_build::BuildRef;
use kubeci_engine::archive::{CommitClaim, FileKind, StagedFile};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::archive::Archive;
use crate::error::{ArchiveError, Result};

/// Who commits a build's files (a name no other claim has), and since when (seconds since
/// the epoch).
#[derive(Debug, Serialize, Deserialize)]
struct Committing {
    since: i64,
    #[serde(default)]
    holder: String,
}

/// A name no other upload has: when it began (so names sort by it) and 64 random bits.
fn upload_name() -> String {
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .expect("the system's random source");
    let now = jiff::Timestamp::now().as_nanosecond();
    format!("{now:020}-{}", hex::encode(random))
}

fn kind_of(dir: &str) -> Option<FileKind> {
    [FileKind::Report, FileKind::Artifact]
        .into_iter()
        .find(|kind| kind.dir() == dir)
}

/// A key's segments as they were written (object_store escapes some characters).
fn decoded(part: object_store::path::PathPart<'_>) -> String {
    let raw = part.as_ref();
    (percent_encoding::percent_decode_str(raw).decode_utf8())
        .map_or_else(|_| raw.to_owned(), |decoded| decoded.into_owned())
}

impl Archive {
    /// Writes one file a build pod's collector sends, as `kind` at `path`, from `bytes`
    /// as they come, under a new upload of its own (see [`Archive::put_file`] for the
    /// limit). The bytes written.
    pub async fn put_staged<S, E>(
        &self,
        build: BuildRef<'_>,
        kind: FileKind,
        path: &str,
        bytes: S,
        limit: u64,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let key = self
            .layout
            .staged(build, &upload_name(), kind.dir(), path)?;
        self.put_streamed(key, bytes, limit).await
    }

    /// The files staged for a build, at most `at_most`: of several uploads of one kind
    /// and path, the newest.
    pub async fn list_staged(
        &self,
        build: BuildRef<'_>,
        at_most: usize,
    ) -> Result<Vec<StagedFile>> {
        let prefix = self.layout.staging_dir(build)?;
        let under = Path::from(prefix.as_str());
        let depth = under.parts().count();
        let mut listed = self.store.list(Some(&under));
        let mut staged: Vec<StagedFile> = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(|source| ArchiveError::List {
                prefix: prefix.clone(),
                source,
            })?;
            let parts: Vec<String> = meta.location.parts().skip(depth).map(decoded).collect();
            // UPLOAD/DIR/PATH…; a staging file a kill left beside its object (`PATH#1`)
            // is not an upload.
            let [upload, dir, path @ ..] = parts.as_slice() else {
                continue;
            };
            let Some(kind) = kind_of(dir) else { continue };
            if path.is_empty() || meta.location.as_ref().contains('#') {
                continue;
            }
            staged.push(StagedFile {
                upload: upload.clone(),
                kind,
                path: path.join("/"),
                size: meta.size,
            });
            if staged.len() >= at_most {
                break;
            }
        }
        // Newest first within each kind and path, then keep the first of each.
        staged.sort_by(|a, b| {
            (a.kind.dir(), &a.path, &b.upload).cmp(&(b.kind.dir(), &b.path, &a.upload))
        });
        staged.dedup_by(|later, first| later.kind == first.kind && later.path == first.path);
        Ok(staged)
    }

    /// Moves a staged file to where its build's files are read from, replacing what is
    /// there (only the build's `done` does this, one at a time).
    pub async fn take_staged(&self, build: BuildRef<'_>, staged: &StagedFile) -> Result<()> {
        let from = self
            .layout
            .staged(build, &staged.upload, staged.kind.dir(), &staged.path)?;
        let to = match staged.kind {
            FileKind::Artifact => self.layout.artifact(build, &staged.path)?,
            FileKind::Report => self.layout.report(build, &staged.path)?,
        };
        let moved = self
            .store
            .rename(&Path::from(from.as_str()), &Path::from(to.as_str()))
            .await;
        moved.map_err(|source| ArchiveError::Write { key: to, source })
    }

    /// Deletes what is left staged for a build (uploads not taken: older copies, files
    /// over its limits). An upload still being written when this runs stays until the
    /// build is deleted.
    pub async fn clear_staged(&self, build: BuildRef<'_>) -> Result<()> {
        self.delete_under(&self.layout.staging_dir(build)?).await
    }

    /// Claims the right to commit a build's files for `lease_seconds` from `now`: `None`
    /// when another claim, younger than that, holds it. A claim is taken over by a
    /// conditional write on the version read; where the store cannot update conditionally
    /// (a local directory) the old claim is deleted and a new one created only if absent,
    /// so of two taking it over one wins but in a race of milliseconds.
    pub async fn claim_commit(
        &self,
        build: BuildRef<'_>,
        lease_seconds: i64,
        now: i64,
    ) -> Result<Option<CommitClaim>> {
        let key = self.layout.committing(build)?;
        let held: Option<(Committing, UpdateVersion)> =
            self.read_json(&key, "a build's commit claim").await?;
        let mode = match held {
            Some((claim, _)) if now < claim.since.saturating_add(lease_seconds) => return Ok(None),
            Some((_, version)) if self.takes_conditional_writes() => PutMode::Update(version),
            Some(_) => {
                self.delete(&key).await?;
                PutMode::Create
            }
            None => PutMode::Create,
        };
        self.write_claim(&key, now, upload_name(), mode).await
    }

    /// Renews `claim` from `now`, if it is still this one's: `None` once another took it
    /// over (its lease ran out).
    pub async fn renew_commit(
        &self,
        build: BuildRef<'_>,
        claim: &CommitClaim,
        now: i64,
    ) -> Result<Option<CommitClaim>> {
        let key = self.layout.committing(build)?;
        match self.still_held(&key, claim).await? {
            Some(mode) => {
                self.write_claim(&key, now, claim.holder.clone(), mode)
                    .await
            }
            None => Ok(None),
        }
    }

    /// Gives `claim` up (a `done` that failed), if it is still this one's: the next
    /// `done` of the build claims it at once.
    pub async fn release_commit(&self, build: BuildRef<'_>, claim: &CommitClaim) -> Result<()> {
        let key = self.layout.committing(build)?;
        if let Some(mode) = self.still_held(&key, claim).await? {
            self.write_claim(&key, 0, claim.holder.clone(), mode)
                .await?;
        }
        Ok(())
    }

    /// How to write `claim` again while it is still its holder's (read now): on the
    /// version read, where the store updates conditionally; `None` when another holds it.
    async fn still_held(&self, key: &str, claim: &CommitClaim) -> Result<Option<PutMode>> {
        let held: Option<(Committing, UpdateVersion)> =
            self.read_json(key, "a build's commit claim").await?;
        Ok(match held {
            Some((held, version)) if held.holder == claim.holder => {
                Some(if self.takes_conditional_writes() {
                    PutMode::Update(version)
                } else {
                    PutMode::Overwrite
                })
            }
            _ => None,
        })
    }

    async fn write_claim(
        &self,
        key: &str,
        since: i64,
        holder: String,
        mode: PutMode,
    ) -> Result<Option<CommitClaim>> {
        let claim = Committing { since, holder };
        let written = self.put_json_as(key, &claim, mode).await?;
        Ok(written.map(|_| CommitClaim {
            since,
            holder: claim.holder,
        }))
    }

    /// Writes `value` at `key` with `mode`: the version written, or `None` when another
    /// writer was first (the object exists, or changed since it was read). What the store
    /// cannot do conditionally, it does whatever is there (the last writer wins).
    pub(crate) async fn put_json_as<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        mode: PutMode,
    ) -> Result<Option<UpdateVersion>> {
        let bytes = serde_json::to_vec(value).map_err(|source| ArchiveError::Encode {
            key: key.to_owned(),
            source,
        })?;
        let bytes = Bytes::from(bytes);
        let path = Path::from(key);
        // A store may create only if absent yet not update by version (a local
        // directory): creating is always tried.
        let mode = match mode {
            PutMode::Update(_) if !self.takes_conditional_writes() => PutMode::Overwrite,
            mode => mode,
        };
        let written = self
            .store
            .put_opts(&path, bytes.clone().into(), PutOptions::from(mode))
            .await;
        let written = match written {
            Ok(written) => written,
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => return Ok(None),
            Err(object_store::Error::NotImplemented { .. }) => {
                self.no_conditional_writes(key);
                let put = self.store.put(&path, bytes.into()).await;
                put.map_err(|source| ArchiveError::Write {
                    key: key.to_owned(),
                    source,
                })?
            }
            Err(source) => {
                return Err(ArchiveError::Write {
                    key: key.to_owned(),
                    source,
                })
            }
        };
        Ok(Some(UpdateVersion {
            e_tag: written.e_tag,
            version: written.version,
        }))
    }
}
