//! The labels, annotations and taints a worker's node carries (spec §3),
//! generated from its pool, size, provisioning time and TTL.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::pool::{PoolKind, Size};

/// A taint's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    /// New pods without a toleration are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node when it can.
    PreferNoSchedule,
    /// Pods without a toleration are evicted.
    NoExecute,
}

impl TaintEffect {
    /// The effect's name in the Kubernetes API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::NoSchedule, Self::PreferNoSchedule, Self::NoExecute]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    /// Key, a qualified name.
    pub key: String,
    /// Value, a label value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

impl Taint {
    /// A taint from its parts.
    pub fn new(key: &str, value: &str, effect: TaintEffect) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        }
    }
}

impl fmt::Display for Taint {
    /// The `key=value:Effect` form kubectl uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.key, self.effect.as_str())
        } else {
            write!(f, "{}={}:{}", self.key, self.value, self.effect.as_str())
        }
    }
}

/// The label keys Tidepool writes; all configurable, defaults from spec §3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelKeys {
    /// Pool name (`node-pool`).
    pub pool: String,
    /// Worker type (`worker-type`).
    pub worker_type: String,
    /// Provisioning time, unix seconds (`provisioned-at`).
    pub provisioned_at: String,
    /// Expiry, unix seconds (`ttl`).
    pub ttl: String,
    /// TTL in hours (`ttl-hours`).
    pub ttl_hours: String,
    /// Size name (`workload-size`).
    pub size: String,
    /// Instance type (`node.kubernetes.io/instance-type`).
    pub instance_type: String,
    /// Prefix of Tidepool's own bookkeeping keys (`tidepool.dev`).
    pub domain: String,
}

impl Default for LabelKeys {
    fn default() -> Self {
        Self {
            pool: "node-pool".into(),
            worker_type: "worker-type".into(),
            provisioned_at: "provisioned-at".into(),
            ttl: "ttl".into(),
            ttl_hours: "ttl-hours".into(),
            size: "workload-size".into(),
            instance_type: "node.kubernetes.io/instance-type".into(),
            domain: "tidepool.dev".into(),
        }
    }
}

impl LabelKeys {
    /// `<domain>/claim`: the worker claim that owns the node.
    pub fn claim(&self) -> String {
        format!("{}/claim", self.domain)
    }
    /// `<domain>/pool`: the pool, as bookkeeping.
    pub fn managed_pool(&self) -> String {
        format!("{}/pool", self.domain)
    }
    /// `<domain>/pool-kind`: the pool's kind.
    pub fn pool_kind(&self) -> String {
        format!("{}/pool-kind", self.domain)
    }
    /// `<domain>/managed`: `"true"` on every node Tidepool created.
    pub fn managed(&self) -> String {
        format!("{}/managed", self.domain)
    }
    /// `<domain>/expires-at`: annotation with the RFC 3339 expiry.
    pub fn expires_at_annotation(&self) -> String {
        format!("{}/expires-at", self.domain)
    }
    /// `<domain>/provisioned-at`: annotation with the RFC 3339 provisioning time.
    pub fn provisioned_at_annotation(&self) -> String {
        format!("{}/provisioned-at", self.domain)
    }
}

/// The GPU label keys of spec §3.
pub mod gpu_labels {
    /// Device class.
    pub const CLASS: &str = "gpu.nvidia.com/class";
    /// Number of devices.
    pub const COUNT: &str = "gpu.nvidia.com/count";
    /// Device memory in MiB.
    pub const MEMORY: &str = "gpu.nvidia.com/memory";
    /// CUDA version.
    pub const CUDA: &str = "gpu.nvidia.com/cuda";
}

/// Length of the random suffix of worker names (`burst-7f3k2`).
pub const WORKER_SUFFIX_LEN: usize = 5;
/// Longest pool name: worker names are `<pool>-<suffix>` and must stay a
/// valid label value and DNS label (63 characters).
pub const MAX_POOL_NAME_LEN: usize = 63 - 1 - WORKER_SUFFIX_LEN;

/// The name of a worker (its claim, VM and node) from its pool and a
/// suffix of [`WORKER_SUFFIX_LEN`] lowercase alphanumerics.
pub fn worker_name(pool: &str, suffix: &str) -> String {
    format!("{pool}-{suffix}")
}

/// The facts about one worker that its node metadata is generated from.
#[derive(Clone, Debug)]
pub struct WorkerFacts<'a> {
    /// Name of the worker claim.
    pub claim: &'a str,
    /// Pool name.
    pub pool: &'a str,
    /// Pool kind.
    pub kind: PoolKind,
    /// The worker's size.
    pub size: &'a Size,
    /// When it was provisioned.
    pub provisioned_at: Timestamp,
    /// Its TTL, if it has one.
    pub ttl: Option<Duration>,
    /// Whether the size carries its own `workload-size=<size>:NoSchedule` taint.
    pub taint_size: bool,
}

/// Labels, annotations and taints for a worker's node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMetadata {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
}

/// The default taints of a pool kind (spec §3).
pub fn kind_taints(kind: PoolKind) -> Vec<Taint> {
    match kind {
        PoolKind::Permanent => Vec::new(),
        PoolKind::Burst => vec![Taint::new(
            "workload-type",
            "burst",
            TaintEffect::NoSchedule,
        )],
        PoolKind::Spot => vec![
            Taint::new("workload-type", "spot", TaintEffect::NoSchedule),
            Taint::new("preemptible", "true", TaintEffect::PreferNoSchedule),
        ],
        PoolKind::Gpu => vec![Taint::new(
            "nvidia.com/gpu",
            "true",
            TaintEffect::NoSchedule,
        )],
    }
}

fn hours_label(ttl: Duration) -> String {
    let secs = ttl.as_secs();
    if secs.is_multiple_of(3600) {
        (secs / 3600).to_string()
    } else {
        // Two decimals at most, trailing zeros trimmed: 1.5, 0.25.
        let hundredths = (secs * 100).div_ceil(3600);
        let text = format!("{}.{:02}", hundredths / 100, hundredths % 100);
        text.trim_end_matches('0').to_owned()
    }
}

/// Generates the node metadata of a worker.
///
/// # Guarantees
/// For pool and size names that configuration validation accepts
/// (DNS-1123 labels) and valid label keys, every generated key and value
/// is valid Kubernetes syntax; `ttl` and `ttl-hours` are present exactly
/// when the worker has a TTL.
pub fn node_metadata(keys: &LabelKeys, facts: &WorkerFacts<'_>) -> NodeMetadata {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    let provisioned = facts.provisioned_at.as_second();
    labels.insert(keys.pool.clone(), facts.pool.to_owned());
    labels.insert(
        keys.worker_type.clone(),
        facts.kind.worker_type().as_str().to_owned(),
    );
    labels.insert(keys.provisioned_at.clone(), provisioned.to_string());
    labels.insert(keys.size.clone(), facts.size.name.clone());
    labels.insert(keys.instance_type.clone(), facts.size.name.clone());
    labels.insert(keys.claim(), facts.claim.to_owned());
    labels.insert(keys.managed_pool(), facts.pool.to_owned());
    labels.insert(keys.pool_kind(), facts.kind.as_str().to_owned());
    labels.insert(keys.managed(), "true".to_owned());
    annotations.insert(
        keys.provisioned_at_annotation(),
        facts.provisioned_at.to_string(),
    );
    if let Some(ttl) = facts.ttl {
        let expiry = provisioned.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        labels.insert(keys.ttl.clone(), expiry.to_string());
        labels.insert(keys.ttl_hours.clone(), hours_label(ttl));
        if let Ok(at) = Timestamp::from_second(expiry) {
            annotations.insert(keys.expires_at_annotation(), at.to_string());
        }
    }
    if let Some(gpu) = &facts.size.gpu {
        labels.insert(gpu_labels::CLASS.to_owned(), gpu.class.clone());
        labels.insert(gpu_labels::COUNT.to_owned(), gpu.count.to_string());
        labels.insert(
            gpu_labels::MEMORY.to_owned(),
            (u64::from(gpu.memory_gib) * 1024).to_string(),
        );
        labels.insert(gpu_labels::CUDA.to_owned(), gpu.cuda.clone());
    }
    let mut taints = kind_taints(facts.kind);
    if facts.taint_size {
        taints.push(Taint::new(
            "workload-size",
            &facts.size.name,
            TaintEffect::NoSchedule,
        ));
    }
    NodeMetadata {
        labels,
        annotations,
        taints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s_names::{validate_label_value, validate_qualified_name};

    fn size(name: &str) -> Size {
        Size::defaults()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn a_burst_worker_gets_the_seed_labels_ttl_and_taint() {
        let medium = size("medium");
        let meta = node_metadata(
            &LabelKeys::default(),
            &WorkerFacts {
                claim: "burst-7f3k2",
                pool: "burst",
                kind: PoolKind::Burst,
                size: &medium,
                provisioned_at: at(1_767_225_600),
                ttl: Some(Duration::from_secs(4 * 3600)),
                taint_size: false,
            },
        );
        let l = &meta.labels;
        assert_eq!(l["node-pool"], "burst");
        assert_eq!(l["worker-type"], "temporary");
        assert_eq!(l["provisioned-at"], "1767225600");
        assert_eq!(l["ttl"], "1767240000");
        assert_eq!(l["ttl-hours"], "4");
        assert_eq!(l["workload-size"], "medium");
        assert_eq!(l["node.kubernetes.io/instance-type"], "medium");
        assert_eq!(l["tidepool.dev/claim"], "burst-7f3k2");
        assert_eq!(l["tidepool.dev/managed"], "true");
        assert_eq!(
            meta.annotations["tidepool.dev/expires-at"],
            "2026-01-01T04:00:00Z"
        );
        assert_eq!(
            meta.taints,
            vec![Taint::new(
                "workload-type",
                "burst",
                TaintEffect::NoSchedule
            )]
        );
        assert_eq!(meta.taints[0].to_string(), "workload-type=burst:NoSchedule");
    }

    #[test]
    fn a_permanent_worker_has_no_ttl_and_no_taint() {
        let small = size("small");
        let meta = node_metadata(
            &LabelKeys::default(),
            &WorkerFacts {
                claim: "base-1",
                pool: "base",
                kind: PoolKind::Permanent,
                size: &small,
                provisioned_at: at(0),
                ttl: None,
                taint_size: false,
            },
        );
        assert!(!meta.labels.contains_key("ttl"));
        assert!(!meta.labels.contains_key("ttl-hours"));
        assert_eq!(meta.labels["worker-type"], "permanent");
        assert!(meta.taints.is_empty());
    }

    #[test]
    fn spot_gpu_and_large_taints_follow_the_spec() {
        assert_eq!(
            kind_taints(PoolKind::Spot)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "workload-type=spot:NoSchedule",
                "preemptible=true:PreferNoSchedule"
            ]
        );
        let gpu = size("gpu");
        let meta = node_metadata(
            &LabelKeys::default(),
            &WorkerFacts {
                claim: "gpu-1",
                pool: "gpu",
                kind: PoolKind::Gpu,
                size: &gpu,
                provisioned_at: at(0),
                ttl: Some(Duration::from_secs(5400)),
                taint_size: true,
            },
        );
        assert_eq!(meta.labels["gpu.nvidia.com/class"], "tesla-t4");
        assert_eq!(meta.labels["gpu.nvidia.com/memory"], "16384");
        assert_eq!(meta.labels["ttl-hours"], "1.5");
        assert_eq!(
            meta.taints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "nvidia.com/gpu=true:NoSchedule",
                "workload-size=gpu:NoSchedule"
            ]
        );
    }

    #[test]
    fn default_label_keys_are_valid() {
        let keys = LabelKeys::default();
        for key in [
            keys.pool.clone(),
            keys.claim(),
            keys.managed(),
            keys.expires_at_annotation(),
            keys.instance_type.clone(),
        ] {
            validate_qualified_name(&key, "label key").unwrap();
        }
        validate_label_value(&hours_label(Duration::from_secs(61))).unwrap();
    }
}
