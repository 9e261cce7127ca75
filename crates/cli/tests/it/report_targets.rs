//! A build's final report says where the build ran — its job's `workdir` and where its
//! checkout lay — so a reporter can turn the files its test tools name into paths of the
//! repository. On the local engine, in-process, with a real build.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kubeci_build::BuildRequest;
use kubeci_engine::api::{Backend, LogOptions, TriggerRequest};
use kubeci_engine::report::{Receipt, Report, ReportTarget, Reporter, Reporting};

/// Keeps the target of each final report.
#[derive(Default)]
struct Finals(Mutex<Vec<ReportTarget>>);

impl Reporter for Finals {
    fn name(&self) -> &str {
        "finals"
    }

    fn wants(&self, _: &ReportTarget) -> bool {
        true
    }

    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        if report.state.is_final() {
            self.0.lock().unwrap().push(report.target.clone());
        }
        Box::pin(async { Ok(Receipt::default()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_builds_report_names_the_directory_it_ran_in() {
    let (local, repo) = common::local::Local::new();
    let extra = "        workdir: ./sub/dir/\n";
    let configmap = common::local::configmap("tests", &repo.bare, "pwd", extra);
    local.write("tests.yaml", &configmap);
    let finals = Arc::new(Finals::default());
    let engine = kubeci_local::LocalBackend::start(
        kubeci_local::Settings {
            jobs_dir: local.jobs.clone(),
            data_dir: local.data.clone(),
            secrets_dir: None,
            kubeci_exe: env!("CARGO_BIN_EXE_kubeci").into(),
            render: Default::default(),
            load: Default::default(),
            log_url_template: None,
            reload_every: Duration::from_millis(200),
            log_limit: kubeci_local::DEFAULT_LOG_LIMIT,
            archiving: Default::default(),
            build_user: None,
        },
        Some(finals.clone()),
    )
    .unwrap();
    common::git::wait_for(Duration::from_secs(30), "the job", || {
        engine.jobs().len() == 1
    });
    let request = TriggerRequest {
        namespace: "default".into(),
        name: "tests".into(),
        build: BuildRequest::manual(0),
        key: None,
    };
    engine.trigger(request).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while finals.0.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no final report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = finals.0.lock().unwrap()[0].clone();
    let mut stream = engine
        .log("default", "tests", 1, LogOptions::default())
        .await
        .unwrap();
    let mut log = Vec::new();
    while let Some(chunk) = stream.next().await {
        log.extend_from_slice(&chunk.unwrap());
    }
    let log = String::from_utf8_lossy(&log);

    assert_eq!(target.workdir.as_deref(), Some("sub/dir"), "normalized");
    let checkout = target.checkout_dir.expect("where the checkout lay");
    let ran_in = format!("{checkout}/sub/dir");
    assert!(
        log.lines().any(|line| line == ran_in),
        "the build ran in {ran_in}:\n{log}"
    );
}
