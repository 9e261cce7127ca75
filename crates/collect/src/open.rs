//! Opening a collected file for reading, checked again: the build's processes may outlive
//! it, and what was a file may since be a link, a FIFO or another file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crate::CollectedFile;

impl CollectedFile {
    /// Opens the file to read it, if it is still the regular file collected: opened
    /// without following a link in its last component (`O_NOFOLLOW`) and without waiting
    /// (`O_NONBLOCK`: a FIFO put in its place would otherwise wait for a writer; on a
    /// regular file it changes nothing), then its device, inode and size compared with
    /// what was collected. Read at most [`CollectedFile::size`] bytes
    /// (`file.take(size)`): a process still running may write more.
    pub fn open(&self) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.full)?;
        let meta = file.metadata()?;
        let changed = |what: String| {
            Err(io::Error::other(format!(
                "{} {what} since it was collected",
                self.path
            )))
        };
        if !meta.is_file() {
            return changed("is no longer a regular file".into());
        }
        if (meta.dev(), meta.ino()) != self.identity {
            return changed("was replaced by another file".into());
        }
        if meta.len() != self.size {
            return changed(format!("went from {} to {} bytes", self.size, meta.len()));
        }
        Ok(file)
    }
}
