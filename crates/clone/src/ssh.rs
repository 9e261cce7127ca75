//! SSH for the clone: a private scratch directory with the key, a `known_hosts` pinned to the expected fingerprint (scanned and checked first), and an ssh config that uses only those.

use super::*;
use std::path::{Path, PathBuf};

/// A private directory for the key, `known_hosts` and ssh config; removed on drop.
pub(super) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub(super) fn new() -> Result<Scratch, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("kubeci-clone-")
            .tempdir()
            .map_err(|e| Failure::Workspace {
                path: std::env::temp_dir().display().to_string(),
                message: format!("cannot create a private directory: {e}"),
            })?;
        Ok(Scratch { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

/// The effective pinned fingerprint: the job's, else the Secret's file.
fn pinned_fingerprint(request: &CloneRequest) -> Result<Option<String>, Failure> {
    if let Some(fingerprint) = &request.fingerprint {
        return Ok(Some(hostkey::normalize(fingerprint)));
    }
    match &request.fingerprint_file {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path).map_err(|e| Failure::Credentials {
                path: path.display().to_string(),
                message: format!("cannot read the fingerprint: {e}"),
            })?;
            let text = hostkey::normalize(&text);
            Ok((!text.is_empty()).then_some(text))
        }
        _ => Ok(None),
    }
}

/// Writes the private key, `known_hosts` and an ssh config into the scratch directory.
pub(super) fn ssh_config(
    request: &CloneRequest,
    scratch: &Scratch,
    host: &str,
    port: Option<u16>,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf, Failure> {
    let mut config = String::from("Host *\n");
    if let Some(key) = &request.ssh_key {
        let copy = copy_key(key, scratch)?;
        let _ = writeln!(
            config,
            "  IdentityFile {}\n  IdentitiesOnly yes",
            copy.display()
        );
    }
    let known_hosts = scratch.path("known_hosts");
    config.push_str(&host_key_config(request, host, port, &known_hosts, log)?);
    let _ = writeln!(
        config,
        "  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  ConnectTimeout 20\n  LogLevel ERROR",
        known_hosts.display()
    );
    let path = scratch.path("ssh_config");
    write_private(&path, config.as_bytes()).map_err(|e| Failure::Workspace {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(path)
}

/// A private copy of the clone's key, checked to be one.
fn copy_key(key: &Path, scratch: &Scratch) -> Result<PathBuf, Failure> {
    let credentials = |message: String| Failure::Credentials {
        path: key.display().to_string(),
        message,
    };
    let bytes = std::fs::read(key).map_err(|e| credentials(format!("cannot read it: {e}")))?;
    if !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY") {
        return Err(credentials(
            "it does not hold a private key in OpenSSH or PEM format".into(),
        ));
    }
    let copy = scratch.path("key");
    write_private(&copy, &bytes)
        .map_err(|e| credentials(format!("cannot copy it to a private file: {e}")))?;
    Ok(copy)
}

/// The ssh config lines for the host key: with a pinned fingerprint, `known_hosts` holds
/// the one presented key that matches it (none matching fails the clone); without, the
/// presented key is accepted, with a warning.
fn host_key_config(
    request: &CloneRequest,
    host: &str,
    port: Option<u16>,
    known_hosts: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<String, Failure> {
    let mut config = String::new();
    match pinned_fingerprint(request)? {
        Some(expected) => {
            let presented = with_keyscan_retries(request, host, port, log)?;
            let Some(key) = presented
                .iter()
                .find(|k| hostkey::normalize(&k.fingerprint) == expected)
            else {
                let list = if presented.is_empty() {
                    "no key".to_owned()
                } else {
                    presented
                        .iter()
                        .map(|k| format!("{} ({})", k.fingerprint, k.key_type))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(Failure::HostKeyMismatch {
                    host: hostkey::known_hosts_name(host, port),
                    expected,
                    presented: list,
                });
            };
            log(&format!(
                "host key of {} matches the pinned {}",
                hostkey::known_hosts_name(host, port),
                key.fingerprint
            ));
            let line = format!(
                "{} {} {}\n",
                hostkey::known_hosts_name(host, port),
                key.key_type,
                key.blob
            );
            write_private(known_hosts, line.as_bytes()).map_err(|e| Failure::Workspace {
                path: known_hosts.display().to_string(),
                message: e.to_string(),
            })?;
            let _ = writeln!(
                config,
                "  StrictHostKeyChecking yes\n  HostKeyAlgorithms {}",
                hostkey::algorithms_for(&key.key_type)
            );
        }
        None => {
            log("warning: the host key is not pinned (no ssh_fingerprint): trusting the key the server presents");
            let _ = writeln!(config, "  StrictHostKeyChecking accept-new");
        }
    }
    Ok(config)
}

fn with_keyscan_retries(
    request: &CloneRequest,
    host: &str,
    port: Option<u16>,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<hostkey::HostKey>, Failure> {
    let mut keys = Vec::new();
    with_retries(request, log, || {
        let port = port.unwrap_or(22).to_string();
        let output = run("ssh-keyscan", &["-T", "10", "-p", &port, host], &[], None)?;
        keys = hostkey::parse_keyscan(&String::from_utf8_lossy(&output.stdout));
        if keys.is_empty() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(Failure::Network {
                attempts: 1,
                message: if stderr.is_empty() {
                    format!("{host} port {port} presented no host key")
                } else {
                    stderr
                },
            });
        }
        Ok(())
    })?;
    Ok(keys)
}
