//! The lifecycle executor: walks one claim through spec §6, one step per
//! call, recording each completed step in the claim's status.
//!
//! This module owns the record-keeping around a step (reading the claim,
//! phase changes that need no provider, classifying provider errors into
//! retry or failure, saving the status, the kill-hook checkpoints) and the
//! dispatch of a [`Step`] to the module of its phase: [`provision`] (from
//! the VMID to the guest's address), [`join`] (from the machine
//! configuration to the labelled node) and [`teardown`] (from the cordon to
//! the deleted VM), after the safety rules of [`refusal`].
//!
//! # Guarantees
//! - **Recorded intent first.** The VMID, then the clone request
//!   (`CloneRequested`), are recorded before the clone; the clone marks the
//!   VM as the claim's (a description bound to its VMID), so a process
//!   killed mid-clone waits for its VM instead of cloning a second one.
//! - **Idempotent steps.** Every step first looks at the world; a step whose
//!   effect is already there is recorded, not repeated.
//! - **Destroy interlock.** A VM is stopped or deleted only when its VMID,
//!   SMBIOS UUID and ownership marker all match the claim (see `identity`). A
//!   VMID now held by a foreign VM is left alone; "already gone" counts as
//!   done only when no VM carrying the claim's marker remains. A node is
//!   labelled, cordoned, drained or deleted only when it runs on the
//!   claim's VM.
//! - **Never a node left cordoned:** cordon happens only on the way out.

mod identity;
mod join;
mod provision;
mod refusal;
mod teardown;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod spare;

use std::sync::Arc;
use std::time::Duration;

use tidepool_core::config::{Config, Pool, SizeEntry};
use tidepool_core::conventions::{NodeMetadata, WorkerFacts, node_metadata};
use tidepool_core::jiff::Timestamp;
use tidepool_core::{Lifecycle, Phase, Step};
use tracing::{info, warn};

use crate::claim::{Claim, ClaimStatus, Condition, VmIdentity, next_step, phase_change};
use crate::ports::{
    AuditEntry, AuditResult, ClaimStore, Clock, Hypervisor, Joiner, Nodes, ProviderError,
    ProviderErrorKind,
};
use crate::service::ErrorCategory;

pub use identity::{node_runs_on, owner_from_description, ownership_description, unbound_owner};
pub use provision::CLONE_TIMEOUT;

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
    clock: Arc<dyn Clock>,
    kill: Option<KillHook>,
    /// Serialises VMID choice within this process: two claims allocating
    /// at once must not both pick the same free VMID.
    vmid_lock: tokio::sync::Mutex<()>,
    /// Clone slots by provider, host and storage
    /// ([`tidepool_core::config::ProxmoxProvider::max_parallel_clones`]).
    clone_slots: provision::CloneSlots,
}

/// What a step did, for [`Executor::step`] to record.
enum Outcome {
    /// Record these changes, then report the step as advanced.
    Done(Box<ClaimStatus>),
    /// Wait.
    Wait(Duration, String),
    /// The step cannot succeed.
    Fail(String),
}

impl Outcome {
    /// The step is done; `status` is what to record.
    fn done(status: ClaimStatus) -> Self {
        Self::Done(Box::new(status))
    }
}

/// What one step works on: the claim with its pool and size as configured.
struct Work<'a> {
    claim: &'a Claim,
    pool: &'a Pool,
    size: &'a SizeEntry,
}

impl Work<'_> {
    /// The claim's name (also its node's and its VM's).
    fn name(&self) -> &str {
        &self.claim.name
    }

    /// A copy of the claim's status, for the step to fill in and record.
    fn status(&self) -> ClaimStatus {
        self.claim.status.clone()
    }
}

impl<H: Hypervisor, J: Joiner, N: Nodes, S: ClaimStore> Executor<H, J, N, S> {
    /// An executor over its ports, reading the time from `clock` (which
    /// the loops around it also sleep on).
    pub fn new(
        hv: H,
        joiner: J,
        nodes: N,
        store: S,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            hv,
            joiner,
            nodes,
            store,
            config,
            clock,
            kill: None,
            vmid_lock: tokio::sync::Mutex::new(()),
            clone_slots: provision::CloneSlots::default(),
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

    /// The join method (for Talos, also the way to the machines' OS).
    pub fn joiner(&self) -> &J {
        &self.joiner
    }

    /// The cluster's nodes.
    pub fn nodes(&self) -> &N {
        &self.nodes
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The injected clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The current time from the injected clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
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
        let Some(mut claim) = self.store.get(name).await.map_err(store_error(name))? else {
            return Ok(Progress::Idle(Phase::Terminated));
        };
        // Every status this step writes says which spec it acted on.
        claim.status.observed_generation = claim.generation;
        // A claim made without the finalizer (applied with kubectl) gets it
        // before anything is created for it, so no VM outlives its record.
        if !claim.finalizer && claim.phase() == Phase::Requested && !claim.intent().is_removal() {
            match self.store.add_finalizer(name).await {
                Ok(()) => claim.finalizer = true,
                // Deleted before it had its finalizer: nothing was made for it.
                Err(e) if e.kind == ProviderErrorKind::NotFound => {
                    return Ok(Progress::Idle(Phase::Terminated));
                }
                Err(e) => return Err(store_error(name)(e)),
            }
        }
        self.clear_refusal(&mut claim).await?;
        let Some(mut step) = next_step(&claim) else {
            return self.idle(&claim).await;
        };
        // The safety rules hold whoever asked (spec §8).
        if let Some(refusal) = self.refusal(&claim, step) {
            return self.refuse(&claim, refusal).await;
        }
        // A removal that failed on its way out is tried again as it stands,
        // without writing the way back into Terminating: a step that keeps
        // failing rewrites nothing until its reason changes.
        let before = claim.status.lifecycle.clone();
        if let Some(again) = retried_teardown(&claim) {
            claim.status.lifecycle = Lifecycle::Terminating;
            step = again;
        }
        // Phase changes that need no provider call.
        if let Some(to) = phase_change(&claim, step) {
            return self.change_phase(&claim, step, to).await;
        }
        let outcome = match self.perform(&claim, step).await {
            Ok(o) => o,
            Err(e)
                if e.kind == ProviderErrorKind::Transient
                    || e.kind == ProviderErrorKind::Conflict =>
            {
                return Err(self.record_retry(&claim, step, e).await);
            }
            Err(e) => Outcome::Fail(e.message),
        };
        self.checkpoint(step, Moment::AfterEffect)?;
        if let Outcome::Fail(reason) = &outcome
            && claim.status.lifecycle.fail(step, reason.clone()).ok() == Some(before.clone())
        {
            // The same failure as recorded: nothing to write, and the caller
            // backs off before the next try.
            return Err(ExecutorError::Retry {
                step,
                source: ProviderError::new(ProviderErrorKind::Permanent, reason.clone()),
            });
        }
        let progress = self.record(&claim, step, outcome).await?;
        self.checkpoint(step, Moment::AfterRecord)?;
        Ok(progress)
    }

    /// A claim with no step left: a terminated one loses its finalizer.
    async fn idle(&self, claim: &Claim) -> Result<Progress, ExecutorError> {
        let name = claim.name.as_str();
        if claim.status.lifecycle.phase() == Phase::Terminated && claim.finalizer {
            self.store
                .remove_finalizer(name)
                .await
                .map_err(store_error(name))?;
        }
        Ok(Progress::Idle(claim.status.lifecycle.phase()))
    }

    /// Records a phase change that needs no provider call.
    async fn change_phase(
        &self,
        claim: &Claim,
        step: Step,
        to: Phase,
    ) -> Result<Progress, ExecutorError> {
        let name = claim.name.as_str();
        let mut status = claim.status.clone();
        status.lifecycle = status
            .lifecycle
            .advance(to)
            .map_err(|e| lifecycle_error(name, e))?;
        if claim.phase() == Phase::Spare && to == Phase::Provisioning {
            // An activated spare starts again, its TTL counted from now.
            tidepool_core::spares::activate(&mut status, claim.spec.ttl, self.now());
        }
        self.store
            .save_status(name, &status)
            .await
            .map_err(store_error(name))?;
        Ok(Progress::Advanced(step))
    }

    /// Records a provider failure worth retrying in `last_error`; the error
    /// to return (the store's, if that record failed too).
    async fn record_retry(&self, claim: &Claim, step: Step, e: ProviderError) -> ExecutorError {
        let name = claim.name.as_str();
        let last_error = Some(format!("{step}: {e}"));
        if claim.status.last_error == last_error {
            // Recorded already: a step that keeps failing the same way
            // writes once, not on every try.
            return ExecutorError::Retry { step, source: e };
        }
        let mut status = claim.status.clone();
        status.last_error = last_error;
        match self.store.save_status(name, &status).await {
            Ok(()) => {
                let message = format!("{} ({}; retrying)", e.message, e.kind.as_str());
                self.report_failure(name, step, message).await;
                ExecutorError::Retry { step, source: e }
            }
            Err(source) => store_error(name)(source),
        }
    }

    /// Tells the claim's Event stream that `step` failed (once per change
    /// of reason: callers report only what they newly record).
    async fn report_failure(&self, name: &str, step: Step, message: String) {
        let entry = AuditEntry {
            actor: "controller".into(),
            operation: format!("step {step}"),
            result: AuditResult::Error(ErrorCategory::Failed),
            message,
        };
        self.store.audit(name, &entry).await;
    }

    /// Records what the step did: its status when done, the failure when
    /// it cannot succeed; a wait writes nothing.
    async fn record(
        &self,
        claim: &Claim,
        step: Step,
        outcome: Outcome,
    ) -> Result<Progress, ExecutorError> {
        let name = claim.name.as_str();
        match outcome {
            Outcome::Done(mut status) => {
                status.last_error = None;
                self.store
                    .save_status(name, &status)
                    .await
                    .map_err(store_error(name))?;
                info!(claim = name, %step, phase = %status.lifecycle.phase(), "step done");
                Ok(Progress::Advanced(step))
            }
            Outcome::Wait(retry_after, why) => Ok(Progress::Waiting {
                step,
                retry_after,
                why,
            }),
            Outcome::Fail(reason) => {
                let mut status = claim.status.clone();
                warn!(claim = name, %step, %reason, "step failed");
                status.lifecycle = status
                    .lifecycle
                    .fail(step, reason.clone())
                    .map_err(|e| lifecycle_error(name, e))?;
                status.last_error = Some(format!("{step}: {reason}"));
                self.store
                    .save_status(name, &status)
                    .await
                    .map_err(store_error(name))?;
                self.report_failure(name, step, reason).await;
                Ok(Progress::Advanced(step))
            }
        }
    }

    /// Steps until the claim is idle or waiting, sleeping for waits up to
    /// `budget` of real time in total (tests and CLI `--wait`).
    ///
    /// # Errors
    /// As [`Executor::step`]; transient errors, and status writes that lost
    /// to another writer, are retried within the budget.
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
                // Someone wrote the claim since the step read it (status
                // writes are conditional): the next step reads it again.
                Err(ExecutorError::Store { source, .. })
                    if source.kind == ProviderErrorKind::Conflict && start.elapsed() < budget =>
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

    /// Marks condition `c` as reached now.
    fn mark(&self, status: &mut ClaimStatus, c: Condition) {
        status.conditions.insert(c, self.now());
    }

    /// Marks condition `c` as reached now: the step is done, `status` is
    /// what to record.
    fn reached(&self, mut status: ClaimStatus, c: Condition) -> Outcome {
        self.mark(&mut status, c);
        Outcome::done(status)
    }

    /// How long ago condition `c` was reached.
    fn since(&self, status: &ClaimStatus, c: Condition) -> Duration {
        status.since(c, self.now())
    }

    /// Does `step` for `claim` with the claim's pool and size: the dispatch
    /// to the step's phase module.
    async fn perform(&self, claim: &Claim, step: Step) -> Result<Outcome, ProviderError> {
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
        let work = Work { claim, pool, size };
        match step {
            Step::AllocateVmid => self.allocate_vmid(&work).await,
            Step::Clone => self.clone_vm(&work).await,
            Step::Configure => self.configure(&work).await,
            Step::Start => self.start(&work).await,
            Step::WaitForAddress => self.wait_for_address(&work).await,
            Step::DeliverConfig => self.deliver_config(&work).await,
            Step::WaitForNode => self.wait_for_node(&work).await,
            Step::Label => self.label(&work).await,
            Step::Cordon => self.cordon(&work).await,
            Step::Drain => self.drain(&work).await,
            Step::DeleteNode => self.delete_node(&work).await,
            Step::ShutdownOs => self.shutdown_os(&work).await,
            Step::StopVm => self.stop_vm(&work).await,
            // A VM at the recorded VMID with the claim's marker but another
            // UUID is kept, and the claim with it (nothing leaks).
            Step::DeleteVm => match crate::sweep::drift(&self.hv, claim).await? {
                Some(why) => Ok(Outcome::Fail(why)),
                None => self.delete_vm(&work).await,
            },
        }
    }
}

/// The step to try again when `claim` failed on its way out (a removal
/// step such as the VM's delete) and its removal is still wanted: the
/// first removal step not yet done, as if it were still Terminating.
fn retried_teardown(claim: &Claim) -> Option<Step> {
    let Lifecycle::Failed { step, .. } = &claim.status.lifecycle else {
        return None;
    };
    if step.phase() != Phase::Terminating || !claim.intent().is_removal() {
        return None;
    }
    let mut terminating = claim.clone();
    terminating.status.lifecycle = Lifecycle::Terminating;
    next_step(&terminating)
}

/// The error of a failed claim-store call for claim `name`.
fn store_error(name: &str) -> impl Fn(ProviderError) -> ExecutorError + '_ {
    move |source| ExecutorError::Store {
        claim: name.to_owned(),
        source,
    }
}

/// The error of a lifecycle transition the claim's state does not allow.
fn lifecycle_error(name: &str, e: impl ToString) -> ExecutorError {
    ExecutorError::Config {
        claim: name.to_owned(),
        message: e.to_string(),
    }
}

/// A provider error that retrying will not cure.
fn permanent(e: impl ToString) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Permanent, e.to_string())
}

/// The claim's recorded VM; a permanent error when none is.
fn owned_vm(s: &ClaimStatus) -> Result<VmIdentity, ProviderError> {
    s.vm.clone().ok_or_else(|| permanent("no VM recorded"))
}
