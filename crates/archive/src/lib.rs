//! kubeci's archive: every build's record and logs, and each job's index, kept in object
//! storage (S3 and S3-compatible stores, Google Cloud Storage, Azure Blob Storage, or a
//! directory) in a documented, versioned layout that other tools can read
//! (docs/archive.md).
//!
//! - [`ArchiveUrl`] parses `--archive URL` (pure).
//! - [`layout`] makes every object key (pure).
//! - [`logformat`] is the log format: `TIME SP BYTES LF` per line (pure).
//! - [`index`] is each job's index and retention's choice (pure).
//! - [`Archive`] is the I/O: records, logs (streamed both ways, in bounded memory), the
//!   index (conditional writes), deletion and retention.
//!
//! [`Archive`] is generic over a build's record `R` and its index summary `S` (any
//! `Serialize + DeserializeOwned` types), and is the engine's
//! `kubeci_engine::archive::BuildArchive` with the engine's record (`ArchivedBuild`) and
//! summary (`ArchivedSummary`): see `engine`.

mod archive;
mod engine;
mod error;
mod files;
pub mod index;
pub mod layout;
pub mod logformat;
mod logs;
mod staging;
mod store;
mod upload;
mod url;

pub use archive::{Archive, MAX_JSON};
pub use engine::engine_error;
pub use error::{ArchiveError, Result};
pub use files::FileBytes;
pub use index::{select_for_deletion, Head, IndexEntry, Retention};
pub use logformat::LogLine;
pub use logs::{ArchivedLine, LogLines, LogWritten, READ_PIECE};
pub use upload::PART_SIZE;
pub use url::{ArchiveUrl, Store};
