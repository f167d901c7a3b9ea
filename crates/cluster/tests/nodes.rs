//! Caches and node operations against the Kubernetes API emulator.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, lab, node};
use tidepool_cluster::Deletion;
use tidepool_cluster::client::from_kube_taint;
use tidepool_core::conventions::{NodeMetadata, Taint, TaintEffect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_sync_and_then_see_a_node_registered_later() {
    let lab = lab("cache-sync").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    // A client started after the registration: once synced, its first list
    // is complete and already holds the node.
    let cluster = tidepool_cluster::ClusterClient::new(lab.cluster.client().clone());
    cluster
        .wait_until_synced(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(cluster.is_synced());
    assert_eq!(cluster.nodes().names(), ["worker-1"]);

    lab.kube.register_node(&node("worker-2")).unwrap();
    let nodes = cluster.nodes().clone();
    eventually(10, "the cache sees worker-2", || {
        nodes.get(None, "worker-2").is_some()
    })
    .await;
    assert_eq!(cluster.nodes().names(), ["worker-1", "worker-2"]);

    lab.kube
        .create(common::pod_on(
            "lone",
            "worker-2",
            serde_json::json!({}),
            serde_json::json!([]),
        ))
        .unwrap();
    let pods = cluster.pods().clone();
    eventually(10, "the pod cache sees the pod", || {
        pods.get(Some("default"), "lone").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_cannot_list_is_not_synced() {
    common::install_crypto();
    // Nothing listens on this port: the first list never completes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir =
        std::env::temp_dir().join(format!("tidepool-cluster-unsynced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, tidepool_lab_kube::render_kubeconfig(addr)).unwrap();
    let client = tidepool_cluster::client_from_kubeconfig(&path)
        .await
        .unwrap();
    let cluster = tidepool_cluster::ClusterClient::new(client);
    let err = cluster
        .wait_until_synced(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.category().as_str(), "Timeout");
    assert!(!cluster.is_synced());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_annotations_taints_and_cordon_round_trip() {
    let lab = lab("node-ops").await;
    let mut reg = node("worker-1");
    reg.taints.push(tidepool_lab_kube::Taint {
        key: "keep-me".into(),
        value: "yes".into(),
        effect: "NoExecute".into(),
    });
    lab.kube.register_node(&reg).unwrap();
    let c = &lab.cluster;

    let labels: BTreeMap<String, Option<String>> = [
        ("node-pool".to_owned(), Some("burst".to_owned())),
        ("kubernetes.io/os".to_owned(), None),
    ]
    .into();
    let annotations: BTreeMap<String, Option<String>> = [(
        "tidepool.dev/expires-at".to_owned(),
        Some("2026-01-01T04:00:00Z".to_owned()),
    )]
    .into();
    c.patch_node_metadata("worker-1", &labels, &annotations)
        .await
        .unwrap();
    let n = c.get_node("worker-1").await.unwrap().unwrap();
    let l = n.metadata.labels.unwrap();
    assert_eq!(l.get("node-pool").map(String::as_str), Some("burst"));
    assert!(!l.contains_key("kubernetes.io/os"));
    assert_eq!(
        l.get("kubernetes.io/hostname").map(String::as_str),
        Some("worker-1")
    );
    assert_eq!(
        n.metadata.annotations.unwrap()["tidepool.dev/expires-at"],
        "2026-01-01T04:00:00Z"
    );

    let burst = Taint::new("tidepool.dev/burst", "", TaintEffect::NoSchedule);
    c.add_taint("worker-1", &burst).await.unwrap();
    c.add_taint("worker-1", &burst).await.unwrap();
    let gpu = Taint::new("nvidia.com/gpu", "present", TaintEffect::NoSchedule);
    c.add_taint("worker-1", &gpu).await.unwrap();
    let taints = |n: k8s_openapi::api::core::v1::Node| -> Vec<Taint> {
        n.spec
            .unwrap()
            .taints
            .unwrap_or_default()
            .iter()
            .filter_map(from_kube_taint)
            .collect()
    };
    let t = taints(c.get_node("worker-1").await.unwrap().unwrap());
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t.contains(&burst) && t.contains(&gpu));
    assert!(t.iter().any(|t| t.key == "keep-me"));

    c.remove_taint(
        "worker-1",
        "tidepool.dev/burst",
        Some(TaintEffect::NoSchedule),
    )
    .await
    .unwrap();
    c.remove_taint("worker-1", "absent", None).await.unwrap();
    let t = taints(c.get_node("worker-1").await.unwrap().unwrap());
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(!t.contains(&burst));

    c.cordon("worker-1").await.unwrap();
    let n = c.get_node("worker-1").await.unwrap().unwrap();
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
    c.uncordon("worker-1").await.unwrap();
    let n = c.get_node("worker-1").await.unwrap().unwrap();
    assert_ne!(n.spec.as_ref().unwrap().unschedulable, Some(true));
    // Our taints and others' survive cordoning and uncordoning (the node
    // controller may still hold its own unschedulable taint for a moment).
    let t = taints(n);
    assert!(t.contains(&gpu), "{t:?}");
    assert!(t.iter().any(|t| t.key == "keep-me"), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_node_metadata_is_applied_in_one_call() {
    let lab = lab("node-metadata").await;
    lab.kube.register_node(&node("burst-abcde")).unwrap();
    let metadata = NodeMetadata {
        labels: [("node-pool".to_owned(), "burst".to_owned())].into(),
        annotations: [("tidepool.dev/claim".to_owned(), "burst-abcde".to_owned())].into(),
        taints: vec![Taint::new(
            "tidepool.dev/burst",
            "true",
            TaintEffect::NoSchedule,
        )],
    };
    let n = lab
        .cluster
        .apply_node_metadata("burst-abcde", &metadata)
        .await
        .unwrap();
    assert_eq!(n.metadata.labels.unwrap()["node-pool"], "burst");
    assert_eq!(n.spec.unwrap().taints.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_node_twice_reports_it_already_gone() {
    let lab = lab("node-delete").await;
    lab.kube.register_node(&node("worker-1")).unwrap();
    assert_eq!(
        lab.cluster.delete_node("worker-1").await.unwrap(),
        Deletion::Deleted
    );
    assert_eq!(
        lab.cluster.delete_node("worker-1").await.unwrap(),
        Deletion::AlreadyGone
    );
    let err = lab.cluster.cordon("worker-1").await.unwrap_err();
    assert_eq!(err.category().as_str(), "NotFound");
}
