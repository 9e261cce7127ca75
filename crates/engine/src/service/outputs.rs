//! What a build left (issue 30), read back from the archive: its outputs, test results
//! and files. A build whose engine keeps no archive left nothing to read.

use kubeci_build::BuildRef;
use kubeci_results::{BuildOutputs, TestResults};

use super::{BuildStore, Service};
use crate::api::ArchiveError;
use crate::archive::ArchivedFile;

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

    /// Build `number`'s test results; `None` when it has none.
    pub async fn tests(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
    ) -> Result<Option<TestResults>, ArchiveError> {
        let Some(archive) = self.the_archive() else {
            return Ok(None);
        };
        let build = BuildRef {
            namespace,
            job,
            number,
        };
        archive.tests(build).await
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
