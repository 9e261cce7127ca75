//! Reading and writing a job's ledger Lease with optimistic concurrency: a write based on
//! a stale read gets 409 Conflict and is redone on a fresh read, so concurrent replicas
//! never hand out the same build number or start one request twice.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use kubeci_build::{keys, BuildRequest};
use kubeci_engine::approval::{self, Approval};
use kubeci_engine::ledger::{Allocation, Ledger};
use kubeci_engine::BuildSummary;

use crate::{ledger_name, now};

/// Applies `change` to the ledger of job `job` and writes it back when it says so;
/// retried on conflicts. Returns what `change` returned.
pub(crate) async fn update<R>(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    mut change: impl FnMut(&mut Ledger) -> (R, bool),
) -> Result<R, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let name = ledger_name(job);
    loop {
        let existing = leases.get_opt(&name).await?;
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
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
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
    client: &kube::Client,
    namespace: &str,
    job: &str,
    key: &str,
    present: &[BuildSummary],
    asked: Asked,
) -> Result<(Allocation, Option<BuildRequest>), kube::Error> {
    let Asked {
        build,
        cron_run,
        floor,
    } = asked;
    update(client, namespace, job, |ledger| {
        let cron_advanced =
            cron_run.is_some_and(|t| ledger.last_cron_run.is_none_or(|last| t > last));
        if cron_advanced {
            ledger.last_cron_run = cron_run;
        }
        ledger.raise_to(floor);
        let allocation = ledger.allocate(key, present, now(), |number| BuildRequest {
            number,
            ..build.clone()
        });
        let to_create = ledger.find(key).and_then(|entry| entry.pending.clone());
        let write = allocation.fresh || cron_advanced;
        ((allocation, to_create), write)
    })
    .await
}

/// Records an admin's approval in the job's ledger.
pub(crate) async fn approve(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    approval: &Approval,
) -> Result<(), kube::Error> {
    update(client, namespace, job, |ledger| {
        let changed = approval::record(&mut ledger.approvals, approval.clone(), now());
        ((), changed)
    })
    .await
}
