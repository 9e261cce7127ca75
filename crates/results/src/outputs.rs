//! What a build left in the archive besides its log: the archive's `outputs.json`.

use serde::{Deserialize, Serialize};

use crate::summary::TestsInBuild;

/// The version of [`BuildOutputs`]' JSON this kubeci writes and reads.
pub const OUTPUTS_VERSION: u32 = 1;

/// One file a build left for download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactFile {
    /// Its path relative to the build's `workdir`, `/`-separated.
    pub path: String,
    pub size: u64,
}

/// A file a job declared that was not kept, and why (a link out of the workspace, past a
/// size limit, not a regular file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedFile {
    pub path: String,
    pub why: String,
}

/// What a build left: the counts of its test results (their whole is `tests.json`), its
/// artifacts, and the declared files not kept. Written once its files are, so a build
/// that has it has them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildOutputs {
    pub version: u32,
    /// What the job's index keeps of its test results (their whole is `tests.json`):
    /// present when the job declares `test_reports` (zero counts: no report was found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsInBuild>,
    #[serde(default)]
    pub artifacts: Vec<ArtifactFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedFile>,
}

impl BuildOutputs {
    pub fn new() -> Self {
        BuildOutputs {
            version: OUTPUTS_VERSION,
            ..BuildOutputs::default()
        }
    }

    /// The artifact at `path`, if the build left one there.
    pub fn artifact(&self, path: &str) -> Option<&ArtifactFile> {
        self.artifacts.iter().find(|file| file.path == path)
    }
}
