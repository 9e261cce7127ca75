//! `kubeci render`: the Job a build would create, printed without a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use kubeci_build::{BuildRequest, PullRequest, Trigger};
use kubeci_render::{JobOrigin, RenderConfig};
use kubeci_spec::{LoadedJob, Severity};

use crate::lint::render_diagnostic;
use crate::output;
use crate::sources::{self, Source, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// A job file or ConfigMap manifest (`-` reads standard input).
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The job to render, when the file holds several.
    #[arg(long, value_name = "NAME")]
    job: Option<String>,
    #[command(flatten)]
    build: BuildArgs,
    /// Image of the clone step.
    #[arg(long, value_name = "IMAGE", default_value_t = RenderConfig::default().clone_image)]
    clone_image: String,
    /// Image of the build step for jobs without `image`.
    #[arg(long, value_name = "IMAGE", default_value_t = RenderConfig::default().default_image)]
    default_image: String,
    /// Base URL of the kubeci UI, for BUILD_URL.
    #[arg(long, value_name = "URL", default_value_t = RenderConfig::default().base_url)]
    base_url: String,
    /// Where build pods reach kubeci to hand over the files their job declares
    /// (`test_reports`, `artifacts`): `serve --collect-url`. With it, a job that declares
    /// any renders with its collector beside the build step.
    #[arg(long, value_name = "URL", value_parser = crate::serve::collect_url)]
    collect_url: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Yaml)]
    output: Format,
    #[command(flatten)]
    source: SourceArgs,
}

/// What to build: shared by `render` and `run`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The build's number.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    build_number: u64,
    /// The exact commit to build.
    #[arg(long, value_name = "SHA")]
    commit: Option<String>,
    /// Build pull request N (fetches `refs/pull/N/head`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "git_ref")]
    pr: Option<u64>,
    /// A ref to build instead of the job's branch, e.g. `refs/tags/v1.0`.
    #[arg(long = "ref", value_name = "REF")]
    git_ref: Option<String>,
    /// The branch to build instead of the job's (e.g. the branch a push went to).
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// What started the build [default: pull-request with --pr, else manual].
    #[arg(long, value_enum)]
    trigger: Option<TriggerArg>,
    /// The pull request's author (with --pr).
    #[arg(long, value_name = "LOGIN", requires = "pr")]
    pr_author: Option<String>,
    /// The pull request's head branch (with --pr).
    #[arg(long, value_name = "BRANCH", requires = "pr")]
    source_branch: Option<String>,
    /// The pull request's base branch (with --pr).
    #[arg(long, value_name = "BRANCH", requires = "pr")]
    target_branch: Option<String>,
}

impl BuildArgs {
    pub fn request(&self) -> BuildRequest {
        let trigger = match (self.trigger, self.pr) {
            (Some(TriggerArg::Manual), _) | (None, None) => Trigger::Manual,
            (Some(TriggerArg::PullRequest), _) | (None, Some(_)) => Trigger::PullRequest,
            (Some(TriggerArg::Comment), _) => Trigger::Comment,
            (Some(TriggerArg::Push), _) => Trigger::Push,
            (Some(TriggerArg::Cron), _) => Trigger::Cron,
        };
        BuildRequest {
            number: self.build_number,
            trigger,
            commit: self.commit.clone(),
            git_ref: self.git_ref.clone(),
            branch: self.branch.clone(),
            pull_request: self.pr.map(|number| PullRequest {
                number,
                author: self.pr_author.clone(),
                source_branch: self.source_branch.clone(),
                target_branch: self.target_branch.clone(),
            }),
            requested_by: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TriggerArg {
    Manual,
    PullRequest,
    Comment,
    Push,
    Cron,
}

/// The valid job `name` (or the only one) of `source`; otherwise its errors are printed
/// to stderr and `Err` holds the exit code.
pub fn select<'s>(source: &'s Source, name: Option<&str>) -> Result<&'s LoadedJob, ExitCode> {
    source.report.select(&source.name, name).map_err(|err| {
        let text = String::from_utf8_lossy(&source.bytes);
        for d in source
            .report
            .all_diagnostics()
            .filter(|d| d.severity == Severity::Error)
        {
            eprintln!("{}", render_diagnostic(d, Some(&text)));
        }
        eprintln!("kubeci: {err}");
        ExitCode::FAILURE
    })
}

pub fn run(args: &RenderArgs) -> Result<ExitCode> {
    let source = sources::read(&args.path, &args.source.options())?;
    let loaded = match select(&source, args.job.as_deref()) {
        Ok(job) => job,
        Err(code) => return Ok(code),
    };
    let job = loaded.job.as_ref().expect("a selected job is valid");
    let config = RenderConfig {
        clone_image: args.clone_image.clone(),
        default_image: args.default_image.clone(),
        base_url: args.base_url.clone(),
        collect_url: args.collect_url.clone(),
    };
    let rendered =
        kubeci_render::render(job, &JobOrigin::of(loaded), &args.build.request(), &config)?;
    match args.output {
        Format::Yaml => output::print(&kubeci_render::to_yaml(&rendered))?,
        Format::Json => output::print(&(serde_json::to_string_pretty(&rendered)? + "\n"))?,
    }
    Ok(ExitCode::SUCCESS)
}
