//! The cost phase of versus_prow (issue 31): what each system's processes cost idle and
//! loaded with a background of jobs configured and finished builds present
//! (versus_prow_background.rs; 1,000 and 10,000). Per system, in a fresh namespace:
//!
//! 1. the background stored (16 requests in flight), then the system started;
//! 2. start → ready, with everything listed: kubeci's `/readyz` (answered once its engine
//!    has its first complete view); for Prow, every command's health or metrics endpoint,
//!    then plank's controller starting its workers (logged once its caches of ProwJobs and
//!    pods are synced), sinker's first pass over every ProwJob and pod done (logged), and
//!    crier's list of ProwJobs answered (the API server's audit log; crier logs nothing
//!    when its cache is synced and serves no readiness endpoint);
//! 3. a settling pause (the first pass over what was listed), then idle: CPU (`utime +
//!    stime` of `/proc/PID/stat`, summed over its processes) and RSS over a quiet spell;
//! 4. loaded: pull requests of the measured job delivered one a second, each waited for
//!    until reported `success`: CPU from the first delivery to the last report, per build,
//!    and the most resident memory seen (sampled every 100 ms);
//! 5. stopped, and its namespace waited for until gone, so the next system does not share
//!    the control plane with its teardown.
//!
//! The driver does not watch the system's pods in this phase (it would list the 10,000
//! background pods while the system starts).

use std::collections::BTreeSet;
use std::io::{Read, Seek};
use std::time::{Duration, Instant};

use super::background::{self, Counts};
use super::systems::{Background, Side, System};
use super::world::{cpu_time, rss_mb, World};

/// How long after ready the system is left to go through what it listed.
const SETTLE: Duration = Duration::from_secs(10);
/// How long a system may take to be ready, and the pull requests to be reported.
const PATIENCE: Duration = Duration::from_secs(300);

/// The phase's counts.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub counts: Counts,
    pub idle: Duration,
    pub pull_requests: u64,
}

/// What one process cost in each part.
pub struct Process {
    pub name: &'static str,
    /// CPU from its start to ready, while settling, idle and loaded.
    pub cpu: [Duration; 4],
    /// Resident memory at the end of the idle spell and the most seen loaded, MB.
    pub rss: [f64; 2],
}

/// What one system cost in one round.
pub struct Cost {
    pub system: System,
    pub settings: Settings,
    pub stored: Duration,
    /// Launch → ready with everything listed.
    pub ready: Duration,
    /// Launch → its endpoints answered (Prow's health endpoints; kubeci's `/readyz`).
    pub answered: Duration,
    pub processes: Vec<Process>,
    /// Most resident memory of all its processes together seen while idle and loaded, MB.
    pub idle_rss_max: f64,
    pub loaded_rss_max: f64,
    /// First delivery → last report.
    pub loaded: Duration,
    /// The namespace gone after the system stopped.
    pub removed: Duration,
}

impl Cost {
    fn cpu(&self, part: usize) -> Duration {
        self.processes.iter().map(|p| p.cpu[part]).sum()
    }

    pub fn idle_cpu_per_minute(&self) -> f64 {
        self.cpu(2).as_secs_f64() * 60.0 / self.settings.idle.as_secs_f64()
    }

    pub fn idle_rss(&self) -> f64 {
        self.processes.iter().map(|p| p.rss[0]).sum()
    }

    pub fn cpu_per_build(&self) -> f64 {
        self.cpu(3).as_secs_f64() / self.settings.pull_requests.max(1) as f64
    }
}

/// CPU of each of `side`'s processes now.
fn cpu_now(side: &Side) -> Vec<Duration> {
    side.pids().into_iter().map(cpu_time).collect()
}

fn rss_now(side: &Side) -> Vec<f64> {
    side.pids().into_iter().map(rss_mb).collect()
}

fn minus(after: &[Duration], before: &[Duration]) -> Vec<Duration> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect()
}

/// One round of the phase for `system`; pull requests numbered from `first`.
pub fn cost(world: &World, system: System, first: u64, settings: Settings) -> Cost {
    let stored = std::cell::Cell::new((Duration::ZERO, 0));
    let prepare = |ns: &str| {
        let took = match system {
            System::Kubeci => background::store_kubeci(world, ns, settings.counts),
            System::Prow => background::store_prow(world, ns, settings.counts),
        };
        stored.set((took, world.plane.audit_mark()));
    };
    let given = Background {
        presubmits: match system {
            System::Kubeci => Vec::new(),
            System::Prow => background::prow_presubmits(settings.counts),
        },
        sinker_defaults: true,
        prepare: Some(&prepare),
        unwatched: true,
    };
    let side = match system {
        System::Kubeci => Side::kubeci_with(world, &given),
        System::Prow => Side::prow_with(world, &given),
    };
    let (stored, mark) = stored.get();
    if system == System::Prow {
        wait_listed(world, &side, mark);
    }
    let ready = side.launched.elapsed();
    let at_ready = cpu_now(&side);
    std::thread::sleep(SETTLE);
    let settled = cpu_now(&side);
    let mut idle_rss_max: f64 = 0.0;
    let idle_started = Instant::now();
    while idle_started.elapsed() < settings.idle {
        idle_rss_max = idle_rss_max.max(rss_now(&side).iter().sum());
        std::thread::sleep(Duration::from_millis(100));
    }
    let idled = cpu_now(&side);
    let idle_rss = rss_now(&side);
    let (loaded, loaded_rss, loaded_rss_max) = load(world, &side, first, settings.pull_requests);
    let after = cpu_now(&side);
    let parts = [
        at_ready.clone(),
        minus(&settled, &at_ready),
        minus(&idled, &settled),
        minus(&after, &idled),
    ];
    let processes = (side.processes().into_iter().enumerate())
        .map(|(i, (name, _))| Process {
            name,
            cpu: parts.clone().map(|part| part[i]),
            rss: [idle_rss[i], loaded_rss[i]],
        })
        .collect();
    let answered = side.ready;
    let removing = Instant::now();
    let namespace = side.namespace.clone();
    side.stop(world);
    wait_gone(world, &namespace);
    Cost {
        system,
        settings,
        stored,
        ready,
        answered,
        processes,
        idle_rss_max,
        loaded_rss_max,
        loaded,
        removed: removing.elapsed(),
    }
}

/// Delivers `count` pull requests (numbers from `first`) one a second and waits until
/// each is reported: (first delivery → last report, each process's most RSS seen, their
/// sum's most).
fn load(world: &World, side: &Side, first: u64, count: u64) -> (Duration, Vec<f64>, f64) {
    let prepared = world.pull_requests(first, count);
    let heads: BTreeSet<&str> = prepared.iter().map(|(_, head, _)| head.as_str()).collect();
    let context = side.system.context();
    let mut most = vec![0.0f64; side.pids().len()];
    let mut most_together: f64 = 0.0;
    let mut sampled = Instant::now() - Duration::from_secs(1);
    let mut delivered = 0;
    let started = Instant::now();
    loop {
        if delivered < prepared.len() && started.elapsed().as_secs() >= delivered as u64 {
            let (number, _, body) = &prepared[delivered];
            let status = side.deliver(*number, body);
            assert_eq!(status, 200, "{}: delivery of #{number}", side.system.name());
            delivered += 1;
        }
        if sampled.elapsed() >= Duration::from_millis(100) {
            let rss = rss_now(side);
            for (most, now) in most.iter_mut().zip(&rss) {
                *most = most.max(*now);
            }
            most_together = most_together.max(rss.iter().sum());
            sampled = Instant::now();
        }
        if delivered == prepared.len()
            && world.ended(context, &heads, side.system.name()) == heads.len()
        {
            return (started.elapsed(), most, most_together);
        }
        assert!(
            started.elapsed() < PATIENCE + Duration::from_secs(count),
            "{}: not all reported; {}",
            side.system.name(),
            side.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until Prow has listed everything (see the module's doc).
fn wait_listed(world: &World, side: &Side, mark: u64) {
    let started = Instant::now();
    let mut audit = std::fs::File::open(&world.plane.audit_log).unwrap();
    audit.seek(std::io::SeekFrom::Start(mark)).unwrap();
    let mut bytes = Vec::new();
    let crier_listed = |line: &&str| {
        line.contains("\"userAgent\":\"crier")
            && line.contains("\"verb\":\"list\"")
            && line.contains("\"resource\":\"prowjobs\"")
            && line.contains("\"stage\":\"ResponseComplete\"")
    };
    loop {
        audit.read_to_end(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let plank = side.log_of("prow-controller-manager");
        let sinker = side.log_of("sinker");
        if plank.contains("Starting workers")
            && sinker.contains("Sinker reconciliation complete")
            && text.lines().any(|l| crier_listed(&l))
        {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "Prow never listed everything; {}",
            side.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until namespace `name` is gone.
fn wait_gone(world: &World, name: &str) {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(world.plane.client.clone());
    let started = Instant::now();
    while world
        .runtime
        .block_on(namespaces.get_opt(name))
        .unwrap()
        .is_some()
    {
        assert!(started.elapsed() < PATIENCE, "namespace {name} not gone");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn print(cost: &Cost) {
    let Settings {
        counts,
        idle,
        pull_requests,
    } = cost.settings;
    println!(
        "== {}: cost with {} other jobs configured and {} finished builds (+ pods) present (stored in {:.1?}; namespace gone {:.1?} after stop)",
        cost.system.name(),
        counts.jobs,
        counts.builds,
        cost.stored,
        cost.removed
    );
    println!(
        "  start → ready, everything listed: {:.2?} (its endpoints answered at {:.2?}); CPU to get there {}",
        cost.ready,
        cost.answered,
        secs(cost.cpu(0))
    );
    println!(
        "  idle {idle:?} (after {SETTLE:?} settling: {} CPU): CPU {} = {:.3} s a minute; RSS {:.1} MB at the end, {:.1} MB most",
        secs(cost.cpu(1)),
        secs(cost.cpu(2)),
        cost.idle_cpu_per_minute(),
        cost.idle_rss(),
        cost.idle_rss_max
    );
    println!(
        "  loaded: {pull_requests} pull requests one a second, all reported in {:.1?}: CPU {} = {:.3} s per build; RSS {:.1} MB most",
        cost.loaded,
        secs(cost.cpu(3)),
        cost.cpu_per_build(),
        cost.loaded_rss_max
    );
    for p in &cost.processes {
        println!(
            "    {:<24} CPU start {}, settle {}, idle {}, loaded {}; RSS idle {:.1} MB, loaded most {:.1} MB",
            p.name,
            secs(p.cpu[0]),
            secs(p.cpu[1]),
            secs(p.cpu[2]),
            secs(p.cpu[3]),
            p.rss[0],
            p.rss[1]
        );
    }
}

/// One figure of a [`Cost`].
type Figure = fn(&Cost) -> f64;

/// One line per figure: each system's value over the rounds (mean, and the range).
pub fn summary(costs: &[Cost]) {
    println!("== cost, per system over its rounds: mean [min–max]");
    let figures: [(&str, Figure); 6] = [
        ("start → ready, everything listed (s)", |c| {
            c.ready.as_secs_f64()
        }),
        ("CPU start → ready (s)", |c| c.cpu(0).as_secs_f64()),
        ("idle CPU per minute (s)", Cost::idle_cpu_per_minute),
        ("idle RSS (MB)", Cost::idle_rss),
        ("loaded CPU per build (s)", Cost::cpu_per_build),
        ("loaded RSS, most (MB)", |c| c.loaded_rss_max),
    ];
    for (name, figure) in figures {
        let mut line = format!("  {name:<38}");
        for system in [System::Prow, System::Kubeci] {
            let values: Vec<f64> = (costs.iter())
                .filter(|c| c.system == system)
                .map(figure)
                .collect();
            if values.is_empty() {
                continue;
            }
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let (min, max) = values
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            line.push_str(&format!(
                " {}: {mean:.3} [{min:.3}–{max:.3}]",
                system.name()
            ));
        }
        println!("{line}");
    }
}
