//! What build pods' collectors may hold of this kubeci at once (issue 30): each upload
//! holds about one part of its file in memory until it is written (5 MiB), so uploads
//! take a slot — at most [`UPLOADS_AT_ONCE`] in all, [`UPLOADS_PER_NAMESPACE`] of one
//! namespace's builds and [`UPLOADS_PER_BUILD`] of one build — waited for at most
//! [`SLOT_WAIT`], and each file must arrive within [`FILE_DEADLINE`]. A collector sends
//! one file after the other and tries again on a `503`, so these bound a hostile token
//! holder without slowing an honest build; a tenant's builds trickling uploads (its own,
//! or Jobs it made with kubeci's labels) hold its namespace's share, never the other
//! namespaces' slots.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Semaphore, SemaphorePermit};

use kubeci_build::BuildRef;

use crate::archive::{FileChunks, StepReadError};
use crate::collector::CollectRefusal;

/// Uploads written at once by this kubeci, all builds together.
pub const UPLOADS_AT_ONCE: usize = 8;

/// Uploads of one build written at once by this kubeci (its collector sends one file at
/// a time; one more lets it try again while its earlier attempt is still being dropped).
pub const UPLOADS_PER_BUILD: usize = 2;

/// Uploads of one namespace's builds written at once by this kubeci: half of them, so
/// one tenant's builds leave the other half to the other namespaces.
pub const UPLOADS_PER_NAMESPACE: usize = UPLOADS_AT_ONCE / 2;

/// How long an upload waits for a slot before it is answered `503` (try again).
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// How long one file may take to arrive: a collector hands over its build's files within
/// its pod's grace period (60 s), so nothing honest is near it.
pub const FILE_DEADLINE: Duration = Duration::from_secs(120);

/// The slots of one kubeci.
pub struct UploadSlots {
    at_once: Semaphore,
    per_namespace: usize,
    per_build: usize,
    /// Uploads being written, by build (`namespace/job/number`).
    writing: Mutex<BTreeMap<String, usize>>,
}

impl Default for UploadSlots {
    fn default() -> Self {
        UploadSlots::new(UPLOADS_AT_ONCE, UPLOADS_PER_BUILD).per_namespace(UPLOADS_PER_NAMESPACE)
    }
}

/// One upload's slot, given back when dropped.
pub struct UploadSlot<'a> {
    _counted: Counted<'a>,
    _permit: SemaphorePermit<'a>,
}

/// An upload counted against its build (and namespace), given back when dropped —
/// whenever that is: a request dropped while it waits for its slot (its client hung up)
/// takes its count with it.
struct Counted<'a> {
    slots: &'a UploadSlots,
    build: String,
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.slots.release(&self.build);
    }
}

fn busy(why: String) -> CollectRefusal {
    CollectRefusal::new(503, "uploads-busy", why)
}

impl UploadSlots {
    pub fn new(at_once: usize, per_build: usize) -> Self {
        UploadSlots {
            at_once: Semaphore::new(at_once),
            per_namespace: at_once,
            per_build,
            writing: Mutex::default(),
        }
    }

    /// These slots, of which one namespace's builds take at most `per_namespace`.
    pub fn per_namespace(self, per_namespace: usize) -> Self {
        UploadSlots {
            per_namespace,
            ..self
        }
    }

    /// A slot for an upload of build `at`, waiting at most `wait` for one; `503` when its
    /// build or its namespace already writes as many as it may, or none frees in time.
    pub async fn take(
        &self,
        at: BuildRef<'_>,
        wait: Duration,
    ) -> Result<UploadSlot<'_>, CollectRefusal> {
        // Namespaces and jobs are names without `/`: a key's first segment is its
        // namespace.
        let build = &format!("{}/{}/{}", at.namespace, at.job, at.number);
        {
            let mut writing = self.writing.lock().expect("the uploads lock");
            let namespace = format!("{}/", at.namespace);
            let of_namespace: usize = (writing.range(namespace.clone()..))
                .take_while(|(key, _)| key.starts_with(&namespace))
                .map(|(_, count)| count)
                .sum();
            if of_namespace >= self.per_namespace {
                return Err(busy(format!(
                    "the builds of namespace {} already send {} files at once: try again in a few seconds",
                    at.namespace, self.per_namespace
                )));
            }
            let count = writing.entry(build.to_owned()).or_default();
            if *count >= self.per_build {
                return Err(busy(format!(
                    "build {build} already sends {} files at once: send one after the other",
                    self.per_build
                )));
            }
            *count += 1;
        }
        let counted = Counted {
            slots: self,
            build: build.to_owned(),
        };
        let permit = tokio::time::timeout(wait, self.at_once.acquire()).await;
        match permit {
            Ok(Ok(permit)) => Ok(UploadSlot {
                _counted: counted,
                _permit: permit,
            }),
            _ => Err(busy(
                "kubeci is taking as many files as it may at once; try again in a few seconds"
                    .to_owned(),
            )),
        }
    }

    /// Uploads being written now, all builds together.
    pub fn writing(&self) -> usize {
        self.writing
            .lock()
            .expect("the uploads lock")
            .values()
            .sum()
    }

    fn release(&self, build: &str) {
        let mut writing = self.writing.lock().expect("the uploads lock");
        if let Some(count) = writing.get_mut(build) {
            *count -= 1;
            if *count == 0 {
                writing.remove(build);
            }
        }
    }
}

/// `bytes`, ended by an error once `deadline` has passed (`late` is then set): a file
/// trickled in never holds its slot longer.
pub fn within(
    bytes: FileChunks,
    deadline: Duration,
    late: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> FileChunks {
    let until = tokio::time::Instant::now() + deadline;
    Box::pin(futures_util::stream::unfold(Some(bytes), move |bytes| {
        let late = late.clone();
        async move {
            let mut bytes = bytes?;
            match tokio::time::timeout_at(until, bytes.next()).await {
                Ok(Some(piece)) => Some((piece, Some(bytes))),
                Ok(None) => None,
                Err(_) => {
                    late.store(true, std::sync::atomic::Ordering::Relaxed);
                    let why = "the file did not arrive in time".to_owned();
                    Some((Err(StepReadError::Lost(why)), None))
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build<'a>(namespace: &'a str, job: &'a str) -> BuildRef<'a> {
        BuildRef {
            namespace,
            job,
            number: 1,
        }
    }

    #[tokio::test]
    async fn a_build_writes_at_most_its_share_and_all_builds_at_most_the_total() {
        let slots = UploadSlots::new(3, 2);
        let wait = Duration::from_millis(20);
        let a1 = slots.take(build("ci", "a"), wait).await.unwrap();
        let _a2 = slots.take(build("ci", "a"), wait).await.unwrap();
        let third = slots.take(build("ci", "a"), wait).await.err().unwrap();
        assert_eq!((third.status, third.code), (503, "uploads-busy"));
        assert!(third.why.contains("one after the other"), "{}", third.why);
        let _b1 = slots.take(build("ci", "b"), wait).await.unwrap();
        let full = slots.take(build("ci", "c"), wait).await.err().unwrap();
        assert!(full.why.contains("try again"), "{}", full.why);
        // A refusal takes nothing: once one slot is back, both builds may go on.
        drop(a1);
        let _a3 = slots.take(build("ci", "a"), wait).await.unwrap();
        assert_eq!(slots.writing.lock().unwrap().get("ci/a/1"), Some(&2));
        assert_eq!(slots.writing.lock().unwrap().get("ci/c/1"), None);
        assert_eq!(slots.writing(), 3);
    }

    /// A tenant whose builds (its own, or Jobs it made with kubeci's labels, each pod's
    /// token its own to ask for) each trickle two uploads must leave slots to the other
    /// namespaces: else every other build's collector waits 5 s, three times a file, and
    /// its build keeps nothing.
    #[tokio::test]
    async fn one_namespace_s_builds_never_take_every_slot() {
        let slots = UploadSlots::default();
        let wait = Duration::from_millis(20);
        let mut held = Vec::new();
        for job in ["a", "b", "c", "d", "e"] {
            for _ in 0..UPLOADS_PER_BUILD {
                held.extend(slots.take(build("evil", job), wait).await.ok());
            }
        }
        assert!(held.len() < UPLOADS_AT_ONCE, "{} slots", held.len());
        let other = slots.take(build("web", "site"), wait).await;
        assert!(other.is_ok(), "{:?}", other.err());
        let refused = slots.take(build("evil", "f"), wait).await.err().unwrap();
        assert_eq!((refused.status, refused.code), (503, "uploads-busy"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_given_up_while_it_waits_for_its_slot_takes_its_count_with_it() {
        let slots = UploadSlots::new(1, 2);
        let wait = Duration::from_secs(5);
        let holder = slots.take(build("ci", "a"), wait).await.unwrap();
        // Its client hangs up while it waits: the request's future is dropped.
        let waiting = slots.take(build("team", "b"), wait);
        let given_up = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(given_up.is_err(), "it was still waiting");
        assert_eq!(slots.writing(), 1, "only the holder counts");
        drop(holder);
        assert_eq!(slots.writing(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_does_not_arrive_in_time_ends_in_an_error() {
        let late = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trickle = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok(bytes::Bytes::from_static(b"x")), n + 1))
        });
        let bounded = within(
            Box::pin(trickle),
            Duration::from_millis(9_500),
            late.clone(),
        );
        let pieces: Vec<_> = bounded.collect().await;
        assert_eq!(pieces.iter().filter(|p| p.is_ok()).count(), 9);
        assert!(matches!(pieces.last(), Some(Err(StepReadError::Lost(_)))));
        assert!(late.load(std::sync::atomic::Ordering::Relaxed));
    }
}
