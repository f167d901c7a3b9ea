//! Scheduling simulation: plain data for a cluster snapshot (pods and
//! nodes) and [`fits`], which answers "could this pod run on this node?"
//! the way kube-scheduler's filter plugins would, for the predicates the
//! autoscaler needs (spec §4, §5).
//!
//! Nodes may be real ones from the cluster or hypothetical ones built with
//! [`NodeSnapshot::hypothetical`] from a pool and a size. A failed check
//! returns a [`Misfit`] naming the first predicate that failed, worded so
//! it can follow `NotTriggerScaleUp:` in a Kubernetes Event.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;

use crate::config::{Config, Pool, SizeEntry};
use crate::conventions::{Taint, TaintEffect, WorkerFacts, node_metadata};
use crate::pool::Resources;
use crate::quantity::{format_bytes, format_millicores};
use crate::volumes::{DEFAULT_ATTACH_LIMIT, VolumeRef};

/// The label every node carries with its own name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Pod annotation (Karpenter) that forbids voluntary disruption.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// Pod annotation (Cluster Autoscaler) that forbids eviction when `"false"`.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// The extended resource of an NVIDIA GPU.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// What a pod (or the sum of a node's pods) requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub cpu_milli: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_bytes: u64,
    /// Extended resources such as `nvidia.com/gpu`, by name.
    pub extended: BTreeMap<String, u64>,
}

impl Requests {
    /// Adds `other` to these requests.
    pub fn add(&mut self, other: &Requests) {
        self.cpu_milli = self.cpu_milli.saturating_add(other.cpu_milli);
        self.memory_bytes = self.memory_bytes.saturating_add(other.memory_bytes);
        self.ephemeral_bytes = self.ephemeral_bytes.saturating_add(other.ephemeral_bytes);
        for (name, n) in &other.extended {
            let slot = self.extended.entry(name.clone()).or_insert(0);
            *slot = slot.saturating_add(*n);
        }
    }
}

/// The operator of a node-affinity or label-selector expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value, as an integer, is greater than the single value.
    Gt,
    /// The label's value, as an integer, is less than the single value.
    Lt,
}

/// One expression: `key operator values`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values (none for `Exists` and `DoesNotExist`, one for `Gt` and `Lt`).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether a label set satisfies this expression.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(have), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::Gt {
                    have > bound
                } else {
                    have < bound
                }
            }
        }
    }
}

/// A node-selector term: every expression must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSelectorTerm {
    /// The expressions.
    pub expressions: Vec<Requirement>,
}

/// How a toleration compares values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    /// Key and value must be equal.
    Equal,
    /// Only the key must match (an empty key matches every taint).
    Exists,
}

/// A pod's toleration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates everything.
    pub key: String,
    /// Operator.
    pub operator: TolerationOperator,
    /// Value compared under `Equal`.
    pub value: String,
    /// Effect tolerated; `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => self.key.is_empty() || self.key == taint.key,
            TolerationOperator::Equal => self.key == taint.key && self.value == taint.value,
        }
    }
}

/// A label selector over pods: `matchLabels` and `matchExpressions`, all of
/// which must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    /// Exact label matches.
    pub match_labels: BTreeMap<String, String>,
    /// Expressions (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// Label or selector map, shared between the pods that carry the same one
/// (the pods of one ReplicaSet usually do).
pub type Labels = Arc<BTreeMap<String, String>>;

/// A pod as the scheduler sees it.
///
/// Everything but the name and the requests is shared behind an `Arc`, so
/// a cache can hand one copy of a ReplicaSet's labels, selectors and
/// tolerations to all of its pods, and cloning a pod is cheap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
    /// The pod's own labels (what anti-affinity selectors match).
    pub labels: Labels,
    /// Summed requests of its containers (init containers folded in).
    pub requests: Requests,
    /// `nodeSelector`.
    pub node_selector: Labels,
    /// Required node affinity: any term may hold (OR); empty means none.
    pub affinity: Arc<Vec<NodeSelectorTerm>>,
    /// Tolerations.
    pub tolerations: Arc<Vec<Toleration>>,
    /// Required pod anti-affinity on `kubernetes.io/hostname`: no pod of
    /// the same namespace matching any selector may share the node.
    pub anti_affinity: Arc<Vec<LabelSelector>>,
    /// The distinct volumes of the attach-limited CSI driver the pod
    /// mounts (see [`crate::volumes`]); the observer works them out from
    /// [`Self::volumes`] and the cluster's claims, volumes and classes.
    pub block_volumes: u32,
    /// The pod's claim and generic ephemeral volumes, which may need an
    /// attachment.
    pub volumes: Arc<Vec<VolumeRef>>,
    /// Whether the pod mounts an `emptyDir` (data that dies with the node).
    pub local_storage: bool,
    /// Whether a DaemonSet owns the pod.
    pub daemon_set: bool,
    /// Whether the pod's annotations forbid voluntary disruption of its
    /// node (see [`annotations_block_disruption`]).
    pub do_not_disrupt: bool,
}

impl PodSpec {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the pod forbids voluntary disruption of its node.
    pub fn blocks_disruption(&self) -> bool {
        self.do_not_disrupt
    }
}

/// Whether a pod with these annotations forbids voluntary disruption of its
/// node: `karpenter.sh/do-not-disrupt: "true"` or
/// `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`.
pub fn annotations_block_disruption<'a>(
    mut annotations: impl Iterator<Item = (&'a str, &'a str)>,
) -> bool {
    annotations
        .any(|(k, v)| (k == DO_NOT_DISRUPT && v == "true") || (k == SAFE_TO_EVICT && v == "false"))
}

/// A node as the scheduler sees it, real or hypothetical.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSnapshot {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// What pods may request in total (`pods` is the max pod count).
    pub allocatable: Resources,
    /// Sum of the requests of the pods bound to it.
    pub requested: Requests,
    /// Number of pods bound to it.
    pub pod_count: u32,
    /// Volumes of the attach-limited driver attached (or in use by its
    /// pods, whichever is more).
    pub block_volumes: u32,
    /// How many volumes of the attach-limited driver it can attach: its
    /// CSINode's count, else the provider's fallback; `None` reads as
    /// [`DEFAULT_ATTACH_LIMIT`].
    pub volume_limit: Option<u32>,
    /// Cordoned.
    pub unschedulable: bool,
    /// The Ready condition is true.
    pub ready: bool,
    /// The pods bound to it, for anti-affinity and disruption checks. The
    /// counters above are authoritative for room; this list may be empty
    /// when nothing else is needed.
    pub pods: Vec<Arc<PodSpec>>,
}

impl NodeSnapshot {
    /// The empty node a worker of `size` in `pool` would become: the
    /// size's allocatable and the labels and taints of `node_metadata`,
    /// plus the pool's extra labels and taints and the hostname label.
    pub fn hypothetical(
        config: &Config,
        pool: &Pool,
        size: &SizeEntry,
        name: &str,
        now: Timestamp,
    ) -> NodeSnapshot {
        let facts = WorkerFacts {
            claim: name,
            pool: &pool.name,
            kind: pool.kind,
            size: &size.size,
            provisioned_at: now,
            ttl: pool.ttl,
            taint_size: size.taint,
        };
        let meta = node_metadata(&config.labels, &facts);
        let mut labels = meta.labels;
        for (k, v) in &pool.labels {
            labels.insert(k.clone(), v.clone());
        }
        labels.insert(HOSTNAME_LABEL.to_owned(), name.to_owned());
        let mut taints = meta.taints;
        for t in &pool.taints {
            if !taints.contains(t) {
                taints.push(t.clone());
            }
        }
        NodeSnapshot {
            name: name.to_owned(),
            labels,
            taints,
            allocatable: size.size.allocatable.clone(),
            requested: Requests::default(),
            pod_count: 0,
            block_volumes: 0,
            volume_limit: config
                .providers
                .get(&pool.provider)
                .map(|p| p.volumes.attach_limit),
            unschedulable: false,
            ready: true,
            pods: Vec::new(),
        }
    }

    /// Records `pod` as bound to this node.
    pub fn bind(&mut self, pod: &PodSpec, keep_pod: bool) {
        self.requested.add(&pod.requests);
        self.pod_count = self.pod_count.saturating_add(1);
        self.block_volumes = self.block_volumes.saturating_add(pod.block_volumes);
        if keep_pod {
            self.pods.push(Arc::new(pod.clone()));
        }
    }

    /// How many volumes of the attach-limited driver the node can attach.
    pub fn attach_limit(&self) -> u32 {
        self.volume_limit.unwrap_or(DEFAULT_ATTACH_LIMIT)
    }

    /// How many more volumes of the attach-limited driver it can attach.
    pub fn volumes_left(&self) -> u32 {
        self.attach_limit().saturating_sub(self.block_volumes)
    }

    /// Whether any bound pod that is not a DaemonSet pod remains.
    pub fn has_workload(&self) -> bool {
        self.pods.iter().any(|p| !p.daemon_set)
    }
}

/// Why a pod cannot run on a node: the first failing predicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misfit {
    /// The node is cordoned.
    Unschedulable,
    /// The node is not Ready.
    NotReady,
    /// A `nodeSelector` entry does not match.
    NodeSelector {
        /// Key.
        key: String,
        /// Value the pod asks for.
        wanted: String,
    },
    /// No required node-affinity term holds.
    NodeAffinity,
    /// A taint the pod does not tolerate.
    Taint(Taint),
    /// The node already runs its maximum number of pods.
    TooManyPods {
        /// The node's pod capacity.
        max: u32,
    },
    /// Not enough of a resource is free.
    Insufficient {
        /// `cpu`, `memory`, `ephemeral-storage` or an extended resource name.
        resource: String,
        /// What the pod requests, in display form.
        requested: String,
        /// What is free, in display form.
        free: String,
    },
    /// The block-volume attach cap would be exceeded.
    BlockVolumes {
        /// Attached already.
        attached: u32,
        /// The pod's block volumes.
        requested: u32,
        /// The cap.
        cap: u32,
    },
    /// A pod on the node matches the pod's required anti-affinity.
    AntiAffinity {
        /// `namespace/name` of the conflicting pod.
        conflicting: String,
    },
}

impl Misfit {
    /// A stable name of the predicate, for metrics and reason codes.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unschedulable => "unschedulable",
            Self::NotReady => "not-ready",
            Self::NodeSelector { .. } => "node-selector",
            Self::NodeAffinity => "node-affinity",
            Self::Taint(_) => "taint",
            Self::TooManyPods { .. } => "too-many-pods",
            Self::Insufficient { .. } => "insufficient",
            Self::BlockVolumes { .. } => "block-volumes",
            Self::AntiAffinity { .. } => "anti-affinity",
        }
    }

    /// Whether the misfit is about room (it could fit an emptier or larger
    /// node) rather than about the node's identity (labels, taints).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            Self::TooManyPods { .. }
                | Self::Insufficient { .. }
                | Self::BlockVolumes { .. }
                | Self::AntiAffinity { .. }
        )
    }
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unschedulable => f.write_str("node is unschedulable (cordoned)"),
            Self::NotReady => f.write_str("node is not Ready"),
            Self::NodeSelector { key, wanted } => {
                write!(
                    f,
                    "node didn't match the pod's node selector {key}={wanted}"
                )
            }
            Self::NodeAffinity => f.write_str("node didn't match the pod's required node affinity"),
            Self::Taint(t) => write!(f, "node had untolerated taint {t}"),
            Self::TooManyPods { max } => write!(f, "Too many pods (node holds at most {max})"),
            Self::Insufficient {
                resource,
                requested,
                free,
            } => write!(
                f,
                "Insufficient {resource} (pod requests {requested}, {free} free)"
            ),
            Self::BlockVolumes {
                attached,
                requested,
                cap,
            } => write!(
                f,
                "node would exceed the block-volume attach cap of {cap} ({attached} attached, pod needs {requested})"
            ),
            Self::AntiAffinity { conflicting } => write!(
                f,
                "node didn't satisfy the pod's anti-affinity rules (conflicts with {conflicting})"
            ),
        }
    }
}

/// The predicates that depend only on who the node is (state, labels,
/// taints), not on what runs on it. Equal for every node of one pool and size.
///
/// # Errors
/// The first failing predicate, in the order: unschedulable, not ready,
/// node selector, node affinity, taints.
pub fn fits_identity(pod: &PodSpec, node: &NodeSnapshot) -> Result<(), Misfit> {
    if node.unschedulable {
        return Err(Misfit::Unschedulable);
    }
    if !node.ready {
        return Err(Misfit::NotReady);
    }
    for (key, wanted) in pod.node_selector.iter() {
        if node.labels.get(key) != Some(wanted) {
            return Err(Misfit::NodeSelector {
                key: key.clone(),
                wanted: wanted.clone(),
            });
        }
    }
    if !pod.affinity.is_empty()
        && !pod
            .affinity
            .iter()
            .any(|term| term.expressions.iter().all(|r| r.matches(&node.labels)))
    {
        return Err(Misfit::NodeAffinity);
    }
    for taint in &node.taints {
        if taint.effect == TaintEffect::PreferNoSchedule {
            continue;
        }
        if !pod.tolerations.iter().any(|t| t.tolerates(taint)) {
            return Err(Misfit::Taint(taint.clone()));
        }
    }
    Ok(())
}

/// The predicates about room: pod count, cpu, memory, ephemeral storage,
/// extended resources, block volumes and anti-affinity.
///
/// # Errors
/// The first failing predicate, in that order.
pub fn fits_room(pod: &PodSpec, node: &NodeSnapshot) -> Result<(), Misfit> {
    if node.pod_count >= node.allocatable.pods {
        return Err(Misfit::TooManyPods {
            max: node.allocatable.pods,
        });
    }
    let alloc = &node.allocatable;
    let used = &node.requested;
    let want = &pod.requests;
    room_for(
        "cpu",
        want.cpu_milli,
        alloc.cpu_milli,
        used.cpu_milli,
        format_millicores,
    )?;
    room_for(
        "memory",
        want.memory_bytes,
        alloc.memory_bytes,
        used.memory_bytes,
        format_bytes,
    )?;
    room_for(
        "ephemeral-storage",
        want.ephemeral_bytes,
        alloc.ephemeral_storage_bytes,
        used.ephemeral_bytes,
        format_bytes,
    )?;
    for (name, n) in &want.extended {
        if *n == 0 {
            continue;
        }
        let have = alloc.extended.get(name).copied().unwrap_or(0);
        let taken = used.extended.get(name).copied().unwrap_or(0);
        room_for(name, *n, have, taken, |x| x.to_string())?;
    }
    if pod.block_volumes > 0
        && node.block_volumes.saturating_add(pod.block_volumes) > node.attach_limit()
    {
        return Err(Misfit::BlockVolumes {
            attached: node.block_volumes,
            requested: pod.block_volumes,
            cap: node.attach_limit(),
        });
    }
    for selector in pod.anti_affinity.iter() {
        if let Some(other) = node
            .pods
            .iter()
            .find(|o| o.namespace == pod.namespace && selector.matches(&o.labels))
        {
            return Err(Misfit::AntiAffinity {
                conflicting: other.key(),
            });
        }
    }
    Ok(())
}

/// `Insufficient` when `want` of `resource` is more than `have` leaves
/// after `taken`; `show` writes the amounts.
fn room_for(
    resource: &str,
    want: u64,
    have: u64,
    taken: u64,
    show: fn(u64) -> String,
) -> Result<(), Misfit> {
    let free = have.saturating_sub(taken);
    if want > free {
        return Err(Misfit::Insufficient {
            resource: resource.to_owned(),
            requested: show(want),
            free: show(free),
        });
    }
    Ok(())
}

/// Could `pod` run on `node` now? PreferNoSchedule taints are preferences,
/// never misfits; only the pod's own anti-affinity terms are checked (not
/// those of the pods already on the node).
///
/// # Errors
/// The first failing predicate: the identity predicates of
/// [`fits_identity`], then the room predicates of [`fits_room`].
pub fn fits(pod: &PodSpec, node: &NodeSnapshot) -> Result<(), Misfit> {
    fits_identity(pod, node)?;
    fits_room(pod, node)
}
