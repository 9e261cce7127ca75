//! How much one build may leave behind (`kubeci_results::limits`: the rule the Kubernetes
//! engine's commit keeps too), and choosing the files that fit.

use crate::walk::{Found, Refusals};
use crate::{Collected, CollectedFile, Refused, Workspace};

pub use kubeci_results::limits::{
    Limits, Taken, MAX_ARTIFACT_BYTES, MAX_ENTRIES_WALKED, MAX_FILES, MAX_FILE_BYTES,
    MAX_REPORT_BYTES,
};

/// Refused files listed with why: 1,000, then how many more (a build can make any number
/// of files its patterns match and kubeci refuses; the list is kept in the archive's
/// `outputs.json` and served).
pub const MAX_REFUSED: usize = 1_000;

/// The files found, taken in order of path while they fit ([`Limits::admit`]: a file past
/// a limit is refused with that limit, and smaller files after it may still fit; one that
/// is both a report and an artifact fits both totals or is refused).
pub(crate) fn choose(
    limits: &Limits,
    mut found: Vec<Found>,
    mut refused: Refusals,
    root: &Workspace,
    start: &std::path::Path,
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
            Ok(()) => {
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
