//! Volumes in the emulator: claims bound to CSI volumes by their class,
//! VolumeAttachments for the volumes of bound pods, and the scheduler's
//! per-node attach limit from the CSINode, counting only the limited
//! driver's volumes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{cluster, eventually, node};
use serde_json::{Value, json};
use tidepool_lab_kube::KubeLab;
use tidepool_lab_kube::controllers::volumes::{
    MAX_ATTACHMENTS_LABEL, PROXMOX_CSI, csi_node_object,
};

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

fn pod_with_claim(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "10m"}}}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

fn scheduled(lab: &KubeLab, name: &str) -> Value {
    let p = lab.get("v1", "Pod", "default", name).unwrap();
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned())
        .unwrap_or(Value::Null)
}

fn attachments(lab: &KubeLab) -> Vec<Value> {
    lab.list("storage.k8s.io/v1", "VolumeAttachment", "", "")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_as_many_proxmox_csi_volumes_as_its_csinode_says_and_nfs_ones_beyond() {
    let c = cluster("volumes").await;
    let mut worker = node("worker-1");
    worker
        .labels
        .insert(MAX_ATTACHMENTS_LABEL.to_owned(), "2".to_owned());
    let registered = c.lab.register_node(&worker).unwrap();
    let csinode = c.lab.create(csi_node_object(&registered)).unwrap();
    assert_eq!(csinode["spec"]["drivers"][0]["allocatable"]["count"], 2);
    c.lab.create(class("proxmox", PROXMOX_CSI)).unwrap();
    c.lab.create(class("nfs", "nfs.csi.k8s.io")).unwrap();
    for (name, class) in [
        ("db-0", "proxmox"),
        ("db-1", "proxmox"),
        ("db-2", "proxmox"),
        ("share", "nfs"),
    ] {
        c.lab.create(claim(name, class)).unwrap();
    }
    for name in ["db-0", "db-1"] {
        c.lab.create(pod_with_claim(name, name)).unwrap();
    }
    eventually(
        10,
        "two proxmox-csi volumes are attached to the node",
        || attachments(&c.lab).len() == 2,
    )
    .await;
    let pvc = c
        .lab
        .get("v1", "PersistentVolumeClaim", "default", "db-0")
        .unwrap();
    assert_eq!(pvc["status"]["phase"], "Bound");
    let pv = c
        .lab
        .get(
            "v1",
            "PersistentVolume",
            "",
            pvc["spec"]["volumeName"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(pv["spec"]["csi"]["driver"], PROXMOX_CSI);
    let va = &attachments(&c.lab)[0];
    assert_eq!(va["spec"]["attacher"], PROXMOX_CSI);
    assert_eq!(va["spec"]["nodeName"], "worker-1");
    assert_eq!(
        va["metadata"]["finalizers"][0],
        "external-attacher/csi-proxmox-sinextra-dev"
    );

    // A third proxmox-csi volume is one too many; an NFS one is not counted.
    c.lab.create(pod_with_claim("db-2", "db-2")).unwrap();
    c.lab.create(pod_with_claim("reader", "share")).unwrap();
    eventually(10, "the third database waits on the volume limit", || {
        scheduled(&c.lab, "db-2")["status"] == "False"
    })
    .await;
    let message = scheduled(&c.lab, "db-2")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("0/1 nodes are available: 1 node(s) exceed max volume count."),
        "{message}"
    );
    eventually(10, "the NFS reader is scheduled", || {
        scheduled(&c.lab, "reader")["status"] == "True"
    })
    .await;
    assert_eq!(
        attachments(&c.lab).len(),
        2,
        "NFS volumes have no attachment"
    );

    // A pod that goes takes its attachment along and makes room.
    c.lab.delete("v1", "Pod", "default", "db-0").unwrap();
    eventually(10, "the third database is scheduled", || {
        scheduled(&c.lab, "db-2")["status"] == "True"
    })
    .await;
    eventually(10, "db-0's volume is detached and db-2's attached", || {
        let vas = attachments(&c.lab);
        vas.len() == 2
            && !vas
                .iter()
                .any(|a| a["spec"]["source"]["persistentVolumeName"] == pvc["spec"]["volumeName"])
    })
    .await;
}
