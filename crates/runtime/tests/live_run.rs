//! Two controllers against the lab: exactly one leads (by Lease) and
//! reconciles claims; when it stops, it releases the Lease and the other
//! takes over and carries on. Both serve /healthz, /readyz and /metrics.
//!
//! Lease timing is real time, whatever the lab's scale: a generous
//! duration keeps the leader's renewals clear of a loaded machine's
//! scheduling delays, and the hand-over is fast because a stopping leader
//! releases the Lease.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::live_options;
use tidepool_controller::service::{ProvisionRequest, Service};
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_live::connect::connect;
use tidepool_runtime::leader::LeaseConfig;
use tidepool_runtime::run::{RunOptions, run};

const SCALE: f64 = 200.0;

async fn controller(
    lab: &RunningLab,
    identity: &str,
) -> (
    tokio::sync::watch::Sender<bool>,
    std::net::SocketAddr,
    Arc<tidepool_live::connect::LiveExecutor>,
) {
    let config = Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    let exec = Arc::new(connect(config, &live_options(lab)).await.unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let options = RunOptions {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        lease: Some(LeaseConfig {
            namespace: "tidepool-system".into(),
            name: "tidepool-controller".into(),
            identity: identity.into(),
            duration: Duration::from_secs(12),
        }),
        autoscale: false,
    };
    tokio::spawn(run(exec.clone(), options, stop_rx, Some(bound_tx)));
    (stop_tx, bound_rx.await.unwrap(), exec)
}

fn holder(lab: &RunningLab) -> Option<String> {
    lab.kube
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            "tidepool-system",
            "tidepool-controller",
        )
        .ok()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

async fn until_async<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    for _ in 0..400 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

async fn provision_and_wait(
    svc: &Service<
        impl tidepool_controller::Hypervisor,
        impl tidepool_controller::Joiner,
        impl tidepool_controller::Nodes,
        impl tidepool_controller::ClaimStore,
    >,
) -> String {
    let name = svc
        .provision(&ProvisionRequest {
            pool: "burst".into(),
            size: Some("small".into()),
            count: 1,
            ttl: None,
            requested_by: "run-test".into(),
            reason: "failover".into(),
        })
        .await
        .unwrap()
        .remove(0);
    for _ in 0..400 {
        if svc.get_worker(&name).await.unwrap().phase == tidepool_core::Phase::Ready {
            return name;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{name} was not reconciled to Ready: {:?}",
        svc.get_worker(&name).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_controllers_leads_and_the_other_takes_over_when_it_stops() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let lab = tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir().join(format!("tidepool-run-{}", std::process::id())),
        time_scale: SCALE,
        seed: 9,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap();
    let (stop_a, addr_a, exec_a) = controller(&lab, "controller-a").await;
    assert!(until(|| holder(&lab).as_deref() == Some("controller-a")).await);
    let (stop_b, addr_b, _) = controller(&lab, "controller-b").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        holder(&lab).as_deref(),
        Some("controller-a"),
        "the leader keeps its lease"
    );
    assert_eq!(get(addr_a, "/healthz").await, "ok");
    // Ready once the caches have synced and Proxmox has answered.
    assert!(until_async(|| async { get(addr_a, "/readyz").await == "ready (leader)" }).await);
    assert!(until_async(|| async { get(addr_b, "/readyz").await == "ready (standby)" }).await);

    let svc = Service::new(exec_a);
    let first = provision_and_wait(&svc).await;
    // The gauges refresh every couple of seconds.
    let mut metrics = String::new();
    for _ in 0..40 {
        metrics = get(addr_a, "/metrics").await;
        if metrics.contains("phase=\"Ready\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains("tidepool_leader 1"), "{metrics}");
    assert!(
        metrics.contains("tidepool_workers{pool=\"burst\",phase=\"Ready\"} 1"),
        "{metrics}"
    );
    assert!(get(addr_b, "/metrics").await.contains("tidepool_leader 0"));

    // The leader stops and releases its Lease; the standby takes over.
    stop_a.send(true).unwrap();
    assert!(
        until(|| holder(&lab).as_deref() == Some("controller-b")).await,
        "failover"
    );
    let second = provision_and_wait(&svc).await;
    assert_ne!(first, second);
    assert!(until_async(|| async { get(addr_b, "/readyz").await == "ready (leader)" }).await);
    stop_b.send(true).unwrap();
    lab.shutdown().await;
}
