//! Opening a collected file for reading, checked again: the build's processes may outlive
//! it, and what was a file may since be a link, a FIFO or another file, and a directory
//! above it a link.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::beneath::{reach, Blocked, Target};
use crate::CollectedFile;

impl CollectedFile {
    /// Opens the file to read it, if it is still the regular file collected: reached from
    /// the workspace one directory at a time without following any link, opened without
    /// following a link in its last component (`O_NOFOLLOW`) and without waiting
    /// (`O_NONBLOCK`: a FIFO put in its place would otherwise wait for a writer; on a
    /// regular file it changes nothing), then its device, inode and size compared with
    /// what was collected. Read at most [`CollectedFile::size`] bytes
    /// (`file.take(size)`): a process still running may write more.
    pub fn open(&self) -> io::Result<File> {
        let (dir, name) = match (self.real.parent(), self.real.file_name()) {
            (Some(dir), Some(name)) => (dir, name),
            _ => return Err(io::Error::from(io::ErrorKind::NotFound)),
        };
        let parent = match reach(&self.root.0, dir, false) {
            Ok(reached) => match reached.target {
                Target::Dir(fd) => fd,
                Target::Entry(_) => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
            },
            Err(Blocked::Io(e)) => return Err(e),
            Err(Blocked::Missing) => return Err(io::Error::from(io::ErrorKind::NotFound)),
            Err(_) => return self.changed("is reached through a symbolic link now".into()),
        };
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = File::from(openat(parent.as_fd(), name, flags, Mode::empty())?);
        let meta = file.metadata()?;
        if !meta.is_file() {
            return self.changed("is no longer a regular file".into());
        }
        if (meta.dev(), meta.ino()) != self.identity {
            return self.changed("was replaced by another file".into());
        }
        if meta.len() != self.size {
            return self.changed(format!("went from {} to {} bytes", self.size, meta.len()));
        }
        Ok(file)
    }

    fn changed<T>(&self, what: String) -> io::Result<T> {
        Err(io::Error::other(format!(
            "{} {what} since it was collected",
            self.path
        )))
    }
}
