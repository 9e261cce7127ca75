//! What a build left (issue 30), read back from the archive: its outputs, test results
//! and files. A build whose engine keeps no archive left nothing to read.

use kubeci_build::{BuildRef, JobRef};
use kubeci_results::{
    history, judge, known_flaky, BuildOutputs, HistoryPoint, TestResults, EVIDENCE_BUILDS,
};

use super::{BuildStore, Service};
use crate::api::{ArchiveError, BuildTests, TestHistory, TestInBuild, HISTORY_BUILDS};
use crate::archive::{ArchivedFile, ArchivedSummary};

/// A job's archived builds (newest first) as a test's history reads them. A build of no
/// pull request built the job's own branch: its default branch.
pub(super) fn history_points(builds: &[ArchivedSummary]) -> Vec<HistoryPoint<'_>> {
    builds
        .iter()
        .map(|build| HistoryPoint {
            number: build.number,
            commit: build.commit.as_deref(),
            on_default_branch: build.pull_request.is_none(),
            tests: build.tests.as_ref(),
        })
        .collect()
}

impl<S: BuildStore> Service<'_, S> {
    /// What build `number` of a job left; `None` when it left nothing (yet).
    pub async fn outputs(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<BuildOutputs>, ArchiveError> {
        let Some(archive) = self.the_archive() else {
            return Ok(None);
        };
        let build = BuildRef {
            namespace,
            job,
            number,
        };
        archive.outputs(build).await
    }

    /// Build `number`'s test results, and which of its failures the job's builds before
    /// it show flaky; `None` when it has none.
    pub async fn tests(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<BuildTests>, ArchiveError> {
        let Some(archive) = self.the_archive() else {
            return Ok(None);
        };
        let build = BuildRef {
            namespace,
            job,
            number,
        };
        let Some(results) = archive.tests(build).await? else {
            return Ok(None);
        };
        let job_ref = JobRef { namespace, job };
        let before = archive.page(job_ref, Some(number), EVIDENCE_BUILDS).await?;
        let commit = match archive.record(build).await {
            Ok(Some(record)) => record.build.commit,
            _ => self
                .0
                .find_build(namespace, job, number)
                .await
                .ok()
                .flatten()
                .and_then(|live| self.view(&live).commit),
        };
        let points = history_points(&before);
        let known_flaky = known_flaky(number, commit.as_deref(), &results, &points);
        Ok(Some(BuildTests {
            results,
            known_flaky,
        }))
    }

    /// The ids of build `number`'s failed tests that the job's builds before it show
    /// flaky (for its report: "3 failed — 1 known flaky"); none when they cannot be read.
    pub async fn known_flaky_ids(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        commit: Option<&str>,
        results: &TestResults,
    ) -> Vec<String> {
        let Some(archive) = self.the_archive() else {
            return Vec::new();
        };
        let job = JobRef { namespace, job };
        let Ok(before) = archive.page(job, Some(number), EVIDENCE_BUILDS).await else {
            return Vec::new();
        };
        let points = history_points(&before);
        known_flaky(number, commit, results, &points)
            .into_iter()
            .map(|flaky| flaky.id)
            .collect()
    }

    /// Test `id`'s history over the job's newest archived builds below `before`.
    pub async fn test_history(
        &self,
        namespace: &str,
        job: &str,
        id: &str,
        before: Option<u64>,
    ) -> Result<TestHistory, ArchiveError> {
        let builds = match self.the_archive() {
            Some(archive) => {
                let job = JobRef { namespace, job };
                archive.page(job, before, HISTORY_BUILDS).await?
            }
            None => Vec::new(),
        };
        let points = history_points(&builds);
        let statuses = history(id, &points);
        let flaky = judge(id, &points);
        Ok(TestHistory {
            id: id.to_owned(),
            builds: statuses
                .into_iter()
                .zip(&builds)
                .map(|(status, build)| TestInBuild {
                    number: status.number,
                    status: status.status,
                    commit: build.commit.clone(),
                    pull_request: build.pull_request,
                    finished_at: build.finished_at,
                })
                .collect(),
            flaky_because: flaky.as_ref().map(ToString::to_string),
            flaky,
        })
    }

    /// One file build `number` left, at `path`: its size and bytes. Only a path its
    /// outputs list is read, so no other object of the archive is ever served.
    pub async fn artifact(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        path: &str,
    ) -> Result<Option<(u64, ArchivedFile)>, ArchiveError> {
        let Some(outputs) = self.outputs(namespace, job, number).await? else {
            return Ok(None);
        };
        if outputs.artifact(path).is_none() {
            return Ok(None);
        }
        let Some(archive) = self.the_archive() else {
            return Ok(None);
        };
        let build = BuildRef {
            namespace,
            job,
            number,
        };
        archive.file(build, path).await
    }
}
