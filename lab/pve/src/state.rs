//! The emulated cluster's state: nodes and storages, VMs with their
//! configuration, pending changes and power state, resource pools, tasks
//! and the pvestatd snapshot that `/cluster/resources` reads.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::config::{HostSpec, PciMapping, PveConfig, StorageSpec, VmSpec};
use crate::error::LabError;
use crate::options::{self, Rng};

/// One node and its storages' free space.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub spec: HostSpec,
    pub storages: Vec<Storage>,
}

/// A storage with its current free space.
#[derive(Clone, Debug)]
pub(crate) struct Storage {
    pub spec: StorageSpec,
    pub free_gib: u64,
}

/// One VM or template.
#[derive(Clone, Debug)]
pub(crate) struct Vm {
    pub vmid: u32,
    pub node: String,
    /// The config as GET config with `current=1` would show it.
    pub config: BTreeMap<String, String>,
    /// Changes waiting for the next full start (`None` deletes the key).
    pub pending: BTreeMap<String, Option<String>>,
    pub running: bool,
    pub started_at: Option<i64>,
    pub pid: Option<u32>,
    /// Guest-agent addresses; `None` while the agent is not running.
    pub agent: Option<Vec<IpAddr>>,
    pub pool: Option<String>,
    /// For a linked clone, the template whose base volume it uses.
    pub linked_base: Option<u32>,
    /// PCI paths this VM holds while running.
    pub pci: Vec<String>,
    /// Boot-disk size and storage, for accounting.
    pub disk_gib: u64,
    pub storage: String,
}

impl Vm {
    pub(crate) fn template(&self) -> bool {
        self.config.get("template").is_some_and(|v| v == "1")
    }

    pub(crate) fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.config.get("name").map(String::as_str)
    }

    pub(crate) fn memory_mib(&self) -> u64 {
        options::memory_mib(self.config.get("memory").map(String::as_str))
    }

    pub(crate) fn cpus(&self) -> u64 {
        let get = |k: &str, d: u64| self.config.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        get("cores", 1) * get("sockets", 1)
    }

    /// The config with pending changes folded in (GET config's default).
    pub(crate) fn effective_config(&self) -> BTreeMap<String, String> {
        let mut c = self.config.clone();
        for (k, v) in &self.pending {
            match v {
                Some(v) => {
                    c.insert(k.clone(), v.clone());
                }
                None => {
                    c.remove(k);
                }
            }
        }
        c
    }

    /// Applies pending changes, as a full start does.
    pub(crate) fn apply_pending(&mut self) {
        self.config = self.effective_config();
        self.pending.clear();
    }
}

/// A task's lifecycle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TaskStatus {
    Running,
    Stopped(String),
}

/// One worker task.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub status: TaskStatus,
    pub log: Vec<String>,
}

/// A resource pool.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pool {
    pub comment: Option<String>,
}

/// What pvestatd last saw of a VM.
#[derive(Clone, Debug)]
pub(crate) struct RrdRow {
    pub name: Option<String>,
    pub status: &'static str,
    pub maxmem: u64,
    pub maxcpu: u64,
    pub uptime: i64,
}

/// The whole mutable state, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub nodes: BTreeMap<String, Node>,
    pub vms: BTreeMap<u32, Vm>,
    pub tasks: HashMap<String, Task>,
    pub pools: BTreeMap<String, Pool>,
    pub rrd: HashMap<u32, RrdRow>,
    pub pci_mappings: Vec<PciMapping>,
    pub rng: Rng,
    pub next_pid: u32,
}

impl State {
    /// Builds the initial state from a configuration.
    ///
    /// # Errors
    /// [`LabError::Config`] for VMs on unknown nodes, duplicate ids and
    /// invalid option values.
    pub(crate) fn new(cfg: &PveConfig, seed: u64, now: i64) -> Result<Self, LabError> {
        let mut rng = Rng::new(seed);
        let nodes: BTreeMap<String, Node> = cfg
            .hosts
            .iter()
            .map(|h| {
                let storages = h
                    .storages
                    .iter()
                    .map(|s| Storage {
                        spec: s.clone(),
                        free_gib: s.free_gib,
                    })
                    .collect();
                (
                    h.name.clone(),
                    Node {
                        spec: h.clone(),
                        storages,
                    },
                )
            })
            .collect();
        let pools = cfg
            .pools
            .iter()
            .map(|p| {
                (
                    p.id.clone(),
                    Pool {
                        comment: p.comment.clone(),
                    },
                )
            })
            .collect();
        let mut state = Self {
            nodes,
            vms: BTreeMap::new(),
            tasks: HashMap::new(),
            pools,
            rrd: HashMap::new(),
            pci_mappings: cfg.pci_mappings.clone(),
            rng: Rng::new(0),
            next_pid: 0x0001_2a00,
        };
        for spec in &cfg.vms {
            let bad = |m: String| LabError::Config(format!("vm {}: {m}", spec.vmid));
            let node = state
                .nodes
                .get(&spec.node)
                .ok_or_else(|| bad(format!("unknown node '{}'", spec.node)))?;
            if state.vms.contains_key(&spec.vmid) {
                return Err(bad("duplicate vmid".into()));
            }
            let storage = spec
                .storage
                .clone()
                .or_else(|| node.storages.first().map(|s| s.spec.name.clone()))
                .unwrap_or_else(|| "local-lvm".to_owned());
            let config = initial_config(spec, &storage, &mut rng, now)?;
            if let Some(pool) = &spec.pool {
                state.pools.entry(pool.clone()).or_default();
            }
            let running = spec.running && !spec.template;
            let pid = if running {
                Some(state.alloc_pid())
            } else {
                None
            };
            state.vms.insert(
                spec.vmid,
                Vm {
                    vmid: spec.vmid,
                    node: spec.node.clone(),
                    config,
                    pending: BTreeMap::new(),
                    running,
                    started_at: running.then_some(now),
                    pid,
                    agent: None,
                    pool: spec.pool.clone(),
                    linked_base: None,
                    pci: Vec::new(),
                    disk_gib: spec.disk_gib,
                    storage,
                },
            );
        }
        state.rng = rng;
        // A VM running at start holds the devices of its mapped `hostpciN`
        // entries, as if it had been started through the API.
        let running: Vec<u32> = state
            .vms
            .values()
            .filter(|vm| vm.running)
            .map(|vm| vm.vmid)
            .collect();
        for vmid in running {
            let Some(vm) = state.vms.get(&vmid) else {
                continue;
            };
            let held = state
                .mapped_pci(&vm.node, vmid, &vm.config)
                .map_err(|m| LabError::Config(format!("vm {vmid}: {m}")))?;
            if let Some(vm) = state.vms.get_mut(&vmid) {
                vm.pci = held;
            }
        }
        // Existing VMs are known to pvestatd from the start.
        state.pvestatd_tick(now);
        Ok(state)
    }

    pub(crate) fn alloc_pid(&mut self) -> u32 {
        self.next_pid = self
            .next_pid
            .wrapping_add(1 + (self.rng.next() % 97) as u32);
        self.next_pid
    }

    /// The VM `vmid` if it lives on `node`, else the missing-config error.
    pub(crate) fn vm_on(&self, node: &str, vmid: u32) -> Result<&Vm, crate::error::ApiError> {
        self.vms
            .get(&vmid)
            .filter(|vm| vm.node == node)
            .ok_or_else(|| crate::error::ApiError::no_config(node, vmid))
    }

    /// Mutable variant of [`State::vm_on`].
    pub(crate) fn vm_on_mut(
        &mut self,
        node: &str,
        vmid: u32,
    ) -> Result<&mut Vm, crate::error::ApiError> {
        self.vms
            .get_mut(&vmid)
            .filter(|vm| vm.node == node)
            .ok_or_else(|| crate::error::ApiError::no_config(node, vmid))
    }

    /// MiB of memory used by running VMs on `node`.
    pub(crate) fn used_memory_mib(&self, node: &str) -> u64 {
        self.vms
            .values()
            .filter(|vm| vm.node == node && vm.running)
            .map(Vm::memory_mib)
            .sum()
    }

    /// The running VM holding PCI `path` on `node`, if any.
    pub(crate) fn pci_holder(&self, node: &str, path: &str) -> Option<u32> {
        self.vms
            .values()
            .find(|vm| vm.node == node && vm.running && vm.pci.iter().any(|p| p == path))
            .map(|vm| vm.vmid)
    }

    /// The devices a VM's mapped `hostpciN` entries resolve to on `node`:
    /// for each entry, the first device of its mapping on that node that no
    /// running VM holds. Entries naming a raw host path are not tracked.
    ///
    /// # Errors
    /// Proxmox's messages for a mapping without a device on the node and
    /// for a mapping whose devices are all taken.
    pub(crate) fn mapped_pci(
        &self,
        node: &str,
        vmid: u32,
        config: &BTreeMap<String, String>,
    ) -> Result<Vec<String>, String> {
        let mut held: Vec<String> = Vec::new();
        for (key, value) in config.iter().filter(|(k, _)| k.starts_with("hostpci")) {
            let Some(id) = options::prop(value, "mapping") else {
                continue;
            };
            let devices: Vec<&str> = self
                .pci_mappings
                .iter()
                .filter(|m| m.id == id)
                .flat_map(|m| m.devices.iter())
                .filter(|d| d.node == node)
                .map(|d| d.path.as_str())
                .collect();
            if devices.is_empty() {
                return Err(format!("PCI device mapping not found for '{id}'"));
            }
            let free = devices.iter().find(|path| {
                self.pci_holder(node, path).is_none() && !held.iter().any(|h| h == *path)
            });
            match (free, devices.as_slice()) {
                (Some(path), _) => held.push((*path).to_owned()),
                (None, [only]) => {
                    let holder = self.pci_holder(node, only).unwrap_or(vmid);
                    return Err(format!(
                        "PCI device '{only}' already in use by VMID '{holder}'"
                    ));
                }
                (None, _) => return Err(format!("could not find a free device for '{key}'")),
            }
        }
        Ok(held)
    }

    /// Refreshes the pvestatd snapshot.
    pub(crate) fn pvestatd_tick(&mut self, now: i64) {
        self.rrd.clear();
        for vm in self.vms.values() {
            self.rrd.insert(
                vm.vmid,
                RrdRow {
                    name: vm.name().map(str::to_owned),
                    status: if vm.running { "running" } else { "stopped" },
                    maxmem: vm.memory_mib() * 1024 * 1024,
                    maxcpu: vm.cpus(),
                    uptime: vm.started_at.map(|s| now - s).unwrap_or(0),
                },
            );
        }
    }
}

/// The configuration a scenario VM starts with: what `qm create` and a
/// cloud-init drive give, the spec's sizes, tags and extra options, and
/// fresh MAC, SMBIOS UUID and generation id.
fn initial_config(
    spec: &VmSpec,
    storage: &str,
    rng: &mut Rng,
    now: i64,
) -> Result<BTreeMap<String, String>, LabError> {
    let bad = |m: String| LabError::Config(format!("vm {}: {m}", spec.vmid));
    let mut config = BTreeMap::new();
    config.insert("name".to_owned(), spec.name.clone());
    config.insert("cores".to_owned(), spec.cores.to_string());
    config.insert("sockets".to_owned(), "1".to_owned());
    config.insert("memory".to_owned(), spec.memory_mib.to_string());
    config.insert("scsihw".to_owned(), "virtio-scsi-single".to_owned());
    config.insert("ostype".to_owned(), "l26".to_owned());
    config.insert("agent".to_owned(), "1".to_owned());
    config.insert("boot".to_owned(), "order=scsi0;ide2;net0".to_owned());
    config.insert(
        "ide2".to_owned(),
        format!("{storage}:vm-{}-cloudinit,media=cdrom", spec.vmid),
    );
    let prefix = if spec.template { "base" } else { "vm" };
    config.insert(
        "scsi0".to_owned(),
        format!(
            "{storage}:{prefix}-{}-disk-0,iothread=1,size={}G",
            spec.vmid, spec.disk_gib
        ),
    );
    config.insert(
        "net0".to_owned(),
        format!("virtio={},bridge=vmbr0,firewall=1", rng.mac()),
    );
    config.insert("smbios1".to_owned(), format!("uuid={}", rng.uuid()));
    config.insert("vmgenid".to_owned(), rng.uuid());
    config.insert(
        "meta".to_owned(),
        format!("creation-qemu=9.2.0,ctime={now}"),
    );
    if spec.template {
        config.insert("template".to_owned(), "1".to_owned());
    }
    if !spec.tags.is_empty() {
        let tags = options::normalize_tags(&spec.tags.join(";")).map_err(bad)?;
        config.insert("tags".to_owned(), tags);
    }
    for (k, v) in &spec.extra_config {
        config.insert(k.clone(), v.clone());
    }
    Ok(config)
}
