//! Pools, sizes and limits: what kind of worker a pool holds, how big each
//! worker is, and how many a pool may have.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a pool, which decides its lifecycle rules and conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolKind {
    /// Baseline capacity: no TTL, never removed except by an explicit scale-down.
    Permanent,
    /// Temporary capacity with a TTL and an idle timeout.
    Burst,
    /// Lowest priority; preempted to make room for permanent capacity.
    Spot,
    /// Workers with a passed-through GPU.
    Gpu,
}

impl PoolKind {
    /// Every kind, in the order of the spec.
    pub const ALL: [PoolKind; 4] = [Self::Permanent, Self::Burst, Self::Spot, Self::Gpu];

    /// The name used in configuration and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Burst => "burst",
            Self::Spot => "spot",
            Self::Gpu => "gpu",
        }
    }

    /// Parses a kind from its configuration name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The `worker-type` label value of workers in pools of this kind.
    pub fn worker_type(self) -> WorkerType {
        match self {
            Self::Permanent => WorkerType::Permanent,
            Self::Burst | Self::Gpu => WorkerType::Temporary,
            Self::Spot => WorkerType::Preemptible,
        }
    }

    /// Whether workers of this kind carry a TTL by default.
    pub fn has_ttl_by_default(self) -> bool {
        matches!(self, Self::Burst | Self::Spot)
    }
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a worker is meant to live, as shown in the `worker-type` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerType {
    /// Part of the baseline.
    Permanent,
    /// Removed when its TTL expires or it sits idle.
    Temporary,
    /// May be removed at any time to make room.
    Preemptible,
}

impl WorkerType {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Temporary => "temporary",
            Self::Preemptible => "preemptible",
        }
    }

    /// Parses a label value.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Permanent, Self::Temporary, Self::Preemptible]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

impl fmt::Display for WorkerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schedulable resources of a node: what pods may request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_milli: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes (0 when not tracked).
    pub ephemeral_storage_bytes: u64,
    /// Maximum number of pods.
    pub pods: u32,
    /// Extended resources such as `nvidia.com/gpu`, by name.
    pub extended: BTreeMap<String, u64>,
}

/// The GPU a size carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// Number of devices passed through.
    pub count: u32,
    /// Device class for the `gpu.nvidia.com/class` label, e.g. `tesla-t4`.
    pub class: String,
    /// Device memory in GiB.
    pub memory_gib: u32,
    /// CUDA version for the `gpu.nvidia.com/cuda` label, e.g. `12.2`.
    pub cuda: String,
    /// Proxmox PCI resource mapping the device comes from.
    pub mapping: String,
}

/// A machine shape workers are created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Size {
    /// Name used in configuration and the `workload-size` label.
    pub name: String,
    /// Virtual CPUs of the VM.
    pub vcpu: u32,
    /// Memory of the VM in MiB.
    pub memory_mib: u64,
    /// Root disk in GB.
    pub disk_gb: u64,
    /// The GPU, if the size has one.
    pub gpu: Option<GpuSpec>,
    /// What pods can use once system reservations are taken off.
    pub allocatable: Resources,
}

/// The kubelet's default pod capacity.
pub const DEFAULT_MAX_PODS: u32 = 110;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

impl Size {
    /// The default sizes of spec §2: small, medium, large and gpu.
    pub fn defaults() -> Vec<Size> {
        let plain = |name: &str, vcpu: u32, mem_gib: u64, disk_gb: u64, alloc_mem_mib: u64| Size {
            name: name.to_owned(),
            vcpu,
            memory_mib: mem_gib * 1024,
            disk_gb,
            gpu: None,
            allocatable: Resources {
                cpu_milli: u64::from(vcpu) * 1000 - 200,
                memory_bytes: alloc_mem_mib * MIB,
                ephemeral_storage_bytes: disk_gb * 1_000_000_000 * 9 / 10,
                pods: DEFAULT_MAX_PODS,
                extended: BTreeMap::new(),
            },
        };
        let mut gpu = plain("gpu", 8, 32, 500, 30 * 1024);
        gpu.gpu = Some(GpuSpec {
            count: 1,
            class: "tesla-t4".into(),
            memory_gib: 16,
            cuda: "12.2".into(),
            mapping: "gpu".into(),
        });
        gpu.allocatable.extended.insert("nvidia.com/gpu".into(), 1);
        vec![
            plain("small", 4, 8, 100, 7 * 1024 + 512),
            plain("medium", 8, 16, 200, 15 * 1024),
            plain("large", 16, 32, 500, 30 * 1024),
            gpu,
        ]
    }

    /// VM memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * MIB
    }

    /// Memory in GiB as a float, for display.
    pub fn memory_gib(&self) -> f64 {
        self.memory_bytes() as f64 / GIB as f64
    }
}

/// How large a pool may grow or shrink.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Fewest workers the pool keeps.
    pub min_nodes: u32,
    /// Most workers the pool may have.
    pub max_nodes: u32,
    /// Ceiling on the sum of the workers' vCPUs, if any.
    pub cpu_cores: Option<u64>,
    /// Ceiling on the sum of the workers' memory in MiB, if any.
    pub memory_mib: Option<u64>,
}

/// What a pool currently uses, counted against its [`Limits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Workers that exist or are on their way (in-flight claims count).
    pub nodes: u32,
    /// Their vCPUs in total.
    pub cpu_cores: u64,
    /// Their memory in MiB in total.
    pub memory_mib: u64,
}

impl PoolUsage {
    /// The usage with one more worker of `size`.
    pub fn with_worker(self, size: &Size) -> Self {
        Self {
            nodes: self.nodes + 1,
            cpu_cores: self.cpu_cores + u64::from(size.vcpu),
            memory_mib: self.memory_mib + size.memory_mib,
        }
    }

    /// The usage with one worker of `size` fewer (never below zero).
    pub fn without_worker(self, size: &Size) -> Self {
        Self {
            nodes: self.nodes.saturating_sub(1),
            cpu_cores: self.cpu_cores.saturating_sub(u64::from(size.vcpu)),
            memory_mib: self.memory_mib.saturating_sub(size.memory_mib),
        }
    }
}

/// A limit that adding workers would break.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Too many workers.
    #[error("pool would have {would_have} workers, above its maxNodes of {max}")]
    MaxNodes {
        /// Workers after the addition.
        would_have: u64,
        /// The limit.
        max: u32,
    },
    /// Too many vCPUs.
    #[error("pool would use {would_use} vCPUs, above its cpuCores ceiling of {max}")]
    CpuCores {
        /// vCPUs after the addition.
        would_use: u64,
        /// The limit.
        max: u64,
    },
    /// Too much memory.
    #[error("pool would use {would_use} MiB of memory, above its memoryMiB ceiling of {max}")]
    MemoryMib {
        /// MiB after the addition.
        would_use: u64,
        /// The limit.
        max: u64,
    },
}

impl LimitError {
    /// A stable name of the limit, for metrics and reasons.
    pub fn limit(&self) -> &'static str {
        match self {
            Self::MaxNodes { .. } => "maxNodes",
            Self::CpuCores { .. } => "cpuCores",
            Self::MemoryMib { .. } => "memoryMiB",
        }
    }
}

impl Limits {
    /// Checks that adding `count` workers of `size` to a pool using `usage`
    /// stays within every limit.
    ///
    /// # Errors
    /// The first limit that would be exceeded, in the order maxNodes,
    /// cpuCores, memoryMiB.
    pub fn check_add(&self, usage: PoolUsage, size: &Size, count: u32) -> Result<(), LimitError> {
        let would_have = u64::from(usage.nodes) + u64::from(count);
        if would_have > u64::from(self.max_nodes) {
            return Err(LimitError::MaxNodes {
                would_have,
                max: self.max_nodes,
            });
        }
        if let Some(max) = self.cpu_cores {
            let would_use = usage.cpu_cores + u64::from(size.vcpu) * u64::from(count);
            if would_use > max {
                return Err(LimitError::CpuCores { would_use, max });
            }
        }
        if let Some(max) = self.memory_mib {
            let would_use = usage.memory_mib + size.memory_mib * u64::from(count);
            if would_use > max {
                return Err(LimitError::MemoryMib { would_use, max });
            }
        }
        Ok(())
    }

    /// How many more workers of `size` fit within every limit.
    pub fn headroom(&self, usage: PoolUsage, size: &Size) -> u32 {
        let mut room = self.max_nodes.saturating_sub(usage.nodes);
        if let Some(max) = self.cpu_cores {
            let per = u64::from(size.vcpu).max(1);
            room = room
                .min(u32::try_from(max.saturating_sub(usage.cpu_cores) / per).unwrap_or(u32::MAX));
        }
        if let Some(max) = self.memory_mib {
            let per = size.memory_mib.max(1);
            room = room
                .min(u32::try_from(max.saturating_sub(usage.memory_mib) / per).unwrap_or(u32::MAX));
        }
        room
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(name: &str) -> Size {
        Size::defaults()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }

    #[test]
    fn default_sizes_match_the_spec_table() {
        let small = size("small");
        assert_eq!(
            (small.vcpu, small.memory_mib, small.disk_gb),
            (4, 8192, 100)
        );
        assert_eq!(small.allocatable.cpu_milli, 3800);
        assert_eq!(small.allocatable.memory_bytes, 7 * GIB + GIB / 2);
        let large = size("large");
        assert_eq!((large.vcpu, large.allocatable.cpu_milli), (16, 15_800));
        let gpu = size("gpu");
        assert_eq!(gpu.allocatable.extended.get("nvidia.com/gpu"), Some(&1));
        assert_eq!(gpu.allocatable.memory_bytes, 30 * GIB);
        assert_eq!(gpu.allocatable.pods, 110);
    }

    #[test]
    fn limits_refuse_the_first_ceiling_crossed() {
        let limits = Limits {
            min_nodes: 0,
            max_nodes: 10,
            cpu_cores: Some(32),
            memory_mib: Some(65_536),
        };
        let usage = PoolUsage {
            nodes: 2,
            cpu_cores: 16,
            memory_mib: 32_768,
        };
        assert_eq!(limits.check_add(usage, &size("medium"), 2), Ok(()));
        assert_eq!(
            limits.check_add(usage, &size("medium"), 3),
            Err(LimitError::CpuCores {
                would_use: 40,
                max: 32
            })
        );
        assert_eq!(limits.headroom(usage, &size("medium")), 2);
        assert_eq!(
            limits
                .check_add(usage, &size("small"), 9)
                .unwrap_err()
                .limit(),
            "maxNodes"
        );
    }

    #[test]
    fn pool_kinds_map_to_worker_types() {
        assert_eq!(PoolKind::Burst.worker_type(), WorkerType::Temporary);
        assert_eq!(PoolKind::Spot.worker_type(), WorkerType::Preemptible);
        assert_eq!(PoolKind::Permanent.worker_type().as_str(), "permanent");
        assert_eq!(PoolKind::parse("gpu"), Some(PoolKind::Gpu));
        assert_eq!(PoolKind::parse("GPU"), None);
    }
}
