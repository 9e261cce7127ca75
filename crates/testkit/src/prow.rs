//! Prow (sigs.k8s.io/prow at the pin of `control-plane/prow`, built unmodified by
//! `scripts/prow build`) run out of cluster against a real API server, beside kubeci
//! (issue 31): hook with the `trigger` plugin, plank (prow-controller-manager), crier's
//! GitHub reporter and sinker, each a process of this machine with a kubeconfig, calling
//! the fake GitHub. Their pods run wherever the API server's scheduler puts them (the node
//! agent of `scripts/cluster`).
//!
//! ```no_run
//! # fn settings() -> kubeci_testkit::prow::ProwSettings { unimplemented!() }
//! // The ProwJob CRD applied (`scripts/prow apply-crd`) and Prow's identity
//! // (`identity_objects`) created in its namespace first.
//! let prow = kubeci_testkit::prow::Prow::start(&settings());
//! let url = prow.webhook_url(); // POST deliveries here, signed with `signature`
//! ```
//!
//! Like the rest of the kit it panics, saying why, when it cannot do what was asked.
//! Every component listens on all interfaces (Prow's flags name ports, not addresses); the
//! ports are free ones picked here, and everything talks over loopback.

mod config;

pub use config::{
    config, identity_objects, integration_test_sinker, job_config, kubeconfig, plugins, signature,
    Presubmit, ProwSettings, SERVICE_ACCOUNT,
};

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the directory of the built commands is given (`scripts/prow path` prints it).
pub const BINARIES_ENV: &str = "KUBECI_PROW";

/// The commands started, in this order.
pub const COMPONENTS: [&str; 4] = ["prow-controller-manager", "crier", "sinker", "hook"];

/// How long a component may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(60);

const HOW_TO_BUILD: &str = "build Prow with scripts/prow build (needs Go 1.25 or newer), \
     or set KUBECI_PROW to the directory of its built commands";

/// One running command and the ports it was given.
struct Component {
    name: &'static str,
    child: Child,
    health_port: u16,
    metrics_port: u16,
}

/// Prow's running commands; dropping it stops them and removes its directory.
pub struct Prow {
    dir: tempfile::TempDir,
    components: Vec<Component>,
    hook_port: u16,
}

impl Prow {
    /// Starts plank, crier, sinker and hook from the commands [`prow_binaries`] finds, and
    /// waits until each serves its health or metrics endpoint.
    pub fn start(settings: &ProwSettings) -> Prow {
        let binaries = prow_binaries().unwrap_or_else(|why| panic!("{why}"));
        let dir = tempfile::Builder::new()
            .prefix("kubeci-prow-")
            .tempdir()
            .expect("a temporary directory for Prow");
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        };
        write("config.yaml", config(settings).to_string());
        std::fs::create_dir(dir.path().join("jobs")).expect("the job config directory");
        write("jobs/jobs.yaml", job_config(settings).to_string());
        write("plugins.yaml", plugins(settings).to_string());
        write("kubeconfig", kubeconfig(settings).to_string());
        write("hmac", settings.hmac_secret.clone());
        write("github-token", settings.github_token.clone());
        std::fs::create_dir(dir.path().join("home")).expect("a home directory");
        // Four ports a command (health, metrics, pprof; hook's own), all different.
        let mut ports = free_ports(4 * COMPONENTS.len()).into_iter();
        let mut prow = Prow {
            dir,
            components: Vec::new(),
            hook_port: ports.next().expect("a port"),
        };
        for name in COMPONENTS {
            let mut port = || ports.next().expect("a port");
            prow.launch(&binaries, name, settings, [port(), port(), port()]);
        }
        for i in 0..prow.components.len() {
            prow.wait_ready(i);
        }
        prow
    }

    /// Where hook takes GitHub's deliveries.
    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.hook_port)
    }

    /// hook's port on 127.0.0.1; deliveries go to `/hook`.
    pub fn hook_port(&self) -> u16 {
        self.hook_port
    }

    /// (command, process id) of each running component.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.components
            .iter()
            .map(|c| (c.name, c.child.id()))
            .collect()
    }

    /// What component `name` logged so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops every component (SIGKILL: Prow keeps nothing on disk to flush).
    pub fn stop(&mut self) {
        for component in &mut self.components {
            let _ = component.child.kill();
            let _ = component.child.wait();
        }
        self.components.clear();
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn launch(
        &mut self,
        binaries: &Path,
        name: &'static str,
        settings: &ProwSettings,
        [health_port, metrics_port, pprof_port]: [u16; 3],
    ) {
        let mut args = vec![
            format!("--config-path={}", self.path("config.yaml")),
            format!("--job-config-path={}", self.path("jobs")),
            format!("--kubeconfig={}", self.path("kubeconfig")),
            format!("--health-port={health_port}"),
            format!("--metrics-port={metrics_port}"),
            format!("--pprof-port={pprof_port}"),
        ];
        let github = [
            format!("--github-endpoint={}", settings.github_url),
            format!("--github-graphql-endpoint={}/graphql", settings.github_url),
            format!("--github-token-path={}", self.path("github-token")),
        ];
        match name {
            "hook" => {
                args.extend(github);
                args.extend([
                    format!("--port={}", self.hook_port),
                    format!("--plugin-config={}", self.path("plugins.yaml")),
                    format!("--hmac-secret-file={}", self.path("hmac")),
                    "--dry-run=false".into(),
                    "--grace-period=1s".into(),
                ]);
            }
            "crier" => {
                args.extend(github);
                // The flag's default, 0, turns the reporter off; Prow's integration test
                // runs 1, which would queue a burst's reports one behind the other.
                args.push("--github-workers=10".into());
            }
            "prow-controller-manager" => {
                args.extend(["--enable-controller=plank".into(), "--dry-run=false".into()]);
            }
            _ => args.push("--dry-run=false".into()),
        }
        let log = File::create(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_else(|e| panic!("{name}'s log file: {e}"));
        let stderr = log.try_clone().expect("the log file again");
        // A clean environment: no KUBECONFIG or in-cluster variables of whoever runs this.
        let child = Command::new(binaries.join(name))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; {HOW_TO_BUILD}",
                    binaries.join(name).display()
                )
            });
        self.components.push(Component {
            name,
            child,
            health_port,
            metrics_port,
        });
    }

    /// Polls component `i` until it is ready: hook and plank say so on `/healthz/ready`,
    /// crier and sinker serve no health endpoint but `/metrics` once configured.
    fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let component = &mut self.components[i];
            let (port, path) = match component.name {
                "hook" | "prow-controller-manager" => (component.health_port, "/healthz/ready"),
                _ => (component.metrics_port, "/metrics"),
            };
            // hook takes deliveries once its own port answers too.
            let hook_listens = component.name != "hook"
                || TcpStream::connect((Ipv4Addr::LOCALHOST, self.hook_port)).is_ok();
            if answers(port, path) && hook_listens {
                return;
            }
            let name = component.name;
            if !matches!(component.child.try_wait(), Ok(None)) {
                let log = self.log(name);
                self.stop();
                panic!("Prow's {name} exited at start; its log:\n{log}");
            }
            if Instant::now() > deadline {
                let log = self.log(name);
                self.stop();
                panic!("Prow's {name} was not ready within {READY_WITHIN:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Prow {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of Prow's built commands: `$KUBECI_PROW`, or the one `scripts/prow
/// build` left (as `scripts/prow path` finds it). The error says how to build them.
pub fn prow_binaries() -> Result<PathBuf, String> {
    locate(std::env::var_os(BINARIES_ENV), &crate::scripts::repo_root())
}

fn locate(from_env: Option<OsString>, repo_root: &Path) -> Result<PathBuf, String> {
    let dir = match from_env.filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::scripts::built_path(repo_root, "prow", "Prow", HOW_TO_BUILD)?,
    };
    match COMPONENTS.iter().find(|c| !dir.join(c).is_file()) {
        Some(missing) => Err(format!("no {missing} in {}: {HOW_TO_BUILD}", dir.display())),
        None => Ok(dir),
    }
}

/// `count` free loopback ports, all different: held together while they are picked.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("an address").port())
        .collect()
}

/// Whether `GET path` on the loopback port answers 200.
fn answers(port: u16, path: &str) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut head = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && head.ends_with(b" 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_commands_is_refused_saying_how_to_build_them() {
        let empty = tempfile::tempdir().unwrap();
        let error = locate(Some(empty.path().into()), Path::new("/nonexistent")).unwrap_err();
        assert!(error.contains("no prow-controller-manager in"), "{error}");
        assert!(error.contains("scripts/prow build"), "{error}");
    }
}
