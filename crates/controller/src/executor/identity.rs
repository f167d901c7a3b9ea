//! What makes a VM or a node the claim's: the ownership marker a VM's
//! description carries (bound to its VMID), the identity check that
//! decides which VMs teardown may stop or delete, and the check that a
//! node of the claim's name runs on the claim's VM.
//!
//! # Guarantees
//! - A marker is valid for a VM only when its `tidepool-vmid` line names
//!   that VM's VMID. Proxmox copies the description to a clone, so an
//!   operator's copy of a worker carries the worker's lines but another
//!   VMID: it is nobody's.
//! - A VM is stopped or deleted only when it is the claim's recorded VM
//!   (VMID, SMBIOS UUID and marker all match) or carries a valid marker
//!   naming the claim (only our own clone into a VMID we reserved can).
//! - A node is the claim's only when its system UUID (or the UUID its
//!   provider ID names) is the claim's VM's SMBIOS UUID; its name proves
//!   nothing.

use tracing::warn;

use super::Executor;
use crate::claim::{Claim, VmIdentity};
use crate::ports::{ClaimStore, Hypervisor, Joiner, NodeIdentity, Nodes, ProviderError};

/// The description line naming the claim.
const CLAIM_LINE: &str = "tidepool-claim:";
/// The description line naming the VMID the marker was written for.
const VMID_LINE: &str = "tidepool-vmid:";

/// The description that marks VM `vmid` as claim `claim`'s: written at
/// clone time and again by Configure.
pub fn ownership_description(claim: &str, vmid: u32) -> String {
    format!("{CLAIM_LINE} {claim}\n{VMID_LINE} {vmid}")
}

/// The value of the first description line starting with `prefix`.
fn line_value<'a>(description: &'a str, prefix: &str) -> Option<&'a str> {
    description
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The claim that owns VM `vmid` by its description: the marker's claim
/// when its VMID line names `vmid`, else none (a marker copied onto
/// another VM, or one without a VMID line).
pub fn owner_from_description(description: &str, vmid: u32) -> Option<&str> {
    let bound = line_value(description, VMID_LINE)?.parse::<u32>().ok()?;
    (bound == vmid)
        .then(|| line_value(description, CLAIM_LINE))
        .flatten()
}

/// The claim named by a marker written before markers carried the VMID
/// line (a claim line and no VMID line). It proves ownership only of the
/// claim's recorded VM, whose VMID and UUID match the record.
pub fn unbound_owner(description: &str) -> Option<&str> {
    if line_value(description, VMID_LINE).is_some() {
        return None;
    }
    line_value(description, CLAIM_LINE)
}

/// Whether a node with this identity runs on the VM whose SMBIOS UUID is
/// `vm_uuid`: its system UUID, or the last segment of its provider ID,
/// equals it (letter case aside).
pub fn node_runs_on(node: &NodeIdentity, vm_uuid: &str) -> bool {
    let vm_uuid = vm_uuid.trim();
    if vm_uuid.is_empty() {
        return false;
    }
    let by_uuid = node
        .system_uuid
        .as_deref()
        .is_some_and(|u| u.trim().eq_ignore_ascii_case(vm_uuid));
    let by_provider = node
        .provider_id
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|last| last.eq_ignore_ascii_case(vm_uuid));
    by_uuid || by_provider
}

/// Whether the claim's node is there to act on.
pub(super) enum NodeCheck {
    /// No node of the claim's name is registered.
    Absent,
    /// The node of the claim's name runs on the claim's VM.
    Ours,
    /// A node of the claim's name runs on another machine (or cannot be
    /// shown to run on the claim's VM); why, naming the node.
    NotOurs(String),
    /// A node of the claim's name has not reported which machine it runs
    /// on yet; what it lacks, naming the node.
    Unreported(String),
}

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// Whether the node named like the claim is the claim's.
    pub(super) async fn check_node(&self, claim: &Claim) -> Result<NodeCheck, ProviderError> {
        let name = claim.name.as_str();
        let Some(node) = self.nodes.node_identity(name).await? else {
            return Ok(NodeCheck::Absent);
        };
        let Some(vm) = &claim.status.vm else {
            return Ok(NodeCheck::NotOurs(format!(
                "node {name} exists but worker {name} has no VM recorded"
            )));
        };
        if node_runs_on(&node, &vm.uuid) {
            return Ok(NodeCheck::Ours);
        }
        let reported = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        if !reported(&node.system_uuid) && !reported(&node.provider_id) {
            return Ok(NodeCheck::Unreported(format!(
                "node {name} has not reported its system UUID"
            )));
        }
        let seen = node.system_uuid.as_deref().unwrap_or("none");
        Ok(NodeCheck::NotOurs(format!(
            "node {name} is not this worker's: its system UUID ({seen}) is not the SMBIOS UUID of VM {} ({})",
            vm.vmid, vm.uuid
        )))
    }

    /// The VMs that provably belong to the claim: the recorded VM if its
    /// VMID, UUID and ownership marker all still match, plus any VM whose
    /// valid marker names the claim (a clone whose identity was never
    /// recorded). Read afresh on every call, so each stop or delete is
    /// preceded by its own check.
    pub(super) async fn ours(&self, claim: &Claim) -> Result<Vec<VmIdentity>, ProviderError> {
        let name = claim.name.as_str();
        let mut out: Vec<VmIdentity> = Vec::new();
        if let Some(recorded) = &claim.status.vm {
            match self.hv.vm(recorded.vmid).await? {
                Some(vm)
                    if !recorded.uuid.is_empty()
                        && vm.identity.uuid == recorded.uuid
                        && (vm.owner.as_deref() == Some(name)
                            || vm.unbound_owner.as_deref() == Some(name)) =>
                {
                    out.push(vm.identity);
                }
                Some(vm) => warn!(
                    claim = name,
                    vmid = recorded.vmid,
                    owner = ?vm.owner,
                    "VMID now belongs to another VM; leaving it alone"
                ),
                None => {}
            }
        }
        for vm in self.hv.owned_by(name).await? {
            // Marked as ours but never recorded: only our own clone into a
            // VMID we reserved can carry a valid marker, so it is ours.
            if vm.owner.as_deref() == Some(name)
                && !out.iter().any(|o| o.vmid == vm.identity.vmid)
                && claim
                    .status
                    .vm
                    .as_ref()
                    .is_none_or(|r| r.vmid != vm.identity.vmid)
            {
                out.push(vm.identity);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_marker_is_valid_only_on_the_vm_whose_vmid_it_names() {
        let d = ownership_description("burst-a1b2c", 1250);
        assert_eq!(owner_from_description(&d, 1250), Some("burst-a1b2c"));
        assert_eq!(
            owner_from_description(&d, 1251),
            None,
            "a copied description"
        );
        assert_eq!(unbound_owner(&d), None);
        let old = "tidepool-claim: burst-a1b2c";
        assert_eq!(owner_from_description(old, 1250), None);
        assert_eq!(unbound_owner(old), Some("burst-a1b2c"));
        let edited = "notes\ntidepool-claim: burst-a1b2c\ntidepool-vmid: 12x";
        assert_eq!(owner_from_description(edited, 1250), None);
        assert_eq!(owner_from_description("someone else's", 1250), None);
    }

    #[test]
    fn a_node_runs_on_a_vm_only_when_its_uuid_matches() {
        let node = |uuid: Option<&str>, provider: Option<&str>| NodeIdentity {
            system_uuid: uuid.map(str::to_owned),
            provider_id: provider.map(str::to_owned),
        };
        let uuid = "6C2E0D4A-11AA-4B5C-9D8E-0123456789AB";
        let lower = uuid.to_ascii_lowercase();
        assert!(node_runs_on(&node(Some(&lower), None), uuid));
        assert!(node_runs_on(
            &node(None, Some(&format!("proxmox://{lower}"))),
            uuid
        ));
        assert!(!node_runs_on(
            &node(Some("11111111-2222-3333-4444-555555555555"), None),
            uuid
        ));
        assert!(!node_runs_on(
            &node(None, Some("proxmox://pve-01/203")),
            uuid
        ));
        assert!(!node_runs_on(&node(None, None), uuid));
        assert!(!node_runs_on(&node(Some(""), None), ""));
    }
}
