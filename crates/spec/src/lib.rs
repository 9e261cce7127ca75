//! The kubeci job format: reading, validating and describing `job.yaml`.
//!
//! Pure: no filesystem, network or clock. Callers pass file names and bytes in and get
//! jobs and [`Diagnostic`]s out, each placed at file:line:column with a fix.

pub mod catalogue;
pub mod checkname;
pub mod cron;
pub mod diagnostic;
pub mod duration;
pub mod giturl;
pub mod glob;
pub mod load;
pub mod model;
pub mod names;
pub mod quantity;
pub mod redact;
pub mod tenancy;
pub mod validate;
pub mod yaml;

pub use catalogue::Catalogue;
pub use diagnostic::{Diagnostic, FieldPath, Finding, Severity};
pub use load::{
    load, load_configmap, mark_duplicates, shadowed, BuildsRun, ConfigMapData, LoadOptions,
    LoadReport, LoadedJob, ObjectRef,
};
pub use model::{json_schema, Job};
pub use validate::NamespacePolicy;

/// Why a job could not be obtained from a source.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The source has errors; they are in the report. Not worth retrying until the source
    /// changes.
    #[error("{file}: {errors} error(s) in the job definition")]
    Invalid { file: String, errors: usize },
    /// No job of that name in the source.
    #[error("no job named `{name}` in {file} (jobs there: {available})")]
    JobNotFound {
        file: String,
        name: String,
        available: String,
    },
    /// The source holds several jobs and none was chosen.
    #[error("{file} holds {count} jobs ({available}): choose one with --job NAME")]
    Ambiguous {
        file: String,
        count: usize,
        available: String,
    },
    /// The source holds no job at all.
    #[error("{file} holds no job")]
    NoJob { file: String },
}

impl LoadReport {
    /// The one valid job named `name` (or the only job when `name` is `None`).
    pub fn select(&self, file: &str, name: Option<&str>) -> Result<&LoadedJob, SpecError> {
        let available = || {
            let names: Vec<String> = self.jobs.iter().map(LoadedJob::display_name).collect();
            names.join(", ")
        };
        let candidates: Vec<&LoadedJob> = match name {
            Some(name) => self
                .jobs
                .iter()
                .filter(|j| j.name.as_deref() == Some(name) || j.display_name() == name)
                .collect(),
            None => self.jobs.iter().collect(),
        };
        let job = match (candidates.len(), name) {
            (0, Some(name)) => {
                return Err(SpecError::JobNotFound {
                    file: file.into(),
                    name: name.into(),
                    available: available(),
                })
            }
            (0, None) => return Err(SpecError::NoJob { file: file.into() }),
            (1, _) => candidates[0],
            (count, _) => {
                return Err(SpecError::Ambiguous {
                    file: file.into(),
                    count,
                    available: available(),
                })
            }
        };
        if job.has_errors() {
            return Err(SpecError::Invalid {
                file: file.into(),
                errors: job
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count(),
            });
        }
        Ok(job)
    }
}
