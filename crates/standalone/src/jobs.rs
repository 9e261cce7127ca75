//! The jobs of a directory of ConfigMap files (`.yaml`, `.yml`, `.json`, searched
//! recursively, dot-files skipped), read again when a file changes, appears or goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use kubeci_spec::{Job, LoadOptions, LoadedJob};

/// The jobs read, and what they were read from.
#[derive(Debug, Default)]
pub struct JobSet {
    jobs: Vec<Arc<LoadedJob>>,
    /// Each file with its modification time and size when read.
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
    /// What reading them found to say (unreadable files, skipped objects).
    pub problems: Vec<String>,
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn fingerprint(files: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            (
                f.clone(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            )
        })
        .collect()
}

impl JobSet {
    /// Reads `dir` again if anything in it changed; whether it did.
    pub fn reload(&mut self, dir: &Path, options: &LoadOptions) -> bool {
        let files = files(dir);
        let now = fingerprint(&files);
        if now == self.fingerprint && !self.fingerprint.is_empty() {
            return false;
        }
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        for file in &files {
            match std::fs::read(file) {
                Ok(bytes) => {
                    let name = file.display().to_string();
                    let report = kubeci_spec::load(&name, &bytes, options);
                    for diagnostic in &report.diagnostics {
                        problems.push(diagnostic.to_string());
                    }
                    jobs.extend(report.jobs.into_iter().map(Arc::new));
                }
                Err(e) => problems.push(format!("{}: {e}", file.display())),
            }
        }
        for problem in &problems {
            eprintln!("kubeci: {problem}");
        }
        let changed = now != self.fingerprint;
        self.jobs = jobs;
        self.fingerprint = now;
        self.problems = problems;
        changed
    }

    pub fn all(&self) -> &[Arc<LoadedJob>] {
        &self.jobs
    }

    /// The valid jobs.
    pub fn valid(&self) -> Vec<Arc<LoadedJob>> {
        self.jobs
            .iter()
            .filter(|j| j.job.is_some())
            .cloned()
            .collect()
    }

    /// The valid job `name` whose builds run in `namespace` (the first, if two declare it).
    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.jobs
            .iter()
            .find(|j| {
                j.namespace == namespace && j.name.as_deref() == Some(name) && j.job.is_some()
            })
            .cloned()
    }

    /// Any job named `name` in `namespace`, valid or not.
    pub fn find_any(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.jobs
            .iter()
            .find(|j| j.namespace == namespace && j.name.as_deref() == Some(name))
            .cloned()
    }

    /// The valid jobs with their namespace, only those of `repositories` when given.
    pub fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)> {
        self.jobs
            .iter()
            .filter_map(|loaded| {
                let job = loaded.job.as_ref()?;
                if let Some(keys) = repositories {
                    let key = kubeci_spec::giturl::GitUrl::parse(&job.git.url)
                        .ok()?
                        .repository_key()?;
                    if !keys.contains(&key) {
                        return None;
                    }
                }
                Some((loaded.namespace.clone(), Arc::new(job.clone())))
            })
            .collect()
    }
}
