//! kubeci and Prow side by side on the same real control plane (issue 31): Prow built here,
//! unmodified (`scripts/prow build`), hook with `trigger`, plank, crier's GitHub reporter
//! and sinker run out of cluster; kubeci's `serve --kubernetes`; both against the API
//! server of `scripts/cluster up`, their pods run by its node agent, both calling one fake
//! GitHub (see versus_prow_systems.rs for what each is given). One system after the
//! other, the same work: pull requests opened one at a time, each a signed `pull_request`
//! webhook → the build pod created → its container started → the commit status reported
//! `success`. Printed per system: those times (p50, p99), the API requests it made per
//! build (its user in the audit log, up to each report) and its GitHub calls per build
//! (the fake's log, by `User-Agent`).
//!
//! Then a burst: many pull requests opened at once (versus_prow_burst.rs) → every pod
//! created, every build reported. The pull requests go in rounds, the systems in the
//! order Prow, kubeci, kubeci, Prow, … so what drifts on the machine weighs on both.
//!
//! Run, with the control plane up (`eval "$(scripts/cluster up)"`) and Prow built:
//!   `cargo test -p kubeci --bench versus_prow -- --smoke`  one pull request each, no
//!     burst (≤ 3 minutes; `.ci/run` runs it, so the harness cannot rot)
//!   `cargo test -p kubeci --bench versus_prow -- --quick`  20 each in 2 rounds, a burst
//!     of 50 (a few minutes)
//!   `cargo bench -p kubeci --bench versus_prow`            200 each in 4 rounds, a burst
//!     of 1,000, with kubeci's release build. `VERSUS_PULL_REQUESTS`, `VERSUS_ROUNDS` and
//!     `VERSUS_BURST` change the counts in any form. The smoke and quick forms run
//!     `cargo test`'s debug build of kubeci.
//!
//! Last, the cost phase (versus_prow_cost.rs): each system started with 1,000 other jobs
//! configured and 10,000 finished builds present, its CPU and memory idle and under pull
//! requests delivered one a second — skipped by `--smoke`; `--quick`: one round, 2,000
//! finished builds (storing 10,000 per system takes minutes), 20 s idle, 10 pull
//! requests; the full form: two rounds (Prow first, then kubeci first), 60 s idle, 50
//! pull requests. `VERSUS_COST_ROUNDS`, `VERSUS_COST_IDLE` (seconds),
//! `VERSUS_COST_PULL_REQUESTS`, `VERSUS_COST_JOBS` and `VERSUS_COST_BUILDS` change them;
//! `VERSUS_COST_ONLY=1` runs this phase alone.

#[path = "versus_prow_background.rs"]
mod background;
#[path = "versus_prow_burst.rs"]
mod burst;
#[path = "versus_prow_cost.rs"]
mod cost;
#[path = "finished_builds.rs"]
mod finished;
#[path = "versus_prow_systems.rs"]
mod systems;
#[path = "versus_prow_world.rs"]
mod world;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use systems::{Side, System, Times};
use world::World;

/// What one system did for `times.len()` pull requests.
struct Run {
    system: System,
    times: Vec<Times>,
    api_requests: usize,
    api_forbidden: Vec<String>,
    /// Its API requests by (verb, resource), and the writes among them.
    api_counts: BTreeMap<(String, String), usize>,
    writes: usize,
    github_calls: BTreeMap<String, usize>,
    /// CPU time its processes used from the first delivery to the last report.
    cpu: Duration,
    /// Their resident memory at the end, MB.
    rss: f64,
}

/// Opens and delivers `count` pull requests (numbers from `first`) to `side` one at a time,
/// each waited for until reported. Its API requests are counted from the first delivery
/// to the last report; its GitHub calls until GitHub has been quiet for a second after it
/// (crier looks at the pull request's comments once it reported a build's end).
fn run(world: &World, side: &Side, first: u64, count: u64) -> Run {
    let start = world.plane.audit_mark();
    let calls_before = world.github.calls().len();
    let (cpu_before, _) = side.cost();
    let mut times = Vec::new();
    for number in first..first + count {
        let (head, body) = world.pull_request(number);
        let sent = Instant::now();
        let status = side.deliver(number, &body);
        if status != 200 {
            panic!(
                "{}: delivery of #{number} answered {status}; its log:\n{}",
                side.system.name(),
                side.log()
            );
        }
        times.push(side.wait_reported(world, number, &head, sent));
    }
    let end = world.plane.audit_mark();
    let (cpu_after, rss) = side.cost();
    until_github_is_quiet(world);
    let audit = world.plane.audit_between((start, end), &side.user);
    let mut github_calls = BTreeMap::new();
    for call in &world.github.calls()[calls_before..] {
        if side.system.made(&call.user_agent) {
            *github_calls
                .entry(format!("{} {}", call.method, shape(&call.path)))
                .or_default() += 1;
        }
    }
    Run {
        system: side.system,
        times,
        api_requests: audit.requests,
        api_forbidden: audit.forbidden,
        api_counts: audit.counts,
        writes: audit.writes,
        github_calls,
        cpu: cpu_after.saturating_sub(cpu_before),
        rss,
    }
}

impl Run {
    /// `other`'s builds and counts added to this run's (a later round of one system).
    fn add(&mut self, other: Run) {
        self.times.extend(other.times);
        self.api_requests += other.api_requests;
        self.api_forbidden.extend(other.api_forbidden);
        for (kind, n) in other.api_counts {
            *self.api_counts.entry(kind).or_default() += n;
        }
        self.writes += other.writes;
        for (kind, n) in other.github_calls {
            *self.github_calls.entry(kind).or_default() += n;
        }
        self.cpu += other.cpu;
        self.rss = self.rss.max(other.rss);
    }
}

/// Waits until the fake GitHub has had no call for a second (at most 10 s).
fn until_github_is_quiet(world: &World) {
    let started = Instant::now();
    let mut last = (world.github.calls().len(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        let now = world.github.calls().len();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

/// A GitHub API path with its numbers and commit ids as placeholders.
fn shape(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
                "{n}"
            } else if segment.len() == 40 && segment.bytes().all(|b| b.is_ascii_hexdigit()) {
                "{sha}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

/// "p50 X, p99 Y" of one of the times.
fn spread(times: &[Times], pick: impl Fn(&Times) -> Option<Duration>) -> String {
    let mut samples: Vec<Duration> = times.iter().filter_map(pick).collect();
    if samples.is_empty() {
        return "not seen".into();
    }
    if samples.len() == 1 {
        return format!("{:.2?}", samples[0]);
    }
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    format!("p50 {p50:.2?}, p99 {p99:.2?}")
}

fn print(run: &Run) {
    let builds = run.times.len();
    println!(
        "== {} ({builds} pull request(s), one at a time)",
        run.system.name()
    );
    println!(
        "  webhook → build pod created:        {}",
        spread(&run.times, |t| t.pod_created)
    );
    println!(
        "  webhook → its container started:    {}",
        spread(&run.times, |t| t.started)
    );
    println!(
        "  webhook → status `success` reported: {}",
        spread(&run.times, |t| Some(t.reported))
    );
    println!(
        "  API requests, first webhook → last report (audit log): {:.1} per build ({:.1} writes), {} refused",
        run.api_requests as f64 / builds as f64,
        run.writes as f64 / builds as f64,
        run.api_forbidden.len()
    );
    for ((verb, resource), n) in &run.api_counts {
        println!(
            "    {verb} {resource:<40} {:>6.2} per build",
            *n as f64 / builds as f64
        );
    }
    println!(
        "  its processes: {:.3} s of CPU per build (first webhook → last report), {:.0} MB resident at the end (most of any round)",
        run.cpu.as_secs_f64() / builds as f64,
        run.rss
    );
    let all: usize = run.github_calls.values().sum();
    println!(
        "  GitHub calls: {:.1} per build",
        all as f64 / builds as f64
    );
    for (kind, n) in &run.github_calls {
        println!("    {kind:<58} {n:>5}");
    }
}

/// Numbers of the pull requests each system is sent, apart.
fn first_number(system: System) -> u64 {
    match system {
        System::Prow => 1,
        System::Kubeci => 500_001,
    }
}

fn start(world: &World, system: System) -> Side {
    let up = Instant::now();
    let side = match system {
        System::Prow => Side::prow(world),
        System::Kubeci => Side::kubeci(world),
    };
    println!("{} up in {:.2?}", system.name(), up.elapsed());
    side
}

/// The count of a form (`--smoke`, `--quick`, the full one), unless `variable` says.
fn count(variable: &str, smoke: u64, quick: u64, full: u64) -> u64 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let default = if args.iter().any(|a| a == "--smoke") {
        smoke
    } else if args.iter().any(|a| a == "--quick") {
        quick
    } else {
        full
    };
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The cost phase's settings and rounds (none in the smoke form).
fn cost_settings() -> (cost::Settings, u64) {
    let counts = background::Counts {
        jobs: count("VERSUS_COST_JOBS", 1_000, 1_000, 1_000).max(1) as usize,
        builds: count("VERSUS_COST_BUILDS", 2_000, 2_000, 10_000) as usize,
    };
    let settings = cost::Settings {
        counts,
        idle: Duration::from_secs(count("VERSUS_COST_IDLE", 0, 20, 60).max(1)),
        pull_requests: count("VERSUS_COST_PULL_REQUESTS", 0, 10, 50).max(1),
    };
    (settings, count("VERSUS_COST_ROUNDS", 0, 1, 2))
}

// Long on purpose: the phases in their order, each system's rounds alternating, then
// every figure printed.
fn main() {
    let cost_only = std::env::var("VERSUS_COST_ONLY").is_ok_and(|v| v == "1");
    let count_each = if cost_only {
        0
    } else {
        count("VERSUS_PULL_REQUESTS", 1, 20, 200)
    };
    let rounds = count("VERSUS_ROUNDS", 1, 2, 4).clamp(1, count_each.max(1));
    let burst_size = if cost_only {
        0
    } else {
        count("VERSUS_BURST", 0, 50, 1_000)
    };
    let (cost_settings, cost_rounds) = cost_settings();
    let started = Instant::now();
    let world = World::new();
    let mut runs: BTreeMap<&str, Run> = BTreeMap::new();
    let mut next = [System::Prow, System::Kubeci].map(|s| (s, first_number(s)));
    // Rounds in the order Prow, kubeci, kubeci, Prow, …: what drifts on the machine over
    // the run weighs on both alike.
    for round in 0..rounds {
        if count_each == 0 {
            break;
        }
        let per_round = count_each / rounds + u64::from(round < count_each % rounds);
        let mut order = next;
        if round % 2 == 1 {
            order.reverse();
        }
        for (system, first) in order {
            let side = start(&world, system);
            let run = run(&world, &side, first, per_round);
            side.stop(&world);
            for (s, n) in next.iter_mut() {
                if *s == system {
                    *n += per_round;
                }
            }
            match runs.get_mut(system.name()) {
                Some(all) => all.add(run),
                None => {
                    runs.insert(system.name(), run);
                }
            }
        }
    }
    let mut bursts = Vec::new();
    if burst_size > 0 {
        for (system, first) in next {
            let side = start(&world, system);
            bursts.push(burst::burst(&world, &side, first, burst_size));
            side.stop(&world);
        }
    }
    let mut costs = Vec::new();
    for round in 0..cost_rounds {
        let mut order = next;
        if round % 2 == 1 {
            order.reverse();
        }
        for (system, first) in order {
            let first = first + burst_size + round * cost_settings.pull_requests;
            let cost = cost::cost(&world, system, first, cost_settings);
            cost::print(&cost);
            costs.push(cost);
        }
    }
    for run in runs.values() {
        print(run);
    }
    for burst in &bursts {
        burst::print(burst);
    }
    for cost in &costs {
        cost::print(cost);
    }
    if !costs.is_empty() {
        cost::summary(&costs);
    }
    for run in runs.values() {
        assert!(
            run.api_forbidden.is_empty(),
            "{}: requests refused: {:?}",
            run.system.name(),
            run.api_forbidden
        );
    }
    println!("versus_prow: done in {:.1?}", started.elapsed());
}
