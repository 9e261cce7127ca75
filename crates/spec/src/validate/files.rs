//! The checks of the files a build leaves behind: `test_reports` and `artifacts`, each a
//! list of glob patterns relative to `workdir` ([`crate::glob`]).

use crate::diagnostic::{FieldPath, Finding};
use crate::glob::{Pattern, MAX_PATTERNS};
use crate::model::Job;

pub(super) fn check_files(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    check_patterns("test_reports", &job.test_reports, root, out);
    check_patterns("artifacts", &job.artifacts, root, out);
}

/// Each pattern parses; at most [`MAX_PATTERNS`] of them, the first one too many pointed
/// at.
fn check_patterns(key: &str, patterns: &[String], root: &FieldPath, out: &mut Vec<Finding>) {
    let path = root.key(key);
    for (index, text) in patterns.iter().enumerate() {
        if let Err(why) = Pattern::parse(text) {
            out.push(
                Finding::error(
                    "invalid-file-pattern",
                    path.index(index),
                    format!("pattern `{}` is not valid: {why}", text.escape_debug()),
                )
                .help(why.help()),
            );
        }
    }
    if patterns.len() > MAX_PATTERNS {
        out.push(
            Finding::error(
                "too-many-file-patterns",
                path.index(MAX_PATTERNS),
                format!(
                    "`{key}` lists {} patterns; at most {MAX_PATTERNS} are allowed",
                    patterns.len()
                ),
            )
            .help(
                "merge patterns with wildcards (`reports/**/*.xml`) or a directory (`coverage/`)",
            ),
        );
    }
}
