//! A burst of build requests of one job (issue 31): each is numbered once, in one of a few
//! writes of the job's ledger — the requests waiting while one write is under way go in the
//! next together — not one write each behind the other.

use std::collections::BTreeSet;

use crate::common;

use common::cluster::TestCluster;
use common::serve::http;

const BURST: usize = 50;

async fn a_burst_of_one_job_is_numbered_in_a_few_ledger_writes(cluster: TestCluster) {
    let yaml = cluster.job_yaml("burst", "true", "    max_concurrency: 1\n");
    cluster.apply("burst", &yaml).await;
    let kubeci = std::sync::Arc::new(cluster.serve(&[]));
    let path = format!("/api/v1/jobs/{}/burst/builds", cluster.namespace);
    common::git::wait_for(cluster.patience(), "the job to be served", || {
        http(
            &kubeci,
            "GET",
            &format!("/api/v1/jobs/{}/burst", cluster.namespace),
            &[],
        )
        .0 == 200
    });
    let auth = format!("Bearer {}", common::serve::TOKEN);
    let requests: Vec<_> = (0..BURST)
        .map(|_| {
            let (kubeci, path, auth) = (kubeci.clone(), path.clone(), auth.clone());
            std::thread::spawn(move || http(&kubeci, "POST", &path, &[("authorization", &auth)]))
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for request in requests {
        let (status, body) = request.join().unwrap();
        assert_eq!(status, 201, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        numbers.insert(answer["number"].as_u64().unwrap());
    }
    assert_eq!(numbers, (1..=BURST as u64).collect(), "each numbered once");
    if let Some(fake) = cluster.fake_server() {
        let ledger = "/leases/kubeci-job-burst";
        let writes = (fake.requests().iter())
            .filter(|r| r.resource == "leases" && r.path.contains(ledger))
            .filter(|r| r.verb == "update" || r.verb == "create")
            .count();
        assert!(
            writes < BURST / 2,
            "{writes} ledger writes for {BURST} requests: one each would serialize them"
        );
    }
    drop(kubeci);
    cluster.finish().await;
}

on_both!(a_burst_of_one_job_is_numbered_in_a_few_ledger_writes);
