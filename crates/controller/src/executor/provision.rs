//! The provisioning steps: from a recorded host and VMID to a started
//! guest reporting its address (AllocateVmid, Clone, Configure, Start,
//! WaitForAddress), with the VMID reservation they share and the
//! description line that marks a VM as a claim's.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::time::Duration;

use tidepool_core::planner::ClaimState;
use tidepool_core::planner::hosts::VmCost;
use tidepool_core::planner::usage::vms_on_their_way;
use tidepool_core::{Phase, duration::Human};
use tracing::warn;

use super::{ADDRESS_TIMEOUT, Executor, Outcome, POLL, Work, owned_vm, permanent};
use crate::claim::{Claim, ClaimStatus, Condition};
use crate::ports::{
    ClaimStore, CloneSpec, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind, VmShape,
};

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// AllocateVmid: starts the worker's clock, chooses its host and
    /// reserves its VMID (unless the claim has them already), and moves it
    /// on to Provisioning.
    pub(super) async fn allocate_vmid(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        if s.provisioned_at.is_none() {
            let now = self.now();
            s.provisioned_at = Some(now);
            s.expires_at = work
                .claim
                .spec
                .ttl
                .and_then(|t| tidepool_core::jiff::SignedDuration::try_from(t).ok())
                .and_then(|t| now.checked_add(t).ok());
        }
        self.mark(&mut s, Condition::VmidAllocated);
        if s.host.is_none() {
            s.host = work.claim.spec.host.clone();
        }
        if let ControlFlow::Break(outcome) = self.place_and_reserve(work, &mut s).await? {
            return Ok(outcome);
        }
        s.lifecycle = s
            .lifecycle
            .advance(Phase::Provisioning)
            .map_err(permanent)?;
        Ok(Outcome::done(s))
    }

    /// Chooses the host and reserves the VMID that `s` still lacks (if any),
    /// and records them, all under the lock, so the next allocation in this
    /// process sees this one. Breaks with a failure when no host has room.
    async fn place_and_reserve(
        &self,
        work: &Work<'_>,
        s: &mut ClaimStatus,
    ) -> Result<ControlFlow<Outcome>, ProviderError> {
        if s.host.is_some() && s.vmid.is_some() {
            return Ok(ControlFlow::Continue(()));
        }
        let _guard = self.vmid_lock.lock().await;
        let others = self.other_claims(work.name()).await?;
        if s.host.is_none() {
            match self.choose_host(work, &others).await {
                Ok(host) => s.host = Some(host),
                Err(e) if e.kind == ProviderErrorKind::InsufficientCapacity => {
                    return Ok(ControlFlow::Break(Outcome::Fail(e.message)));
                }
                Err(e) => return Err(e),
            }
        }
        if s.vmid.is_none() {
            s.vmid = Some(self.hv.free_vmid(&reserved_vmids(&others)).await?);
        }
        self.store.save_status(work.name(), s).await?;
        Ok(ControlFlow::Continue(()))
    }

    /// The host for the claim's new VM, making room for the VMs of `others`
    /// still on their way.
    async fn choose_host(
        &self,
        work: &Work<'_>,
        others: &[Claim],
    ) -> Result<String, ProviderError> {
        let pool = work.pool;
        let provider = self
            .config
            .providers
            .get(&pool.provider)
            .ok_or_else(|| permanent(format!("unknown provider `{}`", pool.provider)))?;
        let states: Vec<ClaimState> = others.iter().map(Claim::planner_state).collect();
        let pending: Vec<(ClaimState, VmCost)> = vms_on_their_way(&self.config, &states)
            .into_iter()
            .map(|(c, cost)| (c.clone(), cost))
            .collect();
        let cost = VmCost::new_worker(pool, &work.size.size, provider);
        self.hv.choose_host(pool, &cost, &pending).await
    }

    /// Every claim but `name`.
    async fn other_claims(&self, name: &str) -> Result<Vec<Claim>, ProviderError> {
        Ok(self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|c| c.name != name)
            .collect())
    }

    /// A free VMID that no other claim has reserved.
    async fn reserve_vmid(&self, name: &str) -> Result<u32, ProviderError> {
        let others = self.other_claims(name).await?;
        self.hv.free_vmid(&reserved_vmids(&others)).await
    }

    /// Clone: adopts the claim's VM if the reserved VMID already holds it
    /// (waiting while the clone is still copying), reserves another VMID if
    /// a foreign VM took it, and clones the template otherwise.
    pub(super) async fn clone_vm(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        let name = work.name();
        let vmid = s.vmid.ok_or_else(|| permanent("no VMID recorded"))?;
        match self.hv.vm(vmid).await? {
            Some(vm) if vm.owner.as_deref() == Some(name) => {
                if vm.locked {
                    return Ok(Outcome::Wait(
                        Duration::from_secs(5),
                        format!("VM {vmid} is still being cloned"),
                    ));
                }
                s.vm = Some(vm.identity);
            }
            Some(_) => return self.reserve_again(name, vmid, s).await,
            None => {
                let spec = CloneSpec {
                    claim: name.to_owned(),
                    pool: work.pool.name.clone(),
                    template: work.pool.template_for(&work.claim.spec.size),
                    host: s.host.clone().unwrap_or_default(),
                    vmid,
                };
                s.vm = Some(self.hv.clone_vm(&spec).await?);
            }
        }
        Ok(self.reached(s, Condition::VmCloned))
    }

    /// Someone else took the VMID after we reserved it: reserves and
    /// records another, for the next Clone to use.
    async fn reserve_again(
        &self,
        name: &str,
        vmid: u32,
        mut s: ClaimStatus,
    ) -> Result<Outcome, ProviderError> {
        warn!(
            claim = name,
            vmid, "reserved VMID taken by another VM; choosing another"
        );
        let _guard = self.vmid_lock.lock().await;
        s.vmid = Some(self.reserve_vmid(name).await?);
        self.store.save_status(name, &s).await?;
        Ok(Outcome::done(s))
    }

    /// Configure: sets the VM's shape, ownership tags and description, and
    /// the SMBIOS serial the joiner prepared.
    pub(super) async fn configure(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let s = work.status();
        let name = work.name();
        let size = &work.size.size;
        let vm = owned_vm(&s)?;
        let meta = self
            .metadata(work.claim)
            .map_err(|e| permanent(e.to_string()))?;
        let serial = self.joiner.prepare(work.claim, &meta).await?;
        let shape = VmShape {
            cores: size.vcpu,
            memory_mib: size.memory_mib,
            tags: vec![
                "tidepool".to_owned(),
                work.pool.name.clone(),
                name.to_owned(),
            ],
            description: ownership_description(name),
            smbios_serial: serial,
            gpu_mapping: size.gpu.as_ref().map(|g| g.mapping.clone()),
        };
        self.hv.configure(&vm, &shape).await?;
        Ok(self.reached(s, Condition::VmConfigured))
    }

    /// Start: starts the VM; a host without the room to run it fails the
    /// claim.
    pub(super) async fn start(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let s = work.status();
        let vm = owned_vm(&s)?;
        match self.hv.start(&vm).await {
            Ok(()) => {}
            Err(e) if e.kind == ProviderErrorKind::InsufficientCapacity => {
                return Ok(Outcome::Fail(format!(
                    "cannot start VM {}: {}",
                    vm.vmid, e.message
                )));
            }
            Err(e) => return Err(e),
        }
        Ok(self.reached(s, Condition::VmStarted))
    }

    /// WaitForAddress: records the address the guest agent reports and
    /// moves the worker on to Joining; fails after [`ADDRESS_TIMEOUT`].
    pub(super) async fn wait_for_address(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        let vm = owned_vm(&s)?;
        match self.hv.address(&vm).await? {
            Some(ip) => {
                s.ip = Some(ip);
                self.mark(&mut s, Condition::AddressReported);
                s.lifecycle = s.lifecycle.advance(Phase::Joining).map_err(permanent)?;
                Ok(Outcome::done(s))
            }
            None if self.since(&s, Condition::VmStarted) > ADDRESS_TIMEOUT => {
                Ok(Outcome::Fail(format!(
                    "the guest agent of VM {} reported no address within {}",
                    vm.vmid,
                    Human(ADDRESS_TIMEOUT)
                )))
            }
            None => Ok(Outcome::Wait(POLL, "guest agent".into())),
        }
    }
}

/// The VMIDs `claims` hold: each one's VM, or the VMID it reserved.
fn reserved_vmids(claims: &[Claim]) -> BTreeSet<u32> {
    claims
        .iter()
        .filter_map(|c| c.status.vm.as_ref().map(|v| v.vmid).or(c.status.vmid))
        .collect()
}

/// The description line that marks a VM as a claim's.
pub fn ownership_description(claim: &str) -> String {
    format!("tidepool-claim: {claim}")
}

/// The claim named by a VM description, if it carries the marker.
pub fn owner_from_description(description: &str) -> Option<&str> {
    description
        .lines()
        .find_map(|l| l.trim().strip_prefix("tidepool-claim:"))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use tidepool_core::Step;

    use crate::executor::Progress;
    use crate::executor::fixtures::{claim, clock, executor};
    use crate::testing::Fake;

    #[tokio::test]
    async fn a_claim_made_without_the_finalizer_gets_it_before_anything_is_created() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        let mut bare = claim("burst-kubec", "burst", "small");
        bare.finalizer = false;
        fake.put_claim(bare);

        assert_eq!(
            exec.step("burst-kubec").await.unwrap(),
            Progress::Advanced(Step::AllocateVmid)
        );
        let w = fake.world();
        assert!(w.claims["burst-kubec"].finalizer, "the finalizer first");
        assert!(w.clones.is_empty(), "nothing cloned yet");
    }
}
