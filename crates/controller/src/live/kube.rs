//! [`Nodes`] and [`ClaimStore`] over the Kubernetes API.
//!
//! A claim's intent lives where Kubernetes users expect it: a deletion
//! timestamp means remove (so `kubectl delete workerclaim X` works), the
//! annotation `tidepool.dev/force-remove: "true"` skips the drain, and
//! `tidepool.dev/intent: drain` asks for a drain that keeps the worker.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidepool_cluster::{
    ClaimCondition, ClaimPhase, ClaimStep, ClusterClient, ClusterError, ConditionStatus,
    ConditionType, DrainError, DrainOptions, FINALIZER, WorkerClaim, WorkerClaimSpec,
    WorkerClaimStatus,
};
use tidepool_core::{Lifecycle, NodeMetadata, Phase};

use crate::claim::{Claim, ClaimSpec, ClaimStatus, Condition, Intent, VmIdentity};
use crate::ports::{ClaimStore, NodeView, Nodes, ProviderError, ProviderErrorKind, ProviderResult};

/// Annotation asking for a drain-only intent.
pub const INTENT_ANNOTATION: &str = "tidepool.dev/intent";
/// Annotation making a removal skip the drain.
pub const FORCE_ANNOTATION: &str = "tidepool.dev/force-remove";
/// Annotation carrying the host chosen when the claim was made (the
/// planner's choice), until the status records one.
pub const HOST_ANNOTATION: &str = "tidepool.dev/host";

/// How long a first read waits for the claim watch to complete its list.
const CACHE_SYNC: Duration = Duration::from_secs(10);
/// How long listing nodes waits for the node and pod caches' first list
/// (a cluster of 30,000 pods takes about 10 s).
const LIST_SYNC: Duration = Duration::from_secs(60);

/// Maps a cluster error onto the executor's classification.
pub fn classify(e: ClusterError) -> ProviderError {
    use tidepool_cluster::ErrorCategory as C;
    let kind = match e.category() {
        C::NotFound => ProviderErrorKind::NotFound,
        C::AlreadyExists | C::Conflict => ProviderErrorKind::Conflict,
        C::Transient | C::Timeout => ProviderErrorKind::Transient,
        C::Blocked => ProviderErrorKind::Blocked,
        C::Forbidden | C::Invalid | C::Config | C::Internal => ProviderErrorKind::Permanent,
    };
    ProviderError::new(kind, e.to_string())
}

/// The cluster's nodes and claims through one client.
#[derive(Clone)]
pub struct KubeCluster {
    cluster: ClusterClient,
    time_scale: f64,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// Adapters over `cluster`.
    pub fn new(cluster: ClusterClient) -> Self {
        Self {
            cluster,
            time_scale: 1.0,
        }
    }

    /// The same adapters with a clock `time_scale` times faster than real
    /// time (the lab's): a drain's real-time waits shrink in proportion.
    #[must_use]
    pub fn with_time_scale(mut self, time_scale: f64) -> Self {
        self.time_scale = time_scale.max(1.0);
        self
    }

    /// The client.
    pub fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl Nodes for KubeCluster {
    async fn list(&self) -> ProviderResult<Vec<NodeView>> {
        // From the watch-fed caches, as the planner sees the cluster: no
        // list of every pod (whole objects) on each call.
        self.cluster
            .wait_until_synced(LIST_SYNC)
            .await
            .map_err(classify)?;
        let mut per_node: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        for p in self.cluster.pods().state() {
            if let Some(node) = p.node.as_ref().filter(|_| p.is_workload()) {
                *per_node.entry(node.clone()).or_default() += 1;
            }
        }
        let mut views: Vec<NodeView> = self
            .cluster
            .nodes()
            .state()
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                NodeView {
                    labels: n.metadata.labels.clone().unwrap_or_default(),
                    ready: node_ready(n),
                    unschedulable: n
                        .spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false),
                    workload_pods: per_node.get(name.as_str()).copied().unwrap_or(0),
                    name,
                }
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    async fn node_ready(&self, name: &str) -> ProviderResult<Option<bool>> {
        // The watch-fed cache answers the frequent "is it Ready yet?"
        // without a request; before it has synced, the API server does.
        let cache = self.cluster.nodes();
        if cache.is_synced() {
            return Ok(cache.get(None, name).as_deref().map(node_ready));
        }
        let node = self.cluster.get_node(name).await.map_err(classify)?;
        Ok(node.as_ref().map(node_ready))
    }

    async fn ensure_metadata(&self, name: &str, meta: &NodeMetadata) -> ProviderResult<()> {
        self.cluster
            .apply_node_metadata(name, meta)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn cordon(&self, name: &str) -> ProviderResult<()> {
        self.cluster.cordon(name).await.map_err(classify)?;
        Ok(())
    }

    async fn uncordon(&self, name: &str) -> ProviderResult<()> {
        self.cluster.uncordon(name).await.map_err(classify)?;
        Ok(())
    }

    async fn drain(
        &self,
        name: &str,
        timeout: Duration,
        force: bool,
        grace: Option<Duration>,
    ) -> ProviderResult<()> {
        let defaults = DrainOptions::default();
        let scaled = |d: Duration| d.div_f64(self.time_scale).max(Duration::from_millis(5));
        let options = DrainOptions {
            // One pass waits briefly; the executor calls again while blocked,
            // and gives up when the pool's drain timeout has passed.
            timeout: scaled(timeout.min(Duration::from_secs(30))),
            force,
            grace_period_seconds: grace.map(|g| u32::try_from(g.as_secs()).unwrap_or(u32::MAX)),
            initial_backoff: scaled(defaults.initial_backoff),
            max_backoff: scaled(defaults.max_backoff),
            poll_interval: scaled(defaults.poll_interval),
        };
        match self.cluster.drain(name, &options).await {
            Ok(_) => Ok(()),
            Err(DrainError::Blocked { report } | DrainError::Timeout { report }) => {
                Err(ProviderError::new(
                    ProviderErrorKind::Blocked,
                    format!("draining {name}: {}", report.summary()),
                ))
            }
            Err(DrainError::Cluster { source, .. }) => Err(classify(source)),
        }
    }

    async fn delete_node(&self, name: &str) -> ProviderResult<()> {
        self.cluster.delete_node(name).await.map_err(classify)?;
        Ok(())
    }

    async fn announce(&self, name: &str, reason: &str, message: &str) {
        let target = tidepool_cluster::EventTarget {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.to_owned(),
            namespace: None,
            uid: None,
        };
        let record = tidepool_cluster::EventRecord {
            event_type: tidepool_cluster::EventType::Normal,
            reason,
            action: reason,
            message,
        };
        if let Err(e) = self.cluster.record_event(&target, &record).await {
            tracing::warn!(node = name, reason, error = %e, "could not record the node Event");
        }
    }
}

const CONDITIONS: [(Condition, ConditionType); 13] = [
    (Condition::VmidAllocated, ConditionType::VmidAllocated),
    (Condition::VmCloned, ConditionType::VmCloned),
    (Condition::VmConfigured, ConditionType::VmConfigured),
    (Condition::VmStarted, ConditionType::VmStarted),
    (Condition::AddressReported, ConditionType::AddressReported),
    (Condition::ConfigDelivered, ConditionType::ConfigDelivered),
    (Condition::NodeReady, ConditionType::NodeReady),
    (Condition::Labelled, ConditionType::Labelled),
    (Condition::Cordoned, ConditionType::Cordoned),
    (Condition::Drained, ConditionType::Drained),
    (Condition::NodeDeleted, ConditionType::NodeDeleted),
    (Condition::VmStopped, ConditionType::VmStopped),
    (Condition::VmDeleted, ConditionType::VmDeleted),
];

/// The resource's status for a claim status.
pub fn to_resource_status(status: &ClaimStatus) -> WorkerClaimStatus {
    let (failed_step, last_error) = match &status.lifecycle {
        Lifecycle::Failed { step, reason } => (
            Some(ClaimStep::from(*step)),
            Some(format!("{step}: {reason}")),
        ),
        _ => (None, status.last_error.clone()),
    };
    let conditions = CONDITIONS
        .iter()
        .filter_map(|(ours, theirs)| {
            status.conditions.get(ours).map(|t| ClaimCondition {
                type_: *theirs,
                status: ConditionStatus::True,
                reason: "Done".into(),
                message: String::new(),
                last_transition_time: Time(*t),
            })
        })
        .collect();
    WorkerClaimStatus {
        phase: Some(ClaimPhase::from(status.lifecycle.phase())),
        failed_step,
        vmid: status.vm.as_ref().map(|v| v.vmid).or(status.vmid),
        proxmox_node: status
            .vm
            .as_ref()
            .map(|v| v.node.clone())
            .or_else(|| status.host.clone()),
        vm_uuid: status.vm.as_ref().map(|v| v.uuid.clone()),
        ip: status.ip.map(|ip| ip.to_string()),
        node_name: status.node_name.clone(),
        provisioned_at: status.provisioned_at.map(Time),
        expires_at: status.expires_at.map(Time),
        last_error,
        conditions,
        observed_generation: None,
    }
}

/// The claim status a resource status records.
pub fn from_resource_status(status: Option<&WorkerClaimStatus>) -> ClaimStatus {
    let Some(s) = status else {
        return ClaimStatus::default();
    };
    let phase: Phase = s.phase.map_or(Phase::Requested, Phase::from);
    let lifecycle = match phase {
        Phase::Failed => {
            let step = s
                .failed_step
                .map_or(tidepool_core::Step::AllocateVmid, Into::into);
            let prefix = format!("{step}: ");
            let reason = s
                .last_error
                .as_deref()
                .map(|e| e.strip_prefix(&prefix).unwrap_or(e).to_owned())
                .unwrap_or_default();
            Lifecycle::Failed { step, reason }
        }
        Phase::Requested => Lifecycle::Requested,
        Phase::Provisioning => Lifecycle::Provisioning,
        Phase::Joining => Lifecycle::Joining,
        Phase::Ready => Lifecycle::Ready,
        Phase::Draining => Lifecycle::Draining,
        Phase::Terminating => Lifecycle::Terminating,
        Phase::Terminated => Lifecycle::Terminated,
    };
    let vm = match (s.vmid, &s.proxmox_node, &s.vm_uuid) {
        (Some(vmid), Some(node), Some(uuid)) => Some(VmIdentity {
            vmid,
            node: node.clone(),
            uuid: uuid.clone(),
        }),
        _ => None,
    };
    let conditions = CONDITIONS
        .iter()
        .filter_map(|(ours, theirs)| {
            s.conditions
                .iter()
                .find(|c| c.type_ == *theirs && c.status == ConditionStatus::True)
                .map(|c| (*ours, c.last_transition_time.0))
        })
        .collect();
    ClaimStatus {
        lifecycle,
        vmid: s.vmid,
        host: s.proxmox_node.clone(),
        vm,
        ip: s.ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()),
        node_name: s.node_name.clone(),
        provisioned_at: s.provisioned_at.as_ref().map(|t| t.0),
        expires_at: s.expires_at.as_ref().map(|t| t.0),
        conditions,
        last_error: if phase == Phase::Failed {
            None
        } else {
            s.last_error.clone()
        },
    }
}

/// The executor's view of a `WorkerClaim`.
pub fn from_resource(wc: &WorkerClaim) -> Claim {
    let meta = &wc.metadata;
    let annotations = meta.annotations.clone().unwrap_or_default();
    let intent = if meta.deletion_timestamp.is_some() {
        Intent::Remove {
            force: annotations
                .get(FORCE_ANNOTATION)
                .is_some_and(|v| v == "true"),
        }
    } else if annotations
        .get(INTENT_ANNOTATION)
        .is_some_and(|v| v == "drain")
    {
        Intent::Drain
    } else {
        Intent::Keep
    };
    let mut status = from_resource_status(wc.status.as_ref());
    if status.host.is_none() {
        status.host = annotations.get(HOST_ANNOTATION).cloned();
    }
    Claim {
        name: meta.name.clone().unwrap_or_default(),
        spec: ClaimSpec {
            pool: wc.spec.pool.clone(),
            size: wc.spec.size.clone(),
            ttl: wc
                .spec
                .ttl_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            requested_by: wc.spec.requested_by.clone(),
            reason: wc.spec.reason.clone(),
        },
        status,
        intent,
        finalizer: meta
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == FINALIZER)),
    }
}

fn ttl_seconds(ttl: Option<Duration>) -> Option<i64> {
    ttl.and_then(|t| i64::try_from(t.as_secs()).ok())
}

impl ClaimStore for KubeCluster {
    async fn get(&self, name: &str) -> ProviderResult<Option<Claim>> {
        Ok(self
            .cluster
            .get_claim(name)
            .await
            .map_err(classify)?
            .as_ref()
            .map(from_resource))
    }

    async fn list(&self) -> ProviderResult<Vec<Claim>> {
        Ok(self
            .cluster
            .list_claims(None)
            .await
            .map_err(classify)?
            .iter()
            .map(from_resource)
            .collect())
    }

    async fn observed(&self) -> ProviderResult<Vec<Claim>> {
        let cache = self.cluster.claim_cache();
        if !cache.is_synced() && cache.wait_until_synced(CACHE_SYNC).await.is_err() {
            // The watch is not answering: read the API server directly.
            return ClaimStore::list(self).await;
        }
        Ok(cache.state().iter().map(|c| from_resource(c)).collect())
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.cluster.claim_cache().changes())
    }

    async fn create(&self, claim: &Claim) -> ProviderResult<()> {
        let spec = WorkerClaimSpec {
            pool: claim.spec.pool.clone(),
            size: claim.spec.size.clone(),
            ttl_seconds: ttl_seconds(claim.spec.ttl),
            requested_by: claim.spec.requested_by.clone(),
            reason: claim.spec.reason.clone(),
        };
        let annotations = claim
            .status
            .host
            .iter()
            .map(|h| (HOST_ANNOTATION.to_owned(), h.clone()))
            .collect();
        self.cluster
            .create_claim_annotated(&claim.name, spec, annotations)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn update(&self, claim: &Claim) -> ProviderResult<()> {
        let (intent, force) = match claim.intent {
            Intent::Keep => (None, None),
            Intent::Drain => (Some("drain"), None),
            Intent::Remove { force } => (Some("remove"), force.then_some("true")),
        };
        let patch = json!({
            "metadata": {"annotations": {INTENT_ANNOTATION: intent, FORCE_ANNOTATION: force}},
            "spec": {"ttlSeconds": ttl_seconds(claim.spec.ttl)},
        });
        self.cluster
            .claims()
            .patch(&claim.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                classify(ClusterError::api(
                    format!("updating WorkerClaim {}", claim.name),
                    e,
                ))
            })?;
        if matches!(claim.intent, Intent::Remove { .. }) {
            self.cluster
                .delete_claim(&claim.name)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn save_status(&self, name: &str, status: &ClaimStatus) -> ProviderResult<()> {
        self.cluster
            .patch_claim_status(name, &to_resource_status(status))
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn audit(&self, claim: &str, entry: &crate::ports::AuditEntry) {
        let target = tidepool_cluster::EventTarget {
            api_version: "tidepool.dev/v1alpha1".into(),
            kind: "WorkerClaim".into(),
            name: claim.to_owned(),
            namespace: None,
            uid: None,
        };
        let record = tidepool_cluster::EventRecord {
            event_type: if entry.result == "ok" {
                tidepool_cluster::EventType::Normal
            } else {
                tidepool_cluster::EventType::Warning
            },
            reason: if entry.result == "ok" {
                "Audit"
            } else {
                "AuditRefused"
            },
            action: &entry.operation,
            message: &format!(
                "{} by {}: {} ({})",
                entry.operation, entry.actor, entry.message, entry.result
            ),
        };
        if let Err(e) = self.cluster.record_event(&target, &record).await {
            tracing::warn!(claim, error = %e, "could not record the audit Event");
        }
    }

    async fn remove_finalizer(&self, name: &str) -> ProviderResult<()> {
        self.cluster
            .remove_claim_finalizer(name)
            .await
            .map_err(classify)?;
        Ok(())
    }
}
