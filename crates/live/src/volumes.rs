//! The volume-attach ceiling in the observation: which of each pod's
//! volumes are attach-limited (from the storage caches' catalog), and each
//! node's limit (its CSINode's count, else its provider's fallback) and
//! attached volumes (its pods' or its VolumeAttachments', whichever is
//! more). The rules themselves are [`tidepool_core::volumes`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tidepool_cluster::ClusterClient;
use tidepool_controller::ports::{ProviderError, ProviderErrorKind};
use tidepool_core::Config;
use tidepool_core::config::VolumeAttach;
use tidepool_core::planner::ClaimState;
use tidepool_core::sched::{NodeSnapshot, PodSpec};
use tidepool_core::volumes::{CsiDrivers, StorageCatalog, attach_limit};

/// What the storage caches say, read once per observation.
pub struct AttachView {
    catalog: StorageCatalog,
    drivers: BTreeSet<String>,
    csinodes: BTreeMap<String, CsiDrivers>,
    attached: BTreeMap<String, u32>,
}

impl AttachView {
    /// Reads the storage caches (waiting for their first list).
    ///
    /// # Errors
    /// Transient when the caches do not sync in time.
    pub async fn observe(cluster: &ClusterClient, config: &Config) -> Result<Self, ProviderError> {
        let storage = cluster.storage();
        if !storage.is_synced() {
            storage
                .wait_until_synced(std::time::Duration::from_secs(30))
                .await
                .map_err(|e| {
                    ProviderError::new(
                        ProviderErrorKind::Transient,
                        format!("the storage caches are not synced: {e}"),
                    )
                })?;
        }
        let drivers = config.attach_limited_drivers();
        Ok(Self {
            catalog: storage.catalog(),
            attached: storage.attached_per_node(&drivers),
            csinodes: storage.csi_drivers(),
            drivers,
        })
    }

    /// `pod` with its attach-limited volumes counted.
    pub fn resolve(&self, pod: &Arc<PodSpec>) -> Arc<PodSpec> {
        let n = self.count(pod);
        if n == pod.block_volumes {
            return pod.clone();
        }
        Arc::new(PodSpec {
            block_volumes: n,
            ..(**pod).clone()
        })
    }

    /// `pod` with its attach-limited volumes counted, owned.
    pub fn resolve_owned(&self, mut pod: PodSpec) -> PodSpec {
        pod.block_volumes = self.count(&pod);
        pod
    }

    fn count(&self, pod: &PodSpec) -> u32 {
        if pod.volumes.is_empty() {
            return 0;
        }
        let n = self
            .catalog
            .limited_volumes(&pod.namespace, &pod.volumes, &self.drivers)
            .len();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Sets each node's attach limit, from its CSINode or the fallback of
    /// the provider of its pool (the first provider's for nodes Tidepool
    /// did not create), and counts its VolumeAttachments in.
    pub fn limit_nodes(&self, nodes: &mut [NodeSnapshot], claims: &[ClaimState], config: &Config) {
        let default = config
            .providers
            .values()
            .next()
            .map(|p| p.volumes.clone())
            .unwrap_or_default();
        for node in nodes {
            let volumes = claims
                .iter()
                .find(|c| c.name == node.name)
                .and_then(|c| config.pool(&c.pool))
                .and_then(|p| config.providers.get(&p.provider))
                .map_or(&default, |p| &p.volumes);
            let VolumeAttach {
                driver,
                attach_limit: fallback,
            } = volumes;
            node.volume_limit = Some(attach_limit(
                self.csinodes.get(&node.name),
                driver,
                *fallback,
            ));
            if let Some(n) = self.attached.get(&node.name) {
                node.block_volumes = node.block_volumes.max(*n);
            }
        }
    }
}
