//! Walking the workdir for the files its patterns match: depth first, each directory's
//! entries in order of name, entering only directories a pattern can reach and never one
//! reached through a link.

use std::ffi::OsString;
use std::fs::{self, FileType};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kubeci_spec::glob::Pattern;

use crate::{CollectError, Kinds, Refused};

/// A regular file a pattern matched, before the limits choose.
pub(crate) struct Found {
    pub path: String,
    pub full: PathBuf,
    pub size: u64,
    pub kinds: Kinds,
    pub identity: (u64, u64),
}

/// The real directory of the workdir inside `root`, or why nothing can be collected.
pub(crate) fn find_workdir(
    root: &Path,
    relative: &str,
) -> Result<Result<PathBuf, Refused>, CollectError> {
    if relative.is_empty() {
        return Ok(Ok(root.to_path_buf()));
    }
    let shown = escape(relative);
    let refused = |why: String| {
        Ok(Err(Refused {
            path: ".".into(),
            why: format!("the workdir `{shown}` {why}: nothing is collected"),
            kinds: Kinds::default(),
        }))
    };
    match fs::canonicalize(root.join(relative)) {
        Ok(real) if !real.starts_with(root) => {
            refused("leads out of the workspace through a symbolic link".into())
        }
        Ok(real) if !real.is_dir() => refused("is not a directory".into()),
        Ok(real) => Ok(Ok(real)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            refused("does not exist in the workspace".into())
        }
        Err(e) if made_by_the_build(&e) => refused(format!("cannot be read ({e})")),
        Err(source) => Err(CollectError::Io {
            path: root.join(relative),
            source,
        }),
    }
}

/// An error caused by what the build left in its workspace (a name gone, a directory it
/// made unreadable, a link loop, a name too long): the file is refused, the walk goes on.
/// Any other error is the machine's.
fn made_by_the_build(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory
    ) || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG))
}

/// One walk of a workdir: what it found and refused so far.
pub(crate) struct Walk<'a> {
    /// The workspace, without links: every file taken is under it.
    root: &'a Path,
    reports: &'a [Pattern],
    artifacts: &'a [Pattern],
    entries_left: usize,
    entries_limit: usize,
    pub found: Vec<Found>,
    pub refused: Vec<Refused>,
}

impl<'a> Walk<'a> {
    pub fn new(
        root: &'a Path,
        reports: &'a [Pattern],
        artifacts: &'a [Pattern],
        entries_limit: usize,
    ) -> Walk<'a> {
        Walk {
            root,
            reports,
            artifacts,
            entries_left: entries_limit,
            entries_limit,
            found: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Walks the directory `start` (the workdir, without links).
    pub fn run(&mut self, start: &Path) -> Result<(), CollectError> {
        let mut stack = vec![(start.to_path_buf(), String::new())];
        while let Some((dir, path)) = stack.pop() {
            let entries = match self.read(&dir, &path)? {
                Read::Entries(entries) => entries,
                Read::Refused => continue,
                Read::Stopped => return Ok(()),
            };
            let mut subdirs = Vec::new();
            for (name, file_type) in entries {
                if let Some(subdir) = self.visit(&dir, &path, &name, file_type)? {
                    subdirs.push(subdir);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// The entries of one directory, sorted by name. When the limit of entries walked is
    /// reached inside it, none of them is used (which ones were read first is the file
    /// system's order, not the names'), and the walk stops.
    fn read(&mut self, dir: &Path, path: &str) -> Result<Read, CollectError> {
        let shown = if path.is_empty() { "." } else { path };
        let io_error = |source| CollectError::Io {
            path: dir.into(),
            source,
        };
        let listing = match fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) if made_by_the_build(&e) => {
                self.refuse(
                    shown,
                    format!("the directory cannot be read ({e})"),
                    Kinds::default(),
                );
                return Ok(Read::Refused);
            }
            Err(source) => return Err(io_error(source)),
        };
        let mut entries = Vec::new();
        for entry in listing {
            if self.entries_left == 0 {
                let why = format!(
                    "the walk stopped in this directory after reading {} directory entries (the limit of entries walked): files here and further on were not looked at",
                    self.entries_limit
                );
                self.refuse(shown, why, Kinds::default());
                return Ok(Read::Stopped);
            }
            self.entries_left -= 1;
            let entry = entry.and_then(|e| e.file_type().map(|t| (e.file_name(), t)));
            match entry {
                Ok(entry) => entries.push(entry),
                // Removed since the directory was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_error(source)),
            }
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(Read::Entries(entries))
    }

    /// One entry of a directory: a file taken or refused, or a directory to walk next.
    fn visit(
        &mut self,
        dir: &Path,
        parent: &str,
        name: &OsString,
        file_type: FileType,
    ) -> Result<Option<(PathBuf, String)>, CollectError> {
        let full = dir.join(name);
        let (path, bad_name) = match name.to_str() {
            Some(text) => (
                join(parent, text),
                text.chars()
                    .find(|c| c.is_control())
                    .map(|c| format!("its name holds the control character U+{:04X}", c as u32)),
            ),
            None => (
                join(parent, &name.to_string_lossy()),
                Some("its name is not UTF-8".to_owned()),
            ),
        };
        let kinds = self.kinds(&path);
        let names_dir = || {
            self.reports
                .iter()
                .chain(self.artifacts)
                .any(|p| p.names_dir(&path))
        };
        if let Some(why) = bad_name {
            if kinds.any() || (file_type.is_dir() || file_type.is_symlink()) && names_dir() {
                self.refuse(&path, format!("{why}: paths are kept as text"), kinds);
            }
            return Ok(None);
        }
        if file_type.is_dir() {
            let enter = self
                .reports
                .iter()
                .chain(self.artifacts)
                .any(|p| p.may_match_under(&path));
            return Ok(enter.then_some((full, path)));
        }
        if file_type.is_file() && kinds.any() {
            self.take(&full, path, kinds)?;
        } else if file_type.is_symlink() && (kinds.any() || names_dir()) {
            self.follow(&full, path, kinds)?;
        } else if !file_type.is_file() && !file_type.is_symlink() && kinds.any() {
            let why = format!(
                "it is {}: only regular files are collected",
                describe(file_type)
            );
            self.refuse(&path, why, kinds);
        }
        Ok(None)
    }

    /// A regular file matched: found, with its size and identity now.
    fn take(&mut self, full: &Path, path: String, kinds: Kinds) -> Result<(), CollectError> {
        match fs::symlink_metadata(full) {
            Ok(meta) if meta.is_file() => self.found.push(Found {
                path,
                full: full.into(),
                size: meta.len(),
                kinds,
                identity: (meta.dev(), meta.ino()),
            }),
            Ok(_) => self.refuse(&path, "it changed while it was collected".into(), kinds),
            Err(e) if made_by_the_build(&e) => {
                self.refuse(&path, format!("it cannot be read ({e})"), kinds)
            }
            Err(source) => {
                return Err(CollectError::Io {
                    path: full.into(),
                    source,
                })
            }
        }
        Ok(())
    }

    /// A symbolic link a pattern reached: taken under its own name when it leads to a
    /// regular file inside the workspace, else refused with why.
    fn follow(&mut self, full: &Path, path: String, kinds: Kinds) -> Result<(), CollectError> {
        let io_error = |source| CollectError::Io {
            path: full.into(),
            source,
        };
        let (real, meta) = match fs::canonicalize(full).and_then(|real| {
            let meta = fs::metadata(&real)?;
            Ok((real, meta))
        }) {
            Ok(found) => found,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.refuse(&path, "it is a symbolic link in a loop".into(), kinds);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let why = "it is a symbolic link to nothing (what it names does not exist)";
                self.refuse(&path, why.into(), kinds);
                return Ok(());
            }
            Err(e) if made_by_the_build(&e) => {
                let why = format!("it is a symbolic link that cannot be followed ({e})");
                self.refuse(&path, why, kinds);
                return Ok(());
            }
            Err(source) => return Err(io_error(source)),
        };
        if !real.starts_with(self.root) {
            let why = "it is a symbolic link leading out of the workspace: links are followed only to files inside it";
            self.refuse(&path, why.into(), kinds);
        } else if meta.is_dir() {
            let why = "it is a symbolic link to a directory: directories are walked where they are, never through a link";
            self.refuse(&path, why.into(), kinds);
        } else if meta.is_file() {
            // Reached only for a name of a directory a pattern spells out: nothing to take.
            if kinds.any() {
                self.found.push(Found {
                    path,
                    full: real,
                    size: meta.len(),
                    kinds,
                    identity: (meta.dev(), meta.ino()),
                });
            }
        } else if kinds.any() {
            let why = format!(
                "it is a symbolic link to {}: only regular files are collected",
                describe(meta.file_type())
            );
            self.refuse(&path, why, kinds);
        }
        Ok(())
    }

    fn kinds(&self, path: &str) -> Kinds {
        Kinds {
            test_report: self.reports.iter().any(|p| p.matches(path)),
            artifact: self.artifacts.iter().any(|p| p.matches(path)),
        }
    }

    fn refuse(&mut self, path: &str, why: String, kinds: Kinds) {
        self.refused.push(Refused {
            path: escape(path),
            why,
            kinds,
        });
    }
}

/// What reading one directory gave.
enum Read {
    Entries(Vec<(OsString, FileType)>),
    /// It could not be read (refused with why); the walk goes on.
    Refused,
    /// The limit of entries walked was reached (refused with why); the walk ends.
    Stopped,
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A path with its control characters escaped (`\u{1b}`), to be shown anywhere.
fn escape(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn describe(file_type: FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    }
}
