//! How much one build may leave behind, and choosing the files that fit.

use crate::walk::Found;
use crate::{Collected, CollectedFile, Refused};

pub use kubeci_results::limits::{
    Limits, Taken, MAX_ARTIFACT_BYTES, MAX_ENTRIES_WALKED, MAX_FILES, MAX_FILE_BYTES,
    MAX_REPORT_BYTES,
};

/// The files found, taken in order of path while they fit ([`Limits::admit`], the rule
/// the Kubernetes engine's commit keeps too).
pub(crate) fn choose(
    limits: &Limits,
    mut found: Vec<Found>,
    mut refused: Vec<Refused>,
) -> Collected {
    found.sort_by(|a, b| a.path.cmp(&b.path));
    let mut taken = Taken::default();
    let mut files = Vec::new();
    for file in found {
        let kinds = (file.kinds.test_report, file.kinds.artifact);
        match limits.admit(kinds, file.size, &mut taken) {
            Err(why) => refused.push(Refused {
                path: file.path,
                why,
                kinds: file.kinds,
            }),
            Ok(()) => files.push(CollectedFile {
                path: file.path,
                full: file.full,
                size: file.size,
                kinds: file.kinds,
                identity: file.identity,
            }),
        }
    }
    refused.sort_by(|a, b| a.path.cmp(&b.path));
    Collected { files, refused }
}
