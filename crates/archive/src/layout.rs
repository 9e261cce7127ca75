//! Where each object lives: the archive's layout, version 1, as pure functions. Every key
//! kubeci writes is made here; docs/archive.md describes the same keys.
//!
//! ```text
//! PREFIX/v1/jobs/NAMESPACE/JOB/head.json                      highest and lowest numbers
//! PREFIX/v1/jobs/NAMESPACE/JOB/index/CHUNK.json               builds CHUNK*100 … CHUNK*100+99
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/record.json      the build's record
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/logs/STEP.log    one step's log
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/tests.json       its test results
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/artifacts/PATH   one file it left
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/reports/PATH     a test report as its pod sent it
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/outputs.json     what it left (written last)
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/staging/UPLOAD/DIR/PATH
//!                                         a file its pod's collector sent, until its `done`
//! PREFIX/v1/jobs/NAMESPACE/JOB/builds/NUMBER/committing.json  who commits its files, since
//! ```
//!
//! Numbers are decimal without leading zeros. Changing any of this is a new version
//! (`v2/`), read beside `v1/`, never a change to `v1/`.

use kubeci_build::{BuildRef, JobRef};

use crate::error::{ArchiveError, Result};

/// The layout's version: the first segment under the prefix.
pub const VERSION: &str = "v1";

/// Builds per index chunk: chunk `c` holds builds `c * CHUNK_SIZE` to `c * CHUNK_SIZE +
/// CHUNK_SIZE - 1`.
pub const CHUNK_SIZE: u64 = 100;

/// The index chunk a build's entry is in.
pub fn chunk_of(number: u64) -> u64 {
    number / CHUNK_SIZE
}

/// The keys of one archive: its prefix and the layout under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `""` or `segments/` (with its trailing slash).
    root: String,
}

impl Layout {
    /// The layout under `prefix` (as [`crate::ArchiveUrl::prefix`] gives it: segments
    /// without a leading or trailing `/`, or empty).
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Self { root }
    }

    /// `PREFIX/v1/jobs/NAMESPACE/JOB/`: everything of one job.
    pub fn job_dir(&self, job: JobRef<'_>) -> Result<String> {
        check_name("namespace", job.namespace)?;
        check_name("job", job.job)?;
        Ok(format!(
            "{}{VERSION}/jobs/{}/{}/",
            self.root, job.namespace, job.job
        ))
    }

    /// The job's head: the highest build number ever archived, and the lowest kept.
    pub fn head(&self, job: JobRef<'_>) -> Result<String> {
        Ok(format!("{}head.json", self.job_dir(job)?))
    }

    /// One chunk of the job's index.
    pub fn chunk(&self, job: JobRef<'_>, chunk: u64) -> Result<String> {
        Ok(format!("{}index/{chunk}.json", self.job_dir(job)?))
    }

    /// `…/builds/NUMBER/`: every object of one build (what retention deletes).
    pub fn build_dir(&self, build: BuildRef<'_>) -> Result<String> {
        let job = JobRef {
            namespace: build.namespace,
            job: build.job,
        };
        Ok(format!("{}builds/{}/", self.job_dir(job)?, build.number))
    }

    /// The build's record.
    pub fn record(&self, build: BuildRef<'_>) -> Result<String> {
        Ok(format!("{}record.json", self.build_dir(build)?))
    }

    /// One step's log.
    pub fn log(&self, build: BuildRef<'_>, step: &str) -> Result<String> {
        check_name("step", step)?;
        Ok(format!("{}logs/{step}.log", self.build_dir(build)?))
    }
}

impl Layout {
    /// The build's test results (`kubeci_results::TestResults`).
    pub fn tests(&self, build: BuildRef<'_>) -> Result<String> {
        Ok(format!("{}tests.json", self.build_dir(build)?))
    }

    /// What the build left (`kubeci_results::BuildOutputs`): written after its files.
    pub fn outputs(&self, build: BuildRef<'_>) -> Result<String> {
        Ok(format!("{}outputs.json", self.build_dir(build)?))
    }

    /// One file the build left, at `path` relative to its `workdir` (see
    /// [`check_file_path`]).
    pub fn artifact(&self, build: BuildRef<'_>, path: &str) -> Result<String> {
        check_file_path(path)?;
        Ok(format!("{}artifacts/{path}", self.build_dir(build)?))
    }

    /// One test report a build pod handed over, at `path` relative to its `workdir`, kept
    /// as it was sent: read again when the build's test results are made.
    pub fn report(&self, build: BuildRef<'_>, path: &str) -> Result<String> {
        check_file_path(path)?;
        Ok(format!("{}reports/{path}", self.build_dir(build)?))
    }

    /// `…/builds/NUMBER/DIR/`, where a build's files of one kind are (`artifacts`,
    /// `reports`).
    pub fn files_dir(&self, build: BuildRef<'_>, dir: &'static str) -> Result<String> {
        Ok(format!("{}{dir}/", self.build_dir(build)?))
    }

    /// `…/builds/NUMBER/staging/`: the files a build pod's collector sent, each under its
    /// upload's own name, until its build's files are committed (see `staging`).
    pub fn staging_dir(&self, build: BuildRef<'_>) -> Result<String> {
        Ok(format!("{}staging/", self.build_dir(build)?))
    }

    /// One file a collector sent, as `dir` (`artifacts`, `reports`) at `path`, in upload
    /// `upload` (a name no other upload has: see `staging`).
    pub fn staged(
        &self,
        build: BuildRef<'_>,
        upload: &str,
        dir: &'static str,
        path: &str,
    ) -> Result<String> {
        check_file_path(path)?;
        check_name("upload", upload)?;
        Ok(format!("{}{upload}/{dir}/{path}", self.staging_dir(build)?))
    }

    /// Who commits the build's files, and since when: one `done` at a time.
    pub fn committing(&self, build: BuildRef<'_>) -> Result<String> {
        Ok(format!("{}committing.json", self.build_dir(build)?))
    }
}

pub use kubeci_build::outputs::MAX_FILE_PATH;

/// A build's file path is `/`-separated segments, each neither empty nor `.` nor `..`, of
/// at most 255 bytes without control characters; at most [`MAX_FILE_PATH`] bytes in all
/// (`kubeci_build::outputs::check_file_path`, which kubeci also checks a collector's
/// upload by). So a file's key stays under its build (no segment climbs out of it), and
/// every store takes it (object_store escapes the characters some stores avoid).
pub fn check_file_path(path: &str) -> Result<()> {
    kubeci_build::outputs::check_file_path(path).map_err(|problem| ArchiveError::Name {
        what: "file",
        value: path.to_owned(),
        problem,
    })
}

/// A namespace, job or step name is one key segment: Kubernetes names (DNS-1123) and
/// container names fit; a `/`, an empty name, `.` or `..` would change the layout.
fn check_name(what: &'static str, value: &str) -> Result<()> {
    let problem = if value.is_empty() {
        Some("it is empty".to_owned())
    } else if value.len() > 253 {
        Some("it is longer than 253 characters".to_owned())
    } else if value.starts_with('.') {
        Some("it starts with `.`".to_owned())
    } else {
        value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .map(|c| format!("it has `{c}`; names are letters, digits, `-`, `_` and `.`"))
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(ArchiveError::Name {
            what,
            value: value.to_owned(),
            problem,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: BuildRef<'static> = BuildRef {
        namespace: "ci",
        job: "web",
        number: 1234,
    };
    const JOB: JobRef<'static> = JobRef {
        namespace: "ci",
        job: "web",
    };

    #[test]
    fn every_key_of_version_1() {
        let layout = Layout::new("kubeci/prod");
        assert_eq!(
            layout.record(BUILD).unwrap(),
            "kubeci/prod/v1/jobs/ci/web/builds/1234/record.json"
        );
        assert_eq!(
            layout.log(BUILD, "clone").unwrap(),
            "kubeci/prod/v1/jobs/ci/web/builds/1234/logs/clone.log"
        );
        assert_eq!(
            layout.build_dir(BUILD).unwrap(),
            "kubeci/prod/v1/jobs/ci/web/builds/1234/"
        );
        assert_eq!(
            layout.head(JOB).unwrap(),
            "kubeci/prod/v1/jobs/ci/web/head.json"
        );
        assert_eq!(
            layout.chunk(JOB, chunk_of(1234)).unwrap(),
            "kubeci/prod/v1/jobs/ci/web/index/12.json"
        );
        assert_eq!(
            Layout::new("").record(BUILD).unwrap(),
            "v1/jobs/ci/web/builds/1234/record.json"
        );
        assert_eq!(
            layout
                .staged(BUILD, "u1", "reports", "out/junit.xml")
                .unwrap(),
            "kubeci/prod/v1/jobs/ci/web/builds/1234/staging/u1/reports/out/junit.xml"
        );
        assert_eq!(
            layout.committing(BUILD).unwrap(),
            "kubeci/prod/v1/jobs/ci/web/builds/1234/committing.json"
        );
    }

    #[test]
    fn chunks_hold_a_hundred_builds_each() {
        assert_eq!(chunk_of(0), 0);
        assert_eq!(chunk_of(99), 0);
        assert_eq!(chunk_of(100), 1);
        assert_eq!(chunk_of(10_000), 100);
    }

    #[test]
    fn names_that_would_change_the_layout_are_refused() {
        for (step, problem) in [
            ("", "it is empty"),
            ("..", "it starts with `.`"),
            ("a/b", "it has `/`"),
            ("build log", "it has ` `"),
        ] {
            match Layout::new("").log(BUILD, step) {
                Err(ArchiveError::Name {
                    what: "step",
                    problem: said,
                    ..
                }) => assert!(said.starts_with(problem), "{step}: {said}"),
                other => panic!("{step}: {other:?}"),
            }
        }
        let bad_job = JobRef {
            namespace: "ci",
            job: "../other",
        };
        assert!(matches!(
            Layout::new("").head(bad_job),
            Err(ArchiveError::Name { what: "job", .. })
        ));
    }

    #[test]
    fn a_builds_files_stay_under_it() {
        let layout = Layout::new("ci");
        assert_eq!(
            layout.artifact(BUILD, "dist/app v1.tar.gz").unwrap(),
            "ci/v1/jobs/ci/web/builds/1234/artifacts/dist/app v1.tar.gz"
        );
        assert_eq!(
            layout.report(BUILD, "app/junit.xml").unwrap(),
            "ci/v1/jobs/ci/web/builds/1234/reports/app/junit.xml"
        );
        assert_eq!(
            layout.tests(BUILD).unwrap(),
            "ci/v1/jobs/ci/web/builds/1234/tests.json"
        );
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/../../x",
            "./a",
            "a/",
            "a\nb",
            "bell\u{7}",
        ] {
            assert!(
                layout.artifact(BUILD, bad).is_err() && layout.report(BUILD, bad).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(layout
            .artifact(BUILD, &"a".repeat(MAX_FILE_PATH + 1))
            .is_err());
    }
}
