//! The `kubeci` binary: argument parsing and wiring only.

mod client;
mod clone;
mod collect;
mod lint;
mod logging;
mod new;
mod output;
mod render;
mod run;
mod serve;
mod sources;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// kubeci runs CI jobs declared as Kubernetes ConfigMaps.
///
/// A job is a ConfigMap labelled `ci-job-spec: "true"` whose `job.yaml` key holds the job
/// (the kube-jenkins format). Every build runs as a Kubernetes Job. These commands check
/// and preview jobs on your machine, without a cluster.
#[derive(Debug, Parser)]
#[command(name = "kubeci", version, about, long_about, max_term_width = 100)]
#[command(
    after_help = "Examples:\n  kubeci lint examples/\n  kubeci render examples/hello.configmap.yaml --build-number 7\n  kubeci schema > job.schema.json\n\nDocumentation: docs/job-spec.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check job files and report every problem with file:line:column and a fix.
    ///
    /// PATH may be a bare job.yaml, a ConfigMap manifest, a multi-document stream such as
    /// `helm template` output, a directory of those (read recursively), or `-` for
    /// standard input. Exits 0 when there is no error, 1 when there is (or a warning, with
    /// --strict), 2 when a file cannot be read.
    Lint(lint::LintArgs),
    /// Print the Kubernetes Job that a build of a job would create.
    ///
    /// Deterministic: the same job and options always give the same output.
    Render(Box<render::RenderArgs>),
    /// Run one build of a job on this machine, without a cluster.
    ///
    /// Renders the build's Job and runs its pod here: the clone step, then the build
    /// script, streaming the log. Exits 0 when the build succeeds, 1 when it fails, 130
    /// when cancelled with Ctrl-C.
    Run(Box<run::RunArgs>),
    /// Run the kubeci server on a cluster's jobs (--kubernetes) or a directory's (--local).
    ///
    /// --kubernetes: jobs are ConfigMaps matching --selector in the watched namespaces;
    /// builds are batch/v1 Jobs. --local DIR: jobs are the ConfigMap files in DIR, builds
    /// run on this machine, history is kept in --data. /healthz answers when the process
    /// runs, /readyz once the engine has its first complete view.
    Serve(Box<serve::ServeArgs>),
    /// Print the JSON Schema of job.yaml, for editors and CI validation.
    Schema,
    /// Write a new job as a Helm chart: Chart.yaml, values.yaml holding the job, and the
    /// template of its labelled ConfigMap.
    New(Box<new::NewArgs>),
    /// List the jobs a running kubeci serves (`--server`).
    Jobs(client::JobsArgs),
    /// List a job's builds, newest first.
    Builds(client::BuildsArgs),
    /// Print a build's log; `-f` follows it until the build step ends.
    Logs(client::LogsArgs),
    /// Start a build of a job (needs the server's token).
    Trigger(client::TriggerArgs),
    /// Cancel a build that has not finished (needs the server's token).
    Cancel(client::CancelArgs),
    /// Print a build's test results: the counts, then the failures with their messages;
    /// `--history TEST_ID` prints a test's history.
    Tests(client::outputs::TestsArgs),
    /// List the files a build left, or download one (`--download PATH`).
    Artifacts(client::outputs::ArtifactsArgs),
    /// Check out a commit: the clone step of every build pod.
    ///
    /// For SSH remotes the server's host key is checked against the pinned fingerprint
    /// before any credential is offered.
    Clone(Box<clone::CloneArgs>),
    /// Hand a build's test reports and artifacts over to kubeci: the collector beside the
    /// build step of a pod whose job declares them.
    ///
    /// Waits for SIGTERM (the build step ended, or its pod is being deleted), takes the
    /// declared files from the workspace and sends each to kubeci with the pod's token.
    /// Always exits 0: a collector never fails a build; its log says what went wrong.
    Collect(Box<collect::CollectArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(args) => lint::run(&args),
        Command::New(args) => new::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Clone(args) => Ok(clone::run(&args)),
        Command::Collect(args) => collect::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Schema => schema(),
        Command::Jobs(args) => client::jobs(&args),
        Command::Builds(args) => client::builds(&args),
        Command::Logs(args) => client::logs(&args),
        Command::Trigger(args) => client::trigger(&args),
        Command::Cancel(args) => client::cancel(&args),
        Command::Tests(args) => client::outputs::tests(&args),
        Command::Artifacts(args) => client::outputs::artifacts(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kubeci: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn schema() -> anyhow::Result<ExitCode> {
    let schema = kubeci_spec::json_schema();
    output::print(&(serde_json::to_string_pretty(&schema)? + "\n"))?;
    Ok(ExitCode::SUCCESS)
}
