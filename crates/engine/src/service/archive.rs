//! What the commands do with the archive (`crate::archive`), written once for both
//! engines: a build archived from what the engine knows of it, and numbering above what
//! the archive holds.

use kubeci_build::{BuildRef, JobRef};

use super::{BuildStore, Service};
use crate::archive::{ArchiveError, Archived, ArchivedBuild};
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
        match stage {
            Archived::No => Ok(record),
            Archived::First => {
                archive.put_first(&record).await.map_err(failed)?;
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
                archive.put_complete(record, steps).await.map_err(failed)
            }
        }
    }
}
