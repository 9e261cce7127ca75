//! Why collecting failed: the job's or the caller's mistake (not worth retrying), or the
//! machine's (worth retrying).

use std::io;
use std::path::{Path, PathBuf};

/// Why [`crate::collect`] gave no answer. A file it could not take is not an error: it is
/// in [`crate::Collected::refused`].
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The `workdir` is not a relative path inside the checkout (validation refuses such a
    /// job, so it never builds). Not worth retrying.
    #[error("workdir `{workdir}` {why}")]
    Workdir { workdir: String, why: String },
    /// The workspace is missing, is not a directory, may not be read, or is reached through
    /// a symbolic link in a directory others than root may change (the build swapped its
    /// checkout for a link): the build's directory is gone, was never there, or is not to
    /// be trusted. Not worth retrying.
    #[error("the workspace {} cannot be read: {source}", path.display())]
    Workspace { path: PathBuf, source: io::Error },
    /// Reading the file system failed for a reason of the machine's (an I/O error, too
    /// many open files, no memory). Worth retrying.
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl CollectError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CollectError::Io { .. })
    }

    /// The workspace could not be opened: for good when it is not there or not readable,
    /// otherwise a failure of the machine's.
    pub(crate) fn workspace(path: &Path, source: io::Error) -> CollectError {
        match source.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::PermissionDenied => CollectError::Workspace {
                path: path.into(),
                source,
            },
            _ => CollectError::Io {
                path: path.into(),
                source,
            },
        }
    }
}
