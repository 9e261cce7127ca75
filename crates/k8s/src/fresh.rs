//! Build Jobs this replica created, kept readable until its cache shows them (a client that
//! started a build reads it at once), for at most [`FRESH_FOR`]: one deleted before the
//! cache saw it is gone from the API too. Filed by job, so reading one job's builds looks at
//! that job's alone (after a burst of 1,000 builds, each jobs page reads 100 jobs' builds).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeci_build::record::BuildJob;

/// How long a build Job this replica created is shown without its cache showing it.
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(30);

/// How often Jobs past [`FRESH_FOR`] that nobody asked for again are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One job's fresh Jobs: Job name → the Job and when it was created.
type JobsOfOneJob = BTreeMap<String, (Arc<BuildJob>, Instant)>;

/// (namespace, job label) → that job's fresh Jobs.
#[derive(Default)]
pub(crate) struct FreshJobs {
    by_job: HashMap<(String, String), JobsOfOneJob>,
    swept: Option<Instant>,
}

impl FreshJobs {
    /// Keeps `job` (named `name`, of job `job_label` in `namespace`), created at `now`.
    pub(crate) fn remember(
        &mut self,
        (namespace, job_label): (String, String),
        name: String,
        job: Arc<BuildJob>,
        now: Instant,
    ) {
        if self
            .swept
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            self.by_job.retain(|_, jobs| {
                jobs.retain(|_, (_, at)| now.saturating_duration_since(*at) < FRESH_FOR);
                !jobs.is_empty()
            });
        }
        self.by_job
            .entry((namespace, job_label))
            .or_default()
            .insert(name, (job, now));
    }

    /// The fresh Jobs of job `job_label` in `namespace` that the cache does not show yet
    /// (`cached`: the names it shows); those it shows, or past [`FRESH_FOR`], are forgotten.
    pub(crate) fn of(
        &mut self,
        namespace: &str,
        job_label: &str,
        cached: &BTreeSet<String>,
        now: Instant,
    ) -> Vec<Arc<BuildJob>> {
        let key = (namespace.to_owned(), job_label.to_owned());
        let Some(jobs) = self.by_job.get_mut(&key) else {
            return Vec::new();
        };
        jobs.retain(|name, (_, at)| {
            now.saturating_duration_since(*at) < FRESH_FOR && !cached.contains(name)
        });
        let found = jobs.values().map(|(job, _)| Arc::clone(job)).collect();
        if jobs.is_empty() {
            self.by_job.remove(&key);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> Arc<BuildJob> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "ci", "name": name}, "spec": {"template": {}}
            }))
            .unwrap(),
        )
    }

    fn names(jobs: &[Arc<BuildJob>]) -> Vec<String> {
        jobs.iter()
            .map(|j| j.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_created_job_is_read_until_the_cache_shows_it_or_for_a_bounded_time() {
        let t0 = Instant::now();
        let key = |job: &str| ("ci".to_owned(), job.to_owned());
        let mut fresh = FreshJobs::default();
        fresh.remember(key("api"), "api-1".into(), job("api-1"), t0);
        fresh.remember(key("api"), "api-2".into(), job("api-2"), t0);
        fresh.remember(key("web"), "web-1".into(), job("web-1"), t0);
        let none = BTreeSet::new();
        assert_eq!(names(&fresh.of("ci", "api", &none, t0)), ["api-1", "api-2"]);
        assert_eq!(names(&fresh.of("ci", "web", &none, t0)), ["web-1"]);
        assert!(fresh.of("other", "api", &none, t0).is_empty());

        // The cache shows build 1: it is the cache's to show from now on.
        let cached = BTreeSet::from(["api-1".to_owned()]);
        assert_eq!(names(&fresh.of("ci", "api", &cached, t0)), ["api-2"]);
        assert_eq!(names(&fresh.of("ci", "api", &none, t0)), ["api-2"]);

        // Never shown by the cache (deleted before it saw it): gone after FRESH_FOR.
        let later = t0 + FRESH_FOR;
        assert!(fresh.of("ci", "api", &none, later).is_empty());
        // A Job nobody asks for again is forgotten when another is remembered.
        fresh.remember(key("docs"), "docs-1".into(), job("docs-1"), later);
        assert!(!fresh.by_job.contains_key(&key("web")), "swept");
        assert_eq!(fresh.by_job.len(), 1);
    }
}
