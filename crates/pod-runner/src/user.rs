//! Running a pod's processes as another user than the runner's own: the build's
//! directory handed to that user before any of its processes runs, and nothing the
//! runner does as itself afterwards following what those processes may have put there.

use super::*;
use std::path::Path;

/// The user and group a pod's processes run as (needs a runner running as root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// The user's name, for `USER` and `LOGNAME`.
    pub name: String,
}

/// Gives `dir` and everything in it (made by the runner, before any process of the pod
/// ran) to `user`, except the files in `keep`; `dir` itself becomes readable by that user
/// alone. Links are changed themselves, never followed.
pub(crate) fn hand_over(dir: &Path, user: &RunAs, keep: &[&Path]) -> Result<(), LocalError> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid)).map_err(io_error(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error(dir))?;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if !keep.contains(&path.as_path()) {
            give(&path, user)?;
        }
    }
    Ok(())
}

/// Gives `path`, and everything in it when it is a directory, to `user`.
fn give(path: &Path, user: &RunAs) -> Result<(), LocalError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).map_err(io_error(path))?;
    if std::fs::symlink_metadata(path)
        .map_err(io_error(path))?
        .is_dir()
    {
        for entry in std::fs::read_dir(path).map_err(io_error(path))? {
            give(&entry.map_err(io_error(path))?.path(), user)?;
        }
    }
    Ok(())
}

/// Makes directory `dir` (and its parents) as `user`: it may lie under a checkout whose
/// links the build controls, which the runner must not follow as itself.
pub(crate) async fn make_dir_as(dir: &Path, user: &RunAs) -> Result<(), LocalError> {
    let status = tokio::process::Command::new("mkdir")
        .arg("-p")
        .arg("--")
        .arg(dir)
        .uid(user.uid)
        .gid(user.gid)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map_err(|source| LocalError::Spawn {
            program: "mkdir".into(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(LocalError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("the build's user ({}) cannot create it", user.name),
            ),
        })
    }
}
