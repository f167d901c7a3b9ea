//! The volume-attach ceiling, worked out the way kube-scheduler's
//! `NodeVolumeLimits` (CSI) filter does it (spec §5).
//!
//! A worker VM can attach only so many block volumes of an attach-limited
//! CSI driver (proxmox-csi: 24 by default, 30 at most). The scheduler reads
//! the limit from the node's `CSINode` (`spec.drivers[].allocatable.count`)
//! and counts, per node, the distinct volumes of that driver its pods use:
//! PVCs bound to the driver's PersistentVolumes, unbound PVCs and generic
//! ephemeral volumes whose StorageClass the driver provisions. Volumes of
//! other drivers (NFS, local PVs, hostPath) do not count.
//!
//! This module is the pure part: a [`StorageCatalog`] of the claims,
//! volumes and classes the cluster holds, which answers which of a pod's
//! volumes are attach-limited, and [`attach_limit`], which picks a node's
//! limit from its CSINode or the provider's fallback. The cluster crate
//! fills the catalog from its caches.

use std::collections::{BTreeMap, BTreeSet};

/// The proxmox-csi plugin's driver name, the default attach-limited driver.
pub const PROXMOX_CSI_DRIVER: &str = "csi.proxmox.sinextra.dev";
/// The limit proxmox-csi advertises when its node label does not set one
/// (`DefaultMaxVolumesPerNode`), and the default fallback.
pub const DEFAULT_ATTACH_LIMIT: u32 = 24;
/// The most proxmox-csi ever advertises (`VolumesPerNodeHardLimit`, QEMU's
/// 30 SCSI disks).
pub const HARD_ATTACH_LIMIT: u32 = 30;

/// A volume of a pod that may need an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VolumeRef {
    /// `persistentVolumeClaim.claimName`, in the pod's namespace.
    Claim(String),
    /// A generic ephemeral volume: its claim is `<pod>-<volume>`, created
    /// from the template's StorageClass (`None`: the default class).
    Ephemeral {
        /// The name of the claim Kubernetes creates for it.
        claim: String,
        /// The template's `storageClassName`.
        storage_class: Option<String>,
    },
}

/// What the catalog knows of one PersistentVolumeClaim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimFacts {
    /// `spec.volumeName` once bound.
    pub volume: Option<String>,
    /// `spec.storageClassName`.
    pub storage_class: Option<String>,
}

/// The claims, volumes and classes of a cluster, as far as attach limits
/// care about them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageCatalog {
    /// Claims by `(namespace, name)`.
    pub claims: BTreeMap<(String, String), ClaimFacts>,
    /// The CSI driver of each PersistentVolume that has one, by name.
    pub volume_drivers: BTreeMap<String, String>,
    /// The provisioner of each StorageClass, by name.
    pub class_provisioners: BTreeMap<String, String>,
    /// The class marked `storageclass.kubernetes.io/is-default-class`.
    pub default_class: Option<String>,
}

impl StorageCatalog {
    /// The identity under which the scheduler counts `volume` of a pod in
    /// `namespace` when one of `drivers` provides it: the PersistentVolume's
    /// name once bound, otherwise the claim. `None` when another driver (or
    /// none) provides it, or nothing is known of it.
    pub fn limited_identity(
        &self,
        namespace: &str,
        volume: &VolumeRef,
        drivers: &BTreeSet<String>,
    ) -> Option<String> {
        let (claim, template_class) = match volume {
            VolumeRef::Claim(name) => (name, None),
            VolumeRef::Ephemeral {
                claim,
                storage_class,
            } => (claim, Some(storage_class)),
        };
        let key = (namespace.to_owned(), claim.clone());
        let facts = self.claims.get(&key);
        if let Some(pv) = facts.and_then(|f| f.volume.as_ref()) {
            return self
                .volume_drivers
                .get(pv)
                .filter(|d| drivers.contains(*d))
                .map(|_| format!("pv/{pv}"));
        }
        // Not bound (or an ephemeral claim not created yet): the class says
        // which driver will provision it.
        let class = match (facts, template_class) {
            (Some(f), _) => f.storage_class.clone(),
            (None, Some(c)) => c.clone(),
            (None, None) => return None,
        };
        let class = class.or_else(|| self.default_class.clone())?;
        self.class_provisioners
            .get(&class)
            .filter(|d| drivers.contains(*d))
            .map(|_| format!("pvc/{namespace}/{claim}"))
    }

    /// The distinct attach-limited volumes of a pod.
    pub fn limited_volumes(
        &self,
        namespace: &str,
        volumes: &[VolumeRef],
        drivers: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        volumes
            .iter()
            .filter_map(|v| self.limited_identity(namespace, v, drivers))
            .collect()
    }
}

/// A node's CSINode drivers: each driver's `allocatable.count`, if any.
pub type CsiDrivers = BTreeMap<String, Option<u32>>;

/// A node's attach limit for `driver`: the `allocatable.count` of the
/// driver's entry in the node's CSINode when it has one; no limit
/// (`u32::MAX`) when the driver is registered without a count, as the
/// scheduler reads it; `fallback` when the node has no CSINode entry for
/// the driver yet (a worker that has just joined).
pub fn attach_limit(csinode: Option<&CsiDrivers>, driver: &str, fallback: u32) -> u32 {
    match csinode.and_then(|drivers| drivers.get(driver)) {
        Some(Some(count)) => *count,
        Some(None) => u32::MAX,
        None => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drivers() -> BTreeSet<String> {
        BTreeSet::from([PROXMOX_CSI_DRIVER.to_owned()])
    }

    /// Two classes (proxmox-csi, the default, and NFS), three bound
    /// claims (proxmox, NFS, a local PV) and one unbound claim of each
    /// class.
    fn catalog() -> StorageCatalog {
        let claim = |volume: Option<&str>, class: &str| ClaimFacts {
            volume: volume.map(str::to_owned),
            storage_class: Some(class.to_owned()),
        };
        StorageCatalog {
            claims: BTreeMap::from([
                (("db".into(), "data".into()), claim(Some("pv-1"), "proxmox")),
                (("db".into(), "share".into()), claim(Some("pv-2"), "nfs")),
                (
                    ("db".into(), "scratch".into()),
                    claim(Some("pv-3"), "local"),
                ),
                (("db".into(), "new".into()), claim(None, "proxmox")),
                (("db".into(), "new-nfs".into()), claim(None, "nfs")),
            ]),
            volume_drivers: BTreeMap::from([
                ("pv-1".into(), PROXMOX_CSI_DRIVER.into()),
                ("pv-2".into(), "nfs.csi.k8s.io".into()),
            ]),
            class_provisioners: BTreeMap::from([
                ("proxmox".into(), PROXMOX_CSI_DRIVER.into()),
                ("nfs".into(), "nfs.csi.k8s.io".into()),
            ]),
            default_class: Some("proxmox".into()),
        }
    }

    #[test]
    fn only_volumes_of_the_attach_limited_driver_count() {
        let claim = |n: &str| VolumeRef::Claim(n.to_owned());
        let ephemeral = |n: &str, c: Option<&str>| VolumeRef::Ephemeral {
            claim: n.to_owned(),
            storage_class: c.map(str::to_owned),
        };
        let table: &[(&str, VolumeRef, Option<&str>)] = &[
            (
                "a bound proxmox-csi claim counts as its PV",
                claim("data"),
                Some("pv/pv-1"),
            ),
            ("a bound NFS claim does not count", claim("share"), None),
            (
                "a local PV (no CSI driver) does not count",
                claim("scratch"),
                None,
            ),
            (
                "an unbound claim of the proxmox class counts",
                claim("new"),
                Some("pvc/db/new"),
            ),
            (
                "an unbound NFS claim does not count",
                claim("new-nfs"),
                None,
            ),
            ("an unknown claim does not count", claim("gone"), None),
            (
                "an ephemeral volume of the proxmox class counts before its claim exists",
                ephemeral("job-scratch", Some("proxmox")),
                Some("pvc/db/job-scratch"),
            ),
            (
                "an ephemeral volume of the default class counts",
                ephemeral("job-cache", None),
                Some("pvc/db/job-cache"),
            ),
            (
                "an ephemeral NFS volume does not count",
                ephemeral("job-nfs", Some("nfs")),
                None,
            ),
            (
                "an ephemeral volume whose claim is bound follows the PV",
                ephemeral("data", Some("nfs")),
                Some("pv/pv-1"),
            ),
        ];
        let cat = catalog();
        for (name, volume, want) in table {
            assert_eq!(
                cat.limited_identity("db", volume, &drivers()).as_deref(),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_pod_mounting_one_claim_twice_counts_it_once() {
        let vols = [
            VolumeRef::Claim("data".into()),
            VolumeRef::Claim("data".into()),
            VolumeRef::Claim("share".into()),
        ];
        assert_eq!(catalog().limited_volumes("db", &vols, &drivers()).len(), 1);
    }

    #[test]
    fn the_limit_comes_from_the_csinode_then_the_fallback() {
        let with = |count: Option<u32>| BTreeMap::from([(PROXMOX_CSI_DRIVER.to_owned(), count)]);
        let other = BTreeMap::from([("nfs.csi.k8s.io".to_owned(), Some(5))]);
        let table: &[(&str, Option<&CsiDrivers>, u32)] = &[
            ("the driver's allocatable count", Some(&with(Some(16))), 16),
            (
                "registered without a count: no limit",
                Some(&with(None)),
                u32::MAX,
            ),
            (
                "a CSINode without the driver: the fallback",
                Some(&other),
                24,
            ),
            ("no CSINode yet: the fallback", None, 24),
        ];
        for (name, csinode, want) in table {
            assert_eq!(
                attach_limit(*csinode, PROXMOX_CSI_DRIVER, DEFAULT_ATTACH_LIMIT),
                *want,
                "{name}"
            );
        }
    }
}
