//! Running the real `kubeci` binary from tests, and golden files.

pub mod cluster;
pub mod git;
pub mod local;
pub mod serve;
pub mod webdriver;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a loopback port")
        .local_addr()
        .expect("an address")
        .port()
}

/// The repository's root: commands run there so file names in output are stable.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The longest any command of these tests may take before it counts as hung.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Runs `kubeci ARGS` in the repository root; a panic or a hang fails the test.
pub fn kubeci(args: &[&str]) -> Run {
    kubeci_with_input(args, None)
}

pub fn kubeci_with_input(args: &[&str], input: Option<&[u8]>) -> Run {
    kubeci_at(&repo_root(), args, input)
}

/// Runs `kubeci ARGS` in directory `dir` (a download writes there).
pub fn kubeci_in(dir: &Path, args: &[&str]) -> Run {
    kubeci_at(dir, args, None)
}

fn kubeci_at(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .args(args)
        .current_dir(dir)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubeci starts");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + HANG_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting works") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubeci {args:?} hung for more than {HANG_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "kubeci {args:?} panicked:\n{}",
        run.stderr
    );
    run
}

/// Compares `actual` with the golden file at `path` (relative to the repository root).
/// `UPDATE_GOLDEN=1 cargo test` rewrites the golden files instead.
pub fn assert_golden(path: &str, actual: &str) {
    let file = repo_root().join(path);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().expect("golden files are in a directory"))
            .expect("mkdir");
        std::fs::write(&file, actual).expect("golden file written");
        return;
    }
    let expected = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!("golden file {path} is missing ({e}); run UPDATE_GOLDEN=1 cargo test")
    });
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "output differs from golden file {path} at line {}:\n  expected: {:?}\n  actual:   {:?}\n--- actual output ---\n{actual}\n(run UPDATE_GOLDEN=1 cargo test to accept it)",
            first_difference + 1,
            expected.lines().nth(first_difference),
            actual.lines().nth(first_difference),
        );
    }
}

/// `python3 -m <module>`-style tool presence, with a message that says how to get it.
pub fn require_python_module(module: &str, package: &str) {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs the Python package `{package}` (pip install {package}); .ci/run installs it"
    );
}

/// Validates Kubernetes objects in `files` strictly against Kubernetes' OpenAPI schema with
/// an independent validator (`kubernetes-validate`, from PyPI); fails the test if any does
/// not pass. Its report.
pub fn kubernetes_validate(files: &[PathBuf]) -> String {
    require_python_module("kubernetes_validate", "kubernetes-validate");
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    report
}
