//! Cold spares against the lab: the burst pool keeps two medium spares,
//! made (cloned, installed, joined once) and parked stopped without a
//! node; a burst activates them instead of cloning, and they are refilled
//! one at a time; a spare that fails to start is removed and replaced.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Live, Setup, eventually, start};
use serde_json::json;
use tidepool_core::spares::Spares;

/// The burst pool offers only mediums, keeps two of them as spares, and
/// scales up for one pod waiting 10 s.
fn with_spares(name: &'static str) -> Setup {
    let mut setup = Setup::new(name);
    setup.time_scale = 200.0;
    setup.config = |c| {
        let burst = c.pools.iter_mut().find(|p| p.name == "burst").unwrap();
        burst.sizes = vec!["medium".into()];
        burst.spares = Some(Spares {
            count: 2,
            size: "medium".into(),
        });
        burst.scale_up.pending_pods = 1;
        burst.scale_up.pending_for = Duration::from_secs(10);
    };
    setup
}

/// A pod of 6 CPU for the burst pool: one per medium worker.
fn job(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "job"}},
        "spec": {"nodeSelector": {"node-pool": "burst"},
            "tolerations": [{"key": "workload-type", "operator": "Exists"}],
            "containers": [{"name": "w", "image": "w:1", "resources": {"requests": {"cpu": "6", "memory": "4Gi"}}}]}
    })
}

/// The names of the claims parked as spares.
fn parked(live: &Live) -> BTreeSet<String> {
    live.claims_of("burst")
        .into_iter()
        .filter(|c| c["status"]["phase"] == "Spare" && c["spec"]["intent"]["action"] == "Spare")
        .filter(|c| {
            c["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|k| k["type"] == "VmStopped"))
        })
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn two_parked_spares(live: &Live) -> BTreeSet<String> {
    assert!(
        eventually(Duration::from_secs(60), || parked(live).len() == 2).await,
        "two spares parked\n{}",
        live.dump_claims()
    );
    let spares = parked(live);
    for name in &spares {
        assert!(!live.nodes().contains(name), "a parked spare has no node");
        let vm = live
            .lab
            .pve
            .vms()
            .into_iter()
            .find(|v| v.name.as_deref() == Some(name.as_str()))
            .unwrap();
        assert!(!vm.running, "a parked spare's VM is stopped");
    }
    spares
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_absorb_a_burst_and_are_refilled() {
    let live = start(with_spares("spares-burst")).await;
    let spares = two_parked_spares(&live).await;

    live.lab.kube.apply(job("job-a")).unwrap();
    live.lab.kube.apply(job("job-b")).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || live
            .running("default", "app=job")
            .len()
            == 2)
        .await,
        "both jobs Running\n{}\n{}",
        live.dump_claims(),
        live.dump_pods("default")
    );
    let hosts: BTreeSet<String> = live
        .running("default", "app=job")
        .into_iter()
        .map(|(_, node)| node)
        .collect();
    assert_eq!(hosts, spares, "the jobs run on the activated spares");
    for name in &spares {
        assert!(
            eventually(
                Duration::from_secs(30),
                || live.claim(name).unwrap()["status"]["phase"] == "Ready"
            )
            .await,
            "{name} Ready\n{}",
            live.dump_claims()
        );
        let claim = live.claim(name).unwrap();
        assert!(
            claim["status"]["expiresAt"].is_string(),
            "its TTL runs from its activation"
        );
    }
    // The spares are made again, one at a time, while the jobs run.
    assert!(
        eventually(Duration::from_secs(60), || {
            let now = parked(&live);
            now.len() == 2 && now.is_disjoint(&spares)
        })
        .await,
        "two new spares\n{}",
        live.dump_claims()
    );
    // Every worker of the pool was made as a spare: none was cloned for
    // the jobs.
    assert!(
        live.claims_of("burst").iter().all(|c| c["spec"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("pool burst keeps 2 cold spares")),
        "{}",
        live.dump_claims()
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_that_fails_to_start_is_removed_and_replaced() {
    let live = start(with_spares("spares-fail")).await;
    let spares = two_parked_spares(&live).await;
    // The next start of a VM fails for want of memory.
    live.lab.faults.add_rule(tidepool_lab_sim::FaultRule {
        service: tidepool_lab_sim::Service::Proxmox,
        op: "POST *status/start".into(),
        error_rate: 1.0,
        status: Some(500),
        message: Some("start failed: cannot allocate memory".into()),
        latency_ms: 0,
        times: Some(1),
    });
    live.lab.kube.apply(job("job-c")).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || live
            .running("default", "app=job")
            .len()
            == 1)
        .await,
        "the job Running\n{}\n{}",
        live.dump_claims(),
        live.dump_pods("default")
    );
    let (_, node) = live.running("default", "app=job").remove(0);
    assert!(
        spares.contains(&node),
        "the other spare took the job: {node}\n{}",
        live.dump_claims()
    );
    let failed: Vec<&String> = spares.iter().filter(|s| **s != node).collect();
    assert!(
        eventually(Duration::from_secs(60), || live.claim(failed[0]).is_none()).await,
        "the spare that failed to start is removed\n{}",
        live.dump_claims()
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            let now = parked(&live);
            now.len() == 2 && now.is_disjoint(&spares)
        })
        .await,
        "both spares replaced\n{}",
        live.dump_claims()
    );
    live.stop().await;
}
