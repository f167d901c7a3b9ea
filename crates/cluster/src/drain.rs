//! Draining a node through the Eviction API (`policy/v1`), the way
//! `kubectl drain` and Karpenter do, with a report of what happened to
//! every pod and, when it cannot finish, what blocks it.
//!
//! The decision about each pod is a pure function ([`classify`]), tested
//! on its own; [`ClusterClient::drain`] performs the evictions, retries the
//! ones a PodDisruptionBudget refuses (HTTP 429) with backoff until a
//! deadline, then waits for the evicted pods to be gone.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Preconditions};
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use crate::client::ClusterClient;
use crate::error::{ClusterError, ErrorCategory};

/// Karpenter's pod annotation: `"true"` forbids voluntary disruption.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// Cluster Autoscaler's pod annotation: `"false"` forbids eviction.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// The annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// How a drain behaves.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    /// How long to keep evicting and waiting before giving up.
    pub timeout: Duration,
    /// Evict pods annotated `karpenter.sh/do-not-disrupt: "true"` or
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` too.
    /// Disruption budgets are honoured even when forced.
    pub force: bool,
    /// Grace period given to evicted pods; `None` keeps each pod's own.
    pub grace_period_seconds: Option<u32>,
    /// First wait before retrying refused evictions; doubles each round.
    pub initial_backoff: Duration,
    /// Longest wait between retry rounds.
    pub max_backoff: Duration,
    /// How often to check whether evicted pods are gone.
    pub poll_interval: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            force: false,
            grace_period_seconds: None,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// A pod by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PodRef {
    /// The reference of a pod object.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a pod was left on the node without being evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Owned by a DaemonSet, which would put it straight back.
    DaemonSet,
    /// A mirror of a static pod; only the kubelet can remove it.
    Mirror,
    /// Already being deleted.
    Terminating,
    /// Already finished (Succeeded or Failed); holds no resources.
    Completed,
}

impl SkipReason {
    /// The reason's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaemonSet => "DaemonSet",
            Self::Mirror => "Mirror",
            Self::Terminating => "Terminating",
            Self::Completed => "Completed",
        }
    }
}

/// Why a pod could not be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// Annotated `karpenter.sh/do-not-disrupt: "true"` (and not forced).
    DoNotDisrupt,
    /// Annotated `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` (and not forced).
    NotSafeToEvict,
    /// A PodDisruptionBudget allows no disruption right now (HTTP 429).
    DisruptionBudget,
    /// The API refused the eviction for another reason (for example a pod
    /// matched by more than one budget).
    EvictionRefused,
}

impl BlockReason {
    /// The reason's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoNotDisrupt => "DoNotDisrupt",
            Self::NotSafeToEvict => "NotSafeToEvict",
            Self::DisruptionBudget => "DisruptionBudget",
            Self::EvictionRefused => "EvictionRefused",
        }
    }
}

/// What [`classify`] decides for one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Evict it.
    Evict,
    /// Leave it.
    Skip(SkipReason),
    /// It must not be evicted (an annotation protects it).
    Protected(BlockReason),
}

/// A pod left on the node, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPod {
    /// The pod.
    pub pod: PodRef,
    /// Why.
    pub reason: SkipReason,
}

/// A pod that could not be evicted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedPod {
    /// The pod.
    pub pod: PodRef,
    /// Why.
    pub reason: BlockReason,
    /// The PodDisruptionBudget(s) selecting the pod, when a budget blocks it.
    pub budgets: Vec<String>,
    /// The API server's message, when it refused an eviction.
    pub message: String,
}

/// What a drain did, pod by pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// The node drained.
    pub node: String,
    /// Pods whose eviction the API accepted (or that vanished meanwhile).
    pub evicted: Vec<PodRef>,
    /// Pods deliberately left on the node.
    pub skipped: Vec<SkippedPod>,
    /// Pods that could not be evicted when the drain ended.
    pub blocked: Vec<BlockedPod>,
    /// Evicted pods that had not finished terminating when the drain ended.
    pub still_terminating: Vec<PodRef>,
}

impl DrainReport {
    /// One line for logs and Events: counts, and the first blockers by name.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "node {}: {} evicted, {} skipped, {} blocked",
            self.node,
            self.evicted.len(),
            self.skipped.len(),
            self.blocked.len()
        );
        if !self.still_terminating.is_empty() {
            s.push_str(&format!(
                ", {} still terminating",
                self.still_terminating.len()
            ));
        }
        for b in self.blocked.iter().take(3) {
            s.push_str(&format!("; {} blocked ({})", b.pod, b.reason.as_str()));
            if !b.budgets.is_empty() {
                s.push_str(&format!(" by PodDisruptionBudget {}", b.budgets.join(", ")));
            }
        }
        s
    }
}

/// A drain that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Some pods cannot be evicted: protected by an annotation (reported
    /// at once, before anything is evicted) or refused by a disruption
    /// budget until the deadline.
    #[error("draining blocked: {}", .report.summary())]
    Blocked {
        /// What happened, with the blockers.
        report: Box<DrainReport>,
    },
    /// Every eviction was accepted, but some pods were still terminating
    /// at the deadline.
    #[error("draining timed out: {}", .report.summary())]
    Timeout {
        /// What happened, with the pods still terminating.
        report: Box<DrainReport>,
    },
    /// An API call failed in a way retrying will not fix.
    #[error("draining node {node}")]
    Cluster {
        /// The node.
        node: String,
        /// The cause.
        #[source]
        source: ClusterError,
    },
}

impl DrainError {
    /// The error's category, for retry decisions, metrics and Events.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Blocked { .. } => ErrorCategory::Blocked,
            Self::Timeout { .. } => ErrorCategory::Timeout,
            Self::Cluster { source, .. } => source.category(),
        }
    }

    /// The report, when the drain got as far as making one.
    pub fn report(&self) -> Option<&DrainReport> {
        match self {
            Self::Blocked { report } | Self::Timeout { report } => Some(report),
            Self::Cluster { .. } => None,
        }
    }
}

/// Decides what a drain does with a pod.
///
/// Skipped: DaemonSet-owned pods, mirror pods, pods already being deleted,
/// and pods that already finished. Protected unless `force`: pods with
/// `karpenter.sh/do-not-disrupt: "true"` or
/// `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`. Everything
/// else is evicted, including pods with emptyDir volumes (their scratch
/// data is lost, as with `kubectl drain --delete-emptydir-data`) and pods
/// without a controller.
pub fn classify(pod: &Pod, force: bool) -> Disposition {
    let annotations = pod.annotations();
    if annotations.contains_key(MIRROR_POD) {
        return Disposition::Skip(SkipReason::Mirror);
    }
    if pod
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet")
    {
        return Disposition::Skip(SkipReason::DaemonSet);
    }
    if pod.meta().deletion_timestamp.is_some() {
        return Disposition::Skip(SkipReason::Terminating);
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Disposition::Skip(SkipReason::Completed);
    }
    if !force {
        if annotations.get(DO_NOT_DISRUPT).map(String::as_str) == Some("true") {
            return Disposition::Protected(BlockReason::DoNotDisrupt);
        }
        if annotations.get(SAFE_TO_EVICT).map(String::as_str) == Some("false") {
            return Disposition::Protected(BlockReason::NotSafeToEvict);
        }
    }
    Disposition::Evict
}

/// Whether a label selector selects an object with these labels. As in
/// `policy/v1`, an empty selector selects everything.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_match = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// How long one API call of a drain may take: what is left until the
/// deadline, but at least a moment, so a call made at the deadline can
/// still complete.
fn call_budget(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(500))
}

/// The outcome of one eviction attempt.
enum Attempt {
    Evicted,
    Refused(BlockedPod),
}

impl ClusterClient {
    /// Drains a node: cordons it, evicts its pods through the Eviction API
    /// and waits for them to be gone.
    ///
    /// # Guarantees
    /// - Pods that [`classify`] protects make the drain fail at once with
    ///   [`DrainError::Blocked`], before anything is evicted (the node stays
    ///   cordoned), unless `options.force`.
    /// - Evictions refused with 429 (a PodDisruptionBudget) are retried with
    ///   exponential backoff until `options.timeout`; blocked pods are
    ///   reported with the names of the budgets that select them.
    /// - Each eviction carries the pod's UID as a precondition, so a new pod
    ///   that reuses the name is never evicted by mistake.
    ///
    /// # Errors
    /// [`DrainError::Blocked`] or [`DrainError::Timeout`] with the report;
    /// [`DrainError::Cluster`] for API failures that are not transient.
    pub async fn drain(
        &self,
        node: &str,
        options: &DrainOptions,
    ) -> Result<DrainReport, DrainError> {
        let deadline = Instant::now() + options.timeout;
        let fail = |source| DrainError::Cluster {
            node: node.to_owned(),
            source,
        };
        self.cordon(node).await.map_err(fail)?;
        let pods = self.pods_on_node(node).await.map_err(fail)?;
        let mut report = DrainReport {
            node: node.to_owned(),
            ..DrainReport::default()
        };
        let mut pending: Vec<Pod> = Vec::new();
        for pod in pods {
            match classify(&pod, options.force) {
                Disposition::Evict => pending.push(pod),
                Disposition::Skip(reason) => report.skipped.push(SkippedPod {
                    pod: PodRef::of(&pod),
                    reason,
                }),
                Disposition::Protected(reason) => report.blocked.push(BlockedPod {
                    pod: PodRef::of(&pod),
                    reason,
                    budgets: Vec::new(),
                    message: String::new(),
                }),
            }
        }
        if !report.blocked.is_empty() {
            tracing::info!(node, summary = %report.summary(), "drain refused: protected pods");
            return Err(DrainError::Blocked {
                report: Box::new(report),
            });
        }

        let mut evicted: Vec<Pod> = Vec::new();
        let mut backoff = options.initial_backoff;
        loop {
            let mut refused = Vec::new();
            let mut still_pending = Vec::new();
            for pod in pending {
                match self.evict(&pod, options, deadline).await.map_err(fail)? {
                    Attempt::Evicted => {
                        report.evicted.push(PodRef::of(&pod));
                        evicted.push(pod);
                    }
                    Attempt::Refused(blocked) => {
                        refused.push(blocked);
                        still_pending.push(pod);
                    }
                }
            }
            pending = still_pending;
            if pending.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                report.blocked = refused;
                tracing::info!(node, summary = %report.summary(), "drain blocked until the deadline");
                return Err(DrainError::Blocked {
                    report: Box::new(report),
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(options.max_backoff);
        }

        loop {
            let mut remaining = Vec::new();
            for pod in evicted {
                if self.still_present(&pod, deadline).await.map_err(fail)? {
                    remaining.push(pod);
                }
            }
            evicted = remaining;
            if evicted.is_empty() {
                tracing::info!(node, summary = %report.summary(), "drained");
                return Ok(report);
            }
            let now = Instant::now();
            if now >= deadline {
                report.still_terminating = evicted.iter().map(PodRef::of).collect();
                return Err(DrainError::Timeout {
                    report: Box::new(report),
                });
            }
            tokio::time::sleep(options.poll_interval.min(deadline - now)).await;
        }
    }

    /// The pods bound to a node, read live from the API server (a drain
    /// must not act on a stale cache).
    ///
    /// # Errors
    /// API failures.
    pub async fn pods_on_node(&self, node: &str) -> Result<Vec<Pod>, ClusterError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .map_err(|e| ClusterError::api(format!("listing the pods of node {node}"), e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .collect())
    }

    async fn evict(
        &self,
        pod: &Pod,
        options: &DrainOptions,
        deadline: Instant,
    ) -> Result<Attempt, ClusterError> {
        let pod_ref = PodRef::of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod_ref.namespace);
        let params = EvictParams {
            delete_options: Some(DeleteParams {
                grace_period_seconds: options.grace_period_seconds,
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            }),
            ..EvictParams::default()
        };
        // A request that hangs must not carry the drain past its deadline.
        let answer =
            tokio::time::timeout(call_budget(deadline), api.evict(&pod_ref.name, &params)).await;
        let Ok(answer) = answer else {
            return Ok(Attempt::Refused(BlockedPod {
                pod: pod_ref,
                reason: BlockReason::EvictionRefused,
                budgets: Vec::new(),
                message: "the eviction request did not complete before the deadline".to_owned(),
            }));
        };
        match answer {
            Ok(_) => Ok(Attempt::Evicted),
            // Gone already, or replaced by a new pod of the same name.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Attempt::Evicted),
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Attempt::Refused(BlockedPod {
                budgets: self.budgets_selecting(pod).await?,
                pod: pod_ref,
                reason: BlockReason::DisruptionBudget,
                message: s.message.clone(),
            })),
            Err(e) if ErrorCategory::of_kube(&e) == ErrorCategory::Transient => {
                let (message, budgets) = match &e {
                    kube::Error::Api(s) => (s.message.clone(), self.budgets_selecting(pod).await?),
                    other => (other.to_string(), Vec::new()),
                };
                Ok(Attempt::Refused(BlockedPod {
                    pod: pod_ref,
                    reason: BlockReason::EvictionRefused,
                    budgets,
                    message,
                }))
            }
            Err(e) => Err(ClusterError::api(format!("evicting pod {pod_ref}"), e)),
        }
    }

    /// The names of the PodDisruptionBudgets in the pod's namespace whose
    /// selector selects it.
    ///
    /// # Errors
    /// API failures.
    pub async fn budgets_selecting(&self, pod: &Pod) -> Result<Vec<String>, ClusterError> {
        let namespace = pod.namespace().unwrap_or_default();
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &namespace);
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            ClusterError::api(
                format!("listing the PodDisruptionBudgets of namespace {namespace}"),
                e,
            )
        })?;
        let mut names: Vec<String> = list
            .items
            .iter()
            .filter(|b| {
                b.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .is_some_and(|sel| selector_matches(sel, pod.labels()))
            })
            .map(ResourceExt::name_any)
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    async fn still_present(&self, pod: &Pod, deadline: Instant) -> Result<bool, ClusterError> {
        let pod_ref = PodRef::of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod_ref.namespace);
        // No answer in time counts as "still there": the caller's deadline
        // check then reports it.
        let Ok(answer) =
            tokio::time::timeout(call_budget(deadline), api.get_opt(&pod_ref.name)).await
        else {
            return Ok(true);
        };
        let live = answer.map_err(|e| ClusterError::api(format!("reading pod {pod_ref}"), e))?;
        Ok(live.is_some_and(|p| p.uid() == pod.uid()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: serde_json::Value) -> Pod {
        let mut base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running"},
        });
        merge(&mut base, &extra);
        serde_json::from_value(base).unwrap()
    }

    fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    #[test]
    fn a_replicaset_pod_with_an_empty_dir_is_evicted() {
        let p = pod(json!({
            "metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "1", "controller": true}]},
            "spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]},
        }));
        assert_eq!(classify(&p, false), Disposition::Evict);
    }

    #[test]
    fn daemonset_mirror_terminating_and_finished_pods_are_skipped() {
        let ds = pod(
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "DaemonSet", "name": "ds", "uid": "1", "controller": true}]}}),
        );
        assert_eq!(
            classify(&ds, true),
            Disposition::Skip(SkipReason::DaemonSet)
        );
        let mirror = pod(json!({"metadata": {"annotations": {MIRROR_POD: "abc"}}}));
        assert_eq!(
            classify(&mirror, true),
            Disposition::Skip(SkipReason::Mirror)
        );
        let dying = pod(json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
        assert_eq!(
            classify(&dying, false),
            Disposition::Skip(SkipReason::Terminating)
        );
        let done = pod(json!({"status": {"phase": "Succeeded"}}));
        assert_eq!(
            classify(&done, false),
            Disposition::Skip(SkipReason::Completed)
        );
    }

    #[test]
    fn protective_annotations_block_unless_forced() {
        let dnd = pod(json!({"metadata": {"annotations": {DO_NOT_DISRUPT: "true"}}}));
        assert_eq!(
            classify(&dnd, false),
            Disposition::Protected(BlockReason::DoNotDisrupt)
        );
        assert_eq!(classify(&dnd, true), Disposition::Evict);
        let unsafe_pod = pod(json!({"metadata": {"annotations": {SAFE_TO_EVICT: "false"}}}));
        assert_eq!(
            classify(&unsafe_pod, false),
            Disposition::Protected(BlockReason::NotSafeToEvict)
        );
        let safe = pod(
            json!({"metadata": {"annotations": {SAFE_TO_EVICT: "true", DO_NOT_DISRUPT: "false"}}}),
        );
        assert_eq!(classify(&safe, false), Disposition::Evict);
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "front".to_owned()),
        ]
        .into();
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert!(selector_matches(&sel, &labels));
        let other: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "db"}})).unwrap();
        assert!(!selector_matches(&other, &labels));
        assert!(selector_matches(&LabelSelector::default(), &labels));
        let not_in: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["front"]}]}))
        .unwrap();
        assert!(!selector_matches(&not_in, &labels));
    }

    #[test]
    fn the_summary_names_the_blocking_budget() {
        let report = DrainReport {
            node: "w1".into(),
            blocked: vec![BlockedPod {
                pod: PodRef {
                    namespace: "default".into(),
                    name: "web-1".into(),
                },
                reason: BlockReason::DisruptionBudget,
                budgets: vec!["web-pdb".into()],
                message: String::new(),
            }],
            ..DrainReport::default()
        };
        assert_eq!(
            report.summary(),
            "node w1: 0 evicted, 0 skipped, 1 blocked; default/web-1 blocked (DisruptionBudget) by PodDisruptionBudget web-pdb"
        );
    }
}
