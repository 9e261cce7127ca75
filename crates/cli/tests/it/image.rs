//! The container image's recipe, checked without a container engine: base images pinned by
//! digest, a builder new enough for the workspace, the clone step's tools in the runtime
//! image, a non-root user that matches the chart and the clone step, no secrets baked in.

use crate::common;

use common::repo_root;

fn dockerfile() -> String {
    std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap()
}

/// The instructions, comments dropped and continuation lines joined.
fn instructions() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in dockerfile().lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(std::mem::take(&mut pending));
    }
    out
}

fn is_digest(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn every_base_image_is_pinned_by_digest_and_the_builder_is_new_enough() {
    let froms: Vec<String> = instructions()
        .into_iter()
        .filter(|i| i.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap();
        let digest = image.split_once("@sha256:").map(|(_, d)| d);
        assert!(
            digest.is_some_and(is_digest),
            "not pinned by digest: {from}"
        );
    }
    // The builder's Rust is at least the workspace's rust-version.
    let builder = froms[0].split_whitespace().nth(1).unwrap();
    let version = builder
        .strip_prefix("rust:")
        .and_then(|v| v.split('-').next())
        .unwrap();
    let workspace = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let required = workspace
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        parse(version) >= parse(required),
        "rust {version} < {required}"
    );
}

#[test]
fn the_runtime_image_has_the_clone_tools_and_runs_as_the_charts_non_root_user() {
    let instructions = instructions();
    let runtime_start = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .unwrap();
    let runtime = &instructions[runtime_start..];
    let installs = runtime
        .iter()
        .find(|i| i.contains("apt-get install"))
        .expect("packages installed");
    for package in ["git", "openssh-client", "ca-certificates"] {
        assert!(
            installs.split_whitespace().any(|w| w == package),
            "{package} in {installs}"
        );
    }
    let user = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "USER {user}");
    let chart =
        std::fs::read_to_string(repo_root().join("deploy/helm/kubeci/templates/deployment.yaml"))
            .unwrap();
    assert!(
        chart.contains(&format!("runAsUser: {uid}")),
        "the chart runs uid {uid}"
    );
    let render = std::fs::read_to_string(repo_root().join("crates/render/src/lib.rs")).unwrap();
    assert!(
        render.contains(&format!("pub const CLONE_UID: i64 = {uid};")),
        "the clone step runs as uid {uid}"
    );
    assert!(runtime.iter().any(|i| i.starts_with("COPY --from=build ")));
    assert!(runtime
        .iter()
        .any(|i| i.starts_with("ENTRYPOINT [\"/usr/local/bin/kubeci\"]")));
}

#[test]
fn no_secret_is_baked_in_and_the_context_leaves_out_build_output_and_history() {
    for instruction in instructions() {
        let upper = instruction.to_ascii_uppercase();
        if upper.starts_with("ENV ") || upper.starts_with("ARG ") {
            for word in ["TOKEN", "SECRET", "PASSWORD", "KEY"] {
                assert!(
                    !upper.contains(word),
                    "a secret in the image: {instruction}"
                );
            }
        }
        if upper.starts_with("COPY ") || upper.starts_with("ADD ") {
            for hint in [
                ".pem",
                "id_rsa",
                "id_ed25519",
                ".env",
                "token",
                "kubeconfig",
            ] {
                assert!(!instruction.contains(hint), "{instruction}");
            }
            assert!(
                !upper.starts_with("ADD HTTP"),
                "no remote ADD: {instruction}"
            );
        }
    }
    let ignored = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    for path in ["target/", ".git/", ".kubeci/"] {
        assert!(
            ignored.lines().any(|l| l == path),
            "{path} in .dockerignore"
        );
    }
}
