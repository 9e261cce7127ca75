//! Load driver for `kubeci serve --kubernetes` against the fake API server (docs/design.md §8):
//! start to `/readyz` with 1,000 job ConfigMaps and 10,000 build Jobs, RSS idle and at that
//! load, ConfigMap change → job served, and Job creations per minute.
//!
//! Run: `cargo bench -p kubeci --bench serve_load`

use std::time::{Duration, Instant};

use kubeci_testkit::{FakeApiServer, Options};
use serde_json::Value;

fn start(server: &FakeApiServer) -> (Kubeci, Duration) {
    support::start(
        server,
        &[("token", "bench-token-of-some-length")],
        &["--token-file", "{dir}/token"],
    )
}

fn status(port: u16, method: &str, path: &str, auth: bool) -> u16 {
    let auth = if auth {
        "Authorization: Bearer bench-token-of-some-length\r\n"
    } else {
        ""
    };
    support::status(port, method, path, auth)
}

#[path = "support.rs"]
mod support;

use support::{build_job, configmap, percentile, rss_mb, Kubeci, BUILDS, JOBS};

fn main() {
    let (runtime, server) = support::fake_api_server(Options {
        history: 50_000,
        ..Options::default()
    });
    let _guard = runtime.enter();

    // Idle: nothing declared.
    let (idle, _) = start(&server);
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_mb(idle.child.id());
    drop(idle);

    let mut objects: Vec<Value> = (0..JOBS).map(configmap).collect();
    objects.extend((0..BUILDS).map(build_job));
    server.preload(objects).unwrap();
    let mut ready = Vec::new();
    for _ in 0..5 {
        let (kubeci, took) = start(&server);
        ready.push(took);
        drop(kubeci);
    }
    let (kubeci, _) = start(&server);
    std::thread::sleep(Duration::from_secs(2));
    let loaded_rss = rss_mb(kubeci.child.id());
    let port = kubeci.port;

    // ConfigMap change → job served: a new job ConfigMap, until the API knows the job.
    let client = runtime.block_on(server.client());
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "bench");
    let mut visible = Vec::new();
    for i in 0..200 {
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(configmap(JOBS + i)).unwrap();
        let path = format!("/api/v1/jobs/bench/job-{}/builds", JOBS + i);
        let sent = Instant::now();
        runtime
            .block_on(cms.create(&Default::default(), &cm))
            .unwrap();
        while status(port, "GET", &path, false) != 200 {
            assert!(sent.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_micros(200));
        }
        visible.push(sent.elapsed());
    }

    // Job creations per minute: 4 clients POSTing builds of 100 jobs, for 20 s.
    let per_minute = support::creations_per_minute(
        port,
        "bench",
        "Authorization: Bearer bench-token-of-some-length\r\n",
    );

    println!(
        "start to /readyz, {JOBS} job ConfigMaps + {BUILDS} Jobs: median {:?}, max {:?} (5 runs)",
        percentile(&mut ready, 0.5),
        percentile(&mut ready, 1.0)
    );
    println!("RSS idle: {idle_rss:.1} MB; at that load: {loaded_rss:.1} MB");
    println!(
        "ConfigMap created → job served: p50 {:?}, p99 {:?} (200 changes)",
        percentile(&mut visible, 0.5),
        percentile(&mut visible, 0.99)
    );
    println!("Job creations: {per_minute:.0}/min (4 API clients, kube client without a QPS limit)");
}
