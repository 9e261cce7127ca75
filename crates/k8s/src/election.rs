//! Leader election over a `coordination.k8s.io` Lease: take, renew, follow (deciding with
//! `kubeci_engine::leader`), and give it back when kubeci stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kubeci_engine::leader::{self, LeaseDecision, LeaseRecord, Observed};
use kubeci_engine::scheduler::Turn;

use crate::Cluster;

/// Holds or follows the leader Lease until kubeci stops. While it holds it,
/// `leading_until` says until when it surely does (renewals come every third of the
/// lease's duration). A follower also tries whenever the Lease changes (it watches it), so
/// a Lease given back by a stopping leader is taken at once. What it last saw of the Lease
/// is kept between attempts: a held Lease expires by this replica's clock, a duration after
/// its record last changed (`engine::leader::Observed`).
pub(crate) async fn elect(cluster: Arc<Cluster>) {
    use futures_util::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let election = cluster.settings.election.clone();
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &election.namespace);
    let duration_ms = i64::try_from(election.lease_duration.as_millis()).unwrap_or(i64::MAX);
    let period = election.lease_duration / 3;
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={}", election.name));
    let mut changes = watcher(leases.clone(), only_ours).default_backoff().boxed();
    let mut observed = None;
    loop {
        let turn = cluster.election_turn.lock().await;
        if cluster.stopping.load(Ordering::SeqCst) {
            return;
        }
        let started = cluster.clock_ms();
        let was = cluster.is_leader();
        let attempt = try_lead(
            &leases,
            &election.name,
            &cluster.settings.identity,
            duration_ms,
            was,
            &mut observed,
        )
        .await;
        match attempt {
            Ok(Turn::Lead {
                predecessor_may_be_reporting,
            }) => {
                if !was {
                    cluster
                        .predecessor_may_be_reporting
                        .store(predecessor_may_be_reporting, Ordering::SeqCst);
                }
                cluster
                    .leading_until
                    .store(started + duration_ms * 2 / 3, Ordering::SeqCst);
                if !was {
                    tracing::info!(identity = %cluster.settings.identity, "this replica leads");
                    cluster.changed.notify_one();
                }
            }
            Ok(Turn::Wait) => cluster.leading_until.store(0, Ordering::SeqCst),
            // Leadership lapses by itself if renewals keep failing.
            Err(e) => {
                cluster
                    .common
                    .counters
                    .increment(kubeci_engine::scheduler::RECONCILE_ERRORS, &["lease"]);
                tracing::warn!(error = %e, "cannot renew the leader Lease")
            }
        }
        drop(turn);
        if cluster.is_leader() {
            tokio::time::sleep(period).await;
        } else {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                _ = changes.next() => {}
            }
        }
    }
}

/// Gives the leader Lease back if `me` holds it (no holder, renewed now, one second long):
/// the next replica to look takes it, knowing no report of this one is under way (the
/// caller settles them first). True when it was given back.
pub(crate) async fn release(
    leases: &Api<Lease>,
    name: &str,
    me: &str,
) -> Result<bool, kube::Error> {
    let Some(mut lease) = leases.get_opt(name).await? else {
        return Ok(false);
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(me) {
        return Ok(false);
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        jiff::Timestamp::now(),
    ));
    lease.spec = Some(spec);
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// One attempt to take or renew the leader Lease (`leading`: this process holds it
/// already; `observed`: what the attempts before saw of it, updated with this one's read):
/// whether this replica leads now, and whether a leader before it may still be reporting.
async fn try_lead(
    leases: &Api<Lease>,
    name: &str,
    me: &str,
    duration_ms: i64,
    leading: bool,
    observed: &mut Option<Observed>,
) -> Result<Turn, kube::Error> {
    let led = |predecessor_may_be_reporting| Turn::Lead {
        predecessor_may_be_reporting,
    };
    let now = jiff::Timestamp::now();
    let seconds = ((duration_ms + 999) / 1000).max(1);
    let current = leases.get_opt(name).await?;
    let Some(mut lease) = current else {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"holderIdentity": me, "leaseDurationSeconds": seconds,
                     "acquireTime": now.to_string(), "renewTime": now.to_string(), "leaseTransitions": 0},
        }))
        .expect("a valid Lease");
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(led(false)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Turn::Wait),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = LeaseRecord {
        holder: spec.holder_identity.clone(),
        renewed_at_ms: spec.renew_time.as_ref().map(|t| t.0.as_millisecond()),
        duration_ms: i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000,
    };
    let read_at = std::time::Instant::now();
    let seen = Observed::update(observed.take(), record.clone(), read_at);
    let decision = leader::decide(&seen, me, read_at);
    *observed = Some(seen);
    if decision == LeaseDecision::Follow {
        return Ok(Turn::Wait);
    }
    let predecessor_may_be_reporting =
        leader::predecessor_may_be_reporting(Some(&record), me, leading);
    let mut spec = spec;
    if decision == LeaseDecision::Take {
        spec.holder_identity = Some(me.to_owned());
        spec.acquire_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            now,
        ));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(i32::try_from(seconds).unwrap_or(i32::MAX));
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        now,
    ));
    lease.spec = Some(spec);
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(led(predecessor_may_be_reporting)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Turn::Wait),
        Err(e) => Err(e),
    }
}
