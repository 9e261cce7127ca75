//! What the tests share: a store that records what is asked of it, and small builders.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use kubeci_archive::{Archive, IndexEntry};
use kubeci_build::{BuildRef, JobRef};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

pub const JOB: JobRef<'static> = JobRef {
    namespace: "ci",
    job: "web",
};

pub fn build(number: u64) -> BuildRef<'static> {
    BuildRef {
        namespace: "ci",
        job: "web",
        number,
    }
}

pub fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

/// An ended build's index entry whose summary is its state.
pub fn entry(number: u64, state: &str) -> IndexEntry<String> {
    IndexEntry {
        number,
        started: at("2026-12-01T10:00:00Z"),
        ended: Some(at("2026-12-01T10:05:00Z")),
        summary: state.to_owned(),
    }
}

/// The two stores a test runs over: a directory (kept alive by the returned guard) and
/// memory, each behind a [`Recording`].
pub fn stores() -> Vec<(&'static str, Arc<Recording>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    vec![
        ("file", Recording::over(Arc::new(local)), Some(dir)),
        (
            "memory",
            Recording::over(Arc::new(object_store::memory::InMemory::new())),
            None,
        ),
    ]
}

pub fn archive_over(store: &Arc<Recording>) -> Archive {
    Archive::from_store(store.clone(), "kubeci")
}

/// What was asked of a store.
#[derive(Debug, Default)]
pub struct Seen {
    /// Each read: its key and, for a range read, the range's length.
    pub gets: Vec<(String, Option<u64>)>,
    pub puts: Vec<(String, usize)>,
    pub lists: usize,
    pub largest_part: usize,
    /// Multipart uploads aborted (on S3 their parts would otherwise stay, billed).
    pub aborts: usize,
    pub most_parts_in_flight: usize,
    /// Per key, the most writers that had read it and not yet written it back.
    pub most_updating: HashMap<String, usize>,
    updating: HashMap<String, usize>,
}

/// A store that records what is asked of it, and can refuse conditional writes (as a
/// directory or S3 with `AWS_CONDITIONAL_PUT=disabled` do) or yield on each read so that
/// concurrent writers interleave.
#[derive(Debug)]
pub struct Recording {
    inner: Arc<dyn ObjectStore>,
    pub seen: Arc<Mutex<Seen>>,
    in_flight: Arc<AtomicUsize>,
    pub refuse_conditional: bool,
    pub yield_on_read: bool,
}

impl Recording {
    pub fn over(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(Self::new(inner))
    }

    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            seen: Arc::default(),
            in_flight: Arc::default(),
            refuse_conditional: false,
            yield_on_read: false,
        }
    }

    pub fn take(&self) -> Seen {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    /// The object's bytes, read past the archive.
    pub async fn raw(&self, key: &str) -> Option<Bytes> {
        match self
            .inner
            .get_opts(&Path::from(key), GetOptions::default())
            .await
        {
            Ok(got) => Some(got.bytes().await.unwrap()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{key}: {e}"),
        }
    }

    /// Writes bytes past the archive (another tool, a writer cut short).
    pub async fn put_raw(&self, key: &str, bytes: &[u8]) {
        let payload = PutPayload::from(bytes.to_vec());
        let options = PutOptions::default();
        self.inner
            .put_opts(&Path::from(key), payload, options)
            .await
            .unwrap();
    }

    /// Every key under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::TryStreamExt;
        let listed: Vec<ObjectMeta> = self
            .inner
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        {
            let mut seen = self.seen.lock().unwrap();
            let key = location.to_string();
            seen.puts.push((key.clone(), payload.content_length()));
            if let Some(n) = seen.updating.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
        }
        if self.refuse_conditional && !matches!(opts.mode, object_store::PutMode::Overwrite) {
            return Err(object_store::Error::NotImplemented {
                operation: "conditional put".into(),
                implementer: "Recording".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(RecordingUpload {
            inner,
            in_flight: self.in_flight.clone(),
            seen: self.seen.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.to_string();
        let range = match &options.range {
            Some(GetRange::Bounded(range)) => Some(range.end - range.start),
            Some(_) => Some(u64::MAX),
            None => None,
        };
        if !options.head {
            let mut seen = self.seen.lock().unwrap();
            seen.gets.push((key.clone(), range));
            if key.contains("/index/") || key.ends_with("head.json") {
                let now = {
                    let n = seen.updating.entry(key.clone()).or_default();
                    *n += 1;
                    *n
                };
                let most = seen.most_updating.entry(key.clone()).or_default();
                *most = (*most).max(now);
            }
        }
        let got = self.inner.get_opts(location, options).await;
        if self.yield_on_read {
            // Between this read and the caller's write, let the other writers run.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
        got
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.seen.lock().unwrap().lists += 1;
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.seen.lock().unwrap().lists += 1;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A multipart upload that records its parts' sizes and how many are in flight at once.
#[derive(Debug)]
struct RecordingUpload {
    inner: Box<dyn MultipartUpload>,
    in_flight: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
}

#[async_trait]
impl MultipartUpload for RecordingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut seen = self.seen.lock().unwrap();
            seen.largest_part = seen.largest_part.max(data.content_length());
            seen.most_parts_in_flight = seen.most_parts_in_flight.max(now);
        }
        let part = self.inner.put_part(data);
        let in_flight = self.in_flight.clone();
        Box::pin(async move {
            let done = part.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            done
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.seen.lock().unwrap().aborts += 1;
        self.inner.abort().await
    }
}
