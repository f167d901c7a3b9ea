//! An emergency request against the lab: pods the autoscaler would leave
//! waiting (below the pool's pending-pods threshold, inside its window) get
//! capacity at once, within the pool's limits, through the same service
//! layer and audit trail as every other request.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{CLAIMS, Setup, eventually, start};
use serde_json::json;
use tidepool_controller::autoscaler::emergency;
use tidepool_core::planner::{Action, ReasonCode};

fn pod(name: &str, cpu: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "urgent"}},
        "spec": {"nodeSelector": {"node-pool": "burst"},
            "tolerations": [{"key": "workload-type", "operator": "Exists"}],
            "containers": [{"name": "w", "image": "w:1", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_skips_the_trigger_window_but_never_the_pool_limits() {
    let mut setup = Setup::new("emergency");
    setup.time_scale = 100.0;
    setup.config = |c| {
        let burst = c.pools.iter_mut().find(|p| p.name == "burst").unwrap();
        // The autoscaler alone would wait an hour for five pods; the pool
        // may hold one worker of at most 16 cores.
        burst.scale_up.pending_pods = 5;
        burst.scale_up.pending_for = Duration::from_secs(3600);
        burst.limits.max_nodes = 1;
    };
    let live = start(setup).await;
    // Two pods of 12 CPU: each needs a large worker of its own; the limit
    // allows one.
    live.lab.kube.apply(pod("urgent-a", "12")).unwrap();
    live.lab.kube.apply(pod("urgent-b", "12")).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            live.pods("default", "app=urgent").iter().all(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["reason"] == "Unschedulable"))
            })
        })
        .await,
        "{}",
        live.dump_pods("default")
    );
    // The controller sees them and waits (its window is an hour).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(live.claims_of("burst").is_empty(), "{}", live.dump_claims());

    let service = live.service();
    let observer = tidepool_live::LiveObserver(live.exec.clone());
    let (_, plan, created) = emergency(&service, &observer, &["burst".to_owned()], "cli:oncall")
        .await
        .unwrap();
    assert_eq!(created.len(), 1, "one worker, the pool's limit: {plan:?}");
    assert!(plan.actions.iter().all(|a| matches!(
        a,
        Action::Provision { pool, reason, .. } if pool == "burst" && reason.code == ReasonCode::Emergency
    )));
    assert_eq!(
        plan.unhelpable.len(),
        1,
        "the second pod is told which limit holds it: {plan:?}"
    );
    let claim = live.claim(&created[0]).unwrap();
    assert_eq!(claim["spec"]["requestedBy"], "cli:oncall");
    assert!(
        claim["spec"]["reason"]
            .as_str()
            .unwrap()
            .contains("emergency"),
        "{claim}"
    );
    // The audit trail names who asked, on the claim.
    let audited = |live: &common::Live| {
        live.lab
            .kube
            .list("v1", "Event", "", "")
            .unwrap()
            .iter()
            .any(|e| {
                e["involvedObject"]["kind"] == "WorkerClaim"
                    && e["involvedObject"]["name"] == created[0].as_str()
                    && e["reason"] == "Audit"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("provision by cli:oncall"))
            })
    };
    assert!(eventually(Duration::from_secs(10), || audited(&live)).await);
    // One of the two pods runs on the new worker; the limit stays.
    assert!(
        eventually(Duration::from_secs(60), || live
            .running("default", "app=urgent")
            .len()
            == 1)
        .await,
        "{}\n{}",
        live.dump_pods("default"),
        live.dump_claims()
    );
    assert_eq!(
        live.lab
            .kube
            .list(CLAIMS, "WorkerClaim", "", "")
            .unwrap()
            .len(),
        1
    );
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_to_launch_is_cleared_and_replaced() {
    let mut setup = Setup::new("failed-launch");
    setup.config = |c| {
        let burst = c.pools.iter_mut().find(|p| p.name == "burst").unwrap();
        burst.scale_up.pending_pods = 1;
        burst.scale_up.pending_for = Duration::from_secs(10);
    };
    let live = start(setup).await;
    // The first machine configuration Talos is given is rejected: that
    // worker ends Failed at deliverConfig.
    live.lab.faults.add_rule(tidepool_lab_sim::FaultRule {
        service: tidepool_lab_sim::Service::Talos,
        op: "ApplyConfiguration:*".into(),
        error_rate: 1.0,
        status: Some(3),
        message: Some("configuration validation failed".into()),
        latency_ms: 0,
        times: Some(1),
    });
    live.lab.kube.apply(pod("urgent-a", "2")).unwrap();
    assert!(
        eventually(Duration::from_secs(60), || live
            .running("default", "app=urgent")
            .len()
            == 1)
        .await,
        "{}\n{}",
        live.dump_pods("default"),
        live.dump_claims()
    );
    // The failed worker was asked to go by the autoscaler, and it is gone
    // with its VM; the pod runs on its replacement.
    let cleared: Vec<String> = live
        .lab
        .kube
        .list("v1", "Event", "", "")
        .unwrap()
        .iter()
        .filter(|e| {
            e["involvedObject"]["kind"] == "WorkerClaim"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("scale-down (launch-failed) by autoscaler"))
        })
        .map(|e| e["involvedObject"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cleared.len(), 1, "{cleared:?}\n{}", live.dump_claims());
    assert!(
        eventually(Duration::from_secs(30), || live
            .claim(&cleared[0])
            .is_none())
        .await,
        "{}",
        live.dump_claims()
    );
    let running = live.running("default", "app=urgent");
    assert_ne!(running[0].1, cleared[0]);
    let vms: Vec<String> = live
        .lab
        .pve
        .vms()
        .iter()
        .filter(|v| (1250..=1300).contains(&v.vmid))
        .filter_map(|v| v.name.clone())
        .collect();
    assert_eq!(
        vms,
        vec![running[0].1.clone()],
        "only the replacement's VM is left"
    );
    live.stop().await;
}
