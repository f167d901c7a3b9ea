//! The storage objects behind the volume-attach ceiling: watch-fed caches
//! of CSINodes, StorageClasses, PersistentVolumes, PersistentVolumeClaims
//! and VolumeAttachments ([`StorageCaches`]), what the planner reads from
//! them (the [`StorageCatalog`], each node's CSINode drivers, the
//! attachments per node).
//!
//! The caches start on first use: only the controller and the capacity
//! views need them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass, VolumeAttachment};
use kube::api::Api;
use kube::runtime::watcher;
use tidepool_core::volumes::{ClaimFacts, CsiDrivers, StorageCatalog};

use crate::cache::Cache;
use crate::error::ClusterError;

/// The annotation that marks the default StorageClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// Watch-fed caches of the storage objects. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StorageCaches {
    csinodes: Cache<CSINode>,
    classes: Cache<StorageClass>,
    volumes: Cache<PersistentVolume>,
    claims: Cache<PersistentVolumeClaim>,
    attachments: Cache<VolumeAttachment>,
}

/// A VolumeAttachment as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentView {
    /// Its name.
    pub name: String,
    /// The node it names.
    pub node: String,
    /// The CSI driver (`spec.attacher`).
    pub attacher: String,
    /// The PersistentVolume it attaches, if named.
    pub volume: Option<String>,
}

impl StorageCaches {
    /// Starts the five watchers.
    pub fn start(client: &kube::Client) -> Self {
        let config = watcher::Config::default;
        Self {
            csinodes: Cache::start(Api::all(client.clone()), config()),
            classes: Cache::start(Api::all(client.clone()), config()),
            volumes: Cache::start(Api::all(client.clone()), config()),
            claims: Cache::start(Api::all(client.clone()), config()),
            attachments: Cache::start(Api::all(client.clone()), config()),
        }
    }

    /// Whether every cache has completed its first list.
    pub fn is_synced(&self) -> bool {
        self.csinodes.is_synced()
            && self.classes.is_synced()
            && self.volumes.is_synced()
            && self.claims.is_synced()
            && self.attachments.is_synced()
    }

    /// Waits until every cache is synced.
    ///
    /// # Errors
    /// [`ClusterError::NotSynced`] when `timeout` passes first.
    pub async fn wait_until_synced(&self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let not_synced = |_| ClusterError::NotSynced(timeout);
        self.csinodes
            .wait_until_synced(left())
            .await
            .map_err(not_synced)?;
        self.classes
            .wait_until_synced(left())
            .await
            .map_err(not_synced)?;
        self.volumes
            .wait_until_synced(left())
            .await
            .map_err(not_synced)?;
        self.claims
            .wait_until_synced(left())
            .await
            .map_err(not_synced)?;
        self.attachments
            .wait_until_synced(left())
            .await
            .map_err(not_synced)
    }

    /// Change counters of the caches, to wake a loop when claims are bound
    /// or volumes attached.
    pub fn changes(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        vec![
            self.csinodes.changes(),
            self.claims.changes(),
            self.attachments.changes(),
        ]
    }

    /// The claims, CSI volumes and classes of the cluster.
    pub fn catalog(&self) -> StorageCatalog {
        let mut out = StorageCatalog::default();
        for c in self.claims.state() {
            let key = (
                c.metadata.namespace.clone().unwrap_or_default(),
                c.metadata.name.clone().unwrap_or_default(),
            );
            let spec = c.spec.as_ref();
            out.claims.insert(
                key,
                ClaimFacts {
                    volume: spec.and_then(|s| s.volume_name.clone()),
                    storage_class: spec.and_then(|s| s.storage_class_name.clone()),
                },
            );
        }
        for v in self.volumes.state() {
            if let (Some(name), Some(csi)) = (
                v.metadata.name.clone(),
                v.spec.as_ref().and_then(|s| s.csi.as_ref()),
            ) {
                out.volume_drivers.insert(name, csi.driver.clone());
            }
        }
        for c in self.classes.state() {
            let name = c.metadata.name.clone().unwrap_or_default();
            let default = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            if default {
                out.default_class = Some(name.clone());
            }
            out.class_provisioners.insert(name, c.provisioner.clone());
        }
        out
    }

    /// Each node's CSINode drivers with their `allocatable.count`.
    pub fn csi_drivers(&self) -> BTreeMap<String, CsiDrivers> {
        self.csinodes
            .state()
            .iter()
            .map(|n| {
                let drivers = n
                    .spec
                    .drivers
                    .iter()
                    .map(|d| {
                        let count = d
                            .allocatable
                            .as_ref()
                            .and_then(|a| a.count)
                            .and_then(|c| u32::try_from(c).ok());
                        (d.name.clone(), count)
                    })
                    .collect();
                (n.metadata.name.clone().unwrap_or_default(), drivers)
            })
            .collect()
    }

    /// Every VolumeAttachment.
    pub fn attachments(&self) -> Vec<AttachmentView> {
        self.attachments
            .state()
            .iter()
            .map(|a| AttachmentView {
                name: a.metadata.name.clone().unwrap_or_default(),
                node: a.spec.node_name.clone(),
                attacher: a.spec.attacher.clone(),
                volume: a.spec.source.persistent_volume_name.clone(),
            })
            .collect()
    }

    /// The PersistentVolumes of `drivers` attached to each node, as the
    /// VolumeAttachments say.
    pub fn attached_per_node(&self, drivers: &BTreeSet<String>) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for a in self
            .attachments()
            .into_iter()
            .filter(|a| drivers.contains(&a.attacher))
        {
            *out.entry(a.node).or_default() += 1;
        }
        out
    }
}
