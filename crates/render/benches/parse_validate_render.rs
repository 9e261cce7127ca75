//! Parse + validate + render of the seed job: the work kubeci does for every ConfigMap
//! change (parse, validate) and every build (render).
//!
//! Run: `cargo bench -p kubeci-render --bench parse_validate_render`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kubeci_build::BuildRequest;
use kubeci_render::{render, to_yaml, JobOrigin, RenderConfig};
use kubeci_spec::{load, LoadOptions};

const SEED: &str = include_str!("../../../examples/seed/start-helm-test.configmap.yaml");

fn seed_job(c: &mut Criterion) {
    let options = LoadOptions::default();
    let config = RenderConfig::default();
    let request = BuildRequest::manual(42);
    let mut group = c.benchmark_group("seed job");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse + validate", |b| {
        b.iter(|| {
            let report = load("seed.yaml", SEED.as_bytes(), &options);
            assert!(report.jobs[0].job.is_some());
            report
        })
    });
    group.bench_function("parse + validate + render", |b| {
        b.iter(|| {
            let report = load("seed.yaml", SEED.as_bytes(), &options);
            let loaded = &report.jobs[0];
            render(
                loaded.job.as_ref().unwrap(),
                &JobOrigin::of(loaded),
                &request,
                &config,
            )
            .unwrap()
        })
    });
    group.bench_function("parse + validate + render + YAML", |b| {
        b.iter(|| {
            let report = load("seed.yaml", SEED.as_bytes(), &options);
            let loaded = &report.jobs[0];
            to_yaml(
                &render(
                    loaded.job.as_ref().unwrap(),
                    &JobOrigin::of(loaded),
                    &request,
                    &config,
                )
                .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, seed_job);

fn yaml_only(c: &mut Criterion) {
    use kubeci_spec::yaml::{parse_stream, Limits, PosMap};
    c.bench_function("seed job/YAML parse of the manifest", |b| {
        b.iter(|| parse_stream(SEED, &PosMap::Identity, Limits::default()).unwrap())
    });
}

criterion_group!(parts, yaml_only);
criterion_main!(benches, parts);
