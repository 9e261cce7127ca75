//! How much one build may leave behind, and the rule that admits each file within it —
//! the same whether the files are picked from a workspace (`kubeci-collect`, both
//! engines' collectors) or found in the archive once a build pod handed them over (the
//! Kubernetes engine's commit).

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

/// What the files admitted so far take of a build's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    pub files: usize,
    pub report_bytes: u64,
    pub artifact_bytes: u64,
}

impl Limits {
    /// Admits one more file of `size` bytes, kept as a test report, an artifact or both
    /// (in path order: a file past a limit is refused, and smaller files after it may
    /// still fit; one that is both fits both totals or is refused), counting it in
    /// `taken`; why not, in words for the build's page.
    pub fn admit(
        &self,
        (report, artifact): (bool, bool),
        size: u64,
        taken: &mut Taken,
    ) -> Result<(), String> {
        if size > self.file_bytes {
            return Err(format!(
                "it is {}, over the limit of one file ({})",
                human_size(size),
                human_size(self.file_bytes)
            ));
        }
        if taken.files >= self.files {
            return Err(format!(
                "a build keeps at most {} files (the limit of files per build)",
                self.files
            ));
        }
        if report && taken.report_bytes + size > self.report_bytes {
            return Err(format!(
                "with its {}, the build's test reports would pass their limit of {} in all",
                human_size(size),
                human_size(self.report_bytes)
            ));
        }
        if artifact && taken.artifact_bytes + size > self.artifact_bytes {
            return Err(format!(
                "with its {}, the build's artifacts would pass their limit of {} in all",
                human_size(size),
                human_size(self.artifact_bytes)
            ));
        }
        taken.files += 1;
        taken.report_bytes += if report { size } else { 0 };
        taken.artifact_bytes += if artifact { size } else { 0 };
        Ok(())
    }
}

/// A size as people read it: `512 MiB`, `1 GiB`, `50.0 MiB`, `812 bytes`.
pub fn human_size(bytes: u64) -> String {
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
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(MAX_ARTIFACT_BYTES), "1 GiB");
        assert_eq!(human_size(MAX_REPORT_BYTES), "256 MiB");
        assert_eq!(human_size(50_000_000), "47.7 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(812), "812 bytes");
    }

    #[test]
    fn files_are_admitted_while_they_fit_and_a_smaller_one_after_a_refusal_still_fits() {
        let limits = Limits {
            artifact_bytes: 10,
            report_bytes: 5,
            file_bytes: 8,
            files: 3,
            entries_walked: 0,
        };
        let mut taken = Taken::default();
        assert!(limits
            .admit((false, true), 9, &mut taken)
            .unwrap_err()
            .contains("one file"));
        assert_eq!(limits.admit((false, true), 8, &mut taken), Ok(()));
        assert!(limits
            .admit((false, true), 3, &mut taken)
            .unwrap_err()
            .contains("artifacts would pass"));
        assert_eq!(limits.admit((true, false), 5, &mut taken), Ok(()));
        assert!(limits
            .admit((true, true), 1, &mut taken)
            .unwrap_err()
            .contains("test reports would pass"));
        assert_eq!(limits.admit((false, true), 2, &mut taken), Ok(()));
        assert!(limits
            .admit((false, false), 0, &mut taken)
            .unwrap_err()
            .contains("at most 3 files"));
        assert_eq!(
            taken,
            Taken {
                files: 3,
                report_bytes: 5,
                artifact_bytes: 10
            }
        );
    }
}
