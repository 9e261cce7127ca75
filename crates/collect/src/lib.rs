//! The files a finished build leaves behind, picked from its workspace (issue 30,
//! docs/job-spec.md "Test reports and artifacts"): the regular files under the job's
//! `workdir` that its `test_reports` and `artifacts` patterns ([`Pattern`]) match.
//!
//! Both engines call [`collect`] once `run_command` has ended, then read each chosen file
//! through [`CollectedFile::open`]. What a build may have written is not trusted:
//!
//! - every directory is opened from its parent's descriptor without following a link, so
//!   a process the build left running that swaps a directory for a link while kubeci
//!   reads changes nothing kubeci reaches; the workspace itself is reached through a link
//!   only where root alone could have made it (the build's user owns the directories
//!   around its checkout);
//! - a symbolic link is followed only to a regular file inside the workspace (the
//!   checkout), and collected under the link's own name; one leading out of it, to
//!   nothing, in a loop, or to a directory is refused with why. Directories reached
//!   through links are never entered, so no walk loops or counts a file twice;
//! - only regular files are taken: a FIFO, socket or device is refused and never opened
//!   (reading a FIFO would wait for a writer forever);
//! - names that are not UTF-8 or hold control characters are refused; every path returned
//!   is relative to the workdir, '/'-separated, with no `.` or `..` segment;
//! - [`Limits`] bound the bytes, the files and the directory entries read, no directory
//!   deeper than [`MAX_DEPTH`] under the workdir is walked, no path is longer than
//!   [`MAX_PATH_BYTES`], and at most [`MAX_REFUSED`] refused files are listed, so a huge
//!   workspace or a runaway build cannot stall kubeci, fill its memory or the archive;
//! - the same workspace always gives the same answer: files are walked and chosen in
//!   sorted order.
//!
//! A file refused is named in [`Collected::refused`] with why, for the build's page; only
//! a failure of the machine (an I/O error) is an error ([`CollectError`]).

mod beneath;
mod error;
mod limits;
mod open;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::CollectError;
pub use kubeci_spec::glob::Pattern;
pub use limits::{
    Limits, MAX_ARTIFACT_BYTES, MAX_ENTRIES_WALKED, MAX_FILES, MAX_FILE_BYTES, MAX_REFUSED,
    MAX_REPORT_BYTES,
};
pub use walk::{MAX_DEPTH, MAX_PATH_BYTES};

/// What one file is collected as; a file may be both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds {
    /// A `test_reports` pattern matched it.
    pub test_report: bool,
    /// An `artifacts` pattern matched it.
    pub artifact: bool,
}

impl Kinds {
    pub fn any(&self) -> bool {
        self.test_report || self.artifact
    }
}

/// A file chosen: read it with [`CollectedFile::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedFile {
    /// Relative to the workdir, '/'-separated; never absolute, never with `.` or `..`. For
    /// a link, the link's name.
    pub path: String,
    /// Where it is on this machine: for a link, the file it leads to (without links). To be
    /// shown; read it with [`CollectedFile::open`], never by this path.
    pub full: PathBuf,
    /// Its size in bytes when collected: what the limits counted, and all that may be read.
    pub size: u64,
    pub kinds: Kinds,
    /// The device and inode collected, which [`CollectedFile::open`] checks again.
    identity: (u64, u64),
    /// The workspace, open, and the file's path from it without links: what
    /// [`CollectedFile::open`] opens, one directory descriptor after another.
    root: Workspace,
    real: PathBuf,
}

/// The workspace a file was collected from, open. Two files are the same whichever
/// collection found them: their identity says which file each is.
#[derive(Debug, Clone)]
struct Workspace(Arc<beneath::Root>);

impl PartialEq for Workspace {
    fn eq(&self, _: &Workspace) -> bool {
        true
    }
}

impl Eq for Workspace {}

/// A file (or directory) a pattern reached that is not collected, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Relative to the workdir, '/'-separated, with control characters escaped and a name
    /// that is not UTF-8 shown with U+FFFD; `.` is the workdir itself.
    pub path: String,
    /// Why, in words for the build's page: which rule, or which limit and its value.
    pub why: String,
    /// What the patterns would have taken it as (none when the refusal is not about one
    /// file, such as a walk stopped by its limit).
    pub kinds: Kinds,
}

/// The files a build leaves behind: those chosen, and those refused with why, each sorted
/// by path; past [`MAX_REFUSED`] refused files, one more entry (`.`) says how many more.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Collected {
    pub files: Vec<CollectedFile>,
    pub refused: Vec<Refused>,
}

impl Collected {
    /// The files collected as test reports.
    pub fn test_reports(&self) -> impl Iterator<Item = &CollectedFile> {
        self.files.iter().filter(|f| f.kinds.test_report)
    }

    /// The files collected as artifacts.
    pub fn artifacts(&self) -> impl Iterator<Item = &CollectedFile> {
        self.files.iter().filter(|f| f.kinds.artifact)
    }
}

/// The files under `workdir` (as the job writes it, relative to `workspace`, the checkout
/// root) that `reports` or `artifacts` match, within `limits`.
///
/// A `workdir` missing from the workspace (or not a directory, or leading out of it
/// through a link) gives no files and one [`Refused`] saying so. Errors: the workdir is
/// not a relative path inside the checkout, the workspace cannot be opened (or is reached
/// through a link in a directory others than root may change), or reading the file system
/// failed ([`CollectError::is_retryable`] tells which are worth another try).
pub fn collect(
    workspace: &Path,
    workdir: &str,
    reports: &[Pattern],
    artifacts: &[Pattern],
    limits: &Limits,
) -> Result<Collected, CollectError> {
    collect_from(workspace, true, workdir, reports, artifacts, limits)
}

/// [`collect`] from a build pod's workspace volume, as its collector sidecar sees it:
/// reached through no link at all. In a pod the build step is root, so a directory root
/// owns proves nothing — a link there could point the walk at the collector's own token.
pub fn collect_in_pod(
    workspace: &Path,
    workdir: &str,
    reports: &[Pattern],
    artifacts: &[Pattern],
    limits: &Limits,
) -> Result<Collected, CollectError> {
    collect_from(workspace, false, workdir, reports, artifacts, limits)
}

fn collect_from(
    workspace: &Path,
    root_owned_links: bool,
    workdir: &str,
    reports: &[Pattern],
    artifacts: &[Pattern],
    limits: &Limits,
) -> Result<Collected, CollectError> {
    let relative =
        kubeci_spec::validate::normalize_workdir(workdir).map_err(|why| CollectError::Workdir {
            workdir: workdir.into(),
            why,
        })?;
    if reports.is_empty() && artifacts.is_empty() {
        return Ok(Collected::default());
    }
    let root = Arc::new(beneath::open_root(workspace, root_owned_links)?);
    let (start, real) = match walk::find_workdir(&root, &relative)? {
        Ok(start) => start,
        Err(refused) => {
            return Ok(Collected {
                files: Vec::new(),
                refused: vec![refused],
            })
        }
    };
    let mut walk = walk::Walk::new(&root, &real, reports, artifacts, limits.entries_walked);
    walk.run(start)?;
    Ok(limits::choose(
        limits,
        walk.found,
        walk.refused,
        &Workspace(root),
        &real,
    ))
}
