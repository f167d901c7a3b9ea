//! The volume-attach ceiling against the lab: a pod with a proxmox-csi
//! claim that waits because its worker's CSINode allows no more volumes
//! gets a new worker, while a pod on NFS lands beside the full one and
//! triggers nothing; `capacity` reports the room per node and pool.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, eventually, start};
use serde_json::{Value, json};

const PROXMOX_CSI: &str = "csi.proxmox.sinextra.dev";

fn autoscaled(live: &Live) -> Vec<String> {
    live.claims()
        .iter()
        .filter(|c| c["spec"]["requestedBy"] == "autoscaler")
        .map(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn class(name: &str, provisioner: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": provisioner})
}

fn claim(name: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}})
}

/// A small burst pod mounting `claim`.
fn pod(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "volumes"}},
        "spec": {"nodeSelector": {"node-pool": "burst"},
            "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "db:1", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

/// The node `name` runs on once it is Running.
fn running_on(live: &Live, name: &str) -> Option<String> {
    live.running("default", "app=volumes")
        .into_iter()
        .find(|(pod, _)| pod == name)
        .map(|(_, node)| node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxmox_csi_pod_waiting_on_a_full_worker_gets_a_new_one_and_nfs_does_not_count() {
    let live = start(Setup::new("volumes")).await;
    let kube = &live.lab.kube;
    kube.apply(class("proxmox", PROXMOX_CSI)).unwrap();
    kube.apply(class("nfs", "nfs.csi.k8s.io")).unwrap();
    for (name, class) in [("db-0", "proxmox"), ("db-1", "proxmox"), ("share", "nfs")] {
        kube.apply(claim(name, class)).unwrap();
    }

    // The first database gets a burst worker.
    kube.apply(pod("db-0", "db-0")).unwrap();
    let limit = Duration::from_secs(60);
    assert!(
        eventually(limit, || running_on(&live, "db-0").is_some()).await,
        "db-0 Running\n{}",
        live.dump_claims()
    );
    let first = running_on(&live, "db-0").unwrap();
    assert_eq!(autoscaled(&live), std::slice::from_ref(&first));

    // Its CSINode now allows one proxmox-csi volume (as the plugin's
    // max-volume-attachments node label would make it say), which db-0
    // takes.
    kube.merge_patch(
        "storage.k8s.io/v1",
        "CSINode",
        "",
        &first,
        &json!({"spec": {"drivers": [{"name": PROXMOX_CSI, "nodeID": first,
            "allocatable": {"count": 1}}]}}),
    )
    .unwrap();

    // An NFS-backed pod lands beside it: its volume does not count.
    kube.apply(pod("reader", "share")).unwrap();
    assert!(
        eventually(limit, || running_on(&live, "reader").is_some()).await,
        "reader Running\n{}",
        live.dump_pods("default")
    );
    assert_eq!(running_on(&live, "reader"), Some(first.clone()));

    // The second database waits on the volume limit and gets a new worker.
    kube.apply(pod("db-1", "db-1")).unwrap();
    assert!(
        eventually(limit, || running_on(&live, "db-1").is_some()).await,
        "db-1 Running\n{}\n{}",
        live.dump_pods("default"),
        live.dump_claims()
    );
    let second = running_on(&live, "db-1").unwrap();
    assert_ne!(second, first);
    let workers = autoscaled(&live);
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(workers.contains(&second), "{workers:?}");
    let triggered = live
        .events("default")
        .into_iter()
        .any(|(obj, reason, _)| obj == "db-1" && reason == "TriggeredScaleUp");
    assert!(triggered, "{:?}", live.events("default"));
    assert!(
        !live
            .events("default")
            .into_iter()
            .any(|(obj, reason, _)| obj == "reader" && reason == "TriggeredScaleUp"),
        "the NFS pod triggered nothing"
    );

    // The capacity view counts the attached volumes and the room per node.
    let mut report = None;
    for _ in 0..100 {
        let input = tidepool_live::snapshot::plan_input(&live.exec)
            .await
            .unwrap();
        let r = tidepool_core::planner::capacity::report(&input);
        let full = r
            .volumes
            .iter()
            .any(|n| n.node == first && n.limit == 1 && n.room.attached == 1 && n.room.left == 0);
        if full {
            report = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = report.expect("the full worker's volume room in the capacity report");
    let new = report.volumes.iter().find(|n| n.node == second).unwrap();
    assert_eq!((new.limit, new.room.attached, new.room.left), (24, 1, 23));
    let burst = report.pools.iter().find(|p| p.name == "burst").unwrap();
    assert_eq!((burst.volumes.attached, burst.volumes.left), (2, 23));
    live.stop().await;
}
