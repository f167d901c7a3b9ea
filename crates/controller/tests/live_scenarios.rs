//! End-to-end autoscaler scenarios against the lab: TTL expiry with and
//! without workload, spot preemption for permanent capacity, GPU placement,
//! full hosts, and a drain slowed by a PodDisruptionBudget. Each runs the
//! real controller (reconciler and autoscaler) against the emulated
//! Proxmox, Kubernetes and Talos APIs at a high time scale.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, Traces, eventually, start};
use serde_json::{Value, json};
use tidepool_controller::service::ProvisionRequest;

/// Real time any single wait may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

fn deployment(name: &str, replicas: u32, pod_spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}
    })
}

/// A pod spec for the burst pool: its selector and toleration, and requests.
fn burst_pod(cpu: &str, memory: &str) -> Value {
    json!({
        "nodeSelector": {"node-pool": "burst"},
        "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
        "containers": [{"name": "main", "image": "busybox:1.36", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
    })
}

async fn provision(live: &Live, pool: &str, size: &str, ttl: Option<Duration>) -> String {
    live.service()
        .provision(&ProvisionRequest {
            pool: pool.into(),
            size: Some(size.into()),
            count: 1,
            ttl,
            requested_by: "scenario-test".into(),
            reason: "end-to-end scenario".into(),
        })
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_past_their_ttl_go_at_once_when_idle_and_after_a_drain_when_busy() {
    let live = start(Setup {
        // The idle worker must go for its TTL, not for idleness.
        config: |c| {
            for p in &mut c.pools {
                p.idle_timeout = None;
            }
        },
        ..Setup::new("scenario-ttl")
    })
    .await;
    let hour = Some(Duration::from_secs(3600));
    // A small worker that stays idle, a medium one for a pod too big for
    // the small one (so the pod cannot move onto it when evicted).
    let idle = provision(&live, "burst", "small", hour).await;
    let busy = provision(&live, "burst", "medium", hour).await;
    live.lab
        .kube
        .apply(deployment("report", 1, burst_pod("5", "4Gi")))
        .unwrap();

    let mut traces = Traces::default();
    let mut first_pod = None;
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        first_pod = live
            .running("default", "app=report")
            .into_iter()
            .find(|(_, node)| *node == busy);
        first_pod.is_some()
    })
    .await;
    assert!(
        ok,
        "the report pod runs on {busy}\n{}\npods:\n{}",
        live.dump_claims(),
        live.dump_pods("default")
    );
    let (first_pod, _) = first_pod.unwrap();

    let mut replacement = None;
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        let claims = live.claims();
        let gone = |n: &str| !claims.iter().any(|c| c["metadata"]["name"] == n);
        replacement = live
            .running("default", "app=report")
            .into_iter()
            .find(|(_, node)| *node != busy);
        gone(&idle) && gone(&busy) && replacement.is_some()
    })
    .await;
    assert!(
        ok,
        "both workers removed past their TTL and the pod running elsewhere\n{}\npods:\n{}\ntraces: {:?}",
        live.dump_claims(),
        live.dump_pods("default"),
        traces
    );

    let idle_trace = traces.of(&idle);
    assert!(
        !idle_trace.phases.iter().any(|p| p == "Draining")
            && !idle_trace.conditions.contains("Cordoned"),
        "the idle worker is removed without a drain: {idle_trace:?}"
    );
    assert_eq!(
        idle_trace
            .annotations
            .get("tidepool.dev/force-remove")
            .map(String::as_str),
        Some("true"),
        "{idle_trace:?}"
    );
    let busy_trace = traces.of(&busy);
    assert!(
        busy_trace.phases.iter().any(|p| p == "Draining")
            && busy_trace.conditions.contains("Drained"),
        "the busy worker is drained first: {busy_trace:?}"
    );
    assert!(
        !live
            .pods("default", "app=report")
            .iter()
            .any(|p| p["metadata"]["name"] == first_pod.as_str()),
        "the pod on the busy worker was evicted"
    );
    let (_, node) = replacement.unwrap();
    assert!(
        !live.nodes().contains(&busy) && !live.nodes().contains(&idle),
        "their nodes are deleted"
    );
    assert!(
        live.claim(&node).is_some(),
        "the pod was recreated on a new worker {node}\n{}",
        live.dump_claims()
    );
    for reason in ["ttl-expired-idle", "ttl-expired-busy"] {
        assert!(
            live.decided(reason).await,
            "a {reason} decision was counted"
        );
    }
    eprintln!("TTL scenario done after {:?} real", live.elapsed());
    live.stop().await;
}
