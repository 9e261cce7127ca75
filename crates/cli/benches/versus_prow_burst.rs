//! The burst of issue 31: many pull requests opened at once, each delivered as its own
//! signed webhook (16 senders at a time), until every build's pod exists and every
//! build is reported.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::systems::{Side, System};
use super::world::World;

/// How long a burst may take to be reported whole.
const BURST_PATIENCE: Duration = Duration::from_secs(1200);

/// Deliveries sent at once.
const SENDERS: usize = 16;

/// What one system did with one burst.
pub struct Burst {
    pub system: System,
    pub count: u64,
    /// From the first delivery: the last one answered, the last pod seen, the last report.
    pub delivered: Duration,
    pub all_created: Duration,
    pub all_reported: Duration,
    /// Its API requests and the writes among them, first delivery → last report.
    pub api_requests: usize,
    pub writes: usize,
    /// CPU of its processes, first delivery → last report; their memory after.
    pub cpu: Duration,
    pub rss: f64,
}

/// Opens `count` pull requests (numbers from `first`), delivers them all at once to
/// `side`, and waits until each has a pod and a final status.
pub fn burst(world: &World, side: &Side, first: u64, count: u64) -> Burst {
    let prepared = world.pull_requests(first, count);
    let heads: BTreeSet<&str> = prepared.iter().map(|(_, head, _)| head.as_str()).collect();
    let start = world.plane.audit_mark();
    let (cpu_before, _) = side.cost();
    let sent = Instant::now();
    let per_sender = prepared.len().div_ceil(SENDERS).max(1);
    std::thread::scope(|scope| {
        for chunk in prepared.chunks(per_sender) {
            scope.spawn(move || {
                for (number, _, body) in chunk {
                    let status = side.deliver(*number, body);
                    assert_eq!(status, 200, "{}: delivery of #{number}", side.system.name());
                }
            });
        }
    });
    let delivered = sent.elapsed();
    let context = side.system.context();
    let mut all_created = None;
    let all_reported = loop {
        let pods = side.pods_seen_since(sent);
        if all_created.is_none() && pods.len() as u64 >= count {
            let last = pods.iter().max().copied().unwrap_or(sent);
            all_created = Some(last.saturating_duration_since(sent));
        }
        let ended = world.ended(context, &heads, side.system.name());
        if ended == heads.len() {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < BURST_PATIENCE,
            "{}: {} of {count} reported, {} pods; {}",
            side.system.name(),
            ended,
            pods.len(),
            side.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let end = world.plane.audit_mark();
    let (cpu_after, rss) = side.cost();
    let audit = world.plane.audit_between((start, end), &side.user);
    Burst {
        system: side.system,
        count,
        delivered,
        all_created: all_created.unwrap_or(all_reported),
        all_reported,
        api_requests: audit.requests,
        writes: audit.writes,
        cpu: cpu_after.saturating_sub(cpu_before),
        rss,
    }
}

pub fn print(burst: &Burst) {
    let n = burst.count as f64;
    println!(
        "== {}: {} pull requests opened at once",
        burst.system.name(),
        burst.count
    );
    println!(
        "  all delivered {:.2?}, all pods created {:.2?}, all reported {:.2?}",
        burst.delivered, burst.all_created, burst.all_reported
    );
    println!(
        "  API requests {:.1} per build ({:.1} writes); CPU {:.3} s per build; {:.0} MB resident after",
        burst.api_requests as f64 / n,
        burst.writes as f64 / n,
        burst.cpu.as_secs_f64() / n,
        burst.rss
    );
}
