//! The webhook storm in its bounded form, on every CI run: 300 pull request heads
//! delivered one to three times each and 100 forgeries, shuffled (seeded) and sent by 8
//! clients at once. No forgery starts anything, every genuine head is built exactly once,
//! build numbers are unique, and kubeci's memory stays bounded. The full form:
//! `cargo bench -p kubeci --bench storm`.

#[path = "../../benches/storm_driver.rs"]
mod storm_driver;
#[path = "../../benches/support.rs"]
mod support;

use kubeci_testkit::Options;

#[test]
fn a_storm_of_deliveries_duplicates_and_forgeries_builds_each_head_once_and_no_forgery() {
    let (runtime, server) = support::fake_api_server(Options {
        history: 50_000,
        ..Options::default()
    });
    let _guard = runtime.enter();
    server.preload(storm_driver::configmaps(100)).unwrap();
    let fixture = storm_driver::fixture();
    let config = storm_driver::Config {
        heads: 300,
        forgeries: 100,
        clients: 8,
        seed: 7,
    };
    let (_github, kubeci) = storm_driver::start(&server, &config, &fixture);
    let report = storm_driver::run(&server, kubeci.port, kubeci.child.id(), &fixture, &config);
    assert!(report.duplicates > 100, "duplicates mixed in: {report:?}");
    assert!(report.forged_builds.is_empty(), "{report:?}");
    assert_eq!(
        report.genuine_statuses.get(&200).copied().unwrap_or(0),
        report.deliveries - report.forgeries,
        "every genuine delivery answered 200 (after {} redeliveries): {report:?}",
        report.redelivered
    );
    assert_eq!(
        report.forged_statuses.keys().copied().collect::<Vec<_>>(),
        [401],
        "{report:?}"
    );
    assert!(report.heads_not_built_once.is_empty(), "{report:?}");
    assert_eq!(report.jobs_created, 300, "{report:?}");
    assert!(report.numbers_unique, "{report:?}");
    eprintln!(
        "{} deliveries in {:.1} s; kubeci RSS {:.1} MB before, {:.1} MB at most",
        report.deliveries, report.seconds, report.rss_before_mb, report.rss_max_mb
    );
    assert!(
        report.rss_max_mb - report.rss_before_mb < 150.0,
        "memory stays bounded: {report:?}"
    );
}
