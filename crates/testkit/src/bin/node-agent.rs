//! The node agent of kubeci's test clusters (`scripts/cluster up` starts it): plays the
//! kubelet of one Node, running its pods as processes through the local engine.

use std::path::PathBuf;

use clap::Parser;
use kubeci_testkit::node::{run, NodeOptions};

/// Registers a Node and runs the pods bound to it with this machine's tools.
#[derive(Debug, Parser)]
#[command(name = "node-agent", version)]
struct Args {
    /// The kubeconfig to reach the API server with.
    #[arg(long, value_name = "PATH")]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "kubeci-node")]
    node_name: String,
    /// The kubelet port on 127.0.0.1 (HTTPS; the API server fetches logs from it).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    #[arg(long, value_name = "PEM")]
    tls_cert: PathBuf,
    #[arg(long, value_name = "PEM")]
    tls_key: PathBuf,
    /// The `kubeci` binary that stands for `kubeci` in container commands.
    #[arg(long, value_name = "PATH")]
    kubeci: PathBuf,
    /// Where each pod's directories are made.
    #[arg(long, value_name = "DIR")]
    work_dir: PathBuf,
    /// Images that cannot be pulled (`*` matches any run of characters; repeatable).
    #[arg(long, value_name = "PATTERN")]
    unpullable: Vec<String>,
    /// Where `<namespace>.gitconfig` files give a namespace's pods `GIT_CONFIG_GLOBAL`.
    #[arg(long, value_name = "DIR")]
    git_config_dir: Option<PathBuf>,
    /// The kubelet version the Node reports.
    #[arg(long, default_value = "v0.0.0-kubeci-node-agent")]
    kubelet_version: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let client = async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok::<_, Box<dyn std::error::Error>>(kube::Client::try_from(config)?)
    };
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("node-agent: cannot use {}: {e}", args.kubeconfig.display());
            return std::process::ExitCode::from(2);
        }
    };
    let options = NodeOptions {
        node_name: args.node_name,
        port: args.port,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        kubeci_exe: args.kubeci,
        work_dir: args.work_dir,
        unpullable: args.unpullable,
        env: Vec::new(),
        kubelet_version: args.kubelet_version,
        git_config_dir: args.git_config_dir,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    eprintln!(
        "node-agent: node {} serving logs on 127.0.0.1:{}",
        options.node_name, options.port
    );
    match run(client, options, stop).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
