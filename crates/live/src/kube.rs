//! [`Nodes`], [`ClaimStore`] and [`PoolRecords`] over the Kubernetes API.
//!
//! A claim's intent lives where Kubernetes users expect it: `spec.intent`
//! (drain, or remove with `force`), and a deletion timestamp means remove,
//! so `kubectl delete workerclaim X` works.
//!
//! Status writes are conditional: the store remembers the resourceVersion
//! it last saw of each claim (from its reads and its own writes) and sends
//! it with every status patch, so a deposed leader's write fails with a
//! conflict instead of overwriting what the new leader recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use tidepool_cluster::claim::legacy_annotations_cleared;
use tidepool_cluster::nodes::{is_ready, machine_of, problems_of};
use tidepool_cluster::{ClusterClient, ClusterError, DrainError, DrainOptions, WorkerClaim};
use tidepool_core::NodeMetadata;

use tidepool_controller::claim::{Claim, ClaimStatus, Intent};
use tidepool_controller::ports::{
    AuditResult, ClaimStore, Clock, Events, NodeIdentity, NodeView, Nodes, PoolRecords,
    ProviderError, ProviderErrorKind, ProviderResult, VersionedRecord,
};
use tidepool_core::pool_record::PoolRecord;

/// Tidepool's namespace unless told otherwise.
const DEFAULT_NAMESPACE: &str = "tidepool-system";

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
    clock: Arc<dyn Clock>,
    /// Where the pool records live (Tidepool's namespace).
    namespace: String,
    /// The resourceVersion last seen of each claim.
    versions: Arc<std::sync::Mutex<Versions>>,
}

/// The resourceVersion this store last saw of each claim, with the ticket
/// of the call that saw it. Calls take increasing tickets when they start;
/// an answer replaces what a call started later saw never, so a read that
/// overlapped this store's own write cannot put an older version back.
#[derive(Debug, Default)]
struct Versions {
    next: u64,
    seen: BTreeMap<String, (String, u64)>,
}

impl Versions {
    fn ticket(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Forgets the claims a list started at `ticket` no longer shows,
    /// unless a later call saw them.
    fn forget_missing(&mut self, listed: &[WorkerClaim], ticket: u64) {
        self.seen.retain(|name, (_, at)| {
            *at > ticket
                || listed
                    .iter()
                    .any(|c| c.metadata.name.as_ref() == Some(name))
        });
    }

    /// Keeps the newer of what is remembered and what the call holding
    /// `ticket` saw. Newer is the larger resourceVersion when both are
    /// numbers (as etcd revisions, and the lab's, are): a read that started
    /// after this store's write but was answered from before it must not
    /// win either. Otherwise, the call that started later.
    fn saw(&mut self, claim: &WorkerClaim, ticket: u64) {
        let (Some(name), Some(rv)) = (&claim.metadata.name, &claim.metadata.resource_version)
        else {
            return;
        };
        let newer = match self.seen.get(name) {
            None => true,
            Some((known, at)) => match (known.parse::<u64>(), rv.parse::<u64>()) {
                (Ok(known), Ok(seen)) => seen >= known,
                _ => ticket >= *at,
            },
        };
        if newer {
            self.seen.insert(name.clone(), (rv.clone(), ticket));
        }
    }
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// Adapters over `cluster` for a controller on `clock`: a drain's
    /// real-time waits last what the asked-for durations last on it.
    pub fn new(cluster: ClusterClient, clock: Arc<dyn Clock>) -> Self {
        Self {
            cluster,
            clock,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            versions: Arc::default(),
        }
    }

    /// The same adapters keeping the pool records in `namespace` (the
    /// configuration's `server.namespace`) instead of `tidepool-system`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A ticket for a call about to start.
    fn ticket(&self) -> u64 {
        self.versions().ticket()
    }

    /// Remembers the version of a claim that the call holding `ticket`
    /// read or wrote.
    fn saw(&self, claim: &WorkerClaim, ticket: u64) {
        self.versions().saw(claim, ticket);
    }

    /// The resourceVersion this store last saw of `name`, if any.
    pub fn seen_version(&self, name: &str) -> Option<String> {
        self.versions().seen.get(name).map(|(rv, _)| rv.clone())
    }

    /// The client.
    pub fn cluster(&self) -> &ClusterClient {
        &self.cluster
    }
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
        let now = self.clock.now();
        let mut views: Vec<NodeView> = self
            .cluster
            .nodes()
            .state()
            .iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                NodeView {
                    labels: n.metadata.labels.clone().unwrap_or_default(),
                    ready: is_ready(n),
                    unschedulable: n
                        .spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false),
                    workload_pods: per_node.get(name.as_str()).copied().unwrap_or(0),
                    problems: problems_of(n, now),
                    name,
                }
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    async fn node_detail(
        &self,
        name: &str,
    ) -> ProviderResult<Option<tidepool_core::view::NodeDetail>> {
        crate::node_detail::read(&self.cluster, name)
            .await
            .map_err(classify)
    }

    async fn node_ready(&self, name: &str) -> ProviderResult<Option<bool>> {
        // The watch-fed cache answers the frequent "is it Ready yet?"
        // without a request; before it has synced, the API server does.
        let cache = self.cluster.nodes();
        if cache.is_synced() {
            return Ok(cache.get(None, name).as_deref().map(is_ready));
        }
        let node = self.cluster.get_node(name).await.map_err(classify)?;
        Ok(node.as_ref().map(is_ready))
    }

    async fn node_identity(&self, name: &str) -> ProviderResult<Option<NodeIdentity>> {
        let identity = |n: &k8s_openapi::api::core::v1::Node| {
            let (system_uuid, provider_id) = machine_of(n);
            NodeIdentity {
                system_uuid,
                provider_id,
            }
        };
        let cache = self.cluster.nodes();
        if cache.is_synced() {
            return Ok(cache.get(None, name).as_deref().map(identity));
        }
        let node = self.cluster.get_node(name).await.map_err(classify)?;
        Ok(node.as_ref().map(identity))
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
        let scaled = |d: Duration| self.clock.real(d).max(Duration::from_millis(5));
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
        self.node_event(name, tidepool_cluster::EventType::Normal, reason, message)
            .await;
    }

    async fn warn(&self, name: &str, reason: &str, message: &str) {
        self.node_event(name, tidepool_cluster::EventType::Warning, reason, message)
            .await;
    }
}

impl KubeCluster {
    /// Records an Event of `event_type` on the node `name`, best effort.
    async fn node_event(
        &self,
        name: &str,
        event_type: tidepool_cluster::EventType,
        reason: &str,
        message: &str,
    ) {
        let target = tidepool_cluster::EventTarget {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.to_owned(),
            namespace: None,
            uid: None,
        };
        let record = tidepool_cluster::EventRecord {
            event_type,
            reason,
            action: reason,
            message,
        };
        if let Err(e) = self.cluster.record_event(&target, &record).await {
            tracing::warn!(node = name, reason, error = %e, "could not record the node Event");
        }
    }
}

impl Events for KubeCluster {
    async fn tell_pod(&self, namespace: &str, name: &str, reason: &str, message: &str) {
        let target = tidepool_cluster::EventTarget {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            uid: None,
        };
        let record = tidepool_cluster::EventRecord {
            event_type: tidepool_cluster::EventType::Normal,
            reason,
            action: "Autoscale",
            message,
        };
        if let Err(e) = self.cluster.record_event(&target, &record).await {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "could not record the scaling Event");
        }
    }
}

impl PoolRecords for KubeCluster {
    async fn read_pool(&self, pool: &str) -> ProviderResult<VersionedRecord> {
        let found = self
            .cluster
            .get_pool_record(&self.namespace, pool)
            .await
            .map_err(classify)?;
        Ok(VersionedRecord::from(found))
    }

    async fn write_pool(
        &self,
        pool: &str,
        record: &PoolRecord,
        version: Option<&str>,
    ) -> ProviderResult<()> {
        self.cluster
            .put_pool_record(&self.namespace, pool, record, version)
            .await
            .map_err(|e| {
                let e = classify(e);
                // Deleted since it was read: another version, read again.
                if e.kind == ProviderErrorKind::NotFound && version.is_some() {
                    ProviderError::new(ProviderErrorKind::Conflict, e.message)
                } else {
                    e
                }
            })
    }
}

impl ClaimStore for KubeCluster {
    async fn get(&self, name: &str) -> ProviderResult<Option<Claim>> {
        let ticket = self.ticket();
        let claim = self.cluster.get_claim(name).await.map_err(classify)?;
        if let Some(c) = &claim {
            self.saw(c, ticket);
        }
        Ok(claim.as_ref().map(WorkerClaim::to_claim))
    }

    async fn list(&self) -> ProviderResult<Vec<Claim>> {
        let ticket = self.ticket();
        let claims = self.cluster.list_claims(None).await.map_err(classify)?;
        let mut versions = self.versions();
        versions.forget_missing(&claims, ticket);
        for c in &claims {
            versions.saw(c, ticket);
        }
        drop(versions);
        Ok(claims.iter().map(WorkerClaim::to_claim).collect())
    }

    async fn observed(&self) -> ProviderResult<Vec<Claim>> {
        let cache = self.cluster.claim_cache();
        if !cache.is_synced() && cache.wait_until_synced(CACHE_SYNC).await.is_err() {
            // The watch is not answering: read the API server directly.
            return ClaimStore::list(self).await;
        }
        let claims = cache.state();
        {
            // A watch may lag behind what this store read or wrote itself:
            // it only fills in claims the store has not seen yet.
            let mut versions = self.versions();
            for c in &claims {
                if c.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| !versions.seen.contains_key(n))
                {
                    versions.saw(c, 0);
                }
            }
        }
        Ok(claims.iter().map(|c| c.to_claim()).collect())
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.cluster.claim_cache().changes())
    }

    async fn create(&self, claim: &Claim) -> ProviderResult<()> {
        let ticket = self.ticket();
        let created = self.cluster.create_claim(claim).await.map_err(classify)?;
        self.saw(&created, ticket);
        Ok(())
    }

    async fn update(&self, claim: &Claim) -> ProviderResult<()> {
        // Only the intent and the TTL change after creation; the patch also
        // clears the annotations older versions kept them in.
        let intent = (claim.spec.intent != Intent::Keep).then_some(claim.spec.intent);
        let patch = json!({
            "metadata": {"annotations": legacy_annotations_cleared()},
            "spec": {
                "intent": intent,
                "ttlSeconds": claim.spec.ttl.map(|t| t.as_secs()),
            },
        });
        let ticket = self.ticket();
        let updated = self
            .cluster
            .claims()
            .patch(&claim.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                classify(ClusterError::api(
                    format!("updating WorkerClaim {}", claim.name),
                    e,
                ))
            })?;
        self.saw(&updated, ticket);
        if claim.spec.intent.is_removal() {
            self.cluster
                .delete_claim(&claim.name)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn save_status(&self, name: &str, status: &ClaimStatus) -> ProviderResult<()> {
        let ticket = self.ticket();
        let seen = self.seen_version(name);
        let written = self
            .cluster
            .patch_claim_status_at(name, status, seen.as_deref())
            .await
            .map_err(classify)?;
        self.saw(&written, ticket);
        Ok(())
    }

    async fn audit(&self, claim: &str, entry: &tidepool_controller::ports::AuditEntry) {
        let target = tidepool_cluster::EventTarget {
            api_version: "tidepool.dev/v1alpha1".into(),
            kind: "WorkerClaim".into(),
            name: claim.to_owned(),
            namespace: None,
            uid: None,
        };
        let (event_type, reason) = match entry.result {
            AuditResult::Ok => (tidepool_cluster::EventType::Normal, "Audit"),
            AuditResult::Error(_) => (tidepool_cluster::EventType::Warning, "AuditRefused"),
        };
        let record = tidepool_cluster::EventRecord {
            event_type,
            reason,
            action: &entry.operation,
            message: &format!(
                "{} by {}: {} ({})",
                entry.operation,
                entry.actor,
                entry.message,
                entry.result.as_str()
            ),
        };
        if let Err(e) = self.cluster.record_event(&target, &record).await {
            tracing::warn!(claim, error = %e, "could not record the audit Event");
        }
    }

    async fn add_finalizer(&self, name: &str) -> ProviderResult<()> {
        let ticket = self.ticket();
        let changed = self
            .cluster
            .add_claim_finalizer(name)
            .await
            .map_err(classify)?;
        self.saw(&changed, ticket);
        Ok(())
    }

    async fn remove_finalizer(&self, name: &str) -> ProviderResult<()> {
        let ticket = self.ticket();
        match self
            .cluster
            .remove_claim_finalizer(name)
            .await
            .map_err(classify)?
        {
            Some(left) => self.saw(&left, ticket),
            None => {
                self.versions().seen.remove(name);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_at(name: &str, rv: &str) -> WorkerClaim {
        let spec = tidepool_controller::claim::ClaimSpec {
            pool: "burst".into(),
            size: "small".into(),
            ttl: None,
            requested_by: "test".into(),
            reason: "versions".into(),
            intent: Intent::Keep,
            host: None,
        };
        let mut c = WorkerClaim::for_claim(&Claim::new(name, spec));
        c.metadata.resource_version = Some(rv.to_owned());
        c
    }

    #[test]
    fn a_read_that_overlapped_the_stores_own_write_does_not_put_an_older_version_back() {
        let mut v = Versions::default();
        let read = v.ticket();
        let write = v.ticket();
        v.saw(&claim_at("burst-a", "7"), write);
        // The read started before the write and answers after it.
        v.saw(&claim_at("burst-a", "6"), read);
        assert_eq!(v.seen["burst-a"].0, "7");
        // A read started later wins.
        let later = v.ticket();
        v.saw(&claim_at("burst-a", "9"), later);
        assert_eq!(v.seen["burst-a"].0, "9");
    }

    #[test]
    fn a_read_answered_from_before_the_stores_own_write_does_not_win_by_starting_later() {
        let mut v = Versions::default();
        let write = v.ticket();
        let read = v.ticket();
        // The read started after the write but was served before it landed.
        v.saw(&claim_at("burst-a", "6"), read);
        v.saw(&claim_at("burst-a", "7"), write);
        assert_eq!(v.seen["burst-a"].0, "7");
    }

    #[test]
    fn a_list_forgets_the_claims_it_no_longer_shows_unless_seen_since() {
        let mut v = Versions::default();
        let first = v.ticket();
        v.saw(&claim_at("gone", "3"), first);
        let list = v.ticket();
        let created = v.ticket();
        v.saw(&claim_at("new", "5"), created);
        v.forget_missing(&[], list);
        assert!(!v.seen.contains_key("gone"));
        assert!(v.seen.contains_key("new"));
    }
}
