//! `kubeci collect` sends to the address kubeci's host had when the collector started
//! (finding O4 of issue 30's second review). A build pod's containers share one
//! `/etc/hosts`, writable by a build step running as root, which starts once the
//! collector is ready (its startup probe): from then on the build step can point kubeci's
//! name at itself, and a collector that resolved the name only when it sends would hand
//! the pod's token and files to the build step.
//!
//! Here the collector is the real `kubeci collect`, in user and mount namespaces of its
//! own (`unshare`, unprivileged) where files of the test's are bind-mounted over
//! `/etc/hosts` and `/etc/resolv.conf` (a loopback name server: nothing leaves the
//! machine). Once the collector is ready the test rewrites its `/etc/hosts` as the build
//! step would: kubeci listens on 127.0.0.1, the build step on 127.0.0.2, the same port.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// kubeci's host name as the collector is given it.
const NAME: &str = "kubeci-o4.test";

/// The pod's token, as the collector reads it.
const TOKEN: &str = "the-pod-s-token";

/// The longest any step of these tests may take before it counts as hung.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request a server received.
#[derive(Debug, PartialEq)]
struct Received {
    method: String,
    path: String,
    authorization: String,
    body: String,
}

/// A loopback HTTP/1.1 server answering every request `200` and keeping what it got.
struct Server {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn listen(address: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(address)?;
        let server = Server {
            address: listener.local_addr()?,
            received: Arc::default(),
            connections: Arc::default(),
            stop: Arc::default(),
        };
        let (received, connections, stop) = (
            server.received.clone(),
            server.connections.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                connections.fetch_add(1, Ordering::SeqCst);
                let received = received.clone();
                std::thread::spawn(move || answer(stream.unwrap(), &received));
            }
        });
        Ok(server)
    }

    fn received(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address);
    }
}

/// Answers the requests of one connection until it closes.
fn answer(stream: TcpStream, received: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
        }
        let header = |name: &str| {
            (head.iter())
                .find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
                .unwrap_or_default()
        };
        let mut body = vec![0; header("content-length").parse().unwrap_or(0)];
        reader.read_exact(&mut body).unwrap();
        let mut request_line = head[0].split(' ');
        received.lock().unwrap().push(Received {
            method: request_line.next().unwrap().to_owned(),
            path: request_line.next().unwrap().to_owned(),
            authorization: header("authorization"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let answer = b"{\"kept\":true}";
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        )
        .unwrap();
        writer.write_all(answer).unwrap();
    }
}

/// kubeci's server on 127.0.0.1 and the build step's on 127.0.0.2, on one port.
fn kubeci_and_build_step() -> (Server, Server) {
    for _ in 0..20 {
        let kubeci = Server::listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let port = kubeci.address.port();
        if let Ok(build_step) = Server::listen(SocketAddr::from(([127, 0, 0, 2], port))) {
            return (kubeci, build_step);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// `kubeci collect` with its own `/etc/hosts` (this test's file) waiting for SIGTERM.
struct Collector {
    child: Child,
    hosts: PathBuf,
    ready: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Starts the collector of a build whose workspace holds `dist/app.txt`, sending to
    /// `http://NAME:PORT` and resolving within `resolve_within`; `/etc/hosts` is `hosts`.
    fn start(hosts: &str, port: u16, resolve_within: &str) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        std::fs::create_dir_all(at("src/dist")).unwrap();
        std::fs::write(at("src/dist/app.txt"), "built").unwrap();
        std::fs::write(at("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(at("hosts"), hosts).unwrap();
        // A name server on loopback that nothing answers for: no name leaves the machine.
        std::fs::write(at("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        let log = File::create(at("log")).unwrap();
        let mount = "mount --bind \"$0\" /etc/hosts && mount --bind \"$1\" /etc/resolv.conf \
                     && shift && exec \"$@\"";
        let child = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", mount])
            .args([at("hosts"), at("resolv.conf")])
            .arg(env!("CARGO_BIN_EXE_kubeci"))
            .arg("collect")
            .arg(format!("--server=http://{NAME}:{port}"))
            .arg(format!("--token-file={}", at("token").display()))
            .arg(format!("--workspace={}", at("src").display()))
            .args(["--artifact=dist/", "--within=20s"])
            .arg(format!("--resolve-within={resolve_within}"))
            .arg(format!("--ready-file={}", at("ready").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare runs (util-linux)");
        Collector {
            child,
            hosts: at("hosts"),
            ready: at("ready"),
            log: at("log"),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    fn is_ready(&self) -> bool {
        self.ready.exists()
    }

    /// Waits until `condition` holds, the collector's log in the failure.
    fn wait_for(&mut self, what: &str, condition: impl Fn(&Collector) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(self) {
            let ended = self.child.try_wait().unwrap();
            assert!(
                ended.is_none() && Instant::now() < deadline,
                "no {what} (the collector {}); its log (the test needs unprivileged user namespaces: unshare --user --mount):\n{}",
                ended.map_or("runs".into(), |status| format!("ended: {status}")),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rewrites the pod's `/etc/hosts` in place, as a build step running as root can.
    fn rewrite_hosts(&self, hosts: &str) {
        let mut file = (std::fs::OpenOptions::new().write(true).truncate(true))
            .open(&self.hosts)
            .unwrap();
        file.write_all(hosts.as_bytes()).unwrap();
    }

    /// What `NAME` means now inside the collector's namespaces: where a collector that
    /// resolved it now would send.
    fn name_now(&self) -> String {
        let output = Command::new("nsenter")
            .arg(format!("--target={}", self.child.id()))
            .args([
                "--user",
                "--mount",
                "--preserve-credentials",
                "getent",
                "hosts",
                NAME,
            ])
            .output()
            .expect("nsenter runs (util-linux)");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// SIGTERM, as Kubernetes stops the sidecar once the build step ended; its log once it
    /// exited, which must be with 0.
    fn terminate(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not end:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = self.log();
        assert!(status.success(), "{status}:\n{log}");
        log
    }
}

/// What kubeci gets from a collector that handed over the build's artifact.
fn handed_over() -> Vec<Received> {
    let bearer = format!("Bearer {TOKEN}");
    vec![
        Received {
            method: "PUT".into(),
            // Each segment percent-encoded, `.` too.
            path: "/internal/v1/outputs/artifacts/dist/app%2Etxt".into(),
            authorization: bearer.clone(),
            body: "built".into(),
        },
        Received {
            method: "POST".into(),
            path: "/internal/v1/outputs/done".into(),
            authorization: bearer,
            body: "{\"refused\":[]}".into(),
        },
    ]
}

/// The build step's server got nothing: no request (no token), not even a connection.
fn untouched(build_step: &Server) {
    assert_eq!(
        build_step.received(),
        [],
        "the build step got the pod's token"
    );
    assert_eq!(
        build_step.connections(),
        0,
        "the build step was connected to"
    );
}

#[test]
fn the_collector_sends_to_the_address_kubeci_s_host_had_when_it_started() {
    let (kubeci, build_step) = kubeci_and_build_step();
    let port = kubeci.address.port();
    let mut collector = Collector::start(&format!("127.0.0.1 {NAME}\n"), port, "30s");
    collector.wait_for("ready file", Collector::is_ready);

    // The build step runs now: it points kubeci's name at its own server.
    collector.rewrite_hosts(&format!("127.0.0.2 {NAME}\n"));
    assert_eq!(
        collector.name_now(),
        "127.0.0.2",
        "a late resolution goes there"
    );
    let log = collector.terminate();

    untouched(&build_step);
    assert_eq!(kubeci.received(), handed_over(), "{log}");
    let kept = format!("kubeci's host {NAME} is 127.0.0.1:{port}: the build's files go there only");
    assert!(log.contains(&kept), "{log}");
}

#[test]
fn a_host_not_resolved_yet_holds_the_build_step_back_until_it_is() {
    let (kubeci, build_step) = kubeci_and_build_step();
    let port = kubeci.address.port();
    let mut collector = Collector::start("127.0.0.1 localhost\n", port, "60s");
    let trying = format!("cannot resolve kubeci's host {NAME} yet");
    collector.wait_for("attempt", |c| c.log().contains(&trying));
    assert!(!collector.is_ready(), "the build step would start now");

    // The cluster's DNS answers at last; then the build step runs and points it elsewhere.
    collector.rewrite_hosts(&format!("127.0.0.1 {NAME}\n"));
    collector.wait_for("ready file", Collector::is_ready);
    collector.rewrite_hosts(&format!("127.0.0.2 {NAME}\n"));
    let log = collector.terminate();

    untouched(&build_step);
    assert_eq!(kubeci.received(), handed_over(), "{log}");
}

#[test]
fn a_host_never_resolved_lets_the_build_go_on_and_nothing_is_handed_over() {
    let (kubeci, build_step) = kubeci_and_build_step();
    let port = kubeci.address.port();
    let mut collector = Collector::start("127.0.0.1 localhost\n", port, "1s");
    collector.wait_for("ready file", Collector::is_ready);
    let gave_up = format!("cannot resolve kubeci's host {NAME} within 1s");
    assert!(collector.log().contains(&gave_up), "{}", collector.log());

    // The build step runs, and gives kubeci's name the address of its own server.
    collector.rewrite_hosts(&format!("127.0.0.2 {NAME}\n"));
    let log = collector.terminate();

    untouched(&build_step);
    assert_eq!(kubeci.received(), [], "{log}");
    let why = format!(
        "the build's files were not handed over: kubeci's host {NAME} could not be resolved when the collector started"
    );
    assert!(log.contains(&why), "{log}");
}
