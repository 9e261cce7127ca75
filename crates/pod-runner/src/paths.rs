//! Mount paths of a container mapped to this machine's directories.
//!
//! Without root nothing can be mounted, so the local engine maps *whole path values*
//! instead: a container's working directory, environment values that are paths under a
//! mount point, and the path flags of kubeci's own clone and collect steps
//! ([`KUBECI_PATH_FLAGS`]). Any
//! other value (a script, a URL, a branch name) is passed exactly as written, so data that
//! merely contains `/tmp` is never altered.

use std::path::Path;

/// The flags of `kubeci clone` and `kubeci collect` whose values are paths inside the pod.
pub const KUBECI_PATH_FLAGS: [&str; 8] = [
    "--dest=",
    "--meta-dir=",
    "--ssh-key=",
    "--fingerprint-file=",
    "--termination-message=",
    "--token-file=",
    "--workspace=",
    "--ready-file=",
];

/// A container's mount points and the directories that stand for them.
#[derive(Debug, Clone, Default)]
pub struct MountMap {
    /// (mount path, host directory), longest mount path first.
    mounts: Vec<(String, String)>,
}

impl MountMap {
    pub fn add(&mut self, mount_path: &str, dir: &Path) {
        let mount = mount_path.trim_end_matches('/').to_owned();
        self.mounts.push((mount, dir.display().to_string()));
        self.mounts
            .sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
    }

    /// The directory standing for `path` if it is a mount point or lies under one.
    pub fn map_path(&self, path: &str) -> Option<String> {
        self.mounts.iter().find_map(|(mount, dir)| {
            let rest = path.strip_prefix(mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{dir}{rest}"))
        })
    }

    /// `value` mapped if it is a path under a mount point, else unchanged.
    pub fn map_value(&self, value: &str) -> String {
        self.map_path(value).unwrap_or_else(|| value.to_owned())
    }

    /// An argument of `kubeci clone` or `kubeci collect`, with the value of a path flag
    /// mapped.
    pub fn map_kubeci_arg(&self, arg: &str) -> String {
        for flag in KUBECI_PATH_FLAGS {
            if let Some(value) = arg.strip_prefix(flag) {
                return format!("{flag}{}", self.map_value(value));
            }
        }
        arg.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_path_values_are_mapped() {
        let mut map = MountMap::default();
        map.add("/workspace", Path::new("/b/ws"));
        map.add("/tmp", Path::new("/b/tmp"));
        map.add("/workspace/cache", Path::new("/b/cache"));
        assert_eq!(map.map_value("/workspace"), "/b/ws");
        assert_eq!(map.map_value("/workspace/src"), "/b/ws/src");
        assert_eq!(map.map_value("/workspace/cache/x"), "/b/cache/x");
        assert_eq!(map.map_value("/tmpfile"), "/tmpfile");
        assert_eq!(map.map_value("cd /workspace"), "cd /workspace");
        assert_eq!(
            map.map_kubeci_arg("--dest=/workspace/src"),
            "--dest=/b/ws/src"
        );
        assert_eq!(
            map.map_kubeci_arg("--workspace=/workspace/src"),
            "--workspace=/b/ws/src"
        );
        assert_eq!(
            map.map_kubeci_arg("--url=/tmp/repo.git"),
            "--url=/tmp/repo.git"
        );
        assert_eq!(
            map.map_kubeci_arg("--branch=$(touch${IFS}/tmp/x)"),
            "--branch=$(touch${IFS}/tmp/x)"
        );
    }
}
