//! The hypervisor headroom model of spec §5: what a host can still take
//! (memory with a reserve and per-VM overhead, vCPUs under an overcommit
//! ratio, storage, free GPU devices per mapping) and the choice of host
//! for each new VM.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Pool, ProxmoxProvider};
use crate::pool::Size;

use super::{ClaimState, ReasonCode};

const GIB: f64 = (1u64 << 30) as f64;

/// One Proxmox host as last polled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostSnapshot {
    /// Host (Proxmox node) name.
    pub name: String,
    /// Provider it belongs to.
    pub provider: String,
    /// Whether the host is online and not in maintenance.
    pub online: bool,
    /// Physical memory, MiB.
    pub memory_total_mib: u64,
    /// Memory in use (running VMs, the host itself), MiB.
    pub memory_used_mib: u64,
    /// Logical CPUs the host reports (Proxmox's `cpuinfo.cpus`: threads);
    /// the vCPU overcommit ratio applies to these, as Proxmox counts them.
    pub cores: u32,
    /// vCPUs of the VMs running on it.
    pub vcpus_allocated: u64,
    /// Free space per storage, GiB.
    pub storage_free_gib: BTreeMap<String, u64>,
    /// Free devices per PCI resource mapping.
    pub gpu_free: BTreeMap<String, u32>,
    /// The VMs placed on it, running or not, by name, with whether each
    /// runs. Their memory, vCPUs and disks are in the figures above; their
    /// GPU devices only while they run.
    pub vms: BTreeMap<String, bool>,
    /// The templates a VM can be cloned from onto this host, by name and by
    /// VMID: those stored on it, and those elsewhere whose disks are all on
    /// shared storage (Proxmox clones across nodes only from those).
    pub templates: BTreeSet<String>,
}

/// A VM's cost on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmCost {
    /// Memory with the per-VM overhead, MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u64,
    /// Disk, GiB (rounded up from the size's GB).
    pub disk_gib: u64,
    /// GPU mapping and device count, if any.
    pub gpu: Option<(String, u32)>,
    /// The template a new VM is cloned from; the host must offer it
    /// ([`HostSnapshot::templates`]). `None` for VMs that exist or are
    /// already on their way.
    pub template: Option<String>,
}

impl VmCost {
    /// What a VM of `size` costs a host of `provider`.
    pub fn of(size: &Size, provider: &ProxmoxProvider) -> Self {
        let disk_gib = (size.disk_gb as f64 * 1e9 / GIB).ceil() as u64;
        VmCost {
            memory_mib: size.memory_mib + provider.vm_memory_overhead_mib,
            vcpus: u64::from(size.vcpu),
            disk_gib,
            gpu: size.gpu.as_ref().map(|g| (g.mapping.clone(), g.count)),
            template: None,
        }
    }

    /// What a new worker of `size` in `pool` costs a host of `provider`,
    /// with the template it is cloned from.
    pub fn new_worker(pool: &Pool, size: &Size, provider: &ProxmoxProvider) -> Self {
        VmCost {
            template: Some(pool.template_for(&size.name)),
            ..Self::of(size, provider)
        }
    }
}

/// What is left on one host while a plan is being made.
#[derive(Clone, Debug, PartialEq)]
pub struct Headroom {
    /// Host name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// Memory left for VMs (reserve taken off), MiB; may be negative.
    pub memory_mib: i64,
    /// vCPUs left under the overcommit ratio.
    pub vcpus: f64,
    /// Storage left per storage, GiB.
    pub storage_gib: BTreeMap<String, u64>,
    /// Free GPU devices per mapping.
    pub gpu_free: BTreeMap<String, u32>,
    /// Templates a VM can be cloned from onto it.
    pub templates: BTreeSet<String>,
}

/// The first dimension a host lacks for a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// Which dimension.
    pub code: ReasonCode,
    /// With the figures.
    pub message: String,
}

impl Headroom {
    /// The headroom of `host` for `provider`, with the VMs of the `pending`
    /// claims placed on it (those on their way: `Requested` and
    /// `Provisioning`; claims on other hosts are skipped) already taken
    /// off, as far as the host does not count them yet: a VM it lists is
    /// not taken off twice (see [`HostSnapshot::vms`]).
    pub fn new<'a>(
        host: &HostSnapshot,
        provider: &ProxmoxProvider,
        pending: impl IntoIterator<Item = (&'a ClaimState, &'a VmCost)>,
    ) -> Self {
        let free = i128::from(host.memory_total_mib)
            - i128::from(host.memory_used_mib)
            - i128::from(provider.host_memory_reserve_mib);
        let mut room = Headroom {
            name: host.name.clone(),
            provider: host.provider.clone(),
            memory_mib: i64::try_from(free).unwrap_or(i64::MIN),
            vcpus: f64::from(host.cores) * provider.cpu_overcommit - host.vcpus_allocated as f64,
            storage_gib: host.storage_free_gib.clone(),
            gpu_free: host.gpu_free.clone(),
            templates: host.templates.clone(),
        };
        let here = pending
            .into_iter()
            .filter(|(c, _)| c.host.as_deref() == Some(host.name.as_str()));
        for (claim, cost) in here {
            match host.vms.get(&claim.name) {
                None => room.take(cost, &provider.storage),
                // Cloned but not started: only its GPU is not counted yet.
                Some(false) => room.take_gpu(cost),
                Some(true) => {}
            }
        }
        room
    }

    /// Why a VM costing `cost` on `storage` does not fit, or `None` if it does.
    pub fn shortfall(&self, cost: &VmCost, storage: &str) -> Option<Shortfall> {
        if let Some(template) = &cost.template
            && !self.templates.contains(template)
        {
            return Some(Shortfall {
                code: ReasonCode::HostTemplate,
                message: format!(
                    "{}: no template `{template}` (neither on the host nor on shared storage)",
                    self.name
                ),
            });
        }
        let need_mem = i64::try_from(cost.memory_mib).unwrap_or(i64::MAX);
        if self.memory_mib < need_mem {
            return Some(Shortfall {
                code: ReasonCode::HostMemory,
                message: format!(
                    "{}: memory (VM needs {} MiB with overhead, {} MiB free above the reserve)",
                    self.name,
                    cost.memory_mib,
                    self.memory_mib.max(0)
                ),
            });
        }
        if self.vcpus < cost.vcpus as f64 {
            return Some(Shortfall {
                code: ReasonCode::HostCpu,
                message: format!(
                    "{}: vCPU (VM needs {}, {} free under the overcommit ratio)",
                    self.name,
                    cost.vcpus,
                    self.vcpus.max(0.0).floor()
                ),
            });
        }
        let disk = self.storage_gib.get(storage).copied().unwrap_or(0);
        if disk < cost.disk_gib {
            return Some(Shortfall {
                code: ReasonCode::HostStorage,
                message: format!(
                    "{}: storage {storage} (VM needs {} GiB, {disk} GiB free)",
                    self.name, cost.disk_gib
                ),
            });
        }
        if let Some((mapping, count)) = &cost.gpu {
            let free = self.gpu_free.get(mapping).copied().unwrap_or(0);
            if free < *count {
                return Some(Shortfall {
                    code: ReasonCode::HostGpu,
                    message: format!(
                        "{}: GPU mapping {mapping} (VM needs {count}, {free} free)",
                        self.name
                    ),
                });
            }
        }
        None
    }

    /// Gives a VM's cost back to the headroom (a VM that is going away).
    pub fn give(&mut self, cost: &VmCost, storage: &str) {
        self.memory_mib = self
            .memory_mib
            .saturating_add(i64::try_from(cost.memory_mib).unwrap_or(i64::MAX));
        self.vcpus += cost.vcpus as f64;
        let disk = self.storage_gib.entry(storage.to_owned()).or_insert(0);
        *disk = disk.saturating_add(cost.disk_gib);
        if let Some((mapping, count)) = &cost.gpu {
            let free = self.gpu_free.entry(mapping.clone()).or_insert(0);
            *free = free.saturating_add(*count);
        }
    }

    /// Takes a VM's cost off the headroom.
    pub fn take(&mut self, cost: &VmCost, storage: &str) {
        self.memory_mib = self
            .memory_mib
            .saturating_sub(i64::try_from(cost.memory_mib).unwrap_or(i64::MAX));
        self.vcpus -= cost.vcpus as f64;
        let disk = self.storage_gib.entry(storage.to_owned()).or_insert(0);
        *disk = disk.saturating_sub(cost.disk_gib);
        self.take_gpu(cost);
    }

    /// Takes only the GPU devices of a VM costing `cost`.
    fn take_gpu(&mut self, cost: &VmCost) {
        if let Some((mapping, count)) = &cost.gpu {
            let free = self.gpu_free.entry(mapping.clone()).or_insert(0);
            *free = free.saturating_sub(*count);
        }
    }
}

/// Whether `pool` may place VMs on host `name` of `provider`.
pub fn may_use(pool: &Pool, provider: &ProxmoxProvider, name: &str) -> bool {
    let list = if pool.hosts.is_empty() {
        &provider.hosts
    } else {
        &pool.hosts
    };
    list.iter().any(|h| h == name)
}

/// Picks the host for one VM of `pool`: among the pool's hosts that fit,
/// for a VM without a GPU those with no spare GPU device first (so GPU
/// hosts keep their room for GPU workers), then the one with the most
/// memory left (then vCPUs, then name), and takes the VM's cost off it.
///
/// # Errors
/// The shortfall of every eligible host, the first one's code leading;
/// [`ReasonCode::NoHost`] when the pool may use no known, online host.
pub fn place(
    ledger: &mut [Headroom],
    pool: &Pool,
    provider: &ProxmoxProvider,
    cost: &VmCost,
) -> Result<String, Shortfall> {
    let allowed = |name: &str| may_use(pool, provider, name);
    let mut best: Option<usize> = None;
    let mut misses = Vec::new();
    for (i, room) in ledger.iter().enumerate() {
        if room.provider != provider.name || !allowed(&room.name) {
            continue;
        }
        if let Some(short) = room.shortfall(cost, &provider.storage) {
            misses.push(short);
            continue;
        }
        // A VM without a GPU goes to a host with no spare GPU device when
        // one has room, so GPU hosts keep their memory for GPU workers;
        // among equals, the most headroom wins.
        let spares_gpus = |h: &Headroom| cost.gpu.is_none() && h.gpu_free.values().any(|&n| n > 0);
        let better = match best {
            None => true,
            Some(b) => {
                let cur = &ledger[b];
                (!spares_gpus(room), room.memory_mib, room.vcpus)
                    > (!spares_gpus(cur), cur.memory_mib, cur.vcpus)
            }
        };
        if better {
            best = Some(i);
        }
    }
    if let Some(i) = best {
        ledger[i].take(cost, &provider.storage);
        return Ok(ledger[i].name.clone());
    }
    match misses.first() {
        None => Err(Shortfall {
            code: ReasonCode::NoHost,
            message: format!("pool {} may use no online host", pool.name),
        }),
        Some(first) => Err(Shortfall {
            code: first.code,
            message: format!(
                "no host has room: {}",
                misses
                    .iter()
                    .map(|m| m.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
    }
}
