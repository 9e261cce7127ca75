//! `scripts/cluster` as a developer meets it: a second control plane in a directory and on
//! ports of its own (CI's stays up meanwhile) starts from a stale directory, serves the
//! pinned release, and is taken down leaving no process behind; a port in use and a
//! component that exits are each said clearly, with the component's log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A control plane's directory and ports, all its own.
struct Plane {
    dir: tempfile::TempDir,
    ports: [(&'static str, String); 4],
}

impl Plane {
    fn new() -> Plane {
        Plane {
            dir: tempfile::tempdir().unwrap(),
            ports: [
                ("KUBECI_CLUSTER_ETCD_PORT", free_port().to_string()),
                ("KUBECI_CLUSTER_ETCD_PEER_PORT", free_port().to_string()),
                ("KUBECI_CLUSTER_APISERVER_PORT", free_port().to_string()),
                ("KUBECI_CLUSTER_NODE_PORT", free_port().to_string()),
            ],
        }
    }

    fn port(&self, name: &str) -> &str {
        &self.ports.iter().find(|(n, _)| *n == name).unwrap().1
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new("bash")
            .arg(repo_root().join("scripts/cluster"))
            .args(args)
            .env("KUBECI_CLUSTER_DIR", self.dir.path())
            .env("KUBECI_NODE_AGENT", env!("CARGO_BIN_EXE_node-agent"))
            .env("KUBECI_EXE", "/bin/false")
            .envs(self.ports.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    /// The session ids of the components whose pid files are there.
    fn sessions(&self) -> Vec<u32> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path();
                (path.extension()? == "pid").then(|| std::fs::read_to_string(path).ok())?
            })
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.run(&["down"], &[]);
    }
}

/// The processes of session `sid` (`/proc/*/stat`, field 6), zombies excepted.
fn processes_in_session(sid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, session.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields[0] != "Z" && fields[3] == sid.to_string() {
            found.push(pid);
        }
    }
    found
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
#[ignore = "starts a control plane of its own with scripts/cluster (its binaries from scripts/cluster build, which needs Go): .ci/run builds them and runs cargo test --workspace -- --include-ignored"]
fn up_from_a_stale_directory_serves_the_pinned_release_and_down_leaves_nothing() {
    let plane = Plane::new();
    // What a cluster killed without `down` leaves: a pid that is gone, old state.
    std::fs::write(plane.dir.path().join("etcd.pid"), "999999999\n").unwrap();
    std::fs::create_dir_all(plane.dir.path().join("etcd/member")).unwrap();
    let up = plane.run(&["up"], &[]);
    assert!(up.status.success(), "{}", text(&up));
    let exports = String::from_utf8_lossy(&up.stdout);
    assert!(exports.contains("export KUBECONFIG="), "{exports}");

    let pinned = std::fs::read_to_string(repo_root().join("control-plane/kubernetes/go.mod"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("require k8s.io/kubernetes ")
                .map(str::to_owned)
        })
        .unwrap();
    let version = Command::new("bash")
        .arg("-c")
        .arg(format!("{exports}\nkubectl version -o json"))
        .output()
        .unwrap();
    assert!(version.status.success(), "{}", text(&version));
    let version: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], pinned.as_str());
    assert_eq!(version["clientVersion"]["gitVersion"], pinned.as_str());

    let status = plane.run(&["status"], &[]);
    assert!(status.status.success(), "{}", text(&status));
    let sessions = plane.sessions();
    assert_eq!(
        sessions.len(),
        5,
        "etcd, three control-plane components, the node agent"
    );
    assert!(sessions
        .iter()
        .all(|s| !processes_in_session(*s).is_empty()));

    let down = plane.run(&["down"], &[]);
    assert!(down.status.success(), "{}", text(&down));
    for sid in sessions {
        assert_eq!(
            processes_in_session(sid),
            Vec::<u32>::new(),
            "session {sid} left behind"
        );
    }
    assert_eq!(processes_mentioning(plane.dir.path()), Vec::<String>::new());
    assert!(!plane.run(&["status"], &[]).status.success());
}

#[test]
#[ignore = "starts a control plane of its own with scripts/cluster (its binaries from scripts/cluster build, which needs Go): .ci/run builds them and runs cargo test --workspace -- --include-ignored"]
fn a_port_in_use_is_named_and_nothing_starts() {
    let plane = Plane::new();
    let port = plane.port("KUBECI_CLUSTER_APISERVER_PORT").to_owned();
    let _taken = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    let up = plane.run(&["up"], &[]);
    assert!(!up.status.success());
    let said = text(&up);
    assert!(
        said.contains(&format!("port {port} on 127.0.0.1 is in use")),
        "{said}"
    );
    assert!(plane.sessions().is_empty(), "nothing was started");
}

#[test]
#[ignore = "starts a control plane of its own with scripts/cluster (its binaries from scripts/cluster build, which needs Go): .ci/run builds them and runs cargo test --workspace -- --include-ignored"]
fn a_component_that_exits_is_named_with_the_end_of_its_log() {
    let plane = Plane::new();
    // Not a port etcd can listen on: etcd exits at once.
    let up = plane.run(&["up"], &[("KUBECI_CLUSTER_ETCD_PORT", "99999")]);
    assert!(!up.status.success());
    let said = text(&up);
    assert!(said.contains("etcd exited; the end of"), "{said}");
    assert!(said.contains("etcd.log:"), "{said}");
    assert!(said.contains("99999"), "the log's own words: {said}");
    assert_eq!(
        processes_mentioning(plane.dir.path()),
        Vec::<String>::new(),
        "a failed up stops what it started"
    );
}

/// The command lines of processes that name `dir` (every component is given paths in it).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect()
}
