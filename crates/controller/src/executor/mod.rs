//! The lifecycle executor: walks one claim through spec §6, one step per
//! call, recording each completed step in the claim's status.
//!
//! # Guarantees
//! - **Recorded intent first.** The VMID is recorded before the clone, the
//!   clone marks the VM as the claim's (description at clone time, tags
//!   after), so a process killed mid-clone finds its VM again instead of
//!   cloning a second one.
//! - **Idempotent steps.** Every step first looks at the world; a step whose
//!   effect is already there is recorded, not repeated.
//! - **Destroy interlock.** A VM is stopped or deleted only when its VMID,
//!   SMBIOS UUID and ownership marker all match the claim. A VMID now held
//!   by a foreign VM is left alone; "already gone" counts as done only when
//!   no VM carrying the claim's marker remains.
//! - **Never a node left cordoned:** cordon happens only on the way out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tidepool_core::config::Config;
use tidepool_core::conventions::{NodeMetadata, WorkerFacts, node_metadata};
use tidepool_core::planner::ClaimState;
use tidepool_core::planner::hosts::VmCost;
use tidepool_core::{Phase, Step};
use tracing::{info, warn};

use crate::claim::{Claim, ClaimStatus, Condition, Intent, VmIdentity, next_step, phase_change};
use crate::ports::{
    ClaimStore, CloneSpec, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind, VmShape,
};

/// How long a started guest may take to report an address.
pub const ADDRESS_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a booting guest or a joining node is looked at again: short,
/// because every moment of it is added to the time to capacity, and cheap
/// (one guest-agent read, or one look at the node cache, per waiting worker).
pub const POLL: Duration = Duration::from_millis(500);

/// Where a kill hook may stop the executor, for crash-safety tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Moment {
    /// The step's effect happened; its record has not been written.
    AfterEffect,
    /// The step's record was written.
    AfterRecord,
}

/// A test hook: return `false` to simulate the process dying at that point.
pub type KillHook = Arc<dyn Fn(Step, Moment) -> bool + Send + Sync>;

/// What one call of [`Executor::step`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A step was completed; call again.
    Advanced(Step),
    /// Waiting for the world (a guest booting, a node joining, a drain
    /// blocked); call again after the delay.
    Waiting {
        /// The step that waits.
        step: Step,
        /// Suggested delay.
        retry_after: Duration,
        /// What it waits for.
        why: String,
    },
    /// Nothing to do: the worker is Ready, Failed (and kept), or gone.
    Idle(Phase),
}

/// Why a step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A provider call failed in a way worth retrying.
    #[error("{step}: {source}")]
    Retry {
        /// The step.
        step: Step,
        /// The provider error.
        #[source]
        source: ProviderError,
    },
    /// The claim store failed.
    #[error("recording claim {claim}: {source}")]
    Store {
        /// The claim.
        claim: String,
        /// The store error.
        #[source]
        source: ProviderError,
    },
    /// The claim names a pool or size the configuration does not have.
    #[error("claim {claim}: {message}")]
    Config {
        /// The claim.
        claim: String,
        /// What is missing.
        message: String,
    },
    /// The kill hook stopped the executor (tests only).
    #[error("killed at {step} ({moment:?})")]
    Killed {
        /// The step.
        step: Step,
        /// When.
        moment: Moment,
    },
}

impl ExecutorError {
    /// A stable category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Retry { source, .. } => source.kind.as_str(),
            Self::Store { .. } => "store",
            Self::Config { .. } => "config",
            Self::Killed { .. } => "killed",
        }
    }
}

/// The executor over its ports.
pub struct Executor<H, J, N, S> {
    hv: H,
    joiner: J,
    nodes: N,
    store: S,
    config: Arc<Config>,
    now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    kill: Option<KillHook>,
    /// Serialises VMID choice within this process: two claims allocating
    /// at once must not both pick the same free VMID.
    vmid_lock: tokio::sync::Mutex<()>,
}

enum Outcome {
    /// Record these changes, then report the step as advanced.
    Done(Box<ClaimStatus>),
    /// Wait.
    Wait(Duration, String),
    /// The step cannot succeed.
    Fail(String),
}

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// An executor; `now` is the injected clock.
    pub fn new(
        hv: H,
        joiner: J,
        nodes: N,
        store: S,
        config: Arc<Config>,
        now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    ) -> Self {
        Self {
            hv,
            joiner,
            nodes,
            store,
            config,
            now,
            kill: None,
            vmid_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Installs a kill hook (crash-safety tests).
    pub fn with_kill_hook(mut self, hook: KillHook) -> Self {
        self.kill = Some(hook);
        self
    }

    /// The claim store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The hypervisor.
    pub fn hypervisor(&self) -> &H {
        &self.hv
    }

    /// The cluster's nodes.
    pub fn nodes(&self) -> &N {
        &self.nodes
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The current time from the injected clock.
    pub fn now(&self) -> Timestamp {
        (self.now)()
    }

    fn checkpoint(&self, step: Step, moment: Moment) -> Result<(), ExecutorError> {
        match &self.kill {
            Some(hook) if !hook(step, moment) => Err(ExecutorError::Killed { step, moment }),
            _ => Ok(()),
        }
    }

    /// The node metadata of a claim (deterministic: it depends only on the
    /// claim and the configuration).
    ///
    /// # Errors
    /// [`ExecutorError::Config`] when the pool or size is unknown.
    pub fn metadata(&self, claim: &Claim) -> Result<NodeMetadata, ExecutorError> {
        let cfg_err = |message: String| ExecutorError::Config {
            claim: claim.name.clone(),
            message,
        };
        let pool = self
            .config
            .pool(&claim.spec.pool)
            .ok_or_else(|| cfg_err(format!("unknown pool `{}`", claim.spec.pool)))?;
        let size = self
            .config
            .size(&claim.spec.size)
            .ok_or_else(|| cfg_err(format!("unknown size `{}`", claim.spec.size)))?;
        let provisioned_at = claim.status.provisioned_at.unwrap_or(Timestamp::UNIX_EPOCH);
        let mut meta = node_metadata(
            &self.config.labels,
            &WorkerFacts {
                claim: &claim.name,
                pool: &pool.name,
                kind: pool.kind,
                size: &size.size,
                provisioned_at,
                ttl: claim.spec.ttl,
                taint_size: size.taint,
            },
        );
        meta.labels.extend(pool.labels.clone());
        meta.taints.extend(pool.taints.iter().cloned());
        Ok(meta)
    }

    /// Takes the next step of `name`'s lifecycle.
    ///
    /// # Errors
    /// [`ExecutorError::Retry`] for transient provider failures (the error is
    /// also recorded in the claim's `last_error`), store failures, and unknown
    /// pools or sizes.
    pub async fn step(&self, name: &str) -> Result<Progress, ExecutorError> {
        let store_err = |source| ExecutorError::Store {
            claim: name.to_owned(),
            source,
        };
        let Some(mut claim) = self.store.get(name).await.map_err(store_err)? else {
            return Ok(Progress::Idle(Phase::Terminated));
        };
        // Every status this step writes says which spec it acted on.
        claim.status.observed_generation = claim.generation;
        let Some(step) = next_step(&claim) else {
            if claim.status.lifecycle.phase() == Phase::Terminated && claim.finalizer {
                self.store.remove_finalizer(name).await.map_err(store_err)?;
            }
            return Ok(Progress::Idle(claim.status.lifecycle.phase()));
        };
        // Phase changes that need no provider call.
        if let Some(to) = phase_change(&claim, step) {
            let mut status = claim.status.clone();
            status.lifecycle = status
                .lifecycle
                .advance(to)
                .map_err(|e| ExecutorError::Config {
                    claim: name.to_owned(),
                    message: e.to_string(),
                })?;
            self.store
                .save_status(name, &status)
                .await
                .map_err(store_err)?;
            return Ok(Progress::Advanced(step));
        }
        let outcome = match self.perform(&claim, step).await {
            Ok(o) => o,
            Err(e)
                if e.kind == ProviderErrorKind::Transient
                    || e.kind == ProviderErrorKind::Conflict =>
            {
                let mut status = claim.status.clone();
                status.last_error = Some(format!("{step}: {e}"));
                self.store
                    .save_status(name, &status)
                    .await
                    .map_err(store_err)?;
                return Err(ExecutorError::Retry { step, source: e });
            }
            Err(e) => Outcome::Fail(e.message),
        };
        self.checkpoint(step, Moment::AfterEffect)?;
        let progress = match outcome {
            Outcome::Done(mut status) => {
                status.last_error = None;
                self.store
                    .save_status(name, &status)
                    .await
                    .map_err(store_err)?;
                info!(claim = name, %step, phase = %status.lifecycle.phase(), "step done");
                Progress::Advanced(step)
            }
            Outcome::Wait(retry_after, why) => Progress::Waiting {
                step,
                retry_after,
                why,
            },
            Outcome::Fail(reason) => {
                let mut status = claim.status.clone();
                warn!(claim = name, %step, %reason, "step failed");
                status.lifecycle = status.lifecycle.fail(step, reason.clone()).map_err(|e| {
                    ExecutorError::Config {
                        claim: name.to_owned(),
                        message: e.to_string(),
                    }
                })?;
                status.last_error = Some(format!("{step}: {reason}"));
                self.store
                    .save_status(name, &status)
                    .await
                    .map_err(store_err)?;
                Progress::Advanced(step)
            }
        };
        self.checkpoint(step, Moment::AfterRecord)?;
        Ok(progress)
    }

    /// Steps until the claim is idle or waiting, sleeping for waits up to
    /// `budget` of real time in total (tests and CLI `--wait`).
    ///
    /// # Errors
    /// As [`Executor::step`]; transient errors are retried within the budget.
    pub async fn run_until_idle(
        &self,
        name: &str,
        budget: Duration,
        poll: Duration,
    ) -> Result<Phase, ExecutorError> {
        let start = tokio::time::Instant::now();
        loop {
            match self.step(name).await {
                Ok(Progress::Advanced(_)) => {}
                Ok(Progress::Idle(phase)) => return Ok(phase),
                Ok(Progress::Waiting { .. }) | Err(ExecutorError::Retry { .. })
                    if start.elapsed() < budget =>
                {
                    tokio::time::sleep(poll).await;
                }
                Ok(Progress::Waiting { step, why, .. }) => {
                    return Err(ExecutorError::Retry {
                        step,
                        source: ProviderError::new(
                            ProviderErrorKind::Transient,
                            format!("still waiting: {why}"),
                        ),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn mark(&self, status: &mut ClaimStatus, c: Condition) {
        status.conditions.insert(c, (self.now)());
    }

    fn since(&self, status: &ClaimStatus, c: Condition) -> Duration {
        status.since(c, (self.now)())
    }

    async fn perform(&self, claim: &Claim, step: Step) -> Result<Outcome, ProviderError> {
        let mut s = claim.status.clone();
        let name = claim.name.as_str();
        let pool = self.config.pool(&claim.spec.pool).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Permanent,
                format!("unknown pool `{}`", claim.spec.pool),
            )
        })?;
        let size = self.config.size(&claim.spec.size).ok_or_else(|| {
            ProviderError::new(
                ProviderErrorKind::Permanent,
                format!("unknown size `{}`", claim.spec.size),
            )
        })?;
        match step {
            Step::AllocateVmid => {
                if s.provisioned_at.is_none() {
                    let now = (self.now)();
                    s.provisioned_at = Some(now);
                    s.expires_at = claim
                        .spec
                        .ttl
                        .and_then(|t| jiff::SignedDuration::try_from(t).ok())
                        .and_then(|t| now.checked_add(t).ok());
                }
                self.mark(&mut s, Condition::VmidAllocated);
                if s.host.is_none() {
                    s.host = claim.spec.host.clone();
                }
                if s.host.is_none() || s.vmid.is_none() {
                    // Choose and record under the lock, so the next
                    // allocation in this process sees this one.
                    let _guard = self.vmid_lock.lock().await;
                    let others: Vec<Claim> = self
                        .store
                        .list()
                        .await?
                        .into_iter()
                        .filter(|c| c.name != name)
                        .collect();
                    if s.host.is_none() {
                        let provider =
                            self.config.providers.get(&pool.provider).ok_or_else(|| {
                                permanent(format!("unknown provider `{}`", pool.provider))
                            })?;
                        let pending = vms_on_their_way(&self.config, &others);
                        let cost = VmCost::new_worker(pool, &size.size, provider);
                        match self.hv.choose_host(pool, &cost, &pending).await {
                            Ok(host) => s.host = Some(host),
                            Err(e) if e.kind == ProviderErrorKind::InsufficientCapacity => {
                                return Ok(Outcome::Fail(e.message));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    if s.vmid.is_none() {
                        let reserved = others
                            .iter()
                            .filter_map(|c| c.status.vm.as_ref().map(|v| v.vmid).or(c.status.vmid))
                            .collect();
                        s.vmid = Some(self.hv.free_vmid(&reserved).await?);
                    }
                    self.store.save_status(name, &s).await?;
                }
                s.lifecycle = s
                    .lifecycle
                    .advance(Phase::Provisioning)
                    .map_err(permanent)?;
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::Clone => {
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
                    Some(_) => {
                        // Someone else took the VMID after we reserved it.
                        warn!(
                            claim = name,
                            vmid, "reserved VMID taken by another VM; choosing another"
                        );
                        let _guard = self.vmid_lock.lock().await;
                        s.vmid = Some(self.reserve_vmid(name).await?);
                        self.store.save_status(name, &s).await?;
                        return Ok(Outcome::Done(Box::new(s)));
                    }
                    None => {
                        let spec = CloneSpec {
                            claim: name.to_owned(),
                            pool: pool.name.clone(),
                            template: pool.template_for(&claim.spec.size),
                            host: s.host.clone().unwrap_or_default(),
                            vmid,
                        };
                        s.vm = Some(self.hv.clone_vm(&spec).await?);
                    }
                }
                self.mark(&mut s, Condition::VmCloned);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::Configure => {
                let vm = owned_vm(&s)?;
                let meta = self.metadata(claim).map_err(|e| permanent(e.to_string()))?;
                let serial = self.joiner.prepare(claim, &meta).await?;
                let shape = VmShape {
                    cores: size.size.vcpu,
                    memory_mib: size.size.memory_mib,
                    tags: vec!["tidepool".to_owned(), pool.name.clone(), name.to_owned()],
                    description: ownership_description(name),
                    smbios_serial: serial,
                    gpu_mapping: size.size.gpu.as_ref().map(|g| g.mapping.clone()),
                };
                self.hv.configure(&vm, &shape).await?;
                self.mark(&mut s, Condition::VmConfigured);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::Start => {
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
                self.mark(&mut s, Condition::VmStarted);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::WaitForAddress => {
                let vm = owned_vm(&s)?;
                match self.hv.address(&vm).await? {
                    Some(ip) => {
                        s.ip = Some(ip);
                        self.mark(&mut s, Condition::AddressReported);
                        s.lifecycle = s.lifecycle.advance(Phase::Joining).map_err(permanent)?;
                        Ok(Outcome::Done(Box::new(s)))
                    }
                    None if self.since(&s, Condition::VmStarted) > ADDRESS_TIMEOUT => {
                        Ok(Outcome::Fail(format!(
                            "the guest agent of VM {} reported no address within {}",
                            vm.vmid,
                            tidepool_core::duration::Human(ADDRESS_TIMEOUT)
                        )))
                    }
                    None => Ok(Outcome::Wait(POLL, "guest agent".into())),
                }
            }
            Step::DeliverConfig => {
                let ip: IpAddr = s.ip.ok_or_else(|| permanent("no address recorded"))?;
                let meta = self.metadata(claim).map_err(|e| permanent(e.to_string()))?;
                match self.joiner.deliver(claim, ip, &meta).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ProviderErrorKind::Permanent => {
                        return Ok(Outcome::Fail(e.message));
                    }
                    Err(e) => return Err(e),
                }
                self.mark(&mut s, Condition::ConfigDelivered);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::WaitForNode => {
                let timeout = self.config.join.registration_timeout;
                match self.nodes.node_ready(name).await? {
                    Some(true) => {
                        s.node_name = Some(name.to_owned());
                        self.mark(&mut s, Condition::NodeReady);
                        Ok(Outcome::Done(Box::new(s)))
                    }
                    _ if self.since(&s, Condition::ConfigDelivered) > timeout => {
                        Ok(Outcome::Fail(format!(
                            "node {name} was not Ready within {}",
                            tidepool_core::duration::Human(timeout)
                        )))
                    }
                    Some(false) => Ok(Outcome::Wait(POLL, format!("node {name} to turn Ready"))),
                    None => Ok(Outcome::Wait(POLL, format!("node {name} to register"))),
                }
            }
            Step::Label => {
                let meta = self.metadata(claim).map_err(|e| permanent(e.to_string()))?;
                self.nodes.ensure_metadata(name, &meta).await?;
                self.mark(&mut s, Condition::Labelled);
                s.lifecycle = s.lifecycle.advance(Phase::Ready).map_err(permanent)?;
                let host = s.vm.as_ref().map_or("?", |v| v.node.as_str());
                let took = tidepool_core::duration::Human(self.since(&s, Condition::VmidAllocated));
                let message = format!(
                    "worker of pool {} ({}) on host {host} is Ready and labelled, {took} after it was requested",
                    claim.spec.pool, claim.spec.size
                );
                self.nodes.announce(name, "WorkerReady", &message).await;
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::Cordon => {
                match self.nodes.cordon(name).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ProviderErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.mark(&mut s, Condition::Cordoned);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::Drain => {
                let timeout = pool.scale_down.drain_timeout;
                let force = matches!(claim.spec.intent, Intent::Remove { force: true });
                let grace = Some(pool.scale_down.grace_period);
                match self.nodes.drain(name, timeout, force, grace).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ProviderErrorKind::NotFound => {}
                    Err(e) if e.kind == ProviderErrorKind::Blocked => {
                        if self.since(&s, Condition::Cordoned) > timeout {
                            return Ok(Outcome::Fail(format!(
                                "drain blocked for longer than {}: {}",
                                tidepool_core::duration::Human(timeout),
                                e.message
                            )));
                        }
                        return Ok(Outcome::Wait(Duration::from_secs(10), e.message));
                    }
                    Err(e) => return Err(e),
                }
                self.mark(&mut s, Condition::Drained);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::DeleteNode => {
                match self.nodes.delete_node(name).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ProviderErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.mark(&mut s, Condition::NodeDeleted);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::ShutdownOs | Step::StopVm => {
                for vm in self.ours(claim).await? {
                    self.hv.stop(&vm).await?;
                }
                self.mark(&mut s, Condition::VmStopped);
                Ok(Outcome::Done(Box::new(s)))
            }
            Step::DeleteVm => {
                for vm in self.ours(claim).await? {
                    match self.hv.delete(&vm).await {
                        Ok(()) => {}
                        Err(e) if e.kind == ProviderErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                if !self.ours(claim).await?.is_empty() {
                    return Ok(Outcome::Wait(
                        Duration::from_secs(2),
                        "VM deletion to finish".into(),
                    ));
                }
                self.mark(&mut s, Condition::VmDeleted);
                s.lifecycle = s.lifecycle.advance(Phase::Terminated).map_err(permanent)?;
                Ok(Outcome::Done(Box::new(s)))
            }
        }
    }

    /// A free VMID that no other claim has reserved.
    async fn reserve_vmid(&self, name: &str) -> Result<u32, ProviderError> {
        let reserved: std::collections::BTreeSet<u32> = self
            .store
            .list()
            .await?
            .iter()
            .filter(|c| c.name != name)
            .filter_map(|c| c.status.vm.as_ref().map(|v| v.vmid).or(c.status.vmid))
            .collect();
        self.hv.free_vmid(&reserved).await
    }

    /// The VMs that provably belong to the claim: the recorded VM if its
    /// VMID, UUID and ownership marker all still match, plus any VM carrying
    /// the claim's marker (a clone whose identity was never recorded).
    async fn ours(&self, claim: &Claim) -> Result<Vec<VmIdentity>, ProviderError> {
        let mut out: Vec<VmIdentity> = Vec::new();
        if let Some(recorded) = &claim.status.vm {
            match self.hv.vm(recorded.vmid).await? {
                Some(vm)
                    if vm.identity.uuid == recorded.uuid
                        && vm.owner.as_deref() == Some(claim.name.as_str()) =>
                {
                    out.push(vm.identity);
                }
                Some(vm) => warn!(
                    claim = %claim.name,
                    vmid = recorded.vmid,
                    owner = ?vm.owner,
                    "VMID now belongs to another VM; leaving it alone"
                ),
                None => {}
            }
        }
        for vm in self.hv.owned_by(&claim.name).await? {
            if !out.iter().any(|o| o.vmid == vm.identity.vmid) {
                // Marked as ours but never recorded: only a clone of ours can
                // carry the marker, so it is ours to remove.
                if claim
                    .status
                    .vm
                    .as_ref()
                    .is_none_or(|r| r.vmid != vm.identity.vmid)
                {
                    out.push(vm.identity);
                }
            }
        }
        Ok(out)
    }
}

/// Memory, by host, promised to other claims that have a host but no VM
/// yet and will get one (`Requested`, `Provisioning`): each VM's memory
/// plus its provider's per-VM overhead, as the planner costs a new VM.
/// The other claims whose VM is on its way (`Requested`, `Provisioning`)
/// on a known host, with what each VM costs that host: placement takes
/// them off the host's room unless the host already counts them.
fn vms_on_their_way(config: &Config, others: &[Claim]) -> Vec<(ClaimState, VmCost)> {
    others
        .iter()
        .filter(|c| {
            matches!(
                c.status.lifecycle.phase(),
                Phase::Requested | Phase::Provisioning
            )
        })
        .filter_map(|c| {
            let state = c.planner_state();
            state.host.as_ref()?;
            let size = config.size(&c.spec.size)?;
            let provider = config
                .pool(&c.spec.pool)
                .and_then(|p| config.providers.get(&p.provider))?;
            Some((state, VmCost::of(&size.size, provider)))
        })
        .collect()
}

fn permanent(e: impl ToString) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Permanent, e.to_string())
}

fn owned_vm(s: &ClaimStatus) -> Result<VmIdentity, ProviderError> {
    s.vm.clone().ok_or_else(|| permanent("no VM recorded"))
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

    use std::sync::atomic::{AtomicI64, Ordering};

    use tidepool_core::config::{self, EXAMPLE};

    use super::*;
    use crate::claim::ClaimSpec;
    use crate::testing::Fake;

    const START: i64 = 1_767_225_600;

    fn executor(fake: &Fake, clock: &Arc<AtomicI64>) -> Executor<Fake, Fake, Fake, Fake> {
        let clock = clock.clone();
        Executor::new(
            fake.clone(),
            fake.clone(),
            fake.clone(),
            fake.clone(),
            Arc::new(config::load(EXAMPLE).unwrap()),
            Arc::new(move || Timestamp::from_second(clock.load(Ordering::SeqCst)).unwrap()),
        )
    }

    fn claim(name: &str, pool: &str, size: &str) -> Claim {
        Claim {
            name: name.into(),
            spec: ClaimSpec {
                pool: pool.into(),
                size: size.into(),
                ttl: None,
                requested_by: "test".into(),
                reason: "executor unit test".into(),
                intent: Intent::Keep,
                host: None,
            },
            status: ClaimStatus::default(),
            finalizer: true,
            generation: None,
        }
    }

    fn set_intent(fake: &Fake, name: &str, intent: Intent) {
        fake.world().claims.get_mut(name).unwrap().spec.intent = intent;
    }

    async fn settle(exec: &Executor<Fake, Fake, Fake, Fake>, name: &str) -> Phase {
        exec.run_until_idle(name, Duration::from_secs(5), Duration::from_millis(1))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_worker_whose_drain_timed_out_is_kept_until_its_removal_is_forced() {
        let fake = Fake::new();
        let clock = Arc::new(AtomicI64::new(START));
        let exec = executor(&fake, &clock);
        fake.put_claim(claim("burst-pdb03", "burst", "small"));
        assert_eq!(settle(&exec, "burst-pdb03").await, Phase::Ready);
        fake.world().drain_blocker =
            Some("pod apps/ledger-0 is protected by PodDisruptionBudget apps/ledger".into());
        set_intent(&fake, "burst-pdb03", Intent::Remove { force: false });
        let mut waited = false;
        for _ in 0..5 {
            if let Progress::Waiting { step, .. } = exec.step("burst-pdb03").await.unwrap() {
                assert_eq!(step, Step::Drain);
                waited = true;
                break;
            }
        }
        assert!(waited, "the drain waits for the budget");

        // The pool's drain timeout (10 minutes) passes with the budget still blocking.
        clock.fetch_add(11 * 60, Ordering::SeqCst);
        assert_eq!(
            exec.step("burst-pdb03").await.unwrap(),
            Progress::Advanced(Step::Drain)
        );
        let status = fake.world().claims["burst-pdb03"].status.clone();
        assert!(
            matches!(&status.lifecycle, tidepool_core::Lifecycle::Failed { step: Step::Drain, reason } if reason.contains("PodDisruptionBudget apps/ledger")),
            "{:?}",
            status.lifecycle
        );
        for _ in 0..3 {
            assert_eq!(
                exec.step("burst-pdb03").await.unwrap(),
                Progress::Idle(Phase::Failed)
            );
        }
        assert_eq!(fake.owned("burst-pdb03").len(), 1, "the VM is kept");
        assert!(
            fake.world().nodes.contains_key("burst-pdb03"),
            "the node with its protected pods is kept"
        );

        set_intent(&fake, "burst-pdb03", Intent::Remove { force: true });
        assert_eq!(settle(&exec, "burst-pdb03").await, Phase::Terminated);
        assert!(fake.owned("burst-pdb03").is_empty());
    }

    #[tokio::test]
    async fn a_worker_that_failed_before_it_joined_is_cleaned_up_on_removal() {
        let fake = Fake::new();
        let clock = Arc::new(AtomicI64::new(START));
        let exec = executor(&fake, &clock);
        fake.inject(
            "start",
            ProviderError::new(ProviderErrorKind::InsufficientCapacity, "no memory"),
        );
        fake.put_claim(claim("burst-nomem", "burst", "small"));
        assert_eq!(settle(&exec, "burst-nomem").await, Phase::Failed);
        assert_eq!(fake.owned("burst-nomem").len(), 1);
        set_intent(&fake, "burst-nomem", Intent::Remove { force: false });
        assert_eq!(settle(&exec, "burst-nomem").await, Phase::Terminated);
        assert!(fake.owned("burst-nomem").is_empty());
    }

    #[test]
    fn the_vms_on_their_way_are_those_still_to_come_with_their_cost_and_host() {
        let config = config::load(EXAMPLE).unwrap();
        let overhead = config.providers["pve"].vm_memory_overhead_mib;
        let with = |name: &str, host: &str, lifecycle: tidepool_core::Lifecycle, vm: bool| {
            let mut c = claim(name, "burst", "small");
            c.status.host = Some(host.into());
            c.status.lifecycle = lifecycle;
            c.status.vm = vm.then(|| VmIdentity {
                vmid: 1250,
                node: host.into(),
                uuid: "u".into(),
            });
            c
        };
        use tidepool_core::Lifecycle as L;
        let others = [
            with("burst-a", "pve-01", L::Requested, false),
            with("burst-b", "pve-01", L::Provisioning, false),
            // Its VM exists: listed too; the host's own list decides
            // whether its figures count it already.
            with("burst-c", "pve-01", L::Provisioning, true),
            with("burst-d", "pve-02", L::Requested, false),
            // It will never get a VM.
            with(
                "burst-e",
                "pve-02",
                L::Failed {
                    step: Step::AllocateVmid,
                    reason: "no room".into(),
                },
                false,
            ),
        ];
        let on_the_way = vms_on_their_way(&config, &others);
        let listed: Vec<(&str, &str, u64)> = on_the_way
            .iter()
            .map(|(c, cost)| (c.name.as_str(), c.host.as_deref().unwrap(), cost.memory_mib))
            .collect();
        let small = 8192 + overhead;
        assert_eq!(
            listed,
            [
                ("burst-a", "pve-01", small),
                ("burst-b", "pve-01", small),
                ("burst-c", "pve-01", small),
                ("burst-d", "pve-02", small),
            ]
        );
    }
}
