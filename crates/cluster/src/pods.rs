//! The pod cache's own representation: the planner's view of each pod,
//! read straight off the wire.
//!
//! A cluster of 30,000 pods held as k8s-openapi `Pod`s costs hundreds of
//! MiB however much of each object is thrown away, because the structs
//! themselves are large (a `Pod` is about 2.4 KB, each `Container` 2.3 KB
//! and each `Volume` 3.3 KB, before any string). The pod cache therefore
//! never builds a `Pod`:
//!
//! - [`WirePod`] is deserialized from the API server's JSON instead of a
//!   `Pod`. It names only the fields Tidepool reads; serde skips the rest
//!   without allocating them (images, env, probes, managed fields, the
//!   `kubectl apply` annotation, statuses...).
//! - [`PodInterner::project`] turns it into a [`CachedPod`]: the planner's
//!   [`PodSpec`] plus the pod's node, phase and unschedulable time. Label
//!   maps, selectors, affinity terms, tolerations, namespaces and node names
//!   are interned, so the pods of one ReplicaSet share one copy of each.
//!
//! The drain does not read this cache: it needs whole pods and reads them
//! from the API server.
//!
//! One file for one job (wire pod in, cached pod out): about 550 lines of
//! code, the rest its tests, which exercise the decoding and the interning
//! together.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelectorRequirement, PodAntiAffinity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as KubeLabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tidepool_core::conventions::TaintEffect;

use crate::cache::{Annotations, WireCondition, core_v1_resource};
use tidepool_core::quantity::Quantity;
use tidepool_core::sched::{
    LabelSelector, Labels, NodeSelectorTerm, Operator, PodSpec, Requests, Requirement, Toleration,
    TolerationOperator, annotations_block_disruption,
};
use tidepool_core::volumes::VolumeRef;

/// A pod's phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodPhase {
    /// Not yet running (also when the phase is missing).
    #[default]
    Pending,
    /// At least one container runs.
    Running,
    /// Every container ended successfully.
    Succeeded,
    /// Every container ended, at least one in failure.
    Failed,
    /// The state could not be obtained.
    Unknown,
}

impl PodPhase {
    fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            Some("Unknown") => Self::Unknown,
            _ => Self::Pending,
        }
    }

    /// Whether the pod has ended and holds no resources any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// What the pod cache keeps of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CachedPod {
    /// The planner's view (requests, selectors, affinity, tolerations,
    /// block volumes, DaemonSet ownership, disruption annotations), shared
    /// with the planner's node snapshots.
    pub spec: Arc<PodSpec>,
    /// `spec.nodeName`: the node the pod is bound to.
    pub node: Option<Arc<str>>,
    /// `status.phase`.
    pub phase: PodPhase,
    /// Whether the scheduler has marked the pod unschedulable
    /// (`PodScheduled=False`, reason `Unschedulable`).
    pub unschedulable: bool,
    /// When it did (the condition's `lastTransitionTime`, when set).
    pub unschedulable_since: Option<Timestamp>,
    /// A mirror of a static pod (`kubernetes.io/config.mirror`): the
    /// kubelet runs it, not the scheduler.
    pub mirror: bool,
    /// It has a deletion timestamp: it is going away.
    pub deleting: bool,
}

impl CachedPod {
    /// Whether the pod is workload that keeps its node busy: not a
    /// DaemonSet or mirror pod, not finished, not being deleted.
    pub fn is_workload(&self) -> bool {
        !self.spec.daemon_set && !self.mirror && !self.phase.is_terminal() && !self.deleting
    }
}

/// Pod annotation that marks a mirror (static) pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A pod as the cache reads it from the API server: only the fields
/// Tidepool uses, in the API's JSON shape. See the [module docs](self).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "Wire")]
pub struct WirePod {
    metadata: ObjectMeta,
    extra: WireMeta,
    spec: WireSpec,
    status: WireStatus,
}

core_v1_resource!(
    WirePod,
    kind = "Pod",
    plural = "pods",
    scope = NamespaceResourceScope,
    meta = metadata
);

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: WireSpec,
    #[serde(default)]
    status: WireStatus,
}

impl From<Wire> for WirePod {
    fn from(mut wire: Wire) -> Self {
        // The watcher needs the name, namespace and resource version; the
        // rest of the metadata stays in `extra`.
        let metadata = ObjectMeta {
            name: wire.metadata.name.take(),
            namespace: wire.metadata.namespace.take(),
            resource_version: wire.metadata.resource_version.take(),
            ..ObjectMeta::default()
        };
        Self {
            metadata,
            extra: wire.metadata,
            spec: wire.spec,
            status: wire.status,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    resource_version: Option<String>,
    deletion_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    annotations: Option<Annotations>,
    #[serde(default)]
    owner_references: Vec<WireOwner>,
}

#[derive(Clone, Debug, Deserialize)]
struct WireOwner {
    #[serde(default)]
    kind: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    node_name: Option<String>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<WireToleration>,
    affinity: Option<WireAffinity>,
    #[serde(default)]
    containers: Vec<WireContainer>,
    #[serde(default)]
    init_containers: Vec<WireContainer>,
    #[serde(default)]
    volumes: Vec<WireVolume>,
    /// RuntimeClass overhead, added to the pod's requests by the scheduler.
    overhead: Option<BTreeMap<String, KubeQuantity>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireToleration {
    key: Option<String>,
    operator: Option<String>,
    value: Option<String>,
    effect: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAffinity {
    node_affinity: Option<NodeAffinity>,
    pod_anti_affinity: Option<PodAntiAffinity>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireContainer {
    resources: Option<WireResources>,
    restart_policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct WireResources {
    requests: Option<BTreeMap<String, KubeQuantity>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVolume {
    #[serde(default)]
    name: String,
    persistent_volume_claim: Option<WireClaimSource>,
    ephemeral: Option<WireEphemeral>,
    empty_dir: Option<IgnoredAny>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireClaimSource {
    #[serde(default)]
    claim_name: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEphemeral {
    volume_claim_template: Option<WireClaimTemplate>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireClaimTemplate {
    spec: Option<WireClaimTemplateSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireClaimTemplateSpec {
    storage_class_name: Option<String>,
}

/// The claim and generic ephemeral volumes of a pod named `pod`.
fn volume_refs(pod: &str, volumes: &[WireVolume]) -> Vec<VolumeRef> {
    volumes
        .iter()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(VolumeRef::Claim(c.claim_name.clone())),
            (None, Some(e)) => Some(VolumeRef::Ephemeral {
                claim: format!("{pod}-{}", v.name),
                storage_class: e
                    .volume_claim_template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.storage_class_name.clone()),
            }),
            (None, None) => None,
        })
        .collect()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<WireCondition>,
}

/// Requests from a resource map (`cpu`, `memory`, `ephemeral-storage`,
/// extended resources; `pods` is not a request).
pub fn requests_of<'a>(map: impl IntoIterator<Item = (&'a String, &'a KubeQuantity)>) -> Requests {
    let mut r = Requests::default();
    for (k, q) in map {
        match k.as_str() {
            "cpu" => r.cpu_milli += Quantity::milli_lenient(&q.0),
            "memory" => r.memory_bytes += Quantity::units_lenient(&q.0),
            "ephemeral-storage" => r.ephemeral_bytes += Quantity::units_lenient(&q.0),
            "pods" => {}
            other => {
                *r.extended.entry(other.to_owned()).or_default() += Quantity::units_lenient(&q.0)
            }
        }
    }
    r
}

fn max_requests(mut a: Requests, b: &Requests) -> Requests {
    for (k, v) in &b.extended {
        let e = a.extended.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
    a.cpu_milli = a.cpu_milli.max(b.cpu_milli);
    a.memory_bytes = a.memory_bytes.max(b.memory_bytes);
    a.ephemeral_bytes = a.ephemeral_bytes.max(b.ephemeral_bytes);
    a
}

impl WireContainer {
    fn requests(&self) -> Requests {
        requests_of(
            self.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .into_iter()
                .flatten(),
        )
    }
}

/// What the scheduler reserves for a pod: the larger of its containers
/// plus its sidecars and of each ordinary init container plus the
/// sidecars started before it, plus the RuntimeClass overhead.
/// (Sidecars are init containers with `restartPolicy: Always`: they keep
/// running beside the containers.)
fn effective_requests(spec: &WireSpec) -> Requests {
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for c in &spec.init_containers {
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&c.requests());
        } else {
            let mut during = sidecars.clone();
            during.add(&c.requests());
            init_peak = max_requests(init_peak, &during);
        }
    }
    let mut running = sidecars;
    for c in &spec.containers {
        running.add(&c.requests());
    }
    let mut total = max_requests(running, &init_peak);
    if let Some(overhead) = &spec.overhead {
        total.add(&requests_of(overhead));
    }
    total
}

fn operator(op: &str) -> Operator {
    match op {
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::Gt,
        "Lt" => Operator::Lt,
        _ => Operator::In,
    }
}

fn node_requirement(e: &NodeSelectorRequirement) -> Requirement {
    Requirement {
        key: e.key.clone(),
        operator: operator(&e.operator),
        values: e.values.clone().unwrap_or_default(),
    }
}

fn label_requirement(e: &LabelSelectorRequirement) -> Requirement {
    Requirement {
        key: e.key.clone(),
        operator: operator(&e.operator),
        values: e.values.clone().unwrap_or_default(),
    }
}

fn node_affinity(spec: &WireSpec) -> Vec<NodeSelectorTerm> {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|sel| {
            sel.node_selector_terms
                .iter()
                .map(|t| NodeSelectorTerm {
                    expressions: t
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(node_requirement)
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn label_selector(s: &KubeLabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(label_requirement)
            .collect(),
    }
}

fn hostname_anti_affinity(spec: &WireSpec) -> Vec<LabelSelector> {
    spec.affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .filter(|t| t.topology_key == tidepool_core::sched::HOSTNAME_LABEL)
                .filter_map(|t| t.label_selector.as_ref())
                .map(label_selector)
                .collect()
        })
        .unwrap_or_default()
}

fn toleration(t: &WireToleration) -> Toleration {
    Toleration {
        key: t.key.clone().unwrap_or_default(),
        operator: if t.operator.as_deref() == Some("Exists") {
            TolerationOperator::Exists
        } else {
            TolerationOperator::Equal
        },
        value: t.value.clone().unwrap_or_default(),
        effect: t.effect.as_deref().and_then(TaintEffect::parse),
    }
}

/// One shared copy of each distinct value.
struct Interned<T: ?Sized>(HashSet<Arc<T>>);

impl<T: ?Sized> Default for Interned<T> {
    fn default() -> Self {
        Self(HashSet::new())
    }
}

impl<T: ?Sized + Hash + Eq> Interned<T> {
    fn get(&mut self, value: impl AsRef<T> + Into<Arc<T>>) -> Arc<T> {
        if let Some(shared) = self.0.get(value.as_ref()) {
            return shared.clone();
        }
        let shared: Arc<T> = value.into();
        self.0.insert(shared.clone());
        shared
    }

    /// Forgets the values nothing else holds any more.
    fn sweep(&mut self) {
        self.0.retain(|v| Arc::strong_count(v) > 1);
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A value that is its own reference, for [`Interned::get`] with owned values.
struct Owned<T>(T);

impl<T> AsRef<T> for Owned<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

impl<T> From<Owned<T>> for Arc<T> {
    fn from(value: Owned<T>) -> Self {
        Arc::new(value.0)
    }
}

/// Builds [`CachedPod`]s, sharing equal label maps, selectors, terms,
/// tolerations and strings between pods. One interner serves one cache;
/// values no cached pod holds any more are forgotten from time to time.
#[derive(Default)]
pub struct PodInterner {
    strings: Interned<str>,
    maps: Interned<BTreeMap<String, String>>,
    terms: Interned<Vec<NodeSelectorTerm>>,
    tolerations: Interned<Vec<Toleration>>,
    selectors: Interned<Vec<LabelSelector>>,
    volumes: Interned<Vec<VolumeRef>>,
    /// Interned values at the last sweep; the next sweep comes when the
    /// pools have doubled since.
    swept_at: usize,
}

impl PodInterner {
    fn interned(&self) -> usize {
        self.strings.len()
            + self.maps.len()
            + self.terms.len()
            + self.tolerations.len()
            + self.selectors.len()
            + self.volumes.len()
    }

    fn sweep_if_due(&mut self) {
        if self.interned() > 2 * self.swept_at + 1024 {
            self.strings.sweep();
            self.maps.sweep();
            self.terms.sweep();
            self.tolerations.sweep();
            self.selectors.sweep();
            self.volumes.sweep();
            self.swept_at = self.interned();
        }
    }

    fn string(&mut self, s: String) -> Arc<str> {
        self.strings.get(s)
    }

    fn map(&mut self, m: BTreeMap<String, String>) -> Labels {
        self.maps.get(Owned(m))
    }

    /// The cache's view of `pod`.
    pub fn project(&mut self, pod: WirePod) -> CachedPod {
        self.sweep_if_due();
        let WirePod {
            metadata,
            extra,
            spec,
            status,
        } = pod;
        let requests = effective_requests(&spec);
        let affinity = self.terms.get(Owned(node_affinity(&spec)));
        let anti_affinity = self.selectors.get(Owned(hostname_anti_affinity(&spec)));
        let tolerations = self
            .tolerations
            .get(Owned(spec.tolerations.iter().map(toleration).collect()));
        let name = metadata.name.unwrap_or_default();
        let volumes = self.volumes.get(Owned(volume_refs(&name, &spec.volumes)));
        let local_storage = spec.volumes.iter().any(|v| v.empty_dir.is_some());
        let unschedulable = status.conditions.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        });
        let view = PodSpec {
            namespace: self.string(metadata.namespace.unwrap_or_default()),
            name: name.into(),
            labels: self.map(extra.labels),
            requests,
            node_selector: self.map(spec.node_selector),
            affinity,
            tolerations,
            anti_affinity,
            // Which volumes are attach-limited depends on the claims,
            // volumes and classes: the observer resolves it.
            block_volumes: 0,
            volumes,
            local_storage,
            daemon_set: extra.owner_references.iter().any(|o| o.kind == "DaemonSet"),
            do_not_disrupt: annotations_block_disruption(
                extra
                    .annotations
                    .iter()
                    .flat_map(|a| &a.0)
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        };
        CachedPod {
            spec: Arc::new(view),
            node: spec.node_name.map(|n| self.string(n)),
            phase: PodPhase::parse(status.phase.as_deref()),
            mirror: extra
                .annotations
                .as_ref()
                .is_some_and(|a| a.0.contains_key(MIRROR_ANNOTATION)),
            deleting: extra.deletion_timestamp.is_some(),
            unschedulable: unschedulable.is_some(),
            unschedulable_since: unschedulable
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn full_container(name: &str, cpu: &str) -> Value {
        json!({
            "name": name, "image": "registry.example/shop/web:1.2.3",
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/web"], "args": ["--port=8080"],
            "env": [{"name": "LOG_LEVEL", "value": "info"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "envFrom": [{"configMapRef": {"name": "web-env"}}],
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": cpu, "memory": "256Mi", "nvidia.com/gpu": "1"},
                          "limits": {"memory": "256Mi"}},
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
            "startupProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}],
            "securityContext": {"runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
        })
    }

    /// A pod as the API server returns it, with everything a real one carries.
    fn full_pod(extra_meta: Value) -> Value {
        let mut metadata = json!({
            "name": "web-7d9f-abcde", "namespace": "shop", "uid": "u-1",
            "resourceVersion": "42", "generateName": "web-7d9f-",
            "creationTimestamp": "2026-03-01T10:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f"},
            "annotations": {crate::nodes::LAST_APPLIED: "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}",
                            "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d9f", "uid": "rs-1", "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {}}}}],
        });
        if let (Some(m), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
            for (k, v) in extra {
                match (m.get_mut(k).and_then(Value::as_object_mut), v.as_object()) {
                    (Some(existing), Some(more)) => existing.extend(more.clone()),
                    _ => {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": "worker-1",
                "nodeSelector": {"node-pool": "burst"},
                "tolerations": [{"key": "tidepool.dev/burst", "operator": "Exists",
                                 "effect": "NoSchedule"}],
                "affinity": {
                    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "zone", "operator": "In", "values": ["a"]}]}]}},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname",
                         "labelSelector": {"matchLabels": {"app": "web"}}}]},
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname",
                         "labelSelector": {"matchLabels": {"app": "cache"}}}]},
                },
                "containers": [full_container("web", "500m"), full_container("envoy", "100m")],
                "initContainers": [full_container("migrate", "1")],
                "volumes": [
                    {"name": "config", "configMap": {"name": "web-config"}},
                    {"name": "tls", "secret": {"secretName": "web-tls"}},
                    {"name": "kube-api-access-x1y2z", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}},
                    {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
                ],
                "serviceAccountName": "web",
                "securityContext": {"fsGroup": 1000},
                "dnsPolicy": "ClusterFirst",
                "imagePullSecrets": [{"name": "registry"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-03-01T10:00:05Z"},
                    {"type": "PodScheduled", "status": "True", "reason": "Scheduled",
                     "message": "assigned to worker-1",
                     "lastTransitionTime": "2026-03-01T10:00:01Z"},
                ],
                "hostIP": "10.0.0.5", "podIP": "10.244.1.7",
                "podIPs": [{"ip": "10.244.1.7"}],
                "startTime": "2026-03-01T10:00:01Z",
                "qosClass": "Burstable",
                "containerStatuses": [{"name": "web", "image": "registry.example/shop/web:1.2.3",
                    "imageID": "sha256:0", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-03-01T10:00:04Z"}}}],
            },
        })
    }

    fn project(pod: Value) -> CachedPod {
        PodInterner::default().project(serde_json::from_value(pod).unwrap())
    }

    /// `pod` with the field at `pointer` set (created when missing).
    fn with(mut pod: Value, pointer: &str, value: Value) -> Value {
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        pod.pointer_mut(parent).unwrap()[field] = value;
        pod
    }

    #[test]
    fn the_view_holds_what_the_planner_reads() {
        let p = project(full_pod(json!({})));
        assert_eq!(p.spec.key(), "shop/web-7d9f-abcde");
        assert_eq!(p.node.as_deref(), Some("worker-1"));
        assert_eq!(p.phase, PodPhase::Running);
        assert!(!p.unschedulable && p.unschedulable_since.is_none());
        assert_eq!(p.spec.labels["app"], "web");
        assert_eq!(p.spec.node_selector["node-pool"], "burst");
        // Containers 500m + 100m run together; the 1-CPU init container
        // runs alone before them, so it sets the CPU figure.
        assert_eq!(p.spec.requests.cpu_milli, 1000);
        assert_eq!(p.spec.requests.memory_bytes, 512 << 20);
        assert_eq!(p.spec.requests.extended["nvidia.com/gpu"], 2);
        assert_eq!(
            *p.spec.tolerations,
            [Toleration {
                key: "tidepool.dev/burst".into(),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: Some(TaintEffect::NoSchedule),
            }]
        );
        assert_eq!(
            *p.spec.affinity,
            [NodeSelectorTerm {
                expressions: vec![Requirement {
                    key: "zone".into(),
                    operator: Operator::In,
                    values: vec!["a".into()],
                }],
            }]
        );
        assert_eq!(p.spec.anti_affinity.len(), 1);
        assert_eq!(p.spec.anti_affinity[0].match_labels["app"], "web");
        // Only the PVC may attach a disk: configMap, secret, projected and
        // emptyDir volumes do not (the emptyDir is local storage).
        assert_eq!(*p.spec.volumes, [VolumeRef::Claim("web-data".into())]);
        assert!(p.spec.local_storage);
        assert!(!p.spec.daemon_set);
        assert!(!p.spec.blocks_disruption());
    }

    #[test]
    fn a_sidecar_runs_beside_the_containers() {
        let pod = with(
            full_pod(json!({})),
            "/spec/initContainers/0/restartPolicy",
            json!("Always"),
        );
        let p = project(pod);
        assert_eq!(p.spec.requests.cpu_milli, 1600);
        assert_eq!(p.spec.requests.memory_bytes, 768 << 20);
    }

    #[test]
    fn an_init_container_counts_the_sidecars_started_before_it() {
        let mut pod = full_pod(json!({}));
        let sidecar = json!({"name": "proxy", "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "300m"}}});
        let migrate = pod["spec"]["initContainers"][0].clone();
        pod["spec"]["initContainers"] = json!([sidecar, migrate]);
        // max(600m + 300m running, 300m + 1 CPU while migrating).
        assert_eq!(project(pod).spec.requests.cpu_milli, 1300);
    }

    #[test]
    fn runtime_class_overhead_is_requested_too() {
        let pod = with(
            full_pod(json!({})),
            "/spec/overhead",
            json!({"cpu": "250m", "memory": "120Mi"}),
        );
        let p = project(pod);
        assert_eq!(p.spec.requests.cpu_milli, 1250);
        assert_eq!(p.spec.requests.memory_bytes, 632 << 20);
    }

    #[test]
    fn a_generic_ephemeral_volume_names_its_claim_and_class() {
        let mut pod = full_pod(json!({}));
        pod["spec"]["volumes"].as_array_mut().unwrap().push(
            json!({"name": "cache", "ephemeral": {"volumeClaimTemplate": {
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "proxmox",
                         "resources": {"requests": {"storage": "1Gi"}}}}}}),
        );
        let p = project(pod);
        assert_eq!(p.spec.volumes.len(), 2);
        assert_eq!(
            p.spec.volumes[1],
            VolumeRef::Ephemeral {
                claim: format!("{}-cache", p.spec.name),
                storage_class: Some("proxmox".into())
            }
        );
    }

    #[test]
    fn annotations_ownership_and_deletion_are_read() {
        let cases = [
            (
                json!({"annotations": {"karpenter.sh/do-not-disrupt": "true"}}),
                true,
            ),
            (
                json!({"annotations": {"karpenter.sh/do-not-disrupt": "false"}}),
                false,
            ),
            (
                json!({"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}}),
                true,
            ),
            (
                json!({"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}}),
                false,
            ),
            (json!({"annotations": null}), false),
        ];
        for (extra, blocked) in cases {
            let p = project(full_pod(extra.clone()));
            assert_eq!(p.spec.blocks_disruption(), blocked, "{extra}");
        }
        let ds = json!({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
            "name": "ds", "uid": "ds-1", "controller": true}]});
        let daemon = project(full_pod(ds));
        assert!(daemon.spec.daemon_set && !daemon.is_workload());

        let plain = project(full_pod(json!({})));
        assert!(plain.is_workload() && !plain.mirror && !plain.deleting);
        let mirror = project(full_pod(
            json!({"annotations": {MIRROR_ANNOTATION: "0123abcd"}}),
        ));
        assert!(mirror.mirror && !mirror.is_workload());
        let going = project(full_pod(
            json!({"deletionTimestamp": "2026-03-01T11:00:00Z"}),
        ));
        assert!(going.deleting && !going.is_workload());
        let done = project(with(
            full_pod(json!({})),
            "/status/phase",
            json!("Succeeded"),
        ));
        assert!(!done.is_workload());
    }

    #[test]
    fn an_unschedulable_pod_carries_the_time_it_became_so() {
        let mut pod = with(full_pod(json!({})), "/status/phase", json!("Pending"));
        pod["spec"]["nodeName"] = Value::Null;
        pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available",
            "lastTransitionTime": "2026-03-01T10:00:00Z"}]);
        let p = project(pod.clone());
        assert_eq!(p.phase, PodPhase::Pending);
        assert!(p.node.is_none() && p.unschedulable);
        assert_eq!(
            p.unschedulable_since,
            Some("2026-03-01T10:00:00Z".parse().unwrap())
        );
        pod["status"]["conditions"][0]["reason"] = json!("SchedulerError");
        assert!(!project(pod).unschedulable);
    }

    #[test]
    fn a_minimal_pod_projects_with_defaults() {
        let p = project(json!({"metadata": {"name": "bare", "namespace": "default"}}));
        assert_eq!(p.spec.key(), "default/bare");
        assert_eq!(p.phase, PodPhase::Pending);
        assert_eq!(p.spec.requests, Requests::default());
        assert!(p.spec.labels.is_empty() && p.spec.tolerations.is_empty());
    }

    #[test]
    fn equal_parts_are_shared_and_forgotten_when_no_pod_holds_them() {
        let mut interner = PodInterner::default();
        let read = |pod: Value| -> WirePod { serde_json::from_value(pod).unwrap() };
        let a = interner.project(read(full_pod(json!({}))));
        let b = interner.project(read(with(
            full_pod(json!({})),
            "/metadata/name",
            json!("web-7d9f-fghij"),
        )));
        assert!(Arc::ptr_eq(&a.spec.labels, &b.spec.labels));
        assert!(Arc::ptr_eq(&a.spec.node_selector, &b.spec.node_selector));
        assert!(Arc::ptr_eq(&a.spec.affinity, &b.spec.affinity));
        assert!(Arc::ptr_eq(&a.spec.tolerations, &b.spec.tolerations));
        assert!(Arc::ptr_eq(&a.spec.anti_affinity, &b.spec.anti_affinity));
        assert!(Arc::ptr_eq(
            a.node.as_ref().unwrap(),
            b.node.as_ref().unwrap()
        ));

        // Pods that come and go, each with labels of its own: the pools do
        // not keep what the pods no longer hold.
        for i in 0..5_000 {
            let pod = with(
                full_pod(json!({})),
                "/metadata/labels",
                json!({"run": i.to_string()}),
            );
            drop(interner.project(read(pod)));
        }
        assert!(interner.interned() < 2_000, "{}", interner.interned());
        // What live pods hold is still shared.
        let c = interner.project(read(full_pod(json!({}))));
        assert!(Arc::ptr_eq(&a.spec.labels, &c.spec.labels));
    }
}
