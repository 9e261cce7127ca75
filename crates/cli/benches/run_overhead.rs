//! `kubeci run` of a trivial job against the raw `git clone` + `bash` it performs.
//!
//! Run: `cargo bench -p kubeci --bench run_overhead`

use std::path::Path;
use std::process::{Command, Stdio};

use criterion::{criterion_group, criterion_main, Criterion};

fn quiet(program: &str, args: &[&str], dir: &Path) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(status.success(), "{program} {args:?}");
}

fn run_overhead(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    quiet("git", &["init", "--quiet", "--initial-branch=main"], &work);
    std::fs::write(work.join("README.md"), "bench\n").unwrap();
    quiet("git", &["add", "."], &work);
    quiet(
        "git",
        &[
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "--quiet",
            "-m",
            "one",
        ],
        &work,
    );
    let bare = root.join("repo.git");
    quiet(
        "git",
        &[
            "clone",
            "--quiet",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
        root,
    );
    let job = root.join("job.yaml");
    std::fs::write(
        &job,
        format!("- job:\n    name: bench\n    git: {{url: {:?}, branch: main}}\n    timeout: 1m\n    run_command: \"true\"\n", bare.display()),
    )
    .unwrap();

    let mut group = c.benchmark_group("trivial job");
    group.sample_size(30);
    group.bench_function("raw git clone + bash", |b| {
        b.iter(|| {
            let dest = root.join("raw");
            let _ = std::fs::remove_dir_all(&dest);
            quiet(
                "git",
                &[
                    "clone",
                    "--quiet",
                    "--branch",
                    "main",
                    bare.to_str().unwrap(),
                    dest.to_str().unwrap(),
                ],
                root,
            );
            quiet("bash", &["-e", "-c", "true"], &dest);
        })
    });
    let work_dir = root.join("kubeci-build");
    group.bench_function("kubeci run", |b| {
        b.iter(|| {
            let _ = std::fs::remove_dir_all(&work_dir);
            quiet(
                env!("CARGO_BIN_EXE_kubeci"),
                &[
                    "run",
                    job.to_str().unwrap(),
                    "--work-dir",
                    work_dir.to_str().unwrap(),
                ],
                root,
            );
        })
    });
    group.finish();
}

criterion_group!(benches, run_overhead);
criterion_main!(benches);
