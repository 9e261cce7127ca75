//! `kubeci run`: one build of a job, here, with the local engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::EnvVar;
use kubeci_pod_runner::{LocalEnv, LogEvent, Outcome};
use kubeci_render::{JobOrigin, RenderConfig};

use crate::render::{select, BuildArgs};
use crate::sources::{self, SourceArgs};

/// The exit code of a build that was cancelled with Ctrl-C (128 + SIGINT).
const CANCELLED: u8 = 130;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A job file or ConfigMap manifest.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The job to run, when the file holds several.
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    #[command(flatten)]
    build: BuildArgs,
    /// Secrets, laid out like mounted Secrets: DIR/<secret name>/<key>.
    #[arg(long, value_name = "DIR")]
    secrets: Option<PathBuf>,
    /// An extra environment variable of the build step (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Directory for this build's workspace, volumes and log [default: a temporary one,
    /// removed afterwards unless --keep].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the temporary build directory (workspace and log) after the build.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    source: SourceArgs,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    kubeci_spec::names::check_env_name(name)
        .map_err(|why| format!("`{name}` is not a variable name: {why}"))?;
    Ok((name.to_owned(), value.to_owned()))
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let options = kubeci_spec::LoadOptions {
        builds_run: kubeci_spec::BuildsRun::OnThisMachine,
        ..args.source.options()
    };
    let source = sources::read(&args.path, &options)?;
    let loaded = match select(&source, args.job.as_deref()) {
        Ok(job) => job,
        Err(code) => return Ok(code),
    };
    let job = loaded.job.as_ref().expect("a selected job is valid");
    let request = args.build.request();
    let config = RenderConfig::default();
    let mut rendered = kubeci_render::render(job, &JobOrigin::of(loaded), &request, &config)?;
    add_env(&mut rendered, &args.env);

    let (build_dir, temporary) = match &args.work_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix(&format!("kubeci-run-{}-", job.name))
                .tempdir()
                .context("cannot create a build directory")?;
            (dir.path().to_owned(), Some(dir))
        }
    };
    let env = LocalEnv {
        build_dir: build_dir.clone(),
        secrets_dir: args.secrets.clone(),
        kubeci_exe: std::env::current_exe().context("cannot find the kubeci executable")?,
        host_env: LocalEnv::host_env_from_process(),
        objects: Default::default(),
        run_as: None,
        sidecars: false,
    };
    println!(
        "==> kubeci run: job {}/{}, build {} ({}), in {}",
        loaded.namespace,
        job.name,
        request.number,
        request.trigger.as_str(),
        build_dir.display()
    );
    println!(
        "==> the local engine runs on this machine with its tools: image {} is not used",
        job.image.as_deref().unwrap_or(&config.default_image)
    );
    let sink: Arc<dyn kubeci_pod_runner::LogSink> = Arc::new(|event: LogEvent| match event {
        LogEvent::Step { text, .. } => println!("==> {text}"),
        LogEvent::Line { text, .. } => println!("{text}"),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                println!("==> interrupted: stopping the build");
                on_interrupt.cancel();
            }
        });
        kubeci_pod_runner::run_job(&rendered, &env, sink, cancel).await
    })?;
    match temporary {
        Some(dir) if args.keep => println!("==> kept {}", dir.keep().display()),
        Some(_) => {}
        None => println!("==> log: {}", result.log_file.display()),
    }
    Ok(match result.outcome {
        Outcome::Succeeded => ExitCode::SUCCESS,
        Outcome::Cancelled => ExitCode::from(CANCELLED),
        _ => ExitCode::FAILURE,
    })
}

/// `--env` values go after the job's own, so they win (Kubernetes uses the last one).
fn add_env(job: &mut k8s_openapi::api::batch::v1::Job, extra: &[(String, String)]) {
    let Some(build) = job
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    else {
        return;
    };
    let env = build.env.get_or_insert_with(Vec::new);
    for (name, value) in extra {
        env.push(EnvVar {
            name: name.clone(),
            value: Some(kubeci_render::expansion::escape(value)),
            ..EnvVar::default()
        });
    }
}
