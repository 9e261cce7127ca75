//! 10,000 objects pre-loaded, then listed through pagination by the real kube client.
//!
//! Run: `cargo bench -p kubeci-testkit --bench preload_and_list`

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kubeci_testkit::{FakeApiServer, Options};
use serde_json::json;

const OBJECTS: usize = 10_000;

fn objects() -> Vec<serde_json::Value> {
    (0..OBJECTS)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("job-{i:05}"), "namespace": "default", "labels": {"ci-job-spec": "true"}}, "data": {"job.yaml": "- job:\n    name: x\n"}}))
        .collect()
}

async fn list_all(api: &Api<ConfigMap>) -> usize {
    let mut params = ListParams::default().limit(500);
    let mut total = 0;
    loop {
        let page = api.list(&params).await.unwrap();
        total += page.items.len();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return total,
        }
    }
}

fn preload_and_list(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fake API server, 10,000 ConfigMaps");
    group.sample_size(10);
    group.bench_function("preload", |b| {
        b.iter_batched(
            || {
                (
                    runtime.block_on(FakeApiServer::start_with(Options {
                        simulate: false,
                        ..Options::default()
                    })),
                    objects(),
                )
            },
            |(server, objects)| {
                assert_eq!(server.preload(objects).unwrap(), OBJECTS);
                server
            },
            criterion::BatchSize::PerIteration,
        )
    });
    let server = runtime.block_on(FakeApiServer::start_with(Options {
        simulate: false,
        ..Options::default()
    }));
    server.preload(objects()).unwrap();
    let api: Api<ConfigMap> =
        runtime.block_on(async { Api::namespaced(server.client().await, "default") });
    group.bench_function("list through pagination (limit 500, kube client)", |b| {
        b.iter(|| assert_eq!(runtime.block_on(list_all(&api)), OBJECTS))
    });
    group.bench_function("preload + list through pagination", |b| {
        b.iter_batched(
            || {
                runtime.block_on(FakeApiServer::start_with(Options {
                    simulate: false,
                    ..Options::default()
                }))
            },
            |server| {
                server.preload(objects()).unwrap();
                runtime.block_on(async {
                    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
                    assert_eq!(list_all(&api).await, OBJECTS);
                });
                server
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, preload_and_list);
criterion_main!(benches);
