//! Draining nodes through the Eviction API of the Kubernetes emulator:
//! what is evicted, what is skipped, what blocks, and PDB-blocked drains
//! that succeed once the budget allows.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{eventually, lab, node, pod_on, replicaset, running_on};
use serde_json::json;
use tidepool_cluster::drain::{BlockReason, DO_NOT_DISRUPT, MIRROR_POD, SkipReason};
use tidepool_cluster::{DrainError, DrainOptions};

fn quick(timeout_secs: u64, force: bool) -> DrainOptions {
    DrainOptions {
        timeout: Duration::from_secs(timeout_secs),
        force,
        grace_period_seconds: None,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        poll_interval: Duration::from_millis(50),
    }
}

fn daemonset(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    })
}

fn names(pods: &[tidepool_cluster::drain::PodRef]) -> Vec<String> {
    let mut n: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
    n.sort_unstable();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_do_not_disrupt_pod_blocks_the_drain_until_it_is_forced() {
    let lab = lab("drain-mixed").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    lab.kube.create(replicaset("web", 1)).unwrap();
    lab.kube.create(daemonset("agent")).unwrap();
    lab.kube
        .create(pod_on(
            "scratch",
            "worker-1",
            json!({}),
            json!([{"name": "tmp", "emptyDir": {}}]),
        ))
        .unwrap();
    lab.kube
        .create(pod_on(
            "precious",
            "worker-1",
            json!({"annotations": {DO_NOT_DISRUPT: "true"}}),
            json!([]),
        ))
        .unwrap();
    lab.kube
        .create(pod_on(
            "static-web",
            "worker-1",
            json!({"annotations": {MIRROR_POD: "0123abcd"}}),
            json!([]),
        ))
        .unwrap();
    eventually(20, "all five pods run on worker-1", || {
        running_on(&lab.kube, "worker-1", "").len() == 5
    })
    .await;

    let err = lab
        .cluster
        .drain("worker-1", &quick(10, false))
        .await
        .unwrap_err();
    let DrainError::Blocked { report } = &err else {
        panic!("expected a blocked drain, got {err:?}");
    };
    assert_eq!(err.category().as_str(), "Blocked");
    assert!(report.evicted.is_empty(), "nothing is evicted: {report:?}");
    assert_eq!(report.blocked.len(), 1);
    assert_eq!(report.blocked[0].pod.name, "precious");
    assert_eq!(report.blocked[0].reason, BlockReason::DoNotDisrupt);
    assert_eq!(running_on(&lab.kube, "worker-1", "").len(), 5);
    // The node was cordoned all the same.
    let n = lab.cluster.get_node("worker-1").await.unwrap().unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));

    let report = lab
        .cluster
        .drain("worker-1", &quick(20, true))
        .await
        .unwrap();
    let evicted = names(&report.evicted);
    assert_eq!(evicted.len(), 3, "{report:?}");
    assert!(evicted.contains(&"scratch".to_owned()));
    assert!(evicted.contains(&"precious".to_owned()));
    assert!(evicted.iter().any(|n| n.starts_with("web-")));
    let mut skipped: Vec<(String, SkipReason)> = report
        .skipped
        .iter()
        .map(|s| (s.pod.name.clone(), s.reason))
        .collect();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(skipped.len(), 2, "{report:?}");
    assert!(skipped[0].0.starts_with("agent-"));
    assert_eq!(skipped[0].1, SkipReason::DaemonSet);
    assert_eq!(skipped[1], ("static-web".to_owned(), SkipReason::Mirror));
    assert!(report.blocked.is_empty());

    // Only the skipped pods are left on the node.
    let left = running_on(&lab.kube, "worker-1", "");
    assert_eq!(left.len(), 2, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_allows_no_disruption_is_named_and_the_drain_gives_up_at_its_deadline() {
    let lab = lab("drain-pdb").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    lab.kube.create(replicaset("api", 2)).unwrap();
    eventually(20, "both api pods run on worker-1", || {
        running_on(&lab.kube, "worker-1", "api-").len() == 2
    })
    .await;
    lab.kube
        .create(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "api-pdb", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "api"}}},
        }))
        .unwrap();
    lab.kube.register_node(&node("worker-2")).unwrap();

    let err = lab
        .cluster
        .drain("worker-1", &quick(2, false))
        .await
        .unwrap_err();
    let DrainError::Blocked { report } = &err else {
        panic!("expected a blocked drain, got {err:?}");
    };
    assert!(report.evicted.is_empty(), "{report:?}");
    assert_eq!(report.blocked.len(), 2, "{report:?}");
    for blocked in &report.blocked {
        assert_eq!(blocked.reason, BlockReason::DisruptionBudget);
        assert_eq!(blocked.budgets, ["api-pdb"]);
    }
    assert!(
        err.to_string().contains("by PodDisruptionBudget api-pdb"),
        "{err}"
    );
    assert_eq!(running_on(&lab.kube, "worker-1", "api-").len(), 2);

    // Once the budget allows one disruption at a time, the drain proceeds:
    // one pod goes, its replacement starts on worker-2, then the other goes.
    lab.kube
        .merge_patch(
            "policy/v1",
            "PodDisruptionBudget",
            "default",
            "api-pdb",
            &json!({"spec": {"minAvailable": 1}}),
        )
        .unwrap();
    let report = lab
        .cluster
        .drain("worker-1", &quick(30, false))
        .await
        .unwrap();
    assert_eq!(report.evicted.len(), 2, "{report:?}");
    assert!(report.blocked.is_empty());
    assert!(running_on(&lab.kube, "worker-1", "api-").is_empty());
    eventually(20, "both api pods run on worker-2", || {
        running_on(&lab.kube, "worker-2", "api-").len() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_an_empty_node_succeeds_at_once() {
    let lab = lab("drain-empty").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    let report = lab
        .cluster
        .drain("worker-1", &quick(5, false))
        .await
        .unwrap();
    assert_eq!(report.node, "worker-1");
    assert!(report.evicted.is_empty() && report.skipped.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_missing_node_is_a_not_found_error() {
    let lab = lab("drain-missing").await;
    let err = lab
        .cluster
        .drain("ghost", &quick(5, false))
        .await
        .unwrap_err();
    assert_eq!(err.category().as_str(), "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_that_fails_transiently_is_retried() {
    let lab = lab("drain-transient").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    lab.kube
        .create(pod_on("lone", "worker-1", json!({}), json!([])))
        .unwrap();
    eventually(20, "the pod runs", || {
        running_on(&lab.kube, "worker-1", "lone").len() == 1
    })
    .await;
    lab.faults.add_rule(common::fail("evict pods", 503, 2));
    let report = lab
        .cluster
        .drain("worker-1", &quick(10, false))
        .await
        .unwrap();
    assert_eq!(names(&report.evicted), ["lone"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_eviction_stops_the_drain_with_its_category() {
    let lab = lab("drain-forbidden").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    lab.kube
        .create(pod_on("lone", "worker-1", json!({}), json!([])))
        .unwrap();
    eventually(20, "the pod runs", || {
        running_on(&lab.kube, "worker-1", "lone").len() == 1
    })
    .await;
    lab.faults.add_rule(common::fail("evict pods", 403, 1));
    let err = lab
        .cluster
        .drain("worker-1", &quick(10, false))
        .await
        .unwrap_err();
    assert!(matches!(err, DrainError::Cluster { .. }), "{err:?}");
    assert_eq!(err.category().as_str(), "Forbidden");
}
