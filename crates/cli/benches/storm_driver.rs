//! The webhook storm (issue 9): signed `pull_request` deliveries of many heads, each
//! delivered one to three times, with forgeries mixed in (another secret's signature, no
//! signature, SHA-1 only, a body altered after signing, garbage), shuffled by a seeded
//! generator and sent by several clients at once to the real `kubeci serve --kubernetes`
//! on the fake API server; kubeci's memory sampled throughout. Afterwards the cluster is
//! read: every genuine head built exactly once, no forged head built at all.
//!
//! Shared by the bounded test (`crates/cli/tests/it/storm.rs`) and the full run
//! (`cargo bench -p kubeci --bench storm`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const SECRET: &str = "storm-webhook-secret";
pub const NAMESPACE: &str = "storm";

pub struct Config {
    /// Distinct pull request heads, each delivered genuinely one to three times.
    pub heads: usize,
    /// Forged deliveries, each for a head of its own.
    pub forgeries: usize,
    pub clients: usize,
    pub seed: u64,
}

#[derive(Debug)]
pub struct Report {
    pub deliveries: usize,
    pub duplicates: usize,
    pub forgeries: usize,
    pub seconds: f64,
    /// Answers by status, genuine and forged apart.
    pub genuine_statuses: BTreeMap<u16, usize>,
    pub forged_statuses: BTreeMap<u16, usize>,
    /// Genuine heads delivered again after a non-200 answer, as GitHub would.
    pub redelivered: usize,
    /// Build Jobs per genuine head that did not get exactly one.
    pub heads_not_built_once: Vec<(String, usize)>,
    /// Build Jobs of forged heads.
    pub forged_builds: Vec<String>,
    pub jobs_created: usize,
    pub numbers_unique: bool,
    pub rss_before_mb: f64,
    pub rss_max_mb: f64,
}

/// The job ConfigMaps: `hello` builds the fixture's repository for its author.
pub fn configmaps(jobs: usize) -> Vec<Value> {
    (0..jobs)
        .map(|i| {
            let job = if i == 0 {
                "- job:\n    name: hello\n    git:\n      url: git@github.com:Codertocat/Hello-World.git\n    run_command: make test\n    cancel_superseded: false\n    ghprb:\n      enabled: true\n      whitelisted_users: [Codertocat]\n".to_owned()
            } else {
                format!("- job:\n    name: job-{i}\n    git:\n      url: git@github.com:org/repo-{i}.git\n    run_command: make test\n    ghprb:\n      enabled: true\n")
            };
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("job-{i}"), "namespace": NAMESPACE, "labels": {"ci-job-spec": "true"}},
                "data": {"job.yaml": job},
            })
        })
        .collect()
}

/// xorshift64*: the same seed, the same storm.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Delivery {
    head: String,
    forged: bool,
    id: String,
    signature: Option<String>,
    body: Vec<u8>,
}

fn payload(fixture: &Value, number: u64, head: &str) -> Vec<u8> {
    let mut delivery = fixture.clone();
    delivery["pull_request"]["head"]["sha"] = head.into();
    delivery["pull_request"]["number"] = number.into();
    delivery["number"] = number.into();
    serde_json::to_vec(&delivery).unwrap()
}

fn sign(secret: &str, body: &[u8]) -> String {
    kubeci_github::signature::sign(secret.as_bytes(), body)
}

/// A fake GitHub showing each genuine head as its pull request's current head (kubeci
/// checks that before building), and the token to call it with.
pub fn github(config: &Config, fixture: &Value) -> kubeci_testkit::github::FakeGitHub {
    let github = tokio::runtime::Handle::current().block_on(
        kubeci_testkit::github::FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot"),
    );
    let repo = fixture["repository"]["full_name"].as_str().unwrap();
    for i in 0..config.heads {
        let head = format!("{:040x}", 0x1000_0000 + i);
        let body = payload(fixture, 10_000 + i as u64, &head);
        let delivery: Value = serde_json::from_slice(&body).unwrap();
        github.set_pull_request(repo, delivery["pull_request"].clone());
    }
    github
}

/// The fake GitHub of [`github`] and kubeci taking the storm's webhooks, calling it.
pub fn start(
    server: &kubeci_testkit::FakeApiServer,
    config: &Config,
    fixture: &Value,
) -> (kubeci_testkit::github::FakeGitHub, super::support::Kubeci) {
    let github = github(config, fixture);
    let kubeci = super::support::start_for_github(server, SECRET, &github.url(), GITHUB_TOKEN);
    (github, kubeci)
}

/// The token of [`github`].
pub const GITHUB_TOKEN: &str = "storm-github-token";

fn deliveries(config: &Config, fixture: &Value, rng: &mut Rng) -> (Vec<Delivery>, usize) {
    let mut all = Vec::new();
    let mut duplicates = 0;
    for i in 0..config.heads {
        let head = format!("{:040x}", 0x1000_0000 + i);
        let body = payload(fixture, 10_000 + i as u64, &head);
        let signature = Some(sign(SECRET, &body));
        let copies = 1 + rng.below(3);
        duplicates += copies - 1;
        for copy in 0..copies {
            // A redelivery keeps its delivery id; GitHub may also send the event twice.
            let id = format!("genuine-{i}-{}", copy.min(1));
            all.push(Delivery {
                head: head.clone(),
                forged: false,
                id,
                signature: signature.clone(),
                body: body.clone(),
            });
        }
    }
    for i in 0..config.forgeries {
        let head = format!("{:040x}", 0xf000_0000_u64 + i as u64);
        let body = payload(fixture, 50_000 + i as u64, &head);
        let signature = match i % 5 {
            0 => Some(sign("another-secret", &body)),
            1 => None,
            2 => Some(format!("sha1={}", "0".repeat(40))),
            3 => {
                // Signed, then altered: the head a forger wants built.
                let original = payload(fixture, 50_000 + i as u64, &format!("{:040x}", i));
                Some(sign(SECRET, &original))
            }
            _ => Some(format!("sha256={}", "ab".repeat(32))),
        };
        all.push(Delivery {
            head,
            forged: true,
            id: format!("forged-{i}"),
            signature,
            body,
        });
    }
    for i in (1..all.len()).rev() {
        let j = rng.below(i + 1);
        all.swap(i, j);
    }
    (all, duplicates)
}

fn deliver(port: u16, delivery: &Delivery) -> u16 {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let signature = delivery
        .signature
        .as_ref()
        .map(|s| format!("X-Hub-Signature-256: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nX-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {}\r\n{signature}Content-Length: {}\r\nConnection: close\r\n\r\n",
        delivery.id,
        delivery.body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let _ = stream.write_all(&delivery.body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(response.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

/// Runs the storm against kubeci (`port`, `pid`) serving the jobs of [`configmaps`] from
/// `server`, and reads the outcome from the cluster.
pub fn run(
    server: &kubeci_testkit::FakeApiServer,
    port: u16,
    pid: u32,
    fixture: &Value,
    config: &Config,
) -> Report {
    let mut rng = Rng(config.seed | 1);
    let (all, duplicates) = deliveries(config, fixture, &mut rng);
    let all = Arc::new(all);
    let rss_before_mb = super::support::rss_mb(pid);
    let rss = super::support::PeakRss::start(pid, Duration::from_millis(50));
    let statuses = Arc::new(Mutex::new(vec![0u16; all.len()]));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..config.clients)
        .map(|_| {
            let (all, statuses, next) = (all.clone(), statuses.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(delivery) = all.get(i) else { break };
                let status = deliver(port, delivery);
                statuses.lock().unwrap()[i] = status;
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    // As GitHub does: a genuine delivery not answered 200 is delivered again (bounded).
    let mut statuses = statuses.lock().unwrap().clone();
    let mut redelivered = 0;
    for _ in 0..5 {
        let failed: Vec<usize> = (0..all.len())
            .filter(|i| !all[*i].forged && statuses[*i] != 200)
            .collect();
        if failed.is_empty() {
            break;
        }
        for i in failed {
            redelivered += 1;
            statuses[i] = deliver(port, &all[i]);
        }
    }
    let max = rss.stop();

    let mut genuine_statuses = BTreeMap::new();
    let mut forged_statuses = BTreeMap::new();
    for (delivery, status) in all.iter().zip(&statuses) {
        let counts = if delivery.forged {
            &mut forged_statuses
        } else {
            &mut genuine_statuses
        };
        *counts.entry(*status).or_insert(0) += 1;
    }

    // The cluster's account: build Jobs by head, and their numbers.
    let jobs: Vec<Value> = {
        let store = server.store();
        let resource =
            kubeci_testkit::resources::find("batch", "v1", "jobs").expect("jobs are served");
        store
            .current(resource, Some(NAMESPACE))
            .into_iter()
            .map(|j| (*j).clone())
            .collect()
    };
    let mut by_head: BTreeMap<String, usize> = BTreeMap::new();
    let mut numbers = Vec::new();
    for job in &jobs {
        if let Some(commit) = job["metadata"]["annotations"]["kubeci.io/commit"].as_str() {
            *by_head.entry(commit.to_owned()).or_insert(0) += 1;
        }
        numbers.push(job["metadata"]["labels"]["kubeci.io/build"].clone());
    }
    let heads_not_built_once = (0..config.heads)
        .map(|i| format!("{:040x}", 0x1000_0000 + i))
        .map(|head| {
            let count = by_head.get(&head).copied().unwrap_or(0);
            (head, count)
        })
        .filter(|(_, count)| *count != 1)
        .collect();
    let forged_builds = all
        .iter()
        .filter(|d| d.forged && by_head.contains_key(&d.head))
        .map(|d| d.head.clone())
        .collect();
    let mut unique = numbers.clone();
    unique.sort_by_key(|n| n.to_string());
    unique.dedup();
    Report {
        deliveries: all.len(),
        duplicates,
        forgeries: config.forgeries,
        seconds,
        genuine_statuses,
        forged_statuses,
        redelivered,
        heads_not_built_once,
        forged_builds,
        jobs_created: jobs.len(),
        numbers_unique: unique.len() == numbers.len(),
        rss_before_mb,
        rss_max_mb: max,
    }
}

/// GitHub's `pull_request.opened` payload, as recorded.
pub fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/github-webhooks/pull_request.opened.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}
