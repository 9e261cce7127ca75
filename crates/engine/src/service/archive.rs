//! What the commands do with the archive (`crate::archive`), written once for both
//! engines: a build archived from what the engine knows of it, and numbering above what
//! the archive holds.

use kubeci_build::{BuildRef, JobRef};

use kubeci_spec::Catalogue;

use super::{BuildStore, Service};
use crate::archive::{ArchiveError, ArchiveRetention, Archived, ArchivedBuild};

/// The most archived builds of one job retention deletes at a time.
pub const RETENTION_BATCH: usize = 100;
use crate::scheduler::WorkloadError;

impl<S: BuildStore> Service<'_, S> {
    /// The highest build number the archive holds for job `job`: `None` without an
    /// archive, or when it cannot be read now (builds go on; the engine's own counter
    /// numbers them).
    pub(super) async fn archived_highest(&self, namespace: &str, job: &str) -> Option<u64> {
        let archive = self.0.common().archiving.archive.clone()?;
        match archive.highest(JobRef { namespace, job }).await {
            Ok(highest) => highest,
            Err(e) => {
                tracing::warn!(namespace, job, error = %e, "cannot read the archive's highest build number: numbering by the engine's own counter");
                None
            }
        }
    }

    /// How long job `job`'s archived builds are kept: its `archive.retention` while it is
    /// valid and says so, else the server's default.
    pub fn archive_retention_of(&self, namespace: &str, job: &str) -> ArchiveRetention {
        let loaded = self.0.catalogue().find(namespace, job);
        let spec = loaded
            .as_ref()
            .and_then(|l| l.job.as_ref()?.archive.clone());
        match spec.and_then(|archive| archive.retention) {
            Some(retention) => ArchiveRetention {
                max_age: (retention.max_age.as_deref())
                    .and_then(|age| kubeci_spec::duration::parse_duration(age).ok()),
                max_count: retention.max_count,
            },
            None => self.0.common().archiving.retention,
        }
    }

    /// Applies the archive's retention to `jobs`, or to every declared job: one batch of
    /// at most [`RETENTION_BATCH`] deletions per job, each logged; a failure is logged and
    /// left for the next time.
    pub async fn archive_retention(&self, jobs: Option<Vec<(String, String)>>, now: i64) {
        let Some(archive) = self.0.common().archiving.archive.clone() else {
            return;
        };
        let sweep = jobs.is_none();
        let jobs = jobs.unwrap_or_else(|| {
            let declared = self.0.catalogue().all();
            (declared.iter())
                .filter_map(|l| Some((l.namespace.clone(), l.job.as_ref()?.name.clone())))
                .collect()
        });
        for (namespace, job) in jobs {
            if sweep {
                self.note_newest_archived(&namespace, &job).await;
            }
            let retention = self.archive_retention_of(&namespace, &job);
            if retention.keeps_all() {
                continue;
            }
            let at = JobRef {
                namespace: &namespace,
                job: &job,
            };
            // Forgotten before and after: a page read while builds are deleted is not kept.
            let pages = &self.0.common().archiving.pages;
            pages.forget(at);
            let applied = archive.apply_retention(at, retention, now, RETENTION_BATCH);
            let applied = applied.await;
            pages.forget(at);
            match applied {
                Ok(deleted) if deleted.is_empty() => {}
                Ok(deleted) => {
                    tracing::info!(namespace, job, builds = ?deleted, "deleted archived builds (the archive's retention)")
                }
                Err(e) => {
                    tracing::warn!(namespace, job, error = %e, "cannot apply the archive's retention")
                }
            }
        }
    }

    /// Reads a job's newest archived build once (after a start, for the jobs page's state
    /// filter), unless it is known.
    async fn note_newest_archived(&self, namespace: &str, job: &str) {
        let archiving = &self.0.common().archiving;
        let Some(archive) = archiving.archive.as_ref() else {
            return;
        };
        if archiving.newest.knows(namespace, job) {
            return;
        }
        let at = JobRef { namespace, job };
        if let Ok(page) = archive.page(at, None, 1).await {
            if let Some(newest) = page.first() {
                (archiving.newest).note(namespace, job, newest.number, newest.state.phase);
            }
        }
    }

    /// Why archiving is behind, in words, when builds wait to be archived.
    pub fn archive_behind(&self) -> Option<String> {
        let status = &self.0.common().archiving.status;
        let pending = status.pending();
        let error = status.behind()?;
        Some(format!(
            "Archiving is behind: {pending} build{} wait{} to be archived ({error}); kubeci tries again on each pass.",
            if pending == 1 { "" } else { "s" },
            if pending == 1 { "s" } else { "" },
        ))
    }

    /// Archives `build` as far as `stage`: its first record, or (once it ended) each step
    /// of its log and then its final record — made once for both engines from what the
    /// engine knows of the build. Each engine's [`Workload::archive_build`] is this, then
    /// recording on the build how far it is archived. Returns the record written.
    pub async fn archive(
        &self,
        build: BuildRef<'_>,
        stage: Archived,
    ) -> Result<ArchivedBuild, WorkloadError> {
        let archive = (self.0.common().archiving.archive.clone()).ok_or_else(|| {
            WorkloadError::Failed("builds are not archived (no --archive)".into())
        })?;
        let found = self
            .0
            .find_build(build.namespace, build.job, build.number)
            .await
            .map_err(WorkloadError::Failed)?
            .ok_or(WorkloadError::Gone)?;
        let now = jiff::Timestamp::now().as_second();
        let facts = self.0.facts(&found);
        let record = ArchivedBuild::of(
            &facts,
            &self.0.reported_of(&found),
            self.0.request_of(&found),
            now,
        );
        let failed = |e: ArchiveError| WorkloadError::Failed(e.into());
        // Each job's newest archived builds read meanwhile are forgotten before and after a
        // write, so none read before it ended is kept.
        let pages = &self.0.common().archiving.pages;
        match stage {
            Archived::No => Ok(record),
            Archived::First => {
                pages.forget(build.job_ref());
                let written = archive.put_first(&record).await;
                pages.forget(build.job_ref());
                written.map_err(failed)?;
                Ok(record)
            }
            Archived::Complete if !facts.state.is_finished() => Err(WorkloadError::Failed(
                format!(
                    "{build} has not ended ({}): only its first record can be archived",
                    facts.state
                )
                .into(),
            )),
            Archived::Complete => {
                let steps = self
                    .0
                    .step_logs(&found)
                    .await
                    .map_err(WorkloadError::Failed)?;
                pages.forget(build.job_ref());
                let written = archive.put_complete(record, steps).await;
                pages.forget(build.job_ref());
                let record = written.map_err(failed)?;
                let newest = &self.0.common().archiving.newest;
                newest.note(
                    build.namespace,
                    build.job,
                    build.number,
                    facts.state.phase(),
                );
                Ok(record)
            }
        }
    }
}
