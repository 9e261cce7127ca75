//! Reaching the workspace and the files in it by directory descriptors, never by path: each
//! directory is opened from the one before it without following a link (`O_NOFOLLOW`), so a
//! process of the build that swaps a directory for a link while kubeci reads changes
//! nothing kubeci reaches. Links are read (`readlinkat`) and followed by this module alone:
//! on the way to the workspace only where no one but root could have made them, inside it
//! only to what stays inside it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use crate::CollectError;

/// How many links one path may pass through (Linux's own bound, `MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// The workspace, open: what every file collected is reached from.
pub(crate) struct Root {
    pub fd: OwnedFd,
    /// Its path on this machine as it was reached (without links).
    pub path: PathBuf,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.path.fmt(f)
    }
}

/// What a file's type is, from its mode or its directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Link,
    Fifo,
    Socket,
    Block,
    Char,
    Unknown,
}

impl Kind {
    pub fn of(stat: &FileStat) -> Kind {
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Link,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFCHR => Kind::Char,
            _ => Kind::Unknown,
        }
    }

    /// What it is, in words, for a file that is not a regular one.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Fifo => "a FIFO (named pipe)",
            Kind::Socket => "a socket",
            Kind::Block => "a block device",
            Kind::Char => "a character device",
            _ => "not a regular file",
        }
    }
}

/// A directory opened to be read or to reach into: never through a link, never blocking.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(dir, name, flags, Mode::empty())
}

/// What `name` in `dir` is itself (a link is a link).
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn io(errno: Errno) -> io::Error {
    io::Error::from(errno)
}

/// Opens the workspace at `path` (made absolute as written, not resolved). A link on the way
/// is followed only in a directory that root owns and no one else may write (`/var/run`, a
/// link an administrator made for `--data`), and only when `root_owned_links`: the build's
/// user owns the directories around its checkout (`volumes/workspace/src` on the local
/// engine) and could have put a link to kubeci's own files there — and in a pod, where
/// the build step is root, no link is followed at all.
pub(crate) fn open_root(path: &Path, root_owned_links: bool) -> Result<Root, CollectError> {
    let refused = |source: io::Error| CollectError::workspace(path, source);
    let absolute = std::path::absolute(path).map_err(refused)?;
    let root = || {
        openat(
            nix::fcntl::AT_FDCWD,
            "/",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let mut dirs: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut top = root().map_err(|e| refused(io(e)))?;
    let mut queue: VecDeque<OsString> = parts(&absolute);
    let mut hops = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if let Some((parent, _)) = dirs.pop() {
                top = parent;
            }
            continue;
        }
        let stat = stat_at(top.as_fd(), &name).map_err(|e| refused(io(e)))?;
        match Kind::of(&stat) {
            Kind::Link => {
                let here = fstat(top.as_fd()).map_err(|e| refused(io(e)))?;
                let link = reached(&dirs, &name);
                if !root_owned_links {
                    return Err(CollectError::Workspace {
                        path: path.into(),
                        source: io::Error::other(format!(
                            "{} is a symbolic link: a build pod's workspace is reached through no link (its build step, root, may have put one there)",
                            link.display()
                        )),
                    });
                }
                if here.st_uid != 0 || here.st_mode & 0o022 != 0 {
                    return Err(CollectError::Workspace {
                        path: path.into(),
                        source: io::Error::other(format!(
                            "{} is a symbolic link in a directory others than root may change: kubeci follows no link the build may have put on the way to its workspace",
                            link.display()
                        )),
                    });
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(refused(io(Errno::ELOOP)));
                }
                let target =
                    readlinkat(top.as_fd(), name.as_os_str()).map_err(|e| refused(io(e)))?;
                if Path::new(&target).is_absolute() {
                    dirs.clear();
                    top = root().map_err(|e| refused(io(e)))?;
                }
                prepend(&mut queue, Path::new(&target));
            }
            Kind::Dir => {
                let fd = open_dir(top.as_fd(), &name).map_err(|e| refused(io(e)))?;
                dirs.push((std::mem::replace(&mut top, fd), name));
            }
            _ => return Err(refused(io(Errno::ENOTDIR))),
        }
    }
    let path = reached(&dirs, OsStr::new(""));
    Ok(Root { fd: top, path })
}

/// The path of the directories in `dirs` (from `/`), then `name`.
fn reached(dirs: &[(OwnedFd, OsString)], name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from("/");
    path.extend(dirs.iter().map(|(_, name)| name));
    if !name.is_empty() {
        path.push(name);
    }
    path
}

/// The names of `path`, in order: `..` kept, `.` and the root left out.
fn parts(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn prepend(queue: &mut VecDeque<OsString>, path: &Path) {
    for part in parts(path).into_iter().rev() {
        queue.push_front(part);
    }
}

/// Where a path inside the workspace led.
pub(crate) enum Target {
    /// A directory, open.
    Dir(OwnedFd),
    /// Anything else, as it is (a link is followed).
    Entry(FileStat),
}

/// Where a path inside the workspace led, and its path from the workspace without links.
pub(crate) struct Reached {
    pub target: Target,
    pub real: PathBuf,
}

/// Why a path inside the workspace led nowhere.
#[derive(Debug)]
pub(crate) enum Blocked {
    /// Through `..` or a link, out of the workspace.
    Outside,
    /// Through more than [`MAX_HOPS`] links.
    Loop,
    /// A link where none may be (`follow` is false).
    Link,
    /// What it names is not there.
    Missing,
    /// What was a directory a moment before is something else now.
    Changed,
    Io(io::Error),
}

/// Follows `path` (relative) from the workspace's root, one directory descriptor after
/// another. With `follow`, links are followed, but only to what lies inside the workspace:
/// `..` never climbs above it, and an absolute target must name a place under its path;
/// without, any link on the way is [`Blocked::Link`].
pub(crate) fn reach(root: &Root, path: &Path, follow: bool) -> Result<Reached, Blocked> {
    let mut dirs: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut queue = parts(path);
    let mut hops = 0;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            dirs.pop().ok_or(Blocked::Outside)?;
            continue;
        }
        let top = dirs.last().map_or(root.fd.as_fd(), |(fd, _)| fd.as_fd());
        let stat = stat_at(top, &name).map_err(|e| match e {
            Errno::ENOENT => Blocked::Missing,
            e => Blocked::Io(io(e)),
        })?;
        match Kind::of(&stat) {
            Kind::Link if !follow => return Err(Blocked::Link),
            Kind::Link => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(Blocked::Loop);
                }
                let target = readlinkat(top, name.as_os_str()).map_err(|e| Blocked::Io(io(e)))?;
                let target = Path::new(&target);
                if target.is_absolute() {
                    let inside = target
                        .strip_prefix(&root.path)
                        .map_err(|_| Blocked::Outside)?;
                    dirs.clear();
                    prepend(&mut queue, inside);
                } else {
                    prepend(&mut queue, target);
                }
            }
            Kind::Dir => {
                let fd = open_dir(top, &name).map_err(|e| match e {
                    Errno::ELOOP | Errno::ENOTDIR => Blocked::Changed,
                    e => Blocked::Io(io(e)),
                })?;
                dirs.push((fd, name));
            }
            _ if queue.is_empty() => {
                let real = real(&dirs).join(&name);
                let target = Target::Entry(stat);
                return Ok(Reached { target, real });
            }
            _ => return Err(Blocked::Io(io(Errno::ENOTDIR))),
        }
    }
    let real = real(&dirs);
    let fd = match dirs.pop() {
        Some((fd, _)) => fd,
        None => root.fd.try_clone().map_err(Blocked::Io)?,
    };
    Ok(Reached {
        target: Target::Dir(fd),
        real,
    })
}

fn real(dirs: &[(OwnedFd, OsString)]) -> PathBuf {
    dirs.iter().map(|(_, name)| name.as_os_str()).collect()
}
