//! A real S3 server for tests: versitygw (Apache-2.0, an S3 gateway over a POSIX
//! directory; built from `control-plane/versitygw` by `scripts/s3 build`) on a free
//! loopback port, over a temporary directory, with fixed test credentials.
//!
//! ```no_run
//! let s3 = kubeci_testkit::S3Server::start(); // bucket `kubeci`, ready to answer
//! let mut kubeci = std::process::Command::new("kubeci");
//! kubeci.envs(s3.env()).arg("--archive").arg(s3.url()); // AWS_ENDPOINT_URL, keys, …
//! ```
//!
//! Like the rest of the kit it panics, saying why, when it cannot do what a test asked:
//! that is the test's failure. Starting blocks for as long as versitygw takes to answer
//! (a fraction of a second), also in an async test.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The access key id of versitygw's root account in tests.
pub const ACCESS_KEY_ID: &str = "kubeci-test";
/// The root account's secret access key in tests.
pub const SECRET_ACCESS_KEY: &str = "kubeci-test-secret";
/// The region versitygw signs for.
pub const REGION: &str = "us-east-1";
/// The bucket every server starts with.
pub const BUCKET: &str = "kubeci";
/// Where the path of the versitygw binary is given (`.ci/run` sets it).
pub const BINARY_ENV: &str = "KUBECI_VERSITYGW";

/// How long versitygw may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Tries with another free port when the one picked was taken meanwhile.
const PORT_TRIES: usize = 5;

const HOW_TO_BUILD: &str = "build it with scripts/s3 build (needs Go 1.25 or newer; \
     .ci/run does it and sets KUBECI_VERSITYGW), or set KUBECI_VERSITYGW to a versitygw binary";

/// A running versitygw. Dropping it kills it and removes its directory.
pub struct S3Server {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    /// Starts the versitygw that [`versitygw_binary`] finds, with bucket [`BUCKET`].
    /// Panics, saying how to build it, when there is none.
    pub fn start() -> S3Server {
        match versitygw_binary() {
            Ok(binary) => S3Server::start_binary(binary),
            Err(why) => panic!("{why}"),
        }
    }

    /// Starts the versitygw binary at `binary`, with bucket [`BUCKET`].
    pub fn start_binary(binary: impl Into<PathBuf>) -> S3Server {
        let binary = binary.into();
        if !binary.is_file() {
            panic!("no versitygw at {}: {HOW_TO_BUILD}", binary.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("kubeci-s3-")
            .tempdir()
            .expect("a temporary directory for versitygw");
        let mut server = S3Server {
            binary,
            dir,
            port: 0,
            child: None,
        };
        server.create_bucket(BUCKET);
        let mut tries = 0;
        loop {
            tries += 1;
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(Launch::PortTaken) if tries < PORT_TRIES => continue,
                Err(Launch::PortTaken) => panic!(
                    "versitygw found its port taken {tries} times in a row:\n{}",
                    server.log()
                ),
                Err(Launch::Failed(why)) => panic!("{why}"),
            }
        }
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint (path-style requests).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket it started with, [`BUCKET`].
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// `s3://kubeci`, the bucket's URL.
    pub fn url(&self) -> String {
        format!("s3://{BUCKET}")
    }

    /// The environment an S3 client needs to reach it: `AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` and
    /// `AWS_ALLOW_HTTP=true` (the names `object_store`'s `AmazonS3Builder::from_env` reads).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// The POSIX directory it serves: bucket `B`'s object `K` is the file `root/B/K`, so a
    /// test can look at what was stored or leave a truncated or foreign object behind.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Creates bucket `name` (with the POSIX backend, a directory under [`root`]).
    ///
    /// [`root`]: S3Server::root
    pub fn create_bucket(&self, name: &str) {
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        assert!(
            valid,
            "bucket name {name:?}: use 3 to 63 lowercase letters, digits and '-'"
        );
        let path = self.root().join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating bucket directory {}: {e}", path.display()));
    }

    /// Whether versitygw runs (it does unless [`stop`](S3Server::stop)ped or crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills versitygw, keeping its objects: clients see connections refused, as in an
    /// outage of the store, until [`restart`](S3Server::restart).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts versitygw again on the same port over the same objects, and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.stop();
        match self.launch() {
            Ok(()) => {}
            Err(Launch::PortTaken) => panic!(
                "versitygw cannot listen on 127.0.0.1:{} again: another program took the port",
                self.port
            ),
            Err(Launch::Failed(why)) => panic!("{why}"),
        }
    }

    /// What versitygw wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("versitygw.log")
    }

    /// Starts versitygw on `self.port` and polls its health endpoint until it answers.
    fn launch(&mut self) -> Result<(), Launch> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Launch::Failed(format!("versitygw's log file: {e}")))?;
        let stderr = log
            .try_clone()
            .map_err(|e| Launch::Failed(format!("versitygw's log file: {e}")))?;
        let log_start = self.log().len();
        // An empty environment: the VGW_* and ROOT_* variables of whoever runs the tests
        // would change versitygw's settings.
        let child = Command::new(&self.binary)
            .env_clear()
            .arg("--port")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--access", ACCESS_KEY_ID, "--secret", SECRET_ACCESS_KEY])
            .args(["--region", REGION, "--health", "/health", "--quiet"])
            .arg("posix")
            .arg(self.root())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                Launch::Failed(format!(
                    "cannot run versitygw {}: {e}; {HOW_TO_BUILD}",
                    self.binary.display()
                ))
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        while !answers_health(self.port) {
            if !self.is_running() {
                self.stop();
                let log = self.log().split_off(log_start);
                if log.contains("address already in use") {
                    return Err(Launch::PortTaken);
                }
                return Err(Launch::Failed(format!(
                    "versitygw {} exited at start; its output:\n{log}",
                    self.binary.display()
                )));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(Launch::Failed(format!(
                    "versitygw did not answer on {} within {READY_WITHIN:?}; its output:\n{}",
                    self.endpoint(),
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Launch {
    PortTaken,
    Failed(String),
}

/// The versitygw binary: `$KUBECI_VERSITYGW`, or the one `scripts/s3 build` left (as
/// `scripts/s3 path` finds it). The error says how to build it.
pub fn versitygw_binary() -> Result<PathBuf, String> {
    locate(std::env::var_os(BINARY_ENV), &crate::scripts::repo_root())
}

fn locate(from_env: Option<OsString>, repo_root: &Path) -> Result<PathBuf, String> {
    if let Some(path) = from_env.filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{BINARY_ENV}={} is not a file: {HOW_TO_BUILD}",
                path.display()
            ))
        };
    }
    crate::scripts::built_path(repo_root, "s3", "versitygw", HOW_TO_BUILD)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Whether `GET /health` on the port answers 200.
fn answers_health(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_versitygw_named_but_missing_is_refused_saying_how_to_build_it() {
        let error = locate(
            Some("/nonexistent/versitygw".into()),
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        assert!(error.contains("KUBECI_VERSITYGW=/nonexistent/versitygw is not a file"));
        assert!(error.contains("scripts/s3 build"), "{error}");
    }
}
