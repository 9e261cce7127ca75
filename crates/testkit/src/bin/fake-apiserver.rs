//! Runs the fake Kubernetes API server outside the Rust tests, for kubectl, benchmarks and
//! manual runs. Pods succeed at once unless `--pods` says otherwise.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubeci_testkit::{FakeApiServer, Options, PodBehaviour};

/// A fake Kubernetes API server on 127.0.0.1, with a simulated Job controller and kubelet.
#[derive(Debug, Parser)]
#[command(name = "fake-apiserver", version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one; the URL is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write a kubeconfig for this server here.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Manifests to load before serving (multi-document YAML or JSON; repeatable).
    #[arg(long, value_name = "FILE")]
    load: Vec<PathBuf>,
    /// What pods do: succeed, fail, never-schedule, image-pull-error, or run-locally (the
    /// local engine really runs them, with `--kubeci`; pods referring to a Secret, or to
    /// the image `registry.invalid/kubeci/missing:1`, cannot start, as in a cluster
    /// without them).
    #[arg(long, default_value = "succeed")]
    pods: String,
    /// The `kubeci` binary that runs pods for `--pods run-locally`.
    #[arg(long, value_name = "PATH")]
    kubeci: Option<PathBuf>,
    /// Changes kept for watches (older resourceVersions get 410 Gone).
    #[arg(long, default_value_t = 100_000)]
    history: usize,
}

fn manifests(path: &PathBuf) -> Result<Vec<serde_json::Value>, String> {
    use kubeci_spec::yaml::{parse_stream, Limits, PosMap};
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let limits = Limits {
        max_depth: 64,
        max_alias_nodes: 10_000,
    };
    let documents = parse_stream(&text, &PosMap::Identity, limits)
        .map_err(|e| format!("{}:{}: {}", path.display(), e.pos, e.message))?;
    let mut objects = Vec::new();
    for document in documents.into_iter().flatten() {
        let value = document.to_json();
        match value.get("items").and_then(|i| i.as_array()) {
            Some(items) if value["kind"] == "List" => objects.extend(items.iter().cloned()),
            _ => objects.push(value),
        }
    }
    Ok(objects)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let server = FakeApiServer::start_with(Options {
        port: args.port,
        history: args.history,
        ..Options::default()
    })
    .await;
    let behaviour = match args.pods.as_str() {
        "succeed" => PodBehaviour::succeed(),
        "fail" => PodBehaviour::Fail {
            exit_code: 1,
            logs: vec!["failed".into()],
            duration: Duration::ZERO,
        },
        "never-schedule" => PodBehaviour::NeverSchedule,
        "image-pull-error" => PodBehaviour::ImagePullError,
        "run-locally" => {
            let Some(kubeci_exe) = args.kubeci.clone() else {
                eprintln!(
                    "fake-apiserver: --pods run-locally needs --kubeci PATH (the kubeci binary)"
                );
                return std::process::ExitCode::from(2);
            };
            let run = PodBehaviour::RunLocally {
                kubeci_exe,
                secrets_dir: None,
                work_root: std::env::temp_dir()
                    .join(format!("fake-apiserver-{}", std::process::id())),
                env: Vec::new(),
            };
            server.set_pod_behaviour(move |pod| PodBehaviour::like_a_kubelet(pod, &run));
            PodBehaviour::succeed()
        }
        other => {
            eprintln!("fake-apiserver: --pods {other}: use succeed, fail, never-schedule, image-pull-error or run-locally");
            return std::process::ExitCode::from(2);
        }
    };
    if args.pods != "run-locally" {
        server.set_pod_behaviour(move |_| behaviour.clone());
    }
    for path in &args.load {
        match manifests(path).map(|objects| server.preload(objects)) {
            Ok(Ok(count)) => eprintln!("loaded {count} objects from {}", path.display()),
            Ok(Err(e)) => {
                eprintln!("fake-apiserver: {}: {}", path.display(), e.message);
                return std::process::ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("fake-apiserver: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.kubeconfig {
        if let Err(e) = server.write_kubeconfig(path) {
            eprintln!("fake-apiserver: {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    }
    println!("serving the Kubernetes API on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
