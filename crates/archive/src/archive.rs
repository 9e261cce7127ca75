//! [`Archive`]: the I/O edge. Records and index objects are JSON written whole; the
//! index is updated by read, merge and conditional write.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kubeci_build::{BuildRef, JobRef};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ArchiveError, Result};
use crate::index::{select_for_deletion, Chunk, Head, IndexEntry, Retention};
use crate::layout::{chunk_of, Layout};
use crate::url::ArchiveUrl;

/// How many times an index object is read, merged and written again when other writers
/// keep changing it in between.
const UPDATE_ATTEMPTS: u32 = 20;

/// The largest record or index object read: kubeci writes far smaller ones (a record is
/// a few KiB, a chunk of 100 builds' summaries a few hundred), so a larger object is not
/// kubeci's and is refused before it is read, not held whole.
pub const MAX_JSON: u64 = 32 * 1024 * 1024;

/// How many chunks in a row without an entry a page reads one by one before it lists the
/// job's index objects to find the next ones.
const GAP_BEFORE_LISTING: u64 = 8;

/// An archive of builds in one object store, under one prefix.
#[derive(Debug)]
pub struct Archive {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) layout: Layout,
    /// The store takes conditional writes (`PutMode::Create` and `Update`); cleared the
    /// first time it answers that it does not (a local directory, S3 with
    /// `AWS_CONDITIONAL_PUT=disabled`).
    conditional: AtomicBool,
    /// One lock per job: this process updates a job's index one writer at a time.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Archive {
    /// The archive `url` names, its store configured from this process's environment
    /// (never from a Kubernetes Secret). A `file://` directory is made if missing.
    pub fn open(url: &ArchiveUrl) -> Result<Self> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::open_with_env(url, &env)
    }

    /// [`Archive::open`] with the environment given (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open_with_env(url: &ArchiveUrl, env: &[(String, String)]) -> Result<Self> {
        let store = crate::store::open_store(url, env)?;
        Ok(Self::from_store(store, &url.prefix))
    }

    /// An empty archive in memory (tests).
    pub fn in_memory() -> Self {
        Self::from_store(Arc::new(InMemory::new()), "")
    }

    /// An archive in `store` under `prefix` (tests wrap a store to watch or break it).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            layout: Layout::new(prefix),
            conditional: AtomicBool::new(true),
            locks: Default::default(),
        }
    }

    /// Writes the build's record (whole, replacing any earlier one). Write a build's logs
    /// first: the record is the commit point (docs/archive.md).
    pub async fn put_record<R: Serialize>(&self, build: BuildRef<'_>, record: &R) -> Result<()> {
        self.put_json(&self.layout.record(build)?, record).await
    }

    /// The build's record; `None` when the build is not archived.
    pub async fn record<R: DeserializeOwned>(&self, build: BuildRef<'_>) -> Result<Option<R>> {
        let key = self.layout.record(build)?;
        Ok(self
            .read_json(&key, "a build record")
            .await?
            .map(|(record, _)| record))
    }

    /// The highest build number ever archived for the job (never lowered, not even by
    /// retention): a new build's number must be above it.
    pub async fn highest(&self, job: JobRef<'_>) -> Result<Option<u64>> {
        Ok(self.head(job).await?.map(|head| head.highest))
    }

    async fn head(&self, job: JobRef<'_>) -> Result<Option<Head>> {
        let key = self.layout.head(job)?;
        Ok(self.read_json(&key, "a job's head").await?.map(|(h, _)| h))
    }

    /// Puts `entries` into the job's index, replacing entries of the same numbers (adding
    /// a build twice leaves one entry). Racing writers do not lose each other's entries
    /// where the store takes conditional writes (docs/archive.md says where it does not).
    pub async fn add_to_index<S: Serialize>(
        &self,
        job: JobRef<'_>,
        entries: &[IndexEntry<S>],
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let head_key = self.layout.head(job)?;
        let mut chunks: BTreeMap<u64, Vec<IndexEntry<serde_json::Value>>> = BTreeMap::new();
        for entry in entries {
            let summary =
                serde_json::to_value(&entry.summary).map_err(|source| ArchiveError::Encode {
                    key: self
                        .layout
                        .chunk(job, chunk_of(entry.number))
                        .unwrap_or_default(),
                    source,
                })?;
            chunks
                .entry(chunk_of(entry.number))
                .or_default()
                .push(IndexEntry {
                    number: entry.number,
                    started: entry.started,
                    ended: entry.ended,
                    summary,
                });
        }
        let numbers: Vec<u64> = entries.iter().map(|e| e.number).collect();
        let lock = self.lock(&head_key);
        let _one_writer = lock.lock().await;
        // The head first: a number is taken before its entry exists, so it is never given
        // again even if this writer stops here.
        self.update_json(&head_key, "a job's head", |head| Head::with(head, &numbers))
            .await?;
        for (chunk, entries) in chunks {
            let key = self.layout.chunk(job, chunk)?;
            self.update_json(&key, "an index chunk", |current: Option<Chunk<_>>| {
                let before = current.clone();
                let mut next = current.unwrap_or_else(|| Chunk::new(chunk));
                next.upsert(entries.iter().cloned());
                (before.as_ref() != Some(&next)).then_some(next)
            })
            .await?;
        }
        Ok(())
    }

    /// Up to `limit` entries of the job's index, newest first, numbered below `before`
    /// (all when `None`): a page of a job's archived builds. Reads the head and the
    /// chunks the page spans; one listing only to cross a gap of more than a few chunks
    /// without an entry (see `chunks_below`).
    pub async fn page<S: DeserializeOwned>(
        &self,
        job: JobRef<'_>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<IndexEntry<S>>> {
        let mut page = Vec::new();
        let Some(head) = self.head(job).await? else {
            return Ok(page);
        };
        let top = match before {
            Some(0) => return Ok(page),
            Some(before) => head.highest.min(before - 1),
            None => head.highest,
        };
        if limit == 0 || top < head.lowest {
            return Ok(page);
        }
        let lowest_chunk = chunk_of(head.lowest);
        let (mut chunk, mut empty_in_a_row) = (chunk_of(top), 0);
        // Once listed: the chunks left to read, the highest last.
        let mut listed: Option<Vec<u64>> = None;
        loop {
            let key = self.layout.chunk(job, chunk)?;
            let read = self.read_json::<Chunk<S>>(&key, "an index chunk").await?;
            let builds = read.map(|(chunk, _)| chunk.builds).unwrap_or_default();
            let found_before = page.len();
            for entry in builds {
                if head.span().contains(&entry.number) && entry.number <= top {
                    page.push(entry);
                    if page.len() == limit {
                        return Ok(page);
                    }
                }
            }
            empty_in_a_row = if page.len() == found_before {
                empty_in_a_row + 1
            } else {
                0
            };
            if listed.is_none() && empty_in_a_row >= GAP_BEFORE_LISTING {
                listed = Some(self.chunks_below(job, chunk, lowest_chunk).await?);
            }
            let next = match &mut listed {
                Some(left) => left.pop(),
                None => chunk.checked_sub(1).filter(|c| *c >= lowest_chunk),
            };
            match next {
                Some(next) => chunk = next,
                None => return Ok(page),
            }
        }
    }

    /// The job's index chunks that exist, numbered from `lowest` up to (not including)
    /// `below`, the highest last: one listing of the job's `index/`, bounded by the
    /// objects there, where reading each chunk of a gap in the numbers would be a read
    /// per hundred numbers skipped — without end for a build numbered near `u64::MAX`
    /// (a ledger or a Job numbered far ahead by whoever may write them).
    async fn chunks_below(&self, job: JobRef<'_>, below: u64, lowest: u64) -> Result<Vec<u64>> {
        let dir = format!("{}index/", self.layout.job_dir(job)?);
        let mut chunks: Vec<u64> = (self.list(&dir).await?.iter())
            .filter_map(|key| key.strip_prefix(&dir)?.strip_suffix(".json")?.parse().ok())
            .filter(|chunk| (lowest..below).contains(chunk))
            .collect();
        chunks.sort_unstable();
        chunks.dedup();
        Ok(chunks)
    }

    /// Deletes one archived build: its record first (so it no longer reads as archived),
    /// then its logs, then its index entry. Deleting what is already gone is no error, so
    /// a deletion cut short is finished by doing it again.
    pub async fn delete_build(&self, build: BuildRef<'_>) -> Result<()> {
        self.delete_files(build).await?;
        let job = JobRef {
            namespace: build.namespace,
            job: build.job,
        };
        self.remove_from_index(job, &[build.number]).await
    }

    /// Applies `retention` to the job: deletes at most `batch` builds it selects (see
    /// [`select_for_deletion`]) and raises the head's lowest number past them. Returns the
    /// numbers deleted; call again while it returns `batch` of them.
    pub async fn apply_retention(
        &self,
        job: JobRef<'_>,
        retention: &Retention,
        now: jiff::Timestamp,
        batch: usize,
    ) -> Result<Vec<u64>> {
        let entries: Vec<IndexEntry<serde_json::Value>> = self.page(job, None, usize::MAX).await?;
        let chosen = select_for_deletion(&entries, retention, now, batch);
        if chosen.is_empty() {
            return Ok(chosen);
        }
        for &number in &chosen {
            let build = BuildRef {
                namespace: job.namespace,
                job: job.job,
                number,
            };
            self.delete_files(build).await?;
        }
        self.remove_from_index(job, &chosen).await?;
        let kept_lowest = entries
            .iter()
            .map(|e| e.number)
            .filter(|n| !chosen.contains(n))
            .min();
        let head_key = self.layout.head(job)?;
        let lock = self.lock(&head_key);
        let _one_writer = lock.lock().await;
        self.update_json(&head_key, "a job's head", |head: Option<Head>| {
            let head = head?;
            let lowest = kept_lowest
                .unwrap_or(head.highest.saturating_add(1))
                .max(head.lowest);
            (lowest != head.lowest).then_some(Head { lowest, ..head })
        })
        .await?;
        Ok(chosen)
    }

    async fn delete_files(&self, build: BuildRef<'_>) -> Result<()> {
        self.delete(&self.layout.record(build)?).await?;
        self.delete_under(&self.layout.build_dir(build)?).await
    }

    /// Deletes every object under `dir`, by the names the store lists (a name with
    /// characters the store escapes is deleted as it is stored).
    pub(crate) async fn delete_under(&self, dir: &str) -> Result<()> {
        for meta in self.listed(dir).await? {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(ArchiveError::Delete {
                        key: meta.location.to_string(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    async fn remove_from_index(&self, job: JobRef<'_>, numbers: &[u64]) -> Result<()> {
        let head_key = self.layout.head(job)?;
        let lock = self.lock(&head_key);
        let _one_writer = lock.lock().await;
        let mut chunks: Vec<u64> = numbers.iter().map(|n| chunk_of(*n)).collect();
        chunks.dedup();
        for chunk in chunks {
            let key = self.layout.chunk(job, chunk)?;
            self.update_json(
                &key,
                "an index chunk",
                |c: Option<Chunk<serde_json::Value>>| {
                    let mut chunk = c?;
                    chunk.remove(numbers).then_some(chunk)
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The lock this process holds while it updates the job whose head is `head_key`.
    fn lock(&self, head_key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(head_key.to_owned()).or_default().clone()
    }

    /// Whether the store is still believed to take conditional writes.
    pub(crate) fn takes_conditional_writes(&self) -> bool {
        self.conditional.load(Ordering::Relaxed)
    }

    /// The store answered that it takes no conditional writes: from now on the last
    /// writer wins.
    pub(crate) fn no_conditional_writes(&self, key: &str) {
        self.conditional.store(false, Ordering::Relaxed);
        tracing::warn!(
            key,
            "the archive's store takes no conditional writes: index updates and commits \
             are last-writer-wins (run one kubeci writer per archive)"
        );
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(ArchiveError::Delete {
                key: key.to_owned(),
                source,
            }),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let listed = self.listed(dir).await?;
        Ok(listed.into_iter().map(|m| m.location.to_string()).collect())
    }

    /// Every object under `dir`, as the store lists it.
    async fn listed(&self, dir: &str) -> Result<Vec<object_store::ObjectMeta>> {
        use futures_util::TryStreamExt;
        let listed = (self.store.list(Some(&Path::from(dir))))
            .try_collect()
            .await;
        listed.map_err(|source| ArchiveError::List {
            prefix: dir.to_owned(),
            source,
        })
    }

    /// A JSON object and the version it was read at; `None` when absent.
    pub(crate) async fn read_json<T: DeserializeOwned>(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<(T, UpdateVersion)>> {
        let read_error = |source| ArchiveError::Read {
            key: key.to_owned(),
            source,
        };
        let got = match self.store.get(&Path::from(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(read_error(source)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let too_large = |size| ArchiveError::TooLarge {
            key: key.to_owned(),
            size,
            limit: MAX_JSON,
        };
        if got.meta.size > MAX_JSON {
            return Err(too_large(got.meta.size));
        }
        // Read within the bound even if the store's answer is longer than it said.
        let mut bytes = Vec::new();
        let mut pieces = got.into_stream();
        while let Some(piece) = futures_util::StreamExt::next(&mut pieces).await {
            let piece = piece.map_err(read_error)?;
            let size = (bytes.len() + piece.len()) as u64;
            if size > MAX_JSON {
                return Err(too_large(size));
            }
            bytes.extend_from_slice(&piece);
        }
        let value = serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Decode {
            key: key.to_owned(),
            expected,
            source,
        })?;
        Ok(Some((value, version)))
    }

    /// Reads the JSON object at `key`, lets `change` make its next value (`None`: no
    /// change) and writes it only if no one wrote it in between, reading again when
    /// someone did. Where the store has no conditional writes, the last writer wins.
    async fn update_json<T, F>(
        &self,
        key: &str,
        expected: &'static str,
        mut change: F,
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Option<T>,
    {
        let path = Path::from(key);
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.read_json::<T>(key, expected).await?;
            let (current, version) = match current {
                Some((value, version)) => (Some(value), Some(version)),
                None => (None, None),
            };
            let Some(next) = change(current) else {
                return Ok(());
            };
            let bytes = serde_json::to_vec(&next).map_err(|source| ArchiveError::Encode {
                key: key.to_owned(),
                source,
            })?;
            let mode = match (self.conditional.load(Ordering::Relaxed), version) {
                (false, _) => PutMode::Overwrite,
                (true, Some(version)) => PutMode::Update(version),
                (true, None) => PutMode::Create,
            };
            let options = PutOptions::from(mode);
            match self.store.put_opts(&path, bytes.into(), options).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(object_store::Error::NotImplemented { .. }) => {
                    self.no_conditional_writes(key);
                    continue;
                }
                Err(source) => {
                    return Err(ArchiveError::Write {
                        key: key.to_owned(),
                        source,
                    })
                }
            }
        }
        Err(ArchiveError::Contention {
            key: key.to_owned(),
            attempts: UPDATE_ATTEMPTS,
        })
    }
}
