//! `kubeci_collect::collect` on real files in temporary directories: what a build leaves
//! behind is picked by its patterns, and nothing it wrote can make kubeci read outside its
//! workspace, wait forever, or take more than the limits.

mod limits;
mod links;
mod open;
mod picking;
mod special;
mod swapped;

use std::path::{Path, PathBuf};

use kubeci_collect::{collect, Collected, Limits, Pattern};

/// A temporary directory holding a workspace (`ws/`, the checkout root) and, beside it,
/// files outside the workspace.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn create() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ws")).unwrap();
        std::fs::write(dir.path().join("secret"), "outside the workspace").unwrap();
        Workspace { dir }
    }

    /// The workspace.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// The directory around the workspace, holding `secret`.
    pub fn outside(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` at `path` in the workspace, making its directories.
    pub fn file(&self, path: &str, contents: &str) -> &Workspace {
        let full = self.root().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, contents).unwrap();
        self
    }

    /// A file of `len` bytes that takes no room (a sparse file).
    pub fn sized(&self, path: &str, len: u64) -> &Workspace {
        let full = self.root().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::File::create(full).unwrap().set_len(len).unwrap();
        self
    }

    /// A symbolic link at `path` in the workspace naming `target` as written.
    pub fn link(&self, path: &str, target: impl AsRef<Path>) -> &Workspace {
        let full = self.root().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, full).unwrap();
        self
    }

    pub fn collect(&self, workdir: &str, reports: &[&str], artifacts: &[&str]) -> Collected {
        self.collect_within(workdir, reports, artifacts, &Limits::default())
    }

    pub fn collect_within(
        &self,
        workdir: &str,
        reports: &[&str],
        artifacts: &[&str],
        limits: &Limits,
    ) -> Collected {
        let collected = collect(
            &self.root(),
            workdir,
            &patterns(reports),
            &patterns(artifacts),
            limits,
        )
        .unwrap();
        assert_well_formed(&collected);
        collected
    }
}

pub fn patterns(texts: &[&str]) -> Vec<Pattern> {
    texts.iter().map(|t| Pattern::parse(t).unwrap()).collect()
}

pub fn paths(collected: &Collected) -> Vec<&str> {
    collected.files.iter().map(|f| f.path.as_str()).collect()
}

/// The refused paths, each with the words of its reason that a test looks for.
pub fn refused(collected: &Collected) -> Vec<(&str, &str)> {
    collected
        .refused
        .iter()
        .map(|r| (r.path.as_str(), r.why.as_str()))
        .collect()
}

/// Whether `path` was refused for a reason containing `words`.
pub fn refused_for(collected: &Collected, path: &str, words: &str) -> bool {
    collected
        .refused
        .iter()
        .any(|r| r.path == path && r.why.contains(words))
}

/// What every answer holds to: paths relative to the workdir with no `.`, `..` or empty
/// segment, files sorted by path and inside the workspace's real directory.
fn assert_well_formed(collected: &Collected) {
    for file in &collected.files {
        assert!(
            !file.path.starts_with('/')
                && file.path.split('/').all(|s| !matches!(s, "" | "." | "..")),
            "{:?}",
            file.path
        );
        assert!(file.full.is_absolute(), "{:?}", file.full);
    }
    let sorted = collected.files.windows(2).all(|w| w[0].path < w[1].path);
    assert!(sorted, "{:?}", paths(collected));
}
