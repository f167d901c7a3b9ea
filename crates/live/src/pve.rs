//! [`Hypervisor`] over the Proxmox VE client.
//!
//! Ownership of a VM is read from the marker its description gets in the
//! clone request (`tidepool-claim: <name>` and `tidepool-vmid: <vmid>`),
//! valid only on the VM whose VMID it names; the SMBIOS UUID comes from its
//! `smbios1`, which every clone regenerates. Together with the VMID they
//! are the identity the destroy interlock checks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use tidepool_core::config::{Pool, ProxmoxProvider};
use tidepool_core::planner::ClaimState;
use tidepool_core::planner::hosts::{Headroom, HostSnapshot, VmCost, place};
use tidepool_proxmox::types::{CloneRequest, ConfigUpdate, DeleteOptions, ShutdownOptions};
use tidepool_proxmox::{ErrorKind, HostPci, ProxmoxClient, ProxmoxError, Smbios1};
use tokio::time::Instant;

use tidepool_controller::claim::VmIdentity;
use tidepool_controller::executor::{owner_from_description, ownership_description, unbound_owner};
use tidepool_controller::ports::{
    CloneSpec, Hypervisor, ProviderError, ProviderErrorKind, ProviderResult, VmFacts, VmShape,
};

/// How long one Proxmox task (clone, start, stop, delete) may take.
const TASK_DEADLINE: Duration = Duration::from_secs(600);

/// How long Proxmox' own shutdown task waits for the guest (it then fails
/// without stopping the VM; the executor's deadline decides the hard stop).
const ACPI_SHUTDOWN_TASK_SECS: u64 = 120;

/// The Proxmox VE hypervisor of one provider.
#[derive(Debug)]
pub struct PveHypervisor {
    client: ProxmoxClient,
    provider: ProxmoxProvider,
    /// The storages of each template's disks, by node and VMID, with when
    /// they were read: templates change rarely, and reading every
    /// template's config on every planning pass would load Proxmox.
    template_disks: std::sync::Mutex<TemplateDisks>,
    /// When Proxmox last answered a read (readiness looks at it).
    answered: std::sync::Mutex<Option<Instant>>,
    /// Hosts whose status answer could not be used, with the problem, as
    /// of the last [`PveHypervisor::host_snapshots`].
    host_problems: std::sync::Mutex<BTreeMap<String, String>>,
}

/// Per (node, VMID): when the disks were read, and their storages.
type TemplateDisks = BTreeMap<(String, u32), (Instant, BTreeSet<String>)>;

/// How long a template's disk storages are trusted before being read again.
const TEMPLATE_DISKS_TTL: Duration = Duration::from_secs(600);

impl PveHypervisor {
    /// A hypervisor over `client` for `provider`'s VMID range, storage and pool.
    pub fn new(client: ProxmoxClient, provider: ProxmoxProvider) -> Self {
        Self {
            client,
            provider,
            template_disks: std::sync::Mutex::default(),
            answered: std::sync::Mutex::default(),
            host_problems: std::sync::Mutex::default(),
        }
    }

    /// Notes that Proxmox answered just now.
    fn note_answer(&self) {
        *self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// When Proxmox last answered a read (`None` before the first answer),
    /// on the monotonic clock.
    pub fn last_answer(&self) -> Option<Instant> {
        *self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks Proxmox for its version, so that an idle controller still
    /// knows whether the API answers.
    ///
    /// # Errors
    /// The request failing.
    pub async fn probe(&self) -> ProviderResult<()> {
        self.client.version().await.map_err(classify)?;
        self.note_answer();
        Ok(())
    }

    /// The hosts whose status answer could not be used (unparsable,
    /// refused) at the last [`PveHypervisor::host_snapshots`], with the
    /// problem: the CLI fails on them, the controller reports them.
    pub fn host_problems(&self) -> BTreeMap<String, String> {
        self.host_problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The storages `template`'s disks are on (cached for
    /// [`TEMPLATE_DISKS_TTL`]); `None` when its config cannot be read.
    async fn template_storages(&self, node: &str, vmid: u32) -> Option<BTreeSet<String>> {
        let key = (node.to_owned(), vmid);
        let cached = self
            .template_disks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(at, _)| at.elapsed() < TEMPLATE_DISKS_TTL)
            .map(|(_, disks)| disks.clone());
        if cached.is_some() {
            return cached;
        }
        let disks = disk_storages(&self.client.vm_config(node, vmid).await.ok()?.raw);
        self.template_disks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, (Instant::now(), disks.clone()));
        Some(disks)
    }

    /// The client.
    pub fn client(&self) -> &ProxmoxClient {
        &self.client
    }

    /// What the planner needs of this provider's hosts: memory committed to
    /// VMs (running or not), logical CPUs and vCPUs allocated, free storage,
    /// free GPU mapping devices and the VMs placed on each; plus every VMID
    /// in use in the cluster. A host that does not answer (or that the
    /// cluster does not know) is offline. A host whose status answer cannot
    /// be used (unparsable, refused) is offline too, but never silently:
    /// it is logged and listed in [`PveHypervisor::host_problems`] until it
    /// answers properly.
    ///
    /// # Errors
    /// The cluster-wide reads (VMs, storage, PCI mappings) failing.
    pub async fn host_snapshots(&self) -> ProviderResult<(Vec<HostSnapshot>, BTreeSet<u32>)> {
        let pve = &self.client;
        let vms = pve.cluster_vms().await.map_err(classify)?;
        self.note_answer();
        let storages = pve.cluster_storage().await.map_err(classify)?;
        let mappings = pve.pci_mappings(None).await.map_err(classify)?;
        let shared: BTreeSet<&str> = storages
            .iter()
            .filter(|s| s.shared)
            .map(|s| s.storage.as_str())
            .collect();
        // Where each template can be cloned to: its own host, or every host
        // when all its disks are on shared storage.
        let mut local_templates: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        let mut everywhere = BTreeSet::new();
        for t in vms.iter().filter(|v| v.template) {
            let names = t.name.iter().cloned().chain([t.vmid.to_string()]);
            let on_shared_storage = match self.template_storages(&t.node, t.vmid).await {
                Some(volumes) => {
                    !volumes.is_empty() && volumes.iter().all(|s| shared.contains(s.as_str()))
                }
                // Unknown: assume it can only be cloned where it is.
                None => false,
            };
            if on_shared_storage {
                everywhere.extend(names);
            } else {
                local_templates.entry(&t.node).or_default().extend(names);
            }
        }
        let mut out = Vec::new();
        let mut problems = BTreeMap::new();
        for host in &self.provider.hosts {
            let status = match pve.node_status(host).await {
                Ok(status) => status,
                Err(e) => {
                    if e.kind() != ErrorKind::NotFound && !is_unanswered(&e) {
                        problems.insert(host.clone(), chain(&e));
                    }
                    out.push(HostSnapshot {
                        name: host.clone(),
                        provider: self.provider.name.clone(),
                        online: false,
                        ..HostSnapshot::default()
                    });
                    continue;
                }
            };
            let on_host: Vec<_> = vms
                .iter()
                .filter(|v| &v.node == host && !v.template)
                .collect();
            // A device is taken while a VM that maps it runs: read the
            // mappings of each running VM once, if the host has devices.
            let devices_on = |m: &tidepool_proxmox::PciMapping| {
                m.map
                    .iter()
                    .filter(|e| e.node.as_deref() == Some(host.as_str()))
                    .count()
            };
            let mut mapped: Vec<BTreeSet<String>> = Vec::new();
            if mappings.iter().any(|m| devices_on(m) > 0) {
                for v in on_host.iter().filter(|v| v.status.is_running()) {
                    if let Ok(cfg) = pve.vm_config(host, v.vmid).await {
                        mapped.push(
                            cfg.hostpci
                                .values()
                                .filter_map(|h| h.mapping.clone())
                                .collect(),
                        );
                    }
                }
            }
            let gpu_free = mappings
                .iter()
                .filter(|m| devices_on(m) > 0)
                .map(|m| {
                    let used = mapped.iter().filter(|vm| vm.contains(&m.id)).count();
                    (
                        m.id.clone(),
                        u32::try_from(devices_on(m).saturating_sub(used)).unwrap_or(0),
                    )
                })
                .collect();
            out.push(HostSnapshot {
                name: host.clone(),
                provider: self.provider.name.clone(),
                online: true,
                memory_total_mib: status.memory.total >> 20,
                // Committed memory: every VM placed here, running or not.
                memory_used_mib: on_host.iter().map(|v| v.maxmem.unwrap_or(0) >> 20).sum(),
                cores: u32::try_from(status.cpuinfo.cpus).unwrap_or(u32::MAX),
                vcpus_allocated: on_host.iter().map(|v| v.maxcpu.unwrap_or(0)).sum(),
                storage_free_gib: storages
                    .iter()
                    .filter(|s| &s.node == host)
                    .map(|s| (s.storage.clone(), s.free() >> 30))
                    .collect(),
                gpu_free,
                vms: on_host
                    .iter()
                    .filter_map(|v| Some((v.name.clone()?, v.status.is_running())))
                    .collect(),
                templates: local_templates
                    .get(host.as_str())
                    .into_iter()
                    .flatten()
                    .chain(&everywhere)
                    .cloned()
                    .collect(),
            });
        }
        let mut known = self
            .host_problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (host, problem) in &problems {
            if known.get(host) != Some(problem) {
                tracing::warn!(
                    host,
                    problem,
                    "a Proxmox host's status cannot be used: taken as offline"
                );
            }
        }
        *known = problems;
        drop(known);
        Ok((out, vms.iter().map(|v| v.vmid).collect()))
    }
}

/// Whether a failed call means the host did not answer (down, unreachable,
/// too slow), as opposed to answering something that cannot be used.
fn is_unanswered(e: &ProxmoxError) -> bool {
    matches!(e.kind(), ErrorKind::Transient | ErrorKind::Timeout)
}

/// An error with its whole chain of causes, for messages that must say
/// what the server answered.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(next.trim_end());
        }
        source = cause.source();
    }
    text
}

/// Maps a Proxmox error onto the executor's classification: a lock or a
/// taken VMID is a conflict (another VMID, or later, may do).
pub fn classify(e: ProxmoxError) -> ProviderError {
    let kind = match e.kind() {
        ErrorKind::NotFound => ProviderErrorKind::NotFound,
        ErrorKind::Locked | ErrorKind::AlreadyExists => ProviderErrorKind::Conflict,
        ErrorKind::InsufficientCapacity => ProviderErrorKind::InsufficientCapacity,
        ErrorKind::Transient | ErrorKind::Timeout | ErrorKind::AgentNotReady => {
            ProviderErrorKind::Transient
        }
        ErrorKind::Auth | ErrorKind::Permanent | ErrorKind::TaskFailed => {
            ProviderErrorKind::Permanent
        }
    };
    ProviderError::new(kind, chain(&e))
}

/// The storages a VM's disks live on, from its configuration: every
/// `scsiN`, `virtioN`, `sataN`, `ideN`, `efidisk0` and `tpmstate0` volume,
/// cloud-init drives included, ISO images and empty drives not.
fn disk_storages(config: &BTreeMap<String, serde_json::Value>) -> BTreeSet<String> {
    let is_disk_key = |k: &str| {
        ["scsi", "virtio", "sata", "ide"].iter().any(|bus| {
            k.strip_prefix(bus)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }) || k == "efidisk0"
            || k == "tpmstate0"
    };
    config
        .iter()
        .filter(|(k, _)| is_disk_key(k))
        .filter_map(|(_, v)| {
            let volume = v.as_str()?.split(',').next()?;
            let (storage, name) = volume.split_once(':')?;
            (!name.starts_with("iso/")).then(|| storage.to_owned())
        })
        .collect()
}

fn deadline() -> Instant {
    Instant::now() + TASK_DEADLINE
}

impl PveHypervisor {
    async fn facts(&self, node: &str, vmid: u32, running: bool) -> ProviderResult<Option<VmFacts>> {
        let config = match self.client.vm_config(node, vmid).await {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let description = config.description.as_deref().unwrap_or_default();
        let owner = owner_from_description(description, vmid).map(str::to_owned);
        Ok(Some(VmFacts {
            identity: VmIdentity {
                vmid,
                node: node.to_owned(),
                uuid: config.smbios_uuid().unwrap_or_default().to_owned(),
            },
            owner,
            unbound_owner: unbound_owner(description).map(str::to_owned),
            running,
            locked: config.lock.is_some(),
        }))
    }

    /// Waits for a task this adapter started, up to [`TASK_DEADLINE`].
    async fn finish(&self, upid: &tidepool_proxmox::Upid) -> ProviderResult<()> {
        self.client
            .wait_task(upid, deadline())
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Starts (`running`) or stops the VM and waits for the task; a VM
    /// already in that state is left alone.
    async fn power(&self, vm: &VmIdentity, running: bool) -> ProviderResult<()> {
        let status = self
            .client
            .vm_status(&vm.node, vm.vmid)
            .await
            .map_err(classify)?;
        if status.is_running() == running {
            return Ok(());
        }
        let upid = if running {
            self.client.start(&vm.node, vm.vmid).await
        } else {
            self.client.stop(&vm.node, vm.vmid).await
        }
        .map_err(classify)?;
        match self.finish(&upid).await {
            Ok(()) => Ok(()),
            // Another start or stop got there first (one still in flight
            // from a process that died, say): "VM already running" is done.
            Err(e) => match self.client.vm_status(&vm.node, vm.vmid).await {
                Ok(now) if now.is_running() == running => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// The template's node and VMID, preferring a copy on `host`.
    async fn template(&self, template: &str, host: &str) -> ProviderResult<(String, u32)> {
        let vms = self.client.cluster_vms().await.map_err(classify)?;
        let mut matching: Vec<_> = match template.parse::<u32>() {
            Ok(vmid) => vms.into_iter().filter(|v| v.vmid == vmid).collect(),
            Err(_) => vms
                .into_iter()
                .filter(|v| v.template && v.name.as_deref() == Some(template))
                .collect(),
        };
        matching.sort_by_key(|v| v.node != host);
        let found = matching.into_iter().next();
        found.map(|v| (v.node, v.vmid)).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Permanent,
                format!("no template named `{template}` on the Proxmox cluster"),
            )
        })
    }
}

impl Hypervisor for PveHypervisor {
    async fn vm(&self, vmid: u32) -> ProviderResult<Option<VmFacts>> {
        match self.client.find_vm(vmid).await.map_err(classify)? {
            Some(vm) => self.facts(&vm.node, vmid, vm.status.is_running()).await,
            None => Ok(None),
        }
    }

    async fn owned_by(&self, claim: &str) -> ProviderResult<Vec<VmFacts>> {
        let vms = self.client.cluster_vms().await.map_err(classify)?;
        let mut out = Vec::new();
        // Candidates carry the claim's name (set at clone) or tag (set after).
        for vm in vms.iter().filter(|v| {
            !v.template && (v.name.as_deref() == Some(claim) || v.tags.iter().any(|t| t == claim))
        }) {
            if let Some(f) = self
                .facts(&vm.node, vm.vmid, vm.status.is_running())
                .await?
                && f.owner.as_deref() == Some(claim)
            {
                out.push(f);
            }
        }
        Ok(out)
    }

    async fn vms_in_range(&self) -> ProviderResult<Vec<VmFacts>> {
        let range = self.provider.vmid_lower..=self.provider.vmid_upper;
        let vms = self.client.cluster_vms().await.map_err(classify)?;
        let mut out = Vec::new();
        for vm in vms
            .iter()
            .filter(|v| v.kind == "qemu" && !v.template && range.contains(&v.vmid))
        {
            if let Some(f) = self
                .facts(&vm.node, vm.vmid, vm.status.is_running())
                .await?
            {
                out.push(f);
            }
        }
        Ok(out)
    }

    async fn choose_host(
        &self,
        pool: &Pool,
        cost: &VmCost,
        pending: &[(ClaimState, VmCost)],
    ) -> ProviderResult<String> {
        let (hosts, _) = self.host_snapshots().await?;
        let mut ledger: Vec<Headroom> = hosts
            .iter()
            .filter(|h| h.online)
            .map(|host| Headroom::new(host, &self.provider, pending.iter().map(|(c, v)| (c, v))))
            .collect();
        place(&mut ledger, pool, &self.provider, cost).map_err(|short| {
            ProviderError::new(ProviderErrorKind::InsufficientCapacity, short.message)
        })
    }

    async fn free_vmid(&self, reserved: &std::collections::BTreeSet<u32>) -> ProviderResult<u32> {
        let used: std::collections::BTreeSet<u32> = self
            .client
            .cluster_vms()
            .await
            .map_err(classify)?
            .iter()
            .map(|v| v.vmid)
            .collect();
        for id in self.provider.vmid_lower..=self.provider.vmid_upper {
            if used.contains(&id) || reserved.contains(&id) {
                continue;
            }
            // Ask Proxmox too: it knows about VMIDs being created right now.
            match self.client.next_id(Some(id)).await {
                Ok(_) => return Ok(id),
                // Taken (or refused for this id): try the next one.
                Err(e) if matches!(e.kind(), ErrorKind::AlreadyExists | ErrorKind::Permanent) => {
                    continue;
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Err(ProviderError::new(
            ProviderErrorKind::InsufficientCapacity,
            format!(
                "no free VMID in {}-{} on provider {}",
                self.provider.vmid_lower, self.provider.vmid_upper, self.provider.name
            ),
        ))
    }

    async fn clone_vm(&self, spec: &CloneSpec) -> ProviderResult<VmIdentity> {
        let (template_node, template_vmid) = self.template(&spec.template, &spec.host).await?;
        let req = CloneRequest {
            newid: spec.vmid,
            name: Some(spec.claim.clone()),
            target: (!spec.host.is_empty() && spec.host != template_node)
                .then(|| spec.host.clone()),
            full: Some(self.provider.full_clone),
            storage: self
                .provider
                .full_clone
                .then(|| self.provider.storage.clone()),
            pool: self.provider.resource_pool.clone(),
            description: Some(ownership_description(&spec.claim, spec.vmid)),
        };
        let node = self
            .client
            .clone_and_wait(&template_node, template_vmid, &req, deadline())
            .await
            .map_err(classify)?;
        let config = self
            .client
            .vm_config(&node, spec.vmid)
            .await
            .map_err(classify)?;
        // When the request's answer was lost, the client took the VM found
        // at the VMID for the clone; only the marker this request wrote
        // proves it is.
        let description = config.description.as_deref().unwrap_or_default();
        if owner_from_description(description, spec.vmid) != Some(spec.claim.as_str()) {
            return Err(ProviderError::new(
                ProviderErrorKind::Conflict,
                format!(
                    "cloning into VM {}: the VM found there does not carry claim {}'s marker; another VM took the VMID",
                    spec.vmid, spec.claim
                ),
            ));
        }
        Ok(VmIdentity {
            vmid: spec.vmid,
            node,
            uuid: config.smbios_uuid().unwrap_or_default().to_owned(),
        })
    }

    async fn configure(&self, vm: &VmIdentity, shape: &VmShape) -> ProviderResult<()> {
        let current = self
            .client
            .vm_config(&vm.node, vm.vmid)
            .await
            .map_err(classify)?;
        let mut smbios = current.smbios1.clone().unwrap_or_default();
        if let Some(serial) = &shape.smbios_serial {
            smbios.serial = Some(serial.clone());
        }
        let mut hostpci = std::collections::BTreeMap::new();
        if let Some(mapping) = &shape.gpu_mapping {
            hostpci.insert(0, HostPci::mapped(mapping.clone()));
        }
        let update = ConfigUpdate {
            cores: Some(shape.cores),
            memory_mib: Some(shape.memory_mib),
            tags: Some(shape.tags.clone()),
            description: Some(shape.description.clone()),
            smbios1: Some(Smbios1 { ..smbios }),
            hostpci,
            ..ConfigUpdate::default()
        };
        self.client
            .update_config(&vm.node, vm.vmid, &update)
            .await
            .map_err(classify)
    }

    async fn start(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.power(vm, true).await
    }

    async fn address(&self, vm: &VmIdentity) -> ProviderResult<Option<IpAddr>> {
        // Interfaces other than the guest's loopback device; the address is
        // not filtered by class, so guests on any network (the lab's run on
        // 127.x addresses) are found.
        match self.client.agent_interfaces(&vm.node, vm.vmid).await {
            Ok(interfaces) => {
                let addrs: Vec<IpAddr> = interfaces
                    .iter()
                    .filter(|i| i.name != "lo")
                    .flat_map(|i| i.addresses.iter().map(|a| a.addr))
                    .filter(|ip| !ip.is_unspecified() && *ip != IpAddr::from([127, 0, 0, 1]))
                    .collect();
                Ok(addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or_else(|| addrs.first())
                    .copied())
            }
            Err(e) if e.kind() == ErrorKind::AgentNotReady => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn stop(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.power(vm, false).await
    }

    async fn shutdown(&self, vm: &VmIdentity) -> ProviderResult<()> {
        let status = self
            .client
            .vm_status(&vm.node, vm.vmid)
            .await
            .map_err(classify)?;
        if !status.is_running() {
            return Ok(());
        }
        // The task waits for the guest on Proxmox' side; the executor
        // watches the VM's state and hard-stops on its own deadline.
        let options = ShutdownOptions {
            timeout_secs: Some(ACPI_SHUTDOWN_TASK_SECS),
            force_stop: false,
        };
        self.client
            .shutdown(&vm.node, vm.vmid, &options)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn delete(&self, vm: &VmIdentity) -> ProviderResult<()> {
        let options = DeleteOptions {
            purge: true,
            destroy_unreferenced_disks: true,
        };
        let upid = self
            .client
            .delete_vm(&vm.node, vm.vmid, &options)
            .await
            .map_err(classify)?;
        self.finish(&upid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_storages_of_a_templates_disks_are_read_from_its_config() {
        let config: BTreeMap<String, serde_json::Value> = [
            ("scsi0", json!("ceph-rbd:base-9001-disk-0,size=100G")),
            ("efidisk0", json!("ceph-rbd:base-9001-disk-1,efitype=4m")),
            ("ide2", json!("local-lvm:vm-9001-cloudinit,media=cdrom")),
            ("ide0", json!("local:iso/talos-amd64.iso,media=cdrom")),
            ("sata1", json!("none,media=cdrom")),
            ("scsihw", json!("virtio-scsi-single")),
            ("net0", json!("virtio=BC:24:11:00:00:01,bridge=vmbr0")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let found: Vec<String> = disk_storages(&config).into_iter().collect();
        assert_eq!(found, ["ceph-rbd", "local-lvm"]);
    }
}
