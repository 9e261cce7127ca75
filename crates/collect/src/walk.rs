//! Walking the workdir for the files its patterns match: depth first, each directory's
//! entries in order of name, entering only directories a pattern can reach and never one
//! reached through a link. Each directory is opened from its parent's descriptor
//! ([`crate::beneath`]): what the walk reads is what it listed, whatever the build's
//! processes rename meanwhile.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubeci_spec::glob::Pattern;
use nix::dir::{Dir, Type};
use nix::errno::Errno;

use crate::beneath::{open_dir, reach, stat_at, Blocked, Kind, Reached, Root, Target};
use crate::{CollectError, Kinds, Refused, MAX_REFUSED};

/// How deep under the workdir a directory is walked: its descriptor and those of the
/// directories above it stay open while it is read.
pub const MAX_DEPTH: usize = 128;

/// The longest path of a file collected, from the workdir, in bytes: the archive keeps no
/// longer one (`kubeci_archive::layout::MAX_FILE_PATH`), and what a walk holds per file is
/// bounded by it.
pub const MAX_PATH_BYTES: usize = 1024;

/// A regular file a pattern matched, before the limits choose.
pub(crate) struct Found {
    pub path: String,
    /// For a link, the path of the file it leads to from the workspace's root, without
    /// links; for a file, none: it is the workdir's path, then `path`.
    pub real: Option<PathBuf>,
    pub size: u64,
    pub kinds: Kinds,
    pub identity: (u64, u64),
}

/// The workdir inside the workspace, open, and its path there without links; or why
/// nothing can be collected.
pub(crate) fn find_workdir(
    root: &Root,
    relative: &str,
) -> Result<Result<(OwnedFd, PathBuf), Refused>, CollectError> {
    let shown = escape(relative);
    let refused = |why: String| {
        Ok(Err(Refused {
            path: ".".into(),
            why: format!("the workdir `{shown}` {why}: nothing is collected"),
            kinds: Kinds::default(),
        }))
    };
    match reach(root, Path::new(relative), true) {
        Ok(Reached {
            target: Target::Dir(fd),
            real,
        }) => Ok(Ok((fd, real))),
        Ok(_) => refused("is not a directory".into()),
        Err(Blocked::Outside) => {
            refused("leads out of the workspace through a symbolic link".into())
        }
        Err(Blocked::Missing) => refused("does not exist in the workspace".into()),
        Err(Blocked::Loop) => refused("is a symbolic link in a loop".into()),
        Err(Blocked::Link | Blocked::Changed) => refused("changed while it was read".into()),
        Err(Blocked::Io(e)) if made_by_the_build(&e) => refused(format!("cannot be read ({e})")),
        Err(Blocked::Io(source)) => Err(CollectError::Io {
            path: root.path.join(relative),
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
    /// The workspace: every file taken is reached from it.
    root: &'a Arc<Root>,
    /// The workdir's path from the workspace's root, without links.
    start: &'a Path,
    reports: &'a [Pattern],
    artifacts: &'a [Pattern],
    entries_left: usize,
    entries_limit: usize,
    pub found: Vec<Found>,
    pub refused: Refusals,
}

/// A directory to walk: how deep it is (1 for the workdir's own), its name in its parent
/// and its path from the workdir.
type Pending = (usize, OsString, String);

impl<'a> Walk<'a> {
    pub fn new(
        root: &'a Arc<Root>,
        start: &'a Path,
        reports: &'a [Pattern],
        artifacts: &'a [Pattern],
        entries_limit: usize,
    ) -> Walk<'a> {
        Walk {
            root,
            start,
            reports,
            artifacts,
            entries_left: entries_limit,
            entries_limit,
            found: Vec::new(),
            refused: Refusals::default(),
        }
    }

    /// Walks the workdir, open as `start`. `chain` holds the directories open from the
    /// workdir down to the one being read: a directory is opened from its parent's
    /// descriptor, which is still the one listed when its entries were read.
    pub fn run(&mut self, start: OwnedFd) -> Result<(), CollectError> {
        let mut chain = vec![start];
        let mut stack: Vec<Pending> = Vec::new();
        let mut path = String::new();
        loop {
            let dir = chain.last().expect("the workdir stays open").as_fd();
            let entries = match self.read(dir, &path)? {
                Read::Entries(entries) => entries,
                Read::Refused => Vec::new(),
                Read::Stopped => return Ok(()),
            };
            let depth = chain.len();
            let mut subdirs = Vec::new();
            for (name, kind) in entries {
                let dir = chain.last().expect("the workdir stays open").as_fd();
                if let Some(subdir) = self.visit(dir, &path, &name, kind)? {
                    subdirs.push((depth, name, subdir));
                }
            }
            stack.extend(subdirs.into_iter().rev());
            loop {
                let Some((depth, name, next)) = stack.pop() else {
                    return Ok(());
                };
                chain.truncate(depth);
                if let Some(fd) = self.enter(chain[depth - 1].as_fd(), &name, &next)? {
                    chain.push(fd);
                    path = next;
                    break;
                }
            }
        }
    }

    /// Opens the directory `name` of `parent` (at `path`) to walk it, if it is still one.
    fn enter(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &str,
    ) -> Result<Option<OwnedFd>, CollectError> {
        match open_dir(parent, name) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let why = "it changed while it was collected: it is no longer a directory";
                self.refuse(path, why.into(), Kinds::default());
                Ok(None)
            }
            Err(e) if made_by_the_build(&io::Error::from(e)) => {
                let e = io::Error::from(e);
                let why = format!("the directory cannot be read ({e})");
                self.refuse(path, why, Kinds::default());
                Ok(None)
            }
            Err(e) => Err(CollectError::Io {
                path: self.full(path),
                source: e.into(),
            }),
        }
    }

    /// The entries of one directory, sorted by name. When the limit of entries walked is
    /// reached inside it, none of them is used (which ones were read first is the file
    /// system's order, not the names'), and the walk stops.
    fn read(&mut self, dir: BorrowedFd<'_>, path: &str) -> Result<Read, CollectError> {
        let shown = if path.is_empty() { "." } else { path };
        let full = self.full(path);
        let io_error = |source: Errno| CollectError::Io {
            path: full.clone(),
            source: source.into(),
        };
        let listing = dir
            .try_clone_to_owned()
            .map_err(|source| CollectError::Io {
                path: full.clone(),
                source,
            })?;
        let mut listing = match Dir::from_fd(listing) {
            Ok(listing) => listing,
            Err(e) if made_by_the_build(&io::Error::from(e)) => {
                let why = format!("the directory cannot be read ({})", io::Error::from(e));
                self.refuse(shown, why, Kinds::default());
                return Ok(Read::Refused);
            }
            Err(e) => return Err(io_error(e)),
        };
        let mut entries = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(io_error)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if self.entries_left == 0 {
                let why = format!(
                    "the walk stopped in this directory after reading {} directory entries (the limit of entries walked): files here and further on were not looked at",
                    self.entries_limit
                );
                self.refuse(shown, why, Kinds::default());
                return Ok(Read::Stopped);
            }
            self.entries_left -= 1;
            let kind = match entry.file_type() {
                Some(kind) => kind_of(kind),
                None => match stat_at(dir, name) {
                    Ok(stat) => Kind::of(&stat),
                    // Removed since the directory was listed.
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(io_error(e)),
                },
            };
            entries.push((name.to_owned(), kind));
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(Read::Entries(entries))
    }

    /// One entry of a directory: a file taken or refused, or the path of a directory to
    /// walk next.
    fn visit(
        &mut self,
        dir: BorrowedFd<'_>,
        parent: &str,
        name: &OsString,
        kind: Kind,
    ) -> Result<Option<String>, CollectError> {
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
            if kinds.any() || matches!(kind, Kind::Dir | Kind::Link) && names_dir() {
                self.refuse(&path, format!("{why}: paths are kept as text"), kinds);
            }
            return Ok(None);
        }
        let enter = kind == Kind::Dir
            && self
                .reports
                .iter()
                .chain(self.artifacts)
                .any(|p| p.may_match_under(&path));
        if path.len() > MAX_PATH_BYTES {
            if kinds.any() || enter {
                let why = format!(
                    "its path is longer than {MAX_PATH_BYTES} bytes, the most the archive keeps"
                );
                self.refuse(&path, why, kinds);
            }
            return Ok(None);
        }
        match kind {
            Kind::Dir => {
                if enter && path.split('/').count() > MAX_DEPTH {
                    let why = format!(
                        "it is more than {MAX_DEPTH} directories under the workdir: it is not walked"
                    );
                    self.refuse(&path, why, Kinds::default());
                    return Ok(None);
                }
                return Ok(enter.then_some(path));
            }
            Kind::File if kinds.any() => self.take(dir, name, path, kinds)?,
            Kind::Link if kinds.any() || names_dir() => self.follow(path, kinds)?,
            Kind::File | Kind::Link => {}
            other if kinds.any() => {
                let why = format!(
                    "it is {}: only regular files are collected",
                    other.describe()
                );
                self.refuse(&path, why, kinds);
            }
            _ => {}
        }
        Ok(None)
    }

    /// A regular file matched: found, with its size and identity now.
    fn take(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: String,
        kinds: Kinds,
    ) -> Result<(), CollectError> {
        match stat_at(dir, name) {
            Ok(stat) if Kind::of(&stat) == Kind::File => self.found.push(Found {
                real: None,
                path,
                size: stat.st_size as u64,
                kinds,
                identity: (stat.st_dev, stat.st_ino),
            }),
            Ok(_) => self.refuse(&path, "it changed while it was collected".into(), kinds),
            Err(e) if made_by_the_build(&io::Error::from(e)) => {
                let why = format!("it cannot be read ({})", io::Error::from(e));
                self.refuse(&path, why, kinds)
            }
            Err(e) => {
                return Err(CollectError::Io {
                    path: self.full(&path),
                    source: e.into(),
                })
            }
        }
        Ok(())
    }

    /// A symbolic link a pattern reached: taken under its own name when it leads to a
    /// regular file inside the workspace, else refused with why. It is followed from the
    /// workspace's root, never out of it ([`reach`]).
    fn follow(&mut self, path: String, kinds: Kinds) -> Result<(), CollectError> {
        let reached = match reach(self.root, &self.start.join(&path), true) {
            Ok(reached) => reached,
            Err(blocked) => {
                let why = match blocked {
                    Blocked::Outside => "it is a symbolic link leading out of the workspace: links are followed only to files inside it".into(),
                    Blocked::Loop => "it is a symbolic link in a loop".into(),
                    Blocked::Missing => "it is a symbolic link to nothing (what it names does not exist)".into(),
                    Blocked::Link | Blocked::Changed => "it changed while it was collected".into(),
                    Blocked::Io(e) if made_by_the_build(&e) => {
                        format!("it is a symbolic link that cannot be followed ({e})")
                    }
                    Blocked::Io(source) => {
                        return Err(CollectError::Io {
                            path: self.full(&path),
                            source,
                        })
                    }
                };
                self.refuse(&path, why, kinds);
                return Ok(());
            }
        };
        match reached.target {
            Target::Dir(_) => {
                let why = "it is a symbolic link to a directory: directories are walked where they are, never through a link";
                self.refuse(&path, why.into(), kinds);
            }
            // Reached only for a name of a directory a pattern spells out: nothing to take.
            Target::Entry(_) if !kinds.any() => {}
            Target::Entry(stat) if Kind::of(&stat) == Kind::File => self.found.push(Found {
                path,
                real: Some(reached.real),
                size: stat.st_size as u64,
                kinds,
                identity: (stat.st_dev, stat.st_ino),
            }),
            Target::Entry(stat) => {
                let why = format!(
                    "it is a symbolic link to {}: only regular files are collected",
                    Kind::of(&stat).describe()
                );
                self.refuse(&path, why, kinds);
            }
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

    /// Where `path` (from the workdir) is on this machine, for an error's message.
    fn full(&self, path: &str) -> PathBuf {
        self.root.path.join(self.start).join(path)
    }
}

/// The files refused so far: the first [`MAX_REFUSED`] with why, then how many more.
#[derive(Default)]
pub(crate) struct Refusals {
    listed: Vec<Refused>,
    more: usize,
}

impl Refusals {
    pub fn push(&mut self, refused: Refused) {
        if self.listed.len() < MAX_REFUSED {
            self.listed.push(refused);
        } else {
            self.more += 1;
        }
    }

    /// Those listed, sorted by path, then one entry saying how many more there were.
    pub fn listed(mut self) -> Vec<Refused> {
        self.listed.sort_by(|a, b| a.path.cmp(&b.path));
        if self.more > 0 {
            self.listed.push(Refused {
                path: ".".into(),
                why: format!(
                    "and {} more files were refused: a build lists the first {MAX_REFUSED}",
                    self.more
                ),
                kinds: Kinds::default(),
            });
        }
        self.listed
    }
}

/// What reading one directory gave.
enum Read {
    Entries(Vec<(OsString, Kind)>),
    /// It could not be read (refused with why); the walk goes on.
    Refused,
    /// The limit of entries walked was reached (refused with why); the walk ends.
    Stopped,
}

fn kind_of(kind: Type) -> Kind {
    match kind {
        Type::File => Kind::File,
        Type::Directory => Kind::Dir,
        Type::Symlink => Kind::Link,
        Type::Fifo => Kind::Fifo,
        Type::Socket => Kind::Socket,
        Type::BlockDevice => Kind::Block,
        Type::CharacterDevice => Kind::Char,
    }
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
