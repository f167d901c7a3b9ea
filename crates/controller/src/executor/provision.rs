//! The provisioning steps: from a recorded host and VMID to a started
//! guest reporting its address (AllocateVmid, Clone, Configure, Start,
//! WaitForAddress), with the VMID reservation they share.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tidepool_core::planner::ClaimState;
use tidepool_core::planner::hosts::VmCost;
use tidepool_core::planner::usage::vms_on_their_way;
use tidepool_core::spares::start_clock;
use tidepool_core::{Phase, duration::Human};
use tracing::warn;

use super::identity::ownership_description;
use super::{ADDRESS_TIMEOUT, Executor, Outcome, POLL, Work, owned_vm, permanent};
use crate::claim::{Claim, ClaimStatus, Condition};
use crate::ports::{
    ClaimStore, CloneSpec, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind, VmShape,
};

/// How long a clone may take, counted from its recorded request: a VM
/// still locked without a marker at the reserved VMID after this long is
/// taken for a stranger's. As long as the hypervisor waits for a task.
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often a VM being cloned is looked at again.
const CLONE_POLL: Duration = Duration::from_secs(2);

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// AllocateVmid: starts the worker's clock (a spare's waits for its
    /// activation), chooses its host and
    /// reserves its VMID (unless the claim has them already), and moves it
    /// on to Provisioning.
    pub(super) async fn allocate_vmid(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        // A spare's clock starts when it is activated.
        if s.provisioned_at.is_none() && !work.claim.intent().is_spare() {
            start_clock(&mut s, work.claim.spec.ttl, self.now());
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

    /// Clone: records the request, then clones the template into the
    /// reserved VMID; adopts the claim's VM if the VMID already holds it,
    /// waits while a clone this claim requested is still copying, and
    /// reserves another VMID if a foreign VM took it.
    ///
    /// # Guarantees
    /// One VM per claim through a restart mid-clone: the request is
    /// recorded ([`Condition::CloneRequested`]) before it is made, so a
    /// locked VM without a marker at the reserved VMID is taken for this
    /// claim's clone in progress (for up to [`CLONE_TIMEOUT`]) rather than
    /// a stranger; without the record it is a stranger. An unlocked VM is
    /// adopted only when its marker is valid for this claim and VMID.
    pub(super) async fn clone_vm(&self, work: &Work<'_>) -> Result<Outcome, ProviderError> {
        let mut s = work.status();
        let name = work.name();
        let vmid = s.vmid.ok_or_else(|| permanent("no VMID recorded"))?;
        let requested = s.has(Condition::CloneRequested);
        match self.hv.vm(vmid).await? {
            None if !requested => return Ok(self.reached(s, Condition::CloneRequested)),
            None => {
                let _slot = self.clone_slot(work, &s).await?;
                match self.hv.clone_vm(&clone_spec(work, &s, vmid)).await {
                    Ok(identity) => s.vm = Some(identity),
                    Err(e) => return self.clone_refused(work, vmid, e).await,
                }
            }
            Some(vm) if vm.owner.as_deref() == Some(name) && !vm.locked => {
                s.vm = Some(vm.identity);
            }
            Some(vm) if vm.locked && self.clone_in_progress(&s, vm.owner.as_deref(), name) => {
                return Ok(Outcome::Wait(
                    CLONE_POLL,
                    format!("VM {vmid} is still being cloned"),
                ));
            }
            Some(_) => return self.reserve_again(name, vmid, s).await,
        }
        Ok(self.reached(s, Condition::VmCloned))
    }

    /// Waits for one of the clone slots of the claim's host and its
    /// provider's storage; the clone holds it until it has finished.
    async fn clone_slot(
        &self,
        work: &Work<'_>,
        s: &ClaimStatus,
    ) -> Result<OwnedSemaphorePermit, ProviderError> {
        let provider = self
            .config
            .providers
            .get(&work.pool.provider)
            .ok_or_else(|| permanent(format!("unknown provider `{}`", work.pool.provider)))?;
        let host = s.host.as_deref().unwrap_or_default();
        let slots = self.clone_slots.of(
            format!("{}/{host}/{}", provider.name, provider.storage),
            provider.max_parallel_clones,
        );
        slots
            .acquire_owned()
            .await
            .map_err(|e| permanent(format!("clone slots closed: {e}")))
    }

    /// Whether a locked VM whose marker names `owner` is this claim's clone
    /// still copying: it carries our marker, or no marker yet while the
    /// claim's recorded request is younger than [`CLONE_TIMEOUT`].
    fn clone_in_progress(&self, s: &ClaimStatus, owner: Option<&str>, name: &str) -> bool {
        match owner {
            Some(o) => o == name,
            None => {
                s.has(Condition::CloneRequested)
                    && self.since(s, Condition::CloneRequested) <= CLONE_TIMEOUT
            }
        }
    }

    /// A clone request that failed: when the VMID now holds this claim's
    /// clone (an earlier request of ours landed late, so this one was
    /// refused), the step waits for it; otherwise the error stands.
    async fn clone_refused(
        &self,
        work: &Work<'_>,
        vmid: u32,
        e: ProviderError,
    ) -> Result<Outcome, ProviderError> {
        if e.kind == ProviderErrorKind::Transient {
            return Err(e);
        }
        let ours = match self.hv.vm(vmid).await {
            Ok(Some(vm)) => {
                vm.owner.as_deref() == Some(work.name()) || (vm.locked && vm.owner.is_none())
            }
            _ => false,
        };
        if ours {
            warn!(claim = work.name(), vmid, error = %e, "a repeated clone request was refused; waiting for the earlier one");
            return Ok(Outcome::Wait(
                CLONE_POLL,
                format!("an earlier clone into VM {vmid} to finish"),
            ));
        }
        Err(e)
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
        // The request recorded was for the old VMID.
        s.conditions.remove(&Condition::CloneRequested);
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
            description: ownership_description(name, vm.vmid),
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

/// Clones in flight per provider, host and storage: each a semaphore with
/// the provider's `max_parallel_clones` permits, made on first use.
/// Proxmox allocates a clone's volume under the storage's lock and fails a
/// clone that waits for it too long, so a burst of clones to one host is
/// queued here instead of there.
#[derive(Debug, Default)]
pub(super) struct CloneSlots(Mutex<HashMap<String, Arc<Semaphore>>>);

impl CloneSlots {
    /// The semaphore of `key` (made with `permits` if new).
    fn of(&self, key: String, permits: u32) -> Arc<Semaphore> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(permits.max(1) as usize)))
            .clone()
    }
}

/// The VMIDs `claims` hold: each one's VM, or the VMID it reserved.
fn reserved_vmids(claims: &[Claim]) -> BTreeSet<u32> {
    claims
        .iter()
        .filter_map(|c| c.status.vm.as_ref().map(|v| v.vmid).or(c.status.vmid))
        .collect()
}

/// What to clone for the claim into `vmid`.
fn clone_spec(work: &Work<'_>, s: &ClaimStatus, vmid: u32) -> CloneSpec {
    CloneSpec {
        claim: work.name().to_owned(),
        pool: work.pool.name.clone(),
        template: work.pool.template_for(&work.claim.spec.size),
        host: s.host.clone().unwrap_or_default(),
        vmid,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use tidepool_core::{Phase, Step};

    use super::CLONE_TIMEOUT;
    use crate::claim::{Condition, VmIdentity};
    use crate::executor::fixtures::{claim, clock, executor, settle};
    use crate::executor::{Progress, ownership_description};
    use crate::testing::{Fake, FakeVm};

    /// What Proxmox shows at `vmid` while a clone copies: a locked VM
    /// without a description.
    fn clone_placeholder(fake: &Fake, vmid: u32) {
        fake.world().vms.insert(
            vmid,
            FakeVm {
                identity: VmIdentity {
                    vmid,
                    node: "pve-01".into(),
                    uuid: format!("in-progress-{vmid}"),
                },
                description: String::new(),
                tags: vec![],
                running: false,
                cores: 0,
                locked: true,
            },
        );
    }

    #[tokio::test]
    async fn a_clone_waits_for_a_free_slot_on_its_host_and_storage() {
        let fake = Fake::new();
        let clock = clock();
        let exec = std::sync::Arc::new(executor(&fake, &clock));
        fake.put_claim(claim("burst-cap01", "burst", "small"));
        for step in [Step::AllocateVmid, Step::Clone] {
            assert_eq!(
                exec.step("burst-cap01").await.unwrap(),
                Progress::Advanced(step)
            );
        }
        let host = fake.world().claims["burst-cap01"]
            .status
            .host
            .clone()
            .unwrap();
        // Other claims' clones hold every slot of the example's
        // `maxParallelClones: 3` on this host's storage.
        let slots = exec.clone_slots.of(format!("pve/{host}/local-lvm"), 3);
        let held = slots.clone().acquire_many_owned(3).await.unwrap();
        let stepping = {
            let exec = exec.clone();
            tokio::spawn(async move { exec.step("burst-cap01").await })
        };
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!stepping.is_finished(), "the clone waits for a slot");
        assert_eq!(fake.world().calls.get("clone"), None, "nothing cloned yet");
        // Another host's storage is not this one's.
        assert_eq!(
            exec.clone_slots
                .of("pve/pve-02/local-lvm".into(), 3)
                .available_permits(),
            3
        );
        drop(held);
        assert_eq!(
            stepping.await.unwrap().unwrap(),
            Progress::Advanced(Step::Clone)
        );
        assert_eq!(fake.world().calls.get("clone"), Some(&1));
        assert_eq!(slots.available_permits(), 3, "the slot is given back");
    }

    #[tokio::test]
    async fn a_restart_mid_clone_waits_for_the_recorded_clone_instead_of_cloning_again() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-mid01", "burst", "small"));
        for step in [Step::AllocateVmid, Step::Clone] {
            assert_eq!(
                exec.step("burst-mid01").await.unwrap(),
                Progress::Advanced(step)
            );
        }
        let status = fake.world().claims["burst-mid01"].status.clone();
        assert!(
            status.has(Condition::CloneRequested),
            "recorded before the request"
        );
        let vmid = status.vmid.unwrap();
        // The request landed, then the process died; a new one finds the
        // clone still copying.
        clone_placeholder(&fake, vmid);
        let restarted = executor(&fake, &clock);
        assert!(matches!(
            restarted.step("burst-mid01").await.unwrap(),
            Progress::Waiting {
                step: Step::Clone,
                ..
            }
        ));
        {
            let mut w = fake.world();
            let vm = w.vms.get_mut(&vmid).unwrap();
            vm.locked = false;
            vm.description = ownership_description("burst-mid01", vmid);
        }
        assert_eq!(settle(&restarted, "burst-mid01").await, Phase::Ready);
        assert_eq!(fake.owned("burst-mid01").len(), 1, "one VM for the claim");
        assert!(fake.world().clones.is_empty(), "never cloned a second time");
    }

    #[tokio::test]
    async fn a_locked_vm_at_the_reserved_vmid_is_a_strangers_without_a_recorded_request() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-str01", "burst", "small"));
        assert_eq!(
            exec.step("burst-str01").await.unwrap(),
            Progress::Advanced(Step::AllocateVmid)
        );
        let vmid = fake.world().claims["burst-str01"].status.vmid.unwrap();
        clone_placeholder(&fake, vmid);
        assert_eq!(settle(&exec, "burst-str01").await, Phase::Ready);
        let owned = fake.owned("burst-str01");
        assert_eq!(owned.len(), 1);
        assert_ne!(owned[0].identity.vmid, vmid, "another VMID was reserved");
        assert!(
            fake.world().vms[&vmid].locked,
            "the stranger's clone is untouched"
        );
    }

    #[tokio::test]
    async fn a_clone_locked_past_its_deadline_without_a_marker_is_taken_for_a_strangers() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-old01", "burst", "small"));
        for _ in 0..2 {
            exec.step("burst-old01").await.unwrap();
        }
        let vmid = fake.world().claims["burst-old01"].status.vmid.unwrap();
        clone_placeholder(&fake, vmid);
        clock.advance(CLONE_TIMEOUT + Duration::from_secs(1));
        assert_eq!(settle(&exec, "burst-old01").await, Phase::Ready);
        let status = fake.world().claims["burst-old01"].status.clone();
        assert_ne!(status.vm.unwrap().vmid, vmid);
        assert_eq!(fake.world().clones.len(), 1);
    }

    #[tokio::test]
    async fn a_stranger_cloned_into_the_vmid_during_a_failed_clone_is_neither_adopted_nor_deleted()
    {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-sq4t1", "burst", "small"));
        fake.world().stranger_on_next_clone = true;
        assert_eq!(settle(&exec, "burst-sq4t1").await, Phase::Ready);
        assert_eq!(fake.world().clones.len(), 1, "one clone of ours");
        let (vmid, theirs) = {
            let w = fake.world();
            let ours = w.claims["burst-sq4t1"].status.vm.clone().unwrap();
            let theirs = w
                .vms
                .values()
                .find(|v| v.identity.vmid != ours.vmid)
                .cloned();
            (ours.vmid, theirs.unwrap())
        };
        assert_eq!(theirs.description, "someone else's", "no marker on it");
        crate::executor::fixtures::set_intent(
            &fake,
            "burst-sq4t1",
            crate::claim::Intent::Remove { force: true },
        );
        assert_eq!(settle(&exec, "burst-sq4t1").await, Phase::Terminated);
        let w = fake.world();
        assert_eq!(w.deletions, [vmid], "only our own VM was deleted");
        assert_eq!(w.vms.get(&theirs.identity.vmid), Some(&theirs));
    }

    #[tokio::test]
    async fn an_unlocked_vm_whose_marker_names_another_vmid_is_not_adopted() {
        let fake = Fake::new();
        let clock = clock();
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-cpy01", "burst", "small"));
        exec.step("burst-cpy01").await.unwrap();
        let vmid = fake.world().claims["burst-cpy01"].status.vmid.unwrap();
        // A copy of some VM of this claim's name, description and all.
        clone_placeholder(&fake, vmid);
        {
            let mut w = fake.world();
            let vm = w.vms.get_mut(&vmid).unwrap();
            vm.locked = false;
            vm.description = ownership_description("burst-cpy01", 4242);
        }
        assert_eq!(settle(&exec, "burst-cpy01").await, Phase::Ready);
        let status = fake.world().claims["burst-cpy01"].status.clone();
        assert_ne!(status.vm.unwrap().vmid, vmid);
        assert_eq!(
            fake.world().vms[&vmid].description,
            ownership_description("burst-cpy01", 4242),
            "no marker written onto the stranger"
        );
    }

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
