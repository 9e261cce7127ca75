//! How much one build may leave behind, and choosing the files that fit.

use crate::walk::{Found, Refusals};
use crate::{Collected, CollectedFile, Refused, Workspace};

/// Total bytes of the files kept as artifacts, per build: 1 GiB.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;
/// Total bytes of the files kept as test reports, per build: 256 MiB (a 50 MB JUnit file
/// of 100,000 cases fits five times).
pub const MAX_REPORT_BYTES: u64 = 256 << 20;
/// Bytes of one file: 512 MiB.
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// Files per build, reports and artifacts together: 10,000.
pub const MAX_FILES: usize = 10_000;
/// Directory entries read while looking for them: 100,000, so that a workspace of a
/// million files cannot stall kubeci. Directories no pattern can reach are not read and
/// not counted.
pub const MAX_ENTRIES_WALKED: usize = 100_000;
/// Refused files listed with why: 1,000, then how many more (a build can make any number
/// of files its patterns match and kubeci refuses; the list is kept in the archive's
/// `outputs.json` and served).
pub const MAX_REFUSED: usize = 1_000;

/// What one build may leave behind; [`Limits::default`] is the documented limits above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub artifact_bytes: u64,
    pub report_bytes: u64,
    pub file_bytes: u64,
    pub files: usize,
    pub entries_walked: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            artifact_bytes: MAX_ARTIFACT_BYTES,
            report_bytes: MAX_REPORT_BYTES,
            file_bytes: MAX_FILE_BYTES,
            files: MAX_FILES,
            entries_walked: MAX_ENTRIES_WALKED,
        }
    }
}

impl Limits {
    /// The files found, taken in order of path while they fit: a file past a limit is
    /// refused with that limit, and smaller files after it may still fit. A file that is
    /// both a report and an artifact fits both totals or is refused.
    pub(crate) fn choose(
        &self,
        mut found: Vec<Found>,
        mut refused: Refusals,
        root: &Workspace,
        start: &std::path::Path,
    ) -> Collected {
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let (mut reports, mut artifacts) = (0u64, 0u64);
        let mut files = Vec::new();
        for file in found {
            let why = if file.size > self.file_bytes {
                Some(format!(
                    "it is {}, over the limit of one file ({})",
                    size(file.size),
                    size(self.file_bytes)
                ))
            } else if files.len() >= self.files {
                Some(format!(
                    "a build keeps at most {} files (the limit of files per build)",
                    self.files
                ))
            } else if file.kinds.test_report && reports + file.size > self.report_bytes {
                Some(format!(
                    "with its {}, the build's test reports would pass their limit of {} in all",
                    size(file.size),
                    size(self.report_bytes)
                ))
            } else if file.kinds.artifact && artifacts + file.size > self.artifact_bytes {
                Some(format!(
                    "with its {}, the build's artifacts would pass their limit of {} in all",
                    size(file.size),
                    size(self.artifact_bytes)
                ))
            } else {
                None
            };
            match why {
                Some(why) => refused.push(Refused {
                    path: file.path,
                    why,
                    kinds: file.kinds,
                }),
                None => {
                    reports += if file.kinds.test_report { file.size } else { 0 };
                    artifacts += if file.kinds.artifact { file.size } else { 0 };
                    let real = file.real.unwrap_or_else(|| start.join(&file.path));
                    files.push(CollectedFile {
                        full: root.0.path.join(&real),
                        path: file.path,
                        size: file.size,
                        kinds: file.kinds,
                        identity: file.identity,
                        root: root.clone(),
                        real,
                    });
                }
            }
        }
        Collected {
            files,
            refused: refused.listed(),
        }
    }
}

/// A size as people read it: `512 MiB`, `1 GiB`, `50.0 MiB`, `812 bytes`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.1} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(super::MAX_ARTIFACT_BYTES), "1 GiB");
        assert_eq!(size(super::MAX_REPORT_BYTES), "256 MiB");
        assert_eq!(size(50_000_000), "47.7 MiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(812), "812 bytes");
    }
}
