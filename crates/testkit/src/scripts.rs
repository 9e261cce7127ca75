//! The repository's build scripts for the Go parts tests run (`scripts/s3`,
//! `scripts/prow`): where what they built is, as `SCRIPT path` prints it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What `bash scripts/NAME path` prints (the path of what it built), or why there is
/// none: `what` names it, `how_to_build` says how to build it.
pub(crate) fn built_path(
    repo_root: &Path,
    name: &str,
    what: &str,
    how_to_build: &str,
) -> Result<PathBuf, String> {
    let script = repo_root.join("scripts").join(name);
    let output = Command::new("bash")
        .arg(&script)
        .arg("path")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {how_to_build}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "no {what}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}
