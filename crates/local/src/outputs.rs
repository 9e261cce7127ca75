//! What a build leaves behind (issue 30): once its `run_command` ended, the files its job
//! declared are taken from its workspace — by `kubeci_collect`, the rules the Kubernetes
//! engine's collector keeps too — into the archive: its artifacts streamed, then its JUnit
//! reports read into its test results and what it left (`outputs.json`) committed by
//! `kubeci_engine::archive::commit`, the code that commits a build pod's files too.
//! Without an archive nothing is kept.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kubeci_build::outputs::DeclaredOutputs;
use kubeci_build::{keys, BuildRef};
use kubeci_collect::{collect, CollectedFile, Limits, Pattern};
use kubeci_engine::archive::commit::{commit_outputs, ReportSource};
use kubeci_engine::archive::{BuildArchive, FileChunks, StepReadError};
use kubeci_results::{BuildOutputs, RefusedFile};
use tokio::io::AsyncReadExt;

use crate::{BuildKey, LocalBackend};

/// The size of each piece of a file read for the archive.
const READ_PIECE: usize = 64 * 1024;

impl LocalBackend {
    /// Takes build `key`'s declared files from its workspace in `build_dir` into the
    /// archive, if it has one and the build's Job declares any. A failure is logged: the
    /// build's result stands, and its page says it left nothing.
    pub(crate) async fn collect_outputs(
        &self,
        key: &BuildKey,
        job: &k8s_openapi::api::batch::v1::Job,
        build_dir: &Path,
    ) {
        let Some(archive) = self.settings.archiving.archive.clone() else {
            return;
        };
        let annotations = job.metadata.annotations.as_ref();
        let declared = annotations.and_then(|a| a.get(keys::OUTPUTS));
        let Some(declared) = DeclaredOutputs::from_annotation(declared.map(String::as_str)) else {
            return;
        };
        let build = BuildRef {
            namespace: &key.0,
            job: &key.1,
            number: key.2,
        };
        let workspace = build_dir.join("volumes").join("workspace").join("src");
        if let Err(error) = send_outputs(archive.as_ref(), build, &declared, workspace).await {
            tracing::warn!(
                namespace = build.namespace,
                job = build.job,
                build = build.number,
                %error,
                "the build's test reports and artifacts were not archived"
            );
        }
    }
}

/// Each pattern of `texts` parsed; one that does not parse (a job written before its
/// check, never valid) is refused with why.
fn patterns(texts: &[String], refused: &mut Vec<RefusedFile>) -> Vec<Pattern> {
    texts
        .iter()
        .filter_map(|text| match Pattern::parse(text) {
            Ok(pattern) => Some(pattern),
            Err(error) => {
                refused.push(RefusedFile {
                    path: text.clone(),
                    why: format!("not a pattern: {error}"),
                });
                None
            }
        })
        .collect()
}

/// Collects `declared` from `workspace` and writes it to `archive` as build `build`'s:
/// its artifacts, then its test results and outputs.
pub(crate) async fn send_outputs(
    archive: &dyn BuildArchive,
    build: BuildRef<'_>,
    declared: &DeclaredOutputs,
    workspace: PathBuf,
) -> Result<(), String> {
    let mut outputs = BuildOutputs::new();
    let reports = patterns(&declared.test_reports, &mut outputs.refused);
    let artifacts = patterns(&declared.artifacts, &mut outputs.refused);
    let workdir = declared.workdir.clone();
    let collected = tokio::task::spawn_blocking(move || {
        collect(
            &workspace,
            &workdir,
            &reports,
            &artifacts,
            &Limits::default(),
        )
    })
    .await
    .map_err(|e| format!("collecting stopped: {e}"))?
    .map_err(|e| e.to_string())?;
    outputs
        .refused
        .extend(collected.refused.iter().map(|refused| RefusedFile {
            path: refused.path.clone(),
            why: refused.why.clone(),
        }));
    for file in collected.artifacts() {
        match put_artifact(archive, build, file).await {
            Ok(size) => outputs.artifacts.push(kubeci_results::ArtifactFile {
                path: file.path.clone(),
                size,
            }),
            Err(why) => outputs.refused.push(RefusedFile {
                path: file.path.clone(),
                why,
            }),
        }
    }
    // Read and committed by the Kubernetes engine's code too (its reports from the archive).
    let reports = collected
        .test_reports()
        .map(|file| {
            let file = file.clone();
            ReportSource {
                path: file.path.clone(),
                bytes: Box::pin(async move { read_file(&file) }),
            }
        })
        .collect();
    let declares_reports = !declared.test_reports.is_empty();
    commit_outputs(archive, build, declares_reports, reports, outputs)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A collected file's bytes as they are read, at most the size it was collected at; why
/// not, when it cannot be opened.
fn read_file(file: &CollectedFile) -> Result<FileChunks, String> {
    let opened = file.open().map_err(|e| e.to_string())?;
    let reader = tokio::fs::File::from_std(opened).take(file.size);
    Ok(Box::pin(futures_util::stream::unfold(
        Some(reader),
        |reader| async move {
            let mut reader = reader?;
            let mut piece = BytesMut::with_capacity(READ_PIECE);
            match reader.read_buf(&mut piece).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(Bytes::from(piece)), Some(reader))),
                Err(e) => Some((Err(StepReadError::Lost(e.to_string())), None)),
            }
        },
    )))
}

/// One artifact streamed from its file to the archive; why not, when it was not.
async fn put_artifact(
    archive: &dyn BuildArchive,
    build: BuildRef<'_>,
    file: &CollectedFile,
) -> Result<u64, String> {
    let bytes = read_file(file).map_err(|e| format!("cannot be read: {e}"))?;
    archive
        .put_file(build, &file.path, bytes, file.size)
        .await
        .map_err(|e| e.to_string())
}
