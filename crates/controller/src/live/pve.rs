//! [`Hypervisor`] over the Proxmox VE client.
//!
//! Ownership of a VM is read from the marker line its description gets at
//! clone time (`tidepool-claim: <name>`); the SMBIOS UUID comes from its
//! `smbios1`, which every clone regenerates. Together with the VMID they
//! are the identity the destroy interlock checks.

use std::net::IpAddr;
use std::time::Duration;

use tidepool_core::config::ProxmoxProvider;
use tidepool_proxmox::types::{CloneRequest, ConfigUpdate, DeleteOptions};
use tidepool_proxmox::{HostPci, ProxmoxClient, ProxmoxError, Smbios1};
use tokio::time::Instant;

use crate::claim::VmIdentity;
use crate::executor::owner_from_description;
use crate::ports::{
    CloneSpec, Hypervisor, ProviderError, ProviderErrorKind, ProviderResult, VmFacts, VmShape,
};

/// How long one Proxmox task (clone, start, stop, delete) may take.
const TASK_DEADLINE: Duration = Duration::from_secs(600);

/// The Proxmox VE hypervisor of one provider.
#[derive(Debug)]
pub struct PveHypervisor {
    client: ProxmoxClient,
    provider: ProxmoxProvider,
}

impl PveHypervisor {
    /// A hypervisor over `client` for `provider`'s VMID range, storage and pool.
    pub fn new(client: ProxmoxClient, provider: ProxmoxProvider) -> Self {
        Self { client, provider }
    }

    /// The client.
    pub fn client(&self) -> &ProxmoxClient {
        &self.client
    }
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

/// Maps a Proxmox error onto the executor's classification.
pub fn classify(e: ProxmoxError) -> ProviderError {
    let kind = match e.category() {
        "not_found" => ProviderErrorKind::NotFound,
        "locked" => ProviderErrorKind::Conflict,
        "insufficient_capacity" => ProviderErrorKind::InsufficientCapacity,
        "transient" | "timeout" | "agent_not_ready" => ProviderErrorKind::Transient,
        _ if chain(&e).contains("already exists") => ProviderErrorKind::Conflict,
        _ => ProviderErrorKind::Permanent,
    };
    ProviderError::new(kind, chain(&e))
}

/// Memory left on a host for a new VM, MiB (negative when overcommitted):
/// its physical memory less the reserve, the memory of every VM placed
/// there, running or not (`maxmem`, bytes), and the memory promised to
/// claims whose VM is still to come. This is the planner's headroom model,
/// so the executor accepts a host exactly when the planner would: a new
/// VM needs its memory plus the per-VM overhead.
fn memory_headroom_mib(
    total_bytes: u64,
    vm_maxmem_bytes: impl Iterator<Item = u64>,
    reserve_mib: u64,
    promised_mib: u64,
) -> i128 {
    let committed: i128 = vm_maxmem_bytes.map(|b| i128::from(b >> 20)).sum();
    i128::from(total_bytes >> 20) - i128::from(reserve_mib) - committed - i128::from(promised_mib)
}

fn deadline() -> Instant {
    Instant::now() + TASK_DEADLINE
}

impl PveHypervisor {
    async fn facts(&self, node: &str, vmid: u32, running: bool) -> ProviderResult<Option<VmFacts>> {
        let config = match self.client.vm_config(node, vmid).await {
            Ok(c) => c,
            Err(e) if e.category() == "not_found" => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let owner = config
            .description
            .as_deref()
            .and_then(owner_from_description)
            .map(str::to_owned);
        Ok(Some(VmFacts {
            identity: VmIdentity {
                vmid,
                node: node.to_owned(),
                uuid: config.smbios_uuid().unwrap_or_default().to_owned(),
            },
            owner,
            running,
            locked: config.lock.is_some(),
        }))
    }

    /// Starts (`running`) or stops the VM and waits for the task; a VM
    /// already in that state is left alone.
    async fn power(&self, vm: &VmIdentity, running: bool) -> ProviderResult<()> {
        let status = self
            .client
            .vm_status(&vm.node, vm.vmid)
            .await
            .map_err(classify)?;
        if (status.status == "running") == running {
            return Ok(());
        }
        let upid = if running {
            self.client.start(&vm.node, vm.vmid).await
        } else {
            self.client.stop(&vm.node, vm.vmid).await
        }
        .map_err(classify)?;
        self.client
            .wait_task(&upid, deadline())
            .await
            .map_err(classify)?;
        Ok(())
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
            Some(vm) => self.facts(&vm.node, vmid, vm.status == "running").await,
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
                .facts(&vm.node, vm.vmid, vm.status == "running")
                .await?
                && f.owner.as_deref() == Some(claim)
            {
                out.push(f);
            }
        }
        Ok(out)
    }

    async fn choose_host(
        &self,
        candidates: &[String],
        template: &str,
        memory_mib: u64,
        pending: &std::collections::BTreeMap<String, u64>,
    ) -> ProviderResult<String> {
        let vms = self.client.cluster_vms().await.map_err(classify)?;
        let holds_template = |host: &str| {
            vms.iter().any(|v| {
                v.template
                    && v.node == host
                    && (v.name.as_deref() == Some(template) || v.vmid.to_string() == template)
            })
        };
        let mut best: Option<(i128, String)> = None;
        let mut shortfalls = Vec::new();
        for host in candidates {
            if !holds_template(host) {
                shortfalls.push(format!("{host}: no template `{template}`"));
                continue;
            }
            let status = match self.client.node_status(host).await {
                Ok(s) => s,
                Err(e) => {
                    shortfalls.push(format!("{host}: unreachable ({})", e.category()));
                    continue;
                }
            };
            let headroom = memory_headroom_mib(
                status.memory.total,
                vms.iter()
                    .filter(|v| &v.node == host && !v.template)
                    .map(|v| v.maxmem.unwrap_or(0)),
                self.provider.host_memory_reserve_mib,
                pending.get(host).copied().unwrap_or(0),
            );
            let need = i128::from(memory_mib) + i128::from(self.provider.vm_memory_overhead_mib);
            if headroom >= need {
                if best.as_ref().is_none_or(|(h, _)| headroom > *h) {
                    best = Some((headroom, host.clone()));
                }
            } else {
                shortfalls.push(format!("{host}: {headroom} MiB free, {need} MiB needed"));
            }
        }
        best.map(|(_, h)| h).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::InsufficientCapacity,
                format!("no host has memory for the VM ({})", shortfalls.join("; ")),
            )
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
                Err(e) if e.category() == "permanent" => continue,
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
            description: Some(crate::executor::ownership_description(&spec.claim)),
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
            Err(e) if e.category() == "agent_not_ready" => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn stop(&self, vm: &VmIdentity) -> ProviderResult<()> {
        self.power(vm, false).await
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
        self.client
            .wait_task(&upid, deadline())
            .await
            .map_err(classify)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_counts_existing_vms_by_their_memory_and_promised_ones_as_given() {
        const GIB: u64 = 1 << 30;
        // The home lab's pve-01: 192 GiB, truenas, the control plane and a
        // node (96 GiB), a 4 GiB reserve, one small worker on its way
        // (8 GiB + 512 MiB overhead).
        let headroom = memory_headroom_mib(
            192 * GIB,
            [48 * GIB, 16 * GIB, 32 * GIB].into_iter(),
            4096,
            8192 + 512,
        );
        assert_eq!(headroom, 196_608 - 98_304 - 4096 - 8704);
        assert_eq!(
            memory_headroom_mib(8 * GIB, [8 * GIB].into_iter(), 4096, 0),
            -4096
        );
    }
}
