//! kubeci's integration tests, one binary (as ripgrep's): each module is a suite that
//! runs the real `kubeci` binary — against golden files, real git and sshd, the fake and
//! the real Kubernetes API server, a fake GitHub, a real browser. `common` holds what they
//! share. Run one suite with `cargo test -p kubeci --test it <module>::`, e.g.
//! `cargo test -p kubeci --test it serve_local::`; the long forms (full chaos, storm,
//! scale) are in `.ci/nightly`.
//!
//! A test that needs more than Rust and git — a real control plane, Chromium, sshd,
//! kubectl, a Python tool — is `#[ignore = "needs …"]`, saying what it needs: `cargo test`
//! leaves it out, `-- --include-ignored` runs it (`.ci/run` does), and there a missing part
//! fails it.

/// `scenario(cluster)` against the fake API server, and against a real cluster (a module of
/// two tests; the scenario's module must have `TestCluster` in scope). Only the real
/// cluster's is ignored: it needs the control plane of `scripts/cluster up` (and, with
/// `s3`, versitygw: the archive's scenarios).
macro_rules! on_both {
    ($scenario:ident) => {
        on_both!($scenario, "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)");
    };
    ($scenario:ident, s3) => {
        on_both!($scenario, "needs a real control plane and versitygw: eval \"$(scripts/cluster up)\", scripts/s3 build, then cargo test --workspace -- --include-ignored (.ci/run does all)");
    };
    ($scenario:ident, $needs:literal) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_the_fake_api_server() {
                super::$scenario(super::TestCluster::fake().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $needs]
            async fn on_a_real_cluster() {
                super::$scenario(super::TestCluster::real().await).await;
            }
        }
    };
}

mod common;

mod api_conformance;
mod archive_kubernetes;
mod archive_kubernetes_node_gone;
mod archive_kubernetes_served;
mod backend_contract;
mod browser;
mod chaos;
mod client;
mod collect_address;
mod collect_kubernetes;
mod collect_kubernetes_flood;
mod collect_kubernetes_uploads;
mod deploy;
mod docs;
mod fake_cluster;
mod github_bounds;
mod house;
mod image;
mod lint;
mod new;
mod pages;
mod pages_actions;
mod pages_in_chromium;
mod protobuf_records;
mod real_control_plane;
mod render;
mod report_targets;
mod reports_of_invalid_jobs;
mod run;
mod schema_and_help;
mod secrets_in_urls;
mod serve_github;
mod serve_github_checks;
mod serve_github_deliveries;
mod serve_github_reporters;
mod serve_github_reports;
mod serve_github_statuses;
mod serve_github_tenants;
mod serve_kubernetes;
mod serve_kubernetes_build_states;
mod serve_kubernetes_builds;
mod serve_kubernetes_burst;
mod serve_kubernetes_scenarios;
mod serve_kubernetes_tenancy;
mod serve_local;
mod serve_local_archive;
mod serve_local_archive_retention;
mod serve_local_archive_s3;
mod serve_local_bounds;
mod serve_local_github;
mod serve_local_isolation;
mod serve_local_outputs;
mod serve_local_outputs_pages;
mod serve_local_store_busy;
mod storm;
