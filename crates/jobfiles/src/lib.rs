//! The jobs of a directory of ConfigMap files (`.yaml`, `.yml`, searched recursively,
//! dot-files skipped), read again when a file changes, appears or goes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use kubeci_spec::{Catalogue, Job, LoadOptions, LoadedJob};

/// The jobs read, and what they were read from.
#[derive(Debug, Default)]
pub struct JobSet {
    jobs: Vec<Arc<LoadedJob>>,
    /// The positions in `jobs` of each (namespace, name), in order: lookups by name are
    /// made for every build the server shows or schedules.
    by_name: std::collections::HashMap<(String, String), Vec<usize>>,
    /// Each file with its modification time and size when read, and why the directory
    /// could not be listed; `None` before the first read.
    fingerprint: Option<Fingerprint>,
    /// What reading them found to say (unreadable files, skipped objects).
    pub problems: Vec<String>,
}

/// The job files below `dir`: its `.yaml` and `.yml` files, recursively, sorted; dot-files,
/// dot-directories and Helm charts (directories with a `Chart.yaml`: their templates are
/// Helm's input, not manifests) skipped. (`kubeci lint` and `render` read directories the
/// same way.) A `dir` that is itself a chart is refused with how to check it.
pub fn job_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if dir.join("Chart.yaml").is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is a Helm chart: render it first, e.g. `helm template {0} | kubeci lint -`",
                dir.display()
            ),
        ));
    }
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let listing_failed = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot list {}: {e}", dir.display()))
        };
        for entry in std::fs::read_dir(&dir).map_err(listing_failed)? {
            let entry = entry.map_err(listing_failed)?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let child = entry.path();
            if entry.file_type().map_err(listing_failed)?.is_dir() {
                if !child.join("Chart.yaml").is_file() {
                    pending.push(child);
                }
            } else if matches!(
                child.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(child);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Reads `path`, at most one byte more than the loader accepts: a huge file is refused by
/// the loader without being read whole.
pub fn read_bounded(reader: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(kubeci_spec::load::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
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

/// Each job file with its modification time and size, and why the directory could not be
/// listed: what tells whether the files must be read again.
type Fingerprint = (Vec<(PathBuf, Option<SystemTime>, u64)>, Option<String>);

/// A directory's job files as they are now: which there are, and each one's modification
/// time and size. Taken while the jobs read before go on being served (at 10,000 files it
/// takes milliseconds), it says whether they must be read again.
pub struct Scan {
    files: Vec<PathBuf>,
    /// The files' times and sizes, and why the directory could not be listed.
    fingerprint: Fingerprint,
}

/// The job files of `dir` as they are now.
pub fn scan(dir: &Path) -> Scan {
    let (files, problem) = match job_files(dir) {
        Ok(files) => (files, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Scan {
        fingerprint: (fingerprint(&files), problem),
        files,
    }
}

impl JobSet {
    /// Reads `dir` again if anything in it changed (or it was never read); whether it did.
    pub fn reload(&mut self, dir: &Path, options: &LoadOptions) -> bool {
        let scan = scan(dir);
        if self.is_current(&scan) {
            return false;
        }
        *self = JobSet::read(scan, options);
        true
    }

    /// Whether this set was read from the files `scan` found, as they are.
    pub fn is_current(&self, scan: &Scan) -> bool {
        self.fingerprint.as_ref() == Some(&scan.fingerprint)
    }

    /// The jobs of the files `scan` found.
    pub fn read(scan: Scan, options: &LoadOptions) -> JobSet {
        let Scan { files, fingerprint } = scan;
        let mut problems: Vec<String> = fingerprint.1.iter().cloned().collect();
        let mut jobs = Vec::new();
        for file in &files {
            match std::fs::File::open(file).and_then(read_bounded) {
                Ok(bytes) => {
                    let name = file.display().to_string();
                    let report = kubeci_spec::load(&name, &bytes, options);
                    for diagnostic in &report.diagnostics {
                        problems.push(diagnostic.to_string());
                    }
                    jobs.extend(report.jobs);
                }
                Err(e) => problems.push(format!("{}: {e}", file.display())),
            }
        }
        // Two files holding versions of one ConfigMap: the first is the object, as a cluster
        // would hold one.
        let mut first_file: std::collections::HashMap<String, (String, usize)> =
            std::collections::HashMap::new();
        let mut objects: Vec<LoadedJob> = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Some(object) = job.configmap.as_ref().map(ToString::to_string) else {
                objects.push(job);
                continue;
            };
            match first_file.get(&object) {
                Some((file, line)) => problems.push(format!(
                    "{}:{}: note: ignored: {object} is also declared in {file}:{line}, which comes first",
                    job.file, job.pos.line
                )),
                None => {
                    first_file.insert(object, (job.file.clone(), job.pos.line));
                    objects.push(job);
                }
            }
        }
        for problem in &problems {
            tracing::warn!("{problem}");
        }
        let mut jobs = objects;
        kubeci_spec::mark_duplicates(&mut jobs);
        kubeci_spec::checkname::mark_taken(&mut jobs);
        let jobs: Vec<Arc<LoadedJob>> = jobs.into_iter().map(Arc::new).collect();
        let mut by_name: std::collections::HashMap<(String, String), Vec<usize>> =
            std::collections::HashMap::new();
        for (at, job) in jobs.iter().enumerate() {
            if let Some(name) = &job.name {
                by_name
                    .entry((job.namespace.clone(), name.clone()))
                    .or_default()
                    .push(at);
            }
        }
        JobSet {
            jobs,
            by_name,
            fingerprint: Some(fingerprint),
            problems,
        }
    }

    /// The valid jobs.
    pub fn valid(&self) -> Vec<Arc<LoadedJob>> {
        self.jobs
            .iter()
            .filter(|j| j.job.is_some())
            .cloned()
            .collect()
    }
}

/// The jobs as the local engine's commands look them up: of two files declaring one job,
/// the first valid one is the job.
impl Catalogue for JobSet {
    fn declarations(&self, namespace: &str, name: &str) -> Vec<&Arc<LoadedJob>> {
        self.by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .map(|&at| &self.jobs[at])
            .collect()
    }

    fn all(&self) -> Vec<Arc<LoadedJob>> {
        self.jobs.clone()
    }

    /// Read for every page (its namespace filter): borrowed names, one copy of each.
    fn namespaces(&self) -> Vec<String> {
        let found: std::collections::BTreeSet<&str> =
            self.jobs.iter().map(|j| j.namespace.as_str()).collect();
        found.into_iter().map(str::to_owned).collect()
    }

    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)> {
        self.jobs
            .iter()
            .filter_map(|loaded| {
                let job = loaded.job.as_ref()?;
                if let Some(keys) = repositories {
                    let key = kubeci_spec::checkname::repository_of(job)?;
                    if !keys.contains(&key) {
                        return None;
                    }
                }
                Some((loaded.namespace.clone(), Arc::clone(job)))
            })
            .collect()
    }

    /// Decided among the valid jobs of its repository, as when the files were read.
    fn check_name(&self, namespace: &str, name: &str) -> Option<String> {
        let job = self.find(namespace, name)?;
        let repository = kubeci_spec::checkname::repository_of(job.job.as_ref()?)?;
        let specs = self.specs(Some(std::slice::from_ref(&repository)));
        let jobs: Vec<(&str, &Job)> = specs.iter().map(|(n, j)| (n.as_str(), &**j)).collect();
        kubeci_spec::checkname::check_name_among(namespace, name, &jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  labels: {ci-job-spec: \"true\"}\ndata:\n  job.yaml: |\n    - job:\n        name: demo\n        git: {url: 'https://github.com/o/r'}\n        run_command: make\n";

    #[test]
    fn a_directory_is_read_again_when_it_changes_and_oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = LoadOptions::default();
        std::fs::create_dir_all(dir.path().join("team/.hidden")).unwrap();
        std::fs::write(dir.path().join("team/demo.yaml"), JOB).unwrap();
        std::fs::write(
            dir.path().join("team/.hidden/other.yaml"),
            JOB.replace("demo", "hidden"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a job").unwrap();
        let mut jobs = JobSet::default();
        assert!(jobs.reload(dir.path(), &options));
        assert_eq!(
            jobs.all().len(),
            1,
            "dot-directories and other files are skipped"
        );
        assert!(jobs.find("default", "demo").is_some());
        assert!(!jobs.reload(dir.path(), &options), "nothing changed");
        let empty = tempfile::tempdir().unwrap();
        let mut none = JobSet::default();
        assert!(!none.is_current(&scan(empty.path())), "never read");
        assert!(none.reload(empty.path(), &options));
        assert!(
            !none.reload(empty.path(), &options),
            "an empty directory is not read again and again"
        );

        let huge = "#".repeat(kubeci_spec::load::MAX_FILE_BYTES + 10);
        std::fs::write(dir.path().join("huge.yaml"), huge).unwrap();
        assert!(jobs.reload(dir.path(), &options));
        assert_eq!(jobs.all().len(), 1, "the oversized file declares nothing");
        assert!(
            jobs.problems.iter().any(|p| p.contains("huge.yaml")),
            "{:?}",
            jobs.problems
        );
        std::fs::remove_file(dir.path().join("team/demo.yaml")).unwrap();
        assert!(jobs.reload(dir.path(), &options));
        assert!(
            jobs.find("default", "demo").is_none(),
            "a removed file removes its job"
        );
    }

    #[test]
    fn one_job_per_name_one_version_per_configmap() {
        let dir = tempfile::tempdir().unwrap();
        let options = LoadOptions::default();
        // b.yaml declares ConfigMap `other` with the same job; c.yaml is another version
        // of ConfigMap `demo`.
        std::fs::write(dir.path().join("a.yaml"), JOB).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            JOB.replace("name: demo\n  labels", "name: other\n  labels"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("c.yaml"),
            JOB.replace("run_command: make", "run_command: make again"),
        )
        .unwrap();
        let mut jobs = JobSet::default();
        jobs.reload(dir.path(), &options);
        assert_eq!(
            jobs.all().len(),
            2,
            "the second version of `demo` is not listed"
        );
        let winner = jobs.find("default", "demo").unwrap();
        assert_eq!(winner.configmap.as_ref().unwrap().name, "demo");
        assert!(winner.source.contains("run_command: make\n"));
        let repeat = &jobs.all()[1];
        assert!(repeat.job.is_none());
        assert!(repeat
            .diagnostics
            .iter()
            .any(|d| d.code == "duplicate-job" && d.message.contains("ConfigMap default/demo")));
        assert_eq!(jobs.specs(None).len(), 1, "built once");
    }
}
