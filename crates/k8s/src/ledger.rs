//! Reading and writing a job's ledger Lease with optimistic concurrency: a write based on
//! a stale read gets 409 Conflict and is redone on a fresh read, so concurrent replicas
//! never hand out the same build number or start one request twice. Within one replica,
//! the changes asked of one job's ledger while a write of it is under way wait and go in
//! the next write together ([`LedgerWrites`]): a burst of requests of one job costs a few
//! Lease writes, not one each behind the other (nor a conflict each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use kubeci_build::{keys, BuildRequest, JobRef};
use kubeci_engine::approval::{self, Approval};
use kubeci_engine::ledger::{Allocation, Ledger};
use kubeci_engine::BuildSummary;

use crate::{ledger_name, now};

/// How many conflicts in a row one write of a ledger takes before it fails.
const MAX_CONFLICTS: u32 = 100;

/// A change to a job's ledger, applied again on each fresh read; whether to write.
type Change = Box<dyn FnMut(&mut Ledger) -> bool + Send>;

/// Reads the job's ledger Lease from the watch cache, when the turn to write it comes.
pub(crate) type CachedLedger = Box<dyn FnOnce() -> Option<Arc<Lease>> + Send>;

/// A change waiting for its job's next write, and who waits for its outcome.
struct Waiting {
    change: Change,
    done: tokio::sync::oneshot::Sender<Result<(), Arc<kube::Error>>>,
}

/// One job's changes waiting, and the turn to write its ledger.
#[derive(Default)]
struct JobWrites {
    waiting: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

/// This replica's writes of its jobs' ledgers, batched per job.
#[derive(Default)]
pub(crate) struct LedgerWrites {
    jobs: Mutex<HashMap<(String, String), Arc<JobWrites>>>,
}

impl LedgerWrites {
    /// Applies `change` to the ledger of job `job` in the next write of it, with every
    /// other change waiting then, in the order asked; retried as a whole on conflicts.
    /// What `change` returned on the read that was written.
    pub(crate) async fn update<R: Send + 'static>(
        &self,
        client: &kube::Client,
        namespace: &str,
        job: &str,
        cache: CachedLedger,
        mut change: impl FnMut(&mut Ledger) -> (R, bool) + Send + 'static,
    ) -> Result<R, Arc<kube::Error>> {
        let key = (namespace.to_owned(), job.to_owned());
        let writes = {
            let mut jobs = self.jobs.lock().expect("the ledger writes lock");
            jobs.entry(key.clone()).or_default().clone()
        };
        let ours = writes.clone();
        let result = Arc::new(Mutex::new(None));
        let (done, outcome) = tokio::sync::oneshot::channel();
        let kept = result.clone();
        let change: Change = Box::new(move |ledger| {
            let (value, write) = change(ledger);
            *kept.lock().expect("the result lock") = Some(value);
            write
        });
        (writes.waiting.lock().expect("the waiting lock")).push(Waiting { change, done });
        // Whoever gets the turn writes every change waiting (its own, unless the writer
        // before took it along) — in a task of its own: a caller that goes away (its
        // client hung up) neither drops the other changes it took nor leaves a write
        // half done.
        let (client, namespace, job) = (client.clone(), namespace.to_owned(), job.to_owned());
        let writer = tokio::spawn(async move {
            let _turn = writes.turn.lock().await;
            let batch = std::mem::take(&mut *writes.waiting.lock().expect("the waiting lock"));
            if !batch.is_empty() {
                let cached = cache().map(|lease| (*lease).clone());
                write_batch(&client, &namespace, &job, cached, batch).await;
            }
        });
        // Its outcome comes through `outcome`; a writer that failed dropped it unanswered.
        let _ = writer.await;
        self.forget_if_unused(&key, ours);
        let written = outcome.await.unwrap_or_else(|_| {
            Err(Arc::new(kube::Error::Service(
                "the write of the job's ledger stopped before it answered".into(),
            )))
        });
        written?;
        let value = result.lock().expect("the result lock").take();
        Ok(value.expect("a written change ran"))
    }
}

impl LedgerWrites {
    /// Lets a job's entry go once no request of it is under way (the map holds one entry
    /// per job being written, not per job ever written).
    fn forget_if_unused(&self, key: &(String, String), ours: Arc<JobWrites>) {
        let mut jobs = self.jobs.lock().expect("the ledger writes lock");
        // The map's reference and ours: no other request holds it, nor can take it while
        // the map is locked.
        let unused = Arc::strong_count(&ours) == 2
            && ours.waiting.lock().expect("the waiting lock").is_empty();
        if unused && jobs.get(key).is_some_and(|kept| Arc::ptr_eq(kept, &ours)) {
            jobs.remove(key);
        }
        // Let go while the map is locked: whoever looks next counts without it.
        drop(ours);
    }

    #[cfg(test)]
    fn jobs_held(&self) -> usize {
        self.jobs.lock().expect("the ledger writes lock").len()
    }
}

/// Writes `batch` in one write of the job's ledger, and tells each change how it went.
async fn write_batch(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    cached: Option<Lease>,
    mut batch: Vec<Waiting>,
) {
    let written = update(client, namespace, job, cached, |ledger| {
        let mut write = false;
        for waiting in &mut batch {
            write |= (waiting.change)(ledger);
        }
        ((), write)
    })
    .await
    .map_err(Arc::new);
    for waiting in batch {
        let _gone = waiting.done.send(written.clone());
    }
}

/// Applies `change` to the ledger of job `job` and writes it back when it says so;
/// retried on conflicts. Returns what `change` returned.
///
/// The first try is made on `cached` (the watch cache's copy, when it has one), which is
/// current but for a write in the last moments: a write from a stale copy gets 409 and is
/// redone on a fresh read, so a cached copy saves a read and costs nothing in safety.
pub(crate) async fn update<R>(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    cached: Option<Lease>,
    mut change: impl FnMut(&mut Ledger) -> (R, bool),
) -> Result<R, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = ledger_name(job);
    let mut conflicts = 0;
    let mut cached = cached;
    loop {
        let from_cache = cached.is_some();
        let existing = match cached.take() {
            Some(lease) => Some(lease),
            None => leases.get_opt(&name).await?,
        };
        let mut lease = existing.clone().unwrap_or_else(|| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {keys::MANAGED_BY: keys::MANAGER, keys::JOB: job}},
            }))
            .expect("a valid Lease")
        });
        let mut ledger = Ledger::read(lease.annotations());
        let (result, write) = change(&mut ledger);
        if !write {
            return Ok(result);
        }
        ledger.write(lease.annotations_mut());
        let written = match existing {
            None => leases.create(&PostParams::default(), &lease).await,
            Some(_) => leases.replace(&name, &PostParams::default(), &lease).await,
        };
        match written {
            Ok(_) => return Ok(result),
            // Another writer was first: read again — a bounded number of times, so a
            // ledger fought over without end fails (and is retried later) instead of
            // holding its job's writes.
            Err(kube::Error::Api(status)) if status.code == 409 && conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                continue;
            }
            // The cached copy named a Lease deleted since: read it as it is.
            Err(kube::Error::Api(status)) if status.code == 404 && from_cache => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a request asks of the ledger: a number for `build` above `floor` (the highest
/// the archive holds), and a cron run's time to record with it.
pub(crate) struct Asked {
    pub build: BuildRequest,
    pub cron_run: Option<i64>,
    pub floor: Option<u64>,
}

/// Gives a request its build number in the job's ledger. Returns the allocation and, when
/// its Job must be created (a new request, or a retried one whose Job was never made), the
/// request with its number.
pub(crate) async fn allocate(
    writes: &LedgerWrites,
    client: &kube::Client,
    cache: CachedLedger,
    JobRef { namespace, job }: JobRef<'_>,
    key: &str,
    present: Vec<BuildSummary>,
    asked: Asked,
) -> Result<(Allocation, Option<BuildRequest>), Arc<kube::Error>> {
    let Asked {
        build,
        cron_run,
        floor,
    } = asked;
    let key = key.to_owned();
    writes
        .update(client, namespace, job, cache, move |ledger| {
            let cron_advanced =
                cron_run.is_some_and(|t| ledger.last_cron_run.is_none_or(|last| t > last));
            if cron_advanced {
                ledger.last_cron_run = cron_run;
            }
            ledger.raise_to(floor);
            let allocation = ledger.allocate(&key, &present, now(), |number| BuildRequest {
                number,
                ..build.clone()
            });
            let to_create = ledger.find(&key).and_then(|entry| entry.pending.clone());
            let write = allocation.fresh || cron_advanced;
            ((allocation, to_create), write)
        })
        .await
}

/// Records an admin's approval in the job's ledger.
pub(crate) async fn approve(
    writes: &LedgerWrites,
    client: &kube::Client,
    cache: CachedLedger,
    namespace: &str,
    job: &str,
    approval: &Approval,
) -> Result<(), Arc<kube::Error>> {
    let approval = approval.clone();
    writes
        .update(client, namespace, job, cache, move |ledger| {
            let changed = approval::record(&mut ledger.approvals, approval.clone(), now());
            ((), changed)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeci_testkit::FakeApiServer;

    const WEB: JobRef<'static> = JobRef {
        namespace: "default",
        job: "web",
    };

    fn asked() -> Asked {
        Asked {
            build: BuildRequest::manual(0),
            cron_run: None,
            floor: None,
        }
    }

    /// Polls `done` until it holds, for at most ten seconds.
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..1_000 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("not reached within 10 s");
    }

    fn waiting(writes: &LedgerWrites) -> usize {
        let jobs = writes.jobs.lock().unwrap();
        let job = jobs.get(&("default".to_owned(), "web".to_owned()));
        job.map_or(0, |job| job.waiting.lock().unwrap().len())
    }

    // One thread: a request pushes its change and queues for its turn in one poll.
    #[tokio::test]
    async fn a_request_that_goes_away_mid_write_takes_no_other_request_of_its_batch_with_it() {
        let server = FakeApiServer::start().await;
        let client = server.client().await;
        let writes = Arc::new(LedgerWrites::default());
        let ask = |key: &'static str| {
            let (writes, client) = (writes.clone(), client.clone());
            tokio::spawn(async move {
                let uncached = Box::new(|| None);
                let asked = allocate(&writes, &client, uncached, WEB, key, Vec::new(), asked());
                asked.await.map(|(allocation, _)| allocation.number)
            })
        };
        // `w` creates the ledger (held at the API server); `a`, `b`, `c` wait meanwhile,
        // and go in the next write together, its update held too.
        server.gate().hold("create", "leases");
        let w = ask("w");
        until(|| server.gate().held() == 1).await;
        let (a, b, c) = (ask("a"), ask("b"), ask("c"));
        until(|| waiting(&writes) == 3).await;
        server.gate().release(true);
        server.gate().hold("update", "leases");
        until(|| server.gate().held() == 1).await;
        assert_eq!(waiting(&writes), 0, "the three went in one write");
        // The caller whose turn it was goes away (its client hung up) mid-write.
        a.abort();
        let _ = a.await;
        server.gate().release(true);
        let mut numbers = Vec::new();
        for (key, asked) in [("w", w), ("b", b), ("c", c)] {
            let answered = tokio::time::timeout(std::time::Duration::from_secs(10), asked).await;
            let answered = answered.unwrap_or_else(|_| panic!("`{key}` answered"));
            let number = answered.unwrap_or_else(|e| panic!("`{key}`'s request: {e}"));
            numbers.push(number.unwrap_or_else(|e| panic!("`{key}` numbered: {e}")));
        }
        // Each was written once, with a number of its own.
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let lease = leases.get(&ledger_name("web")).await.unwrap();
        let ledger = Ledger::read(lease.annotations());
        let kept: Vec<Option<u64>> = (["w", "b", "c"].iter())
            .map(|key| ledger.find(key).map(|entry| entry.number))
            .collect();
        assert_eq!(kept, numbers.iter().copied().map(Some).collect::<Vec<_>>());
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 3, "{numbers:?}");
        assert_eq!(
            writes.jobs_held(),
            0,
            "a job's entry goes once its writes are done"
        );
    }

    #[tokio::test]
    async fn a_write_tries_the_cached_lease_first_and_reads_afresh_only_when_it_is_stale() {
        let server = FakeApiServer::start().await;
        let client = server.client().await;
        let writes = LedgerWrites::default();
        let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
        let number = |key: &'static str, cached: Option<Lease>| {
            let cache: CachedLedger = Box::new(move || cached.map(Arc::new));
            let asked = allocate(&writes, &client, cache, WEB, key, Vec::new(), asked());
            async { asked.await.unwrap().0.number }
        };
        assert_eq!(number("first", None).await, 1);
        let current = leases.get(&ledger_name("web")).await.unwrap();
        let reads = |server: &FakeApiServer| {
            (server.gate().requests().iter())
                .filter(|r| r.verb == "get" && r.resource == "leases")
                .count()
        };
        server.gate().clear_requests();
        assert_eq!(number("second", Some(current.clone())).await, 2);
        assert_eq!(reads(&server), 0, "the cached copy was current: no read");
        // `current` is stale now: its write conflicts, and is redone on a fresh read.
        assert_eq!(number("third", Some(current)).await, 3);
        assert_eq!(reads(&server), 1);
        let ledger = Ledger::read(leases.get(&ledger_name("web")).await.unwrap().annotations());
        let numbers: Vec<u64> = ledger.entries.iter().map(|e| e.number).collect();
        assert_eq!(numbers, [1, 2, 3], "no number given twice");
    }
}
