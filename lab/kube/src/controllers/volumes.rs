//! Volumes, as far as the attach ceiling needs them: the persistent-volume
//! binder (a claim of a class with a CSI provisioner gets a
//! PersistentVolume of that driver and is bound to it), the ephemeral
//! volume controller (a pod's generic ephemeral volume gets its claim
//! `<pod>-<volume>`, owned by the pod), and the attach/detach controller
//! (a VolumeAttachment, with the external attacher's finalizer, for every
//! volume a bound pod uses of a driver the node's CSINode registers;
//! removed once no pod on the node uses it).
//!
//! A VolumeAttachment of a node that no longer exists is left alone: a real
//! attacher cannot detach from a VM that is gone either, which is how
//! VolumeAttachments get stuck behind a deleted worker.
//!
//! [`VolumeFacts`] is what the scheduler reads to count a pod's volumes per
//! driver against each node's CSINode `allocatable.count`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::meta;
use crate::resources::ResKey;
use crate::store::{DeleteOptions, Part, Store};

/// Errors of this module are API errors.
pub type VolumeError = crate::error::ApiError;

/// The annotation marking the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The pseudo-resource prefix under which the scheduler counts a driver's
/// volumes (the in-tree scheduler's `attachable-volumes-csi-<driver>`).
pub const ATTACHABLE_PREFIX: &str = "attachable-volumes-csi-";

fn key(group: &str, plural: &str) -> ResKey {
    ResKey::new(group, plural)
}

fn claims() -> ResKey {
    key("", "persistentvolumeclaims")
}

fn attachments() -> ResKey {
    key("storage.k8s.io", "volumeattachments")
}

/// The claims, volumes, classes and CSINodes of the cluster, read once per
/// pass.
#[derive(Debug, Default)]
pub struct VolumeFacts {
    /// Per `(namespace, claim)`: the bound volume and the class.
    claims: HashMap<(String, String), (Option<String>, Option<String>)>,
    /// The CSI driver of each PersistentVolume that has one.
    drivers: HashMap<String, String>,
    /// The provisioner of each class.
    provisioners: HashMap<String, String>,
    default_class: Option<String>,
    /// Per node, per driver: the CSINode's `allocatable.count`.
    limits: HashMap<String, BTreeMap<String, i128>>,
    /// Per node, the drivers its CSINode registers: only those attach.
    registered: HashMap<String, BTreeSet<String>>,
}

impl VolumeFacts {
    /// Reads the facts from the store.
    pub fn read(store: &Store) -> Self {
        let mut out = Self::default();
        for c in store.list(&claims(), "").0 {
            let spec = &c["spec"];
            out.claims.insert(
                (meta::namespace(&c).to_owned(), meta::name(&c).to_owned()),
                (
                    spec["volumeName"].as_str().map(str::to_owned),
                    spec["storageClassName"].as_str().map(str::to_owned),
                ),
            );
        }
        for v in store.list(&key("", "persistentvolumes"), "").0 {
            if let Some(d) = v["spec"]["csi"]["driver"].as_str() {
                out.drivers.insert(meta::name(&v).to_owned(), d.to_owned());
            }
        }
        for c in store.list(&key("storage.k8s.io", "storageclasses"), "").0 {
            let name = meta::name(&c).to_owned();
            if c["metadata"]["annotations"][DEFAULT_CLASS] == "true" {
                out.default_class = Some(name.clone());
            }
            if let Some(p) = c["provisioner"].as_str() {
                out.provisioners.insert(name, p.to_owned());
            }
        }
        for n in store.list(&key("storage.k8s.io", "csinodes"), "").0 {
            let registered = n["spec"]["drivers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["name"].as_str().map(str::to_owned))
                .collect();
            out.registered.insert(meta::name(&n).to_owned(), registered);
            let limits = n["spec"]["drivers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    let count = d["allocatable"]["count"].as_i64()?;
                    Some((d["name"].as_str()?.to_owned(), i128::from(count) * 1000))
                })
                .collect();
            out.limits.insert(meta::name(&n).to_owned(), limits);
        }
        out
    }

    /// The CSI volumes of `pod`: `(driver, identity)` for each claim or
    /// generic ephemeral volume a driver provides (bound: the
    /// PersistentVolume; unbound: the claim, by its class's provisioner).
    pub fn pod_volumes(&self, pod: &Value) -> BTreeSet<(String, String)> {
        let ns = meta::namespace(pod);
        let mut out = BTreeSet::new();
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let (claim, template_class) =
                if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
                    (c.to_owned(), None)
                } else if v["ephemeral"].is_object() {
                    let class = v["ephemeral"]["volumeClaimTemplate"]["spec"]["storageClassName"]
                        .as_str()
                        .map(str::to_owned);
                    let name = format!(
                        "{}-{}",
                        meta::name(pod),
                        v["name"].as_str().unwrap_or_default()
                    );
                    (name, Some(class))
                } else {
                    continue;
                };
            let facts = self.claims.get(&(ns.to_owned(), claim.clone()));
            if let Some(pv) = facts.and_then(|(pv, _)| pv.as_ref()) {
                if let Some(d) = self.drivers.get(pv) {
                    out.insert((d.clone(), format!("pv/{pv}")));
                }
                continue;
            }
            let class = match (facts, template_class) {
                (Some((_, c)), _) => c.clone(),
                (None, Some(c)) => c,
                (None, None) => continue,
            };
            if let Some(p) = class
                .or_else(|| self.default_class.clone())
                .and_then(|c| self.provisioners.get(&c))
            {
                out.insert((p.clone(), format!("pvc/{ns}/{claim}")));
            }
        }
        out
    }

    /// What `pod` asks of a node's attach limits, as pseudo-resources in
    /// thousandths (like every quantity of the scheduler).
    pub fn pod_wants(&self, pod: &Value) -> BTreeMap<String, i128> {
        let mut out: BTreeMap<String, i128> = BTreeMap::new();
        for (driver, _) in self.pod_volumes(pod) {
            *out.entry(format!("{ATTACHABLE_PREFIX}{driver}"))
                .or_default() += 1000;
        }
        out
    }

    /// A node's attach limits as pseudo-resources; a driver without a
    /// count (or a node without a CSINode) has none.
    pub fn node_limits(&self, node: &str) -> BTreeMap<String, i128> {
        self.limits
            .get(node)
            .into_iter()
            .flatten()
            .map(|(d, n)| (format!("{ATTACHABLE_PREFIX}{d}"), *n))
            .collect()
    }
}

/// The proxmox-csi driver's name.
pub const PROXMOX_CSI: &str = "csi.proxmox.sinextra.dev";
/// The node label that sets proxmox-csi's attach limit.
pub const MAX_ATTACHMENTS_LABEL: &str = "csi.proxmox.sinextra.dev/max-volume-attachments";

/// The CSINode the proxmox-csi node plugin registers for `node`: its
/// driver with `allocatable.count` from the node's
/// `csi.proxmox.sinextra.dev/max-volume-attachments` label (0 to 30), else
/// 24, as the plugin's `maxVolumes` does; owned by the node.
pub fn csi_node_object(node: &Value) -> Value {
    let name = meta::name(node);
    let count = node["metadata"]["labels"][MAX_ATTACHMENTS_LABEL]
        .as_str()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n <= 30)
        .unwrap_or(24);
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSINode",
        "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
            "name": name, "uid": meta::uid(node)}]},
        "spec": {"drivers": [{"name": PROXMOX_CSI, "nodeID": name,
            "topologyKeys": ["topology.kubernetes.io/region", "topology.kubernetes.io/zone"],
            "allocatable": {"count": count}}]},
    })
}

/// One pass: bind claims, create ephemeral claims, attach and detach.
pub fn reconcile(store: &Store) {
    create_ephemeral_claims(store);
    bind_claims(store);
    attach_and_detach(store);
}

/// Creates the claim of every generic ephemeral volume of a pod that has
/// none yet, owned by the pod.
fn create_ephemeral_claims(store: &Store) {
    for pod in store.list(&key("", "pods"), "").0 {
        if meta::is_terminating(&pod) {
            continue;
        }
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let template = &v["ephemeral"]["volumeClaimTemplate"];
            if !template.is_object() {
                continue;
            }
            let ns = meta::namespace(&pod);
            let name = format!(
                "{}-{}",
                meta::name(&pod),
                v["name"].as_str().unwrap_or_default()
            );
            if store.get(&claims(), ns, &name).is_ok() {
                continue;
            }
            let claim = json!({
                "metadata": {"name": name, "namespace": ns,
                    "labels": template["metadata"]["labels"],
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": meta::name(&pod),
                        "uid": meta::uid(&pod), "controller": true, "blockOwnerDeletion": true}]},
                "spec": template["spec"],
            });
            // Created meanwhile is fine.
            let _ = store.create(&claims(), ns, claim);
        }
    }
}

/// Binds every pending claim whose class has a CSI provisioner to a new
/// PersistentVolume of that driver.
fn bind_claims(store: &Store) {
    let facts = VolumeFacts::read(store);
    for claim in store.list(&claims(), "").0 {
        if claim["spec"]["volumeName"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
            || meta::is_terminating(&claim)
        {
            continue;
        }
        let class = claim["spec"]["storageClassName"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| facts.default_class.clone());
        let Some(provisioner) = class.as_ref().and_then(|c| facts.provisioners.get(c)) else {
            continue;
        };
        if provisioner == "kubernetes.io/no-provisioner" {
            continue;
        }
        bind_one(
            store,
            &claim,
            class.as_deref().unwrap_or_default(),
            provisioner,
        );
    }
}

fn bind_one(store: &Store, claim: &Arc<Value>, class: &str, driver: &str) {
    let (ns, name) = (meta::namespace(claim), meta::name(claim));
    let pv = format!("pvc-{}", meta::uid(claim));
    let storage = claim["spec"]["resources"]["requests"]["storage"].clone();
    let volume = json!({
        "metadata": {"name": pv, "annotations": {"pv.kubernetes.io/provisioned-by": driver}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": claim["spec"]["accessModes"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class,
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": name,
                "uid": meta::uid(claim)},
            "csi": {"driver": driver, "volumeHandle": format!("lab/{pv}"), "fsType": "ext4"},
        },
        "status": {"phase": "Bound"},
    });
    let pvs = key("", "persistentvolumes");
    if store.create(&pvs, "", volume).is_err() && store.get(&pvs, "", &pv).is_err() {
        return;
    }
    let _ = store.modify(&claims(), ns, name, Part::Internal, |c| {
        c["spec"]["volumeName"] = json!(pv);
        c["status"] = json!({"phase": "Bound", "accessModes": c["spec"]["accessModes"],
            "capacity": {"storage": storage}});
        Ok(())
    });
}

/// The attach/detach controller: one VolumeAttachment per (node, CSI
/// volume) a running or starting pod uses; those no pod needs any more go,
/// unless their node is gone.
fn attach_and_detach(store: &Store) {
    let facts = VolumeFacts::read(store);
    let mut wanted: BTreeSet<(String, String, String)> = BTreeSet::new();
    for pod in store.list(&key("", "pods"), "").0 {
        let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        if matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let registered = facts.registered.get(node);
        for (driver, id) in facts.pod_volumes(&pod) {
            // Drivers that need no attachment (NFS) register no node plugin
            // with an attacher here; only the node's CSINode drivers attach.
            if !registered.is_some_and(|r| r.contains(&driver)) {
                continue;
            }
            if let Some(pv) = id.strip_prefix("pv/") {
                wanted.insert((node.to_owned(), driver, pv.to_owned()));
            }
        }
    }
    let nodes: BTreeSet<String> = store
        .list(&key("", "nodes"), "")
        .0
        .iter()
        .map(|n| meta::name(n).to_owned())
        .collect();
    let existing = store.list(&attachments(), "").0;
    let mut have = BTreeSet::new();
    for a in &existing {
        let node = a["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let pv = a["spec"]["source"]["persistentVolumeName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let driver = a["spec"]["attacher"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let triple = (node.clone(), driver, pv);
        if !wanted.contains(&triple) && nodes.contains(&node) && !meta::is_terminating(a) {
            detach(store, meta::name(a));
        }
        have.insert(triple);
    }
    for (node, driver, pv) in wanted.difference(&have) {
        attach(store, node, driver, pv);
    }
}

/// The attacher's finalizer for `driver` (`external-attacher/<driver with
/// dots as dashes>`).
fn finalizer(driver: &str) -> String {
    format!("external-attacher/{}", driver.replace('.', "-"))
}

fn attach(store: &Store, node: &str, driver: &str, pv: &str) {
    let name = format!("csi-{:016x}", fnv(&format!("{pv}/{driver}/{node}")));
    let va = json!({
        "metadata": {"name": name, "finalizers": [finalizer(driver)]},
        "spec": {"attacher": driver, "nodeName": node, "source": {"persistentVolumeName": pv}},
        "status": {"attached": true},
    });
    // Created meanwhile is fine.
    let _ = store.create(&attachments(), "", va);
}

fn detach(store: &Store, name: &str) {
    let _ = store.modify(&attachments(), "", name, Part::Internal, |a| {
        a["metadata"]["finalizers"] = json!([]);
        Ok(())
    });
    let _ = store.delete(&attachments(), "", name, &DeleteOptions::default());
}

/// FNV-1a, for stable VolumeAttachment names.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
