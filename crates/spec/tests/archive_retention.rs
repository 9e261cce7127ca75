//! `archive.retention` in `job.yaml`: how long the archive keeps a job's builds. A count
//! that would keep nothing and an age that is not a duration are errors saying where,
//! what and how to fix them; jobs without it (every job written before) stay valid.

use kubeci_spec::{LoadedJob, Severity};

fn load(archive: &str) -> LoadedJob {
    let yaml = format!(
        "- job:\n    name: web\n    git:\n      url: https://github.com/o/r.git\n    run_command: make\n{archive}"
    );
    let report = kubeci_spec::load("job.yaml", yaml.as_bytes(), &Default::default());
    report.jobs.into_iter().next().unwrap()
}

#[test]
fn a_jobs_archive_retention_is_read_by_age_and_by_count() {
    let loaded =
        load("    archive:\n      retention:\n        max_age: 90d\n        max_count: 500\n");
    let job = loaded.job.expect("valid");
    let retention = job.archive.clone().unwrap().retention.unwrap();
    assert_eq!(retention.max_age.as_deref(), Some("90d"));
    assert_eq!(retention.max_count, Some(500));
    let before = load("");
    assert!(before.job.expect("still valid").archive.is_none());
}

#[test]
fn a_retention_that_keeps_nothing_or_is_not_a_duration_is_an_error_saying_where_and_how() {
    let loaded =
        load("    archive:\n      retention:\n        max_age: soon\n        max_count: 0\n");
    assert!(loaded.job.is_none(), "invalid");
    let errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| {
            (
                d.field.to_string(),
                d.line,
                d.message.clone(),
                d.help.clone(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let (field, line, message, help) = &errors.iter().find(|e| e.0.ends_with("max_count")).unwrap();
    assert_eq!(
        (field.as_str(), *line),
        ("job.archive.retention.max_count", 9)
    );
    assert!(
        message.contains("would delete every archived build"),
        "{message}"
    );
    assert!(help.as_deref().unwrap().contains("keep at least 1"));
    let (field, line, message, help) = &errors.iter().find(|e| e.0.ends_with("max_age")).unwrap();
    assert_eq!(
        (field.as_str(), *line),
        ("job.archive.retention.max_age", 8)
    );
    assert!(message.contains("`soon` is not a duration"), "{message}");
    assert!(help.as_deref().unwrap().contains("`90d`"));
    let unknown = load("    archive:\n      retention:\n        keep: 3\n");
    assert!(
        unknown
            .diagnostics
            .iter()
            .any(|d| d.message.contains("keep")),
        "{:?}",
        unknown.diagnostics
    );
}
