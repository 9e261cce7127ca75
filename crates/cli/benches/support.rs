//! What the load drivers share: starting the real `kubeci serve --kubernetes` against the
//! fake API server and waiting for /readyz, and percentiles.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubeci_testkit::FakeApiServer;

/// The process, its port, and its directory (kept while it runs); killed when dropped.
pub struct Kubeci {
    pub child: Child,
    pub port: u16,
    /// Its kubeconfig and files, removed when it is dropped.
    _dir: tempfile::TempDir,
}

impl Drop for Kubeci {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of one request (0: no answer).
pub fn status(port: u16, method: &str, path: &str, headers: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let request = format!("{method} {path} HTTP/1.1\r\nHost: l\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).is_err() {
        return 0;
    }
    String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0)
}

/// Starts `kubeci serve --kubernetes` on a free port with `files` written to its directory
/// (`args` may name them through `{dir}`), and waits for /readyz; the time it took.
pub fn start(server: &FakeApiServer, files: &[(&str, &str)], args: &[&str]) -> (Kubeci, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().display().to_string();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args([
            "serve",
            "--kubernetes",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(args.iter().map(|a| a.replace("{dir}", &path)))
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kubeci = Kubeci {
        child,
        port,
        _dir: dir,
    };
    while status(port, "GET", "/readyz", "") != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    }
    (kubeci, started.elapsed())
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}
