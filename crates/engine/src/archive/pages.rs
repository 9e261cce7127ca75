//! Each job's newest archived builds as last read from its index, kept a few seconds: the
//! jobs page shows the last builds of a hundred jobs, and without this read a hundred
//! indexes from the archive on every request (the local engine's pages took 1.6–2× longer
//! with its archive on, BENCHMARKS.md).
//!
//! What this process archives or deletes forgets the job's page before and after the write,
//! and a page read that began before a forget is not kept, so its own pages never lag; what another replica writes shows within [`NewestPages::FRESH_FOR`]. A build
//! is archived while its Job or local row still shows it, so a page that lags shows it
//! from there in the meantime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubeci_build::JobRef;

use super::ArchivedSummary;

/// One job's newest page.
#[derive(Debug)]
struct Page {
    read_at: Instant,
    /// How many builds were asked for.
    asked: usize,
    /// Newest first; fewer than `asked` when these are all the job's archived builds.
    builds: Vec<ArchivedSummary>,
}

impl Page {
    /// The first `asked` builds, if this page holds them (or holds every archived one).
    fn serves(&self, asked: usize) -> Option<Vec<ArchivedSummary>> {
        let all = self.builds.len() < self.asked;
        (asked <= self.asked || all).then(|| self.builds.iter().take(asked).cloned().collect())
    }
}

/// The newest page of each job's archived builds read in the last few seconds, for at
/// most [`NewestPages::JOBS`] jobs at once.
#[derive(Debug, Default)]
pub struct NewestPages {
    pages: Mutex<HashMap<(String, String), Page>>,
    /// How many times a page was forgotten: a page read before a forget is not kept after it.
    forgotten: AtomicU64,
}

impl NewestPages {
    /// How long a page read is shown without reading it again.
    pub const FRESH_FOR: Duration = Duration::from_secs(5);
    /// The most jobs whose pages are kept (a jobs page shows 100): a client reading every
    /// job's builds in turn keeps no more than this in memory.
    pub const JOBS: usize = 128;
    /// The longest page kept (the jobs page asks for 20 builds, a job's page for 51; the
    /// API's 501 are read each time): with [`NewestPages::JOBS`], what bounds the memory.
    pub const LONGEST: usize = 64;

    /// A job's newest `asked` archived builds, newest first, if read since `now` minus
    /// [`NewestPages::FRESH_FOR`].
    pub fn newest(
        &self,
        job: JobRef<'_>,
        asked: usize,
        now: Instant,
    ) -> Option<Vec<ArchivedSummary>> {
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let page = pages.get(&(job.namespace.to_owned(), job.job.to_owned()))?;
        let fresh = now.saturating_duration_since(page.read_at) < Self::FRESH_FOR;
        fresh.then(|| page.serves(asked)).flatten()
    }

    /// What to hand [`NewestPages::keep`] for a page about to be read.
    pub fn before_reading(&self) -> ReadTicket {
        ReadTicket(self.forgotten.load(Ordering::SeqCst))
    }

    /// Keeps what was read at `now` of a job's newest `asked` builds, unless `asked` is over
    /// [`NewestPages::LONGEST`] or a page was forgotten since `ticket` was taken (the read
    /// may predate that write); drops the pages gone stale.
    pub fn keep(
        &self,
        job: JobRef<'_>,
        asked: usize,
        builds: &[ArchivedSummary],
        now: Instant,
        ticket: ReadTicket,
    ) {
        if asked > Self::LONGEST {
            return;
        }
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if self.forgotten.load(Ordering::SeqCst) != ticket.0 {
            return;
        }
        pages.retain(|_, page| now.saturating_duration_since(page.read_at) < Self::FRESH_FOR);
        if pages.len() >= Self::JOBS {
            let oldest = pages.iter().min_by_key(|(_, page)| page.read_at);
            if let Some(key) = oldest.map(|(key, _)| key.clone()) {
                pages.remove(&key);
            }
        }
        let page = Page {
            read_at: now,
            asked,
            builds: builds.to_vec(),
        };
        pages.insert((job.namespace.to_owned(), job.job.to_owned()), page);
    }

    /// Forgets a job's page: its archived builds changed.
    pub fn forget(&self, job: JobRef<'_>) {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        self.forgotten.fetch_add(1, Ordering::SeqCst);
        pages.remove(&(job.namespace.to_owned(), job.job.to_owned()));
    }
}

/// Taken before a page is read ([`NewestPages::before_reading`]).
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> JobRef<'_> {
        JobRef {
            namespace: "team",
            job: name,
        }
    }

    fn builds(numbers: impl IntoIterator<Item = u64>) -> Vec<ArchivedSummary> {
        let build = |number: u64| {
            serde_json::from_value(serde_json::json!({
                "number": number, "name": format!("demo-{number}"),
                "state": {"phase": "succeeded"}, "reported": ""
            }))
            .unwrap()
        };
        numbers.into_iter().map(build).collect()
    }

    fn numbers(page: Option<Vec<ArchivedSummary>>) -> Option<Vec<u64>> {
        page.map(|builds| builds.iter().map(|b| b.number).collect())
    }

    #[test]
    fn a_page_read_is_served_while_fresh_and_no_longer() {
        let (pages, t0) = (NewestPages::default(), Instant::now());
        assert!(
            pages.newest(job("demo"), 20, t0).is_none(),
            "nothing read yet"
        );
        pages.keep(
            job("demo"),
            20,
            &builds((11..=30).rev()),
            t0,
            pages.before_reading(),
        );
        let soon = t0 + NewestPages::FRESH_FOR / 2;
        assert_eq!(
            numbers(pages.newest(job("demo"), 3, soon)),
            Some(vec![30, 29, 28])
        );
        assert_eq!(pages.newest(job("demo"), 20, soon).unwrap().len(), 20);
        assert!(
            pages.newest(job("demo"), 21, soon).is_none(),
            "more than was read"
        );
        assert!(pages.newest(job("other"), 3, soon).is_none());
        let late = t0 + NewestPages::FRESH_FOR;
        assert!(
            pages.newest(job("demo"), 3, late).is_none(),
            "read again once stale"
        );
    }

    #[test]
    fn a_page_of_every_archived_build_serves_any_number() {
        let (pages, t0) = (NewestPages::default(), Instant::now());
        pages.keep(
            job("demo"),
            20,
            &builds([3, 2, 1]),
            t0,
            pages.before_reading(),
        );
        assert_eq!(
            numbers(pages.newest(job("demo"), 51, t0)),
            Some(vec![3, 2, 1])
        );
        pages.keep(job("empty"), 20, &[], t0, pages.before_reading());
        assert_eq!(numbers(pages.newest(job("empty"), 51, t0)), Some(vec![]));
    }

    #[test]
    fn long_pages_are_not_kept_and_stale_ones_go_when_another_is_kept() {
        let (pages, t0) = (NewestPages::default(), Instant::now());
        let long = NewestPages::LONGEST + 1;
        pages.keep(
            job("demo"),
            long,
            &builds((1..=long as u64).rev()),
            t0,
            pages.before_reading(),
        );
        assert!(
            pages.newest(job("demo"), 1, t0).is_none(),
            "over the longest kept"
        );
        pages.keep(job("old"), 20, &builds([1]), t0, pages.before_reading());
        pages.keep(
            job("new"),
            20,
            &builds([1]),
            t0 + NewestPages::FRESH_FOR,
            pages.before_reading(),
        );
        assert_eq!(pages.pages.lock().unwrap().len(), 1, "the stale page went");
    }

    #[test]
    fn a_page_read_before_a_job_changed_is_not_kept_after() {
        let (pages, t0) = (NewestPages::default(), Instant::now());
        let ticket = pages.before_reading();
        pages.forget(job("demo"));
        pages.keep(job("demo"), 20, &builds([1]), t0, ticket);
        assert!(
            pages.newest(job("demo"), 1, t0).is_none(),
            "it may miss that change"
        );
    }

    #[test]
    fn a_job_whose_archived_builds_changed_is_read_again() {
        let (pages, t0) = (NewestPages::default(), Instant::now());
        pages.keep(
            job("demo"),
            20,
            &builds([3, 2, 1]),
            t0,
            pages.before_reading(),
        );
        pages.forget(job("demo"));
        assert!(pages.newest(job("demo"), 3, t0).is_none());
    }

    #[test]
    fn at_most_so_many_jobs_are_kept_the_oldest_read_going_first() {
        let (pages, t0) = (NewestPages::default(), Instant::now());
        let names: Vec<String> = (0..=NewestPages::JOBS)
            .map(|i| format!("job-{i}"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64);
            pages.keep(job(name), 20, &builds([1]), at, pages.before_reading());
        }
        let now = t0 + Duration::from_secs(1);
        assert_eq!(pages.pages.lock().unwrap().len(), NewestPages::JOBS);
        assert!(
            pages.newest(job("job-0"), 1, now).is_none(),
            "the oldest went"
        );
        assert!(pages.newest(job("job-1"), 1, now).is_some());
        let last = &names[NewestPages::JOBS];
        assert!(pages.newest(job(last), 1, now).is_some());
    }
}
