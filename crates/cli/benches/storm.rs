//! The webhook storm, full form (issue 9): 3,000 pull request heads delivered one to three
//! times each, 1,000 forgeries, 16 clients, 1,000 jobs declared. See `storm_driver.rs`.
//!
//! Run: `cargo bench -p kubeci --bench storm` (`STORM_SEED=N` for another storm).

#[path = "storm_driver.rs"]
mod storm_driver;
#[path = "support.rs"]
mod support;

use kubeci_testkit::Options;

fn main() {
    let seed = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2026);
    let (runtime, server) = support::fake_api_server(Options {
        history: 100_000,
        ..Options::default()
    });
    let _guard = runtime.enter();
    server.preload(storm_driver::configmaps(1_000)).unwrap();
    let fixture = storm_driver::fixture();
    let config = storm_driver::Config {
        heads: 3_000,
        forgeries: 1_000,
        clients: 16,
        seed,
    };
    let (_github, kubeci) = storm_driver::start(&server, &config, &fixture);
    let report = storm_driver::run(&server, kubeci.port, kubeci.child.id(), &fixture, &config);
    println!(
        "seed {seed}: {} deliveries ({} duplicates, {} forgeries) in {:.1} s: {:.0}/s\n\
         answers: genuine {:?}, forged {:?}; redelivered after a non-200 answer: {}\n\
         {} build Jobs; heads not built exactly once: {}; forged heads built: {}; numbers unique: {}\n\
         kubeci RSS {:.1} MB before, {:.1} MB at most",
        report.deliveries,
        report.duplicates,
        report.forgeries,
        report.seconds,
        report.deliveries as f64 / report.seconds,
        report.genuine_statuses,
        report.forged_statuses,
        report.redelivered,
        report.jobs_created,
        report.heads_not_built_once.len(),
        report.forged_builds.len(),
        report.numbers_unique,
        report.rss_before_mb,
        report.rss_max_mb
    );
    assert!(report.forged_builds.is_empty(), "a forgery started a build");
    assert!(
        report.heads_not_built_once.is_empty(),
        "a head not built exactly once"
    );
    assert!(report.numbers_unique);
}
