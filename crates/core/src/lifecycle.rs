//! The worker lifecycle of spec §6 as a checked state machine.
//!
//! ```text
//! Requested → Provisioning → Joining → Ready → Draining → Terminating → Terminated
//!     │            ↑             ↓                            ↑
//!     │            └─────────── Spare ────────────────────────┘
//!     └──────────┴─────────────┴─────────┴────────┴───────────┴──→ Failed{step, reason}
//! ```
//! Any phase before `Terminated` may be abandoned to `Terminating` (a
//! cancelled request, a forced destroy); a drain may be called off back to
//! `Ready`; a `Failed` worker is cleaned up through `Terminating`; a
//! `Ready` worker whose VM vanished is `Failed` through
//! [`Lifecycle::lost_vm`]. A cold spare leaves `Joining` once its node has
//! joined, is parked in `Spare` (its node emptied and deleted, its VM shut
//! down: [`Step::runs_in`]), waits there stopped, and goes back to
//! `Provisioning` when it is activated (its start is the next step). Every
//! other move is an error, never silently accepted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A lifecycle phase without its payload, for labels, metrics and tables.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Phase {
    /// The claim exists; nothing has been created yet.
    #[default]
    Requested,
    /// The VM is being cloned, configured and started.
    Provisioning,
    /// The machine has its configuration and is joining the cluster.
    Joining,
    /// The node is Ready and labelled; the worker takes pods.
    Ready,
    /// The node is cordoned and its pods are being evicted.
    Draining,
    /// The node and VM are being removed.
    Terminating,
    /// Everything is gone.
    Terminated,
    /// A step failed; see the reason.
    Failed,
    /// A cold spare: cloned, configured and installed (its node joined
    /// once), then parked with its node deleted and its VM stopped, waiting
    /// to be activated. It takes no pods and is not capacity on its way.
    Spare,
}

impl Phase {
    /// Every phase, in lifecycle order (the spare's aside, last).
    pub const ALL: [Phase; 9] = [
        Self::Requested,
        Self::Provisioning,
        Self::Joining,
        Self::Ready,
        Self::Draining,
        Self::Terminating,
        Self::Terminated,
        Self::Failed,
        Self::Spare,
    ];

    /// The phase's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "Requested",
            Self::Provisioning => "Provisioning",
            Self::Joining => "Joining",
            Self::Ready => "Ready",
            Self::Draining => "Draining",
            Self::Terminating => "Terminating",
            Self::Terminated => "Terminated",
            Self::Failed => "Failed",
            Self::Spare => "Spare",
        }
    }

    /// Whether `self → to` is a legal transition (for `Failed`, whether some
    /// step of `self` may fail).
    pub fn can_move_to(self, to: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, to),
            (Requested, Provisioning)
                | (Provisioning, Joining)
                | (Joining, Ready)
                | (Ready, Draining)
                | (Draining, Ready)
                | (Draining, Terminating)
                | (Terminating, Terminated)
                | (Joining, Spare)
                | (Spare, Provisioning)
                | (
                    Requested | Provisioning | Joining | Ready | Failed | Spare,
                    Terminating
                )
                | (
                    Requested | Provisioning | Joining | Draining | Terminating | Spare,
                    Failed
                )
        )
    }

    /// Whether a worker in this phase holds (or may hold) a VM or a node.
    pub fn may_hold_resources(self) -> bool {
        !matches!(self, Self::Requested | Self::Terminated)
    }

    /// Whether the worker counts toward its pool's size (it exists or is on its way).
    pub fn counts_toward_pool(self) -> bool {
        matches!(
            self,
            Self::Requested | Self::Provisioning | Self::Joining | Self::Ready
        )
    }

    /// Whether the worker takes room under its pool's limits: everything
    /// but a worker on its way out and a spare. A failed worker keeps its VM (and its
    /// cores and memory) until it is removed, so it counts: otherwise a
    /// template that never joins would let failed workers pile up without
    /// bound, each one admitted afresh. A spare's room is kept by the refill
    /// instead (see [`crate::spares`]): activating one turns it into a
    /// worker without adding to the pool, so scale-up must see its room as
    /// free for it.
    pub fn holds_pool_room(self) -> bool {
        !matches!(self, Self::Terminating | Self::Terminated | Self::Spare)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of provisioning or removal; a failure names the step it
/// happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Choose a VMID in the provider's range.
    AllocateVmid,
    /// Clone the template.
    Clone,
    /// Set cores, memory, tags, description, SMBIOS.
    Configure,
    /// Start the VM.
    Start,
    /// Wait for the guest to boot and report an address.
    WaitForAddress,
    /// Deliver the machine configuration.
    DeliverConfig,
    /// Wait for the node to register and turn Ready.
    WaitForNode,
    /// Apply labels and taints.
    Label,
    /// Mark the node unschedulable.
    Cordon,
    /// Evict the node's pods.
    Drain,
    /// Delete the Kubernetes node.
    DeleteNode,
    /// Shut the OS down (Talos shutdown or reset).
    ShutdownOs,
    /// Stop the VM.
    StopVm,
    /// Delete the VM with purge.
    DeleteVm,
}

impl Step {
    /// The phase during which this step runs.
    pub fn phase(self) -> Phase {
        match self {
            Self::AllocateVmid => Phase::Requested,
            Self::Clone | Self::Configure | Self::Start | Self::WaitForAddress => {
                Phase::Provisioning
            }
            Self::DeliverConfig | Self::WaitForNode | Self::Label => Phase::Joining,
            Self::Cordon | Self::Drain => Phase::Draining,
            Self::DeleteNode | Self::ShutdownOs | Self::StopVm | Self::DeleteVm => {
                Phase::Terminating
            }
        }
    }

    /// Whether the step may run while the worker is in `phase`: its own
    /// phase, or `Spare` for the steps that park a spare (cordon, drain,
    /// delete the node, shut the OS down).
    pub fn runs_in(self, phase: Phase) -> bool {
        self.phase() == phase
            || (phase == Phase::Spare
                && matches!(
                    self,
                    Self::Cordon | Self::Drain | Self::DeleteNode | Self::ShutdownOs
                ))
    }

    /// The step's name as used in conditions and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllocateVmid => "allocateVmid",
            Self::Clone => "clone",
            Self::Configure => "configure",
            Self::Start => "start",
            Self::WaitForAddress => "waitForAddress",
            Self::DeliverConfig => "deliverConfig",
            Self::WaitForNode => "waitForNode",
            Self::Label => "label",
            Self::Cordon => "cordon",
            Self::Drain => "drain",
            Self::DeleteNode => "deleteNode",
            Self::ShutdownOs => "shutdownOs",
            Self::StopVm => "stopVm",
            Self::DeleteVm => "deleteVm",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A worker's lifecycle state; `Failed` carries where and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase")]
pub enum Lifecycle {
    /// See [`Phase::Requested`].
    Requested,
    /// See [`Phase::Provisioning`].
    Provisioning,
    /// See [`Phase::Joining`].
    Joining,
    /// See [`Phase::Ready`].
    Ready,
    /// See [`Phase::Draining`].
    Draining,
    /// See [`Phase::Terminating`].
    Terminating,
    /// See [`Phase::Terminated`].
    Terminated,
    /// A step failed.
    Failed {
        /// The step that failed.
        step: Step,
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// See [`Phase::Spare`].
    Spare,
}

/// A refused lifecycle move.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The target phase cannot follow the current one.
    #[error("a worker cannot move from {from} to {to}")]
    Illegal {
        /// Current phase.
        from: Phase,
        /// Requested phase.
        to: Phase,
    },
    /// A failure was reported for a step of another phase.
    #[error("step {step} belongs to {step_phase}, but the worker is {current}")]
    StepOutOfPhase {
        /// The failing step.
        step: Step,
        /// The phase the step belongs to.
        step_phase: Phase,
        /// The worker's phase.
        current: Phase,
    },
}

impl Lifecycle {
    /// The phase, without payload.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Requested => Phase::Requested,
            Self::Provisioning => Phase::Provisioning,
            Self::Joining => Phase::Joining,
            Self::Ready => Phase::Ready,
            Self::Draining => Phase::Draining,
            Self::Terminating => Phase::Terminating,
            Self::Terminated => Phase::Terminated,
            Self::Failed { .. } => Phase::Failed,
            Self::Spare => Phase::Spare,
        }
    }

    /// The state of a phase that carries no payload (`Failed` carries its
    /// step and reason, so it reads as `Requested` here; callers handle it
    /// first).
    pub(crate) fn of_phase(phase: Phase) -> Lifecycle {
        match phase {
            Phase::Requested | Phase::Failed => Self::Requested,
            Phase::Provisioning => Self::Provisioning,
            Phase::Joining => Self::Joining,
            Phase::Ready => Self::Ready,
            Phase::Draining => Self::Draining,
            Phase::Terminating => Self::Terminating,
            Phase::Terminated => Self::Terminated,
            Phase::Spare => Self::Spare,
        }
    }

    /// Moves to `to`, which must not be `Failed` (use [`Lifecycle::fail`]).
    ///
    /// # Errors
    /// [`TransitionError::Illegal`] when the move is not in the lifecycle.
    pub fn advance(&self, to: Phase) -> Result<Lifecycle, TransitionError> {
        let from = self.phase();
        if to == Phase::Failed || !from.can_move_to(to) {
            return Err(TransitionError::Illegal { from, to });
        }
        Ok(Self::of_phase(to))
    }

    /// Records that `step` failed for `reason`.
    ///
    /// # Errors
    /// [`TransitionError::Illegal`] if the current phase cannot fail, and
    /// [`TransitionError::StepOutOfPhase`] if the step does not run in it.
    pub fn fail(
        &self,
        step: Step,
        reason: impl Into<String>,
    ) -> Result<Lifecycle, TransitionError> {
        let current = self.phase();
        if !current.can_move_to(Phase::Failed) {
            return Err(TransitionError::Illegal {
                from: current,
                to: Phase::Failed,
            });
        }
        if !step.runs_in(current) {
            return Err(TransitionError::StepOutOfPhase {
                step,
                step_phase: step.phase(),
                current,
            });
        }
        Ok(Self::Failed {
            step,
            reason: reason.into(),
        })
    }
}

impl Lifecycle {
    /// The worker's VM vanished while it was Ready (deleted out of band):
    /// `Failed` at [`Step::Start`], the step whose effect, a running VM,
    /// was lost. The one way into `Failed` from `Ready`: no step of the
    /// worker failed, the world took the VM away.
    ///
    /// # Errors
    /// [`TransitionError::Illegal`] unless the worker is Ready.
    pub fn lost_vm(&self, reason: impl Into<String>) -> Result<Lifecycle, TransitionError> {
        match self.phase() {
            Phase::Ready => Ok(Self::Failed {
                step: Step::Start,
                reason: reason.into(),
            }),
            from => Err(TransitionError::Illegal {
                from,
                to: Phase::Failed,
            }),
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { step, reason } => write!(f, "Failed at {step}: {reason}"),
            other => f.write_str(other.phase().as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::*;

    /// Every legal move; anything not listed must be refused.
    const LEGAL: &[(Phase, Phase)] = &[
        (Requested, Provisioning),
        (Requested, Terminating),
        (Requested, Failed),
        (Provisioning, Joining),
        (Provisioning, Terminating),
        (Provisioning, Failed),
        (Joining, Ready),
        (Joining, Terminating),
        (Joining, Failed),
        (Ready, Draining),
        (Ready, Terminating),
        (Draining, Ready),
        (Draining, Terminating),
        (Draining, Failed),
        (Terminating, Terminated),
        (Terminating, Failed),
        (Failed, Terminating),
        (Joining, Spare),
        (Spare, Provisioning),
        (Spare, Terminating),
        (Spare, Failed),
    ];

    fn state(phase: Phase) -> Lifecycle {
        match phase {
            Failed => Lifecycle::Failed {
                step: Step::Clone,
                reason: "x".into(),
            },
            p => Lifecycle::Requested.advance_unchecked(p),
        }
    }

    impl Lifecycle {
        fn advance_unchecked(&self, p: Phase) -> Lifecycle {
            match p {
                Requested => Self::Requested,
                Provisioning => Self::Provisioning,
                Joining => Self::Joining,
                Ready => Self::Ready,
                Draining => Self::Draining,
                Terminating => Self::Terminating,
                Terminated => Self::Terminated,
                Spare => Self::Spare,
                Failed => unreachable!(),
            }
        }
    }

    fn step_of(phase: Phase) -> Step {
        match phase {
            Requested => Step::AllocateVmid,
            Provisioning => Step::Clone,
            Joining => Step::DeliverConfig,
            Draining | Spare => Step::Drain,
            _ => Step::DeleteVm,
        }
    }

    #[test]
    fn every_pair_of_phases_is_legal_exactly_when_listed() {
        for from in Phase::ALL {
            for to in Phase::ALL {
                let legal = LEGAL.contains(&(from, to));
                let result = if to == Failed {
                    state(from).fail(step_of(from), "boom").map(|s| s.phase())
                } else {
                    state(from).advance(to).map(|s| s.phase())
                };
                match (legal, result) {
                    (true, Ok(p)) => assert_eq!(p, to),
                    (false, Err(_)) => {}
                    (true, Err(e)) => panic!("{from} → {to} should be legal: {e}"),
                    (false, Ok(_)) => panic!("{from} → {to} should be refused"),
                }
            }
        }
    }

    #[test]
    fn terminated_is_final() {
        for to in Phase::ALL {
            assert!(!Terminated.can_move_to(to), "Terminated → {to}");
        }
    }

    #[test]
    fn a_failure_must_name_a_step_of_the_current_phase() {
        let err = Lifecycle::Provisioning.fail(Step::Drain, "no").unwrap_err();
        assert_eq!(
            err.to_string(),
            "step drain belongs to Draining, but the worker is Provisioning"
        );
        let failed = Lifecycle::Joining
            .fail(Step::WaitForNode, "node not Ready after 300s")
            .unwrap();
        assert_eq!(
            failed.to_string(),
            "Failed at waitForNode: node not Ready after 300s"
        );
    }

    #[test]
    fn advance_refuses_failed_as_a_target() {
        assert_eq!(
            Lifecycle::Ready.advance(Failed),
            Err(TransitionError::Illegal {
                from: Ready,
                to: Failed
            })
        );
    }

    #[test]
    fn the_lifecycle_serialises_with_its_phase_tag() {
        let failed = Lifecycle::Failed {
            step: Step::Clone,
            reason: "task failed".into(),
        };
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            json,
            r#"{"phase":"Failed","step":"clone","reason":"task failed"}"#
        );
        assert_eq!(serde_json::from_str::<Lifecycle>(&json).unwrap(), failed);
    }

    #[test]
    fn a_spare_is_parked_once_joined_and_activated_back_into_provisioning() {
        let parked = Lifecycle::Joining.advance(Spare).unwrap();
        assert_eq!(parked, Lifecycle::Spare);
        assert_eq!(
            parked.advance(Provisioning).unwrap(),
            Lifecycle::Provisioning
        );
        assert_eq!(
            parked.advance(Ready),
            Err(TransitionError::Illegal {
                from: Spare,
                to: Ready
            })
        );
        // Only the parking steps run (and fail) while parked.
        assert!(parked.fail(Step::Start, "no memory").is_err());
        assert_eq!(parked.fail(Step::Drain, "blocked").unwrap().phase(), Failed);
    }

    #[test]
    fn a_spare_takes_no_pods_and_no_room_the_refill_does_not_keep() {
        assert!(!Spare.counts_toward_pool());
        assert!(!Spare.holds_pool_room());
        assert!(Spare.may_hold_resources());
    }

    #[test]
    fn the_spare_phase_round_trips_with_its_tag() {
        let json = serde_json::to_string(&Lifecycle::Spare).unwrap();
        assert_eq!(json, r#"{"phase":"Spare"}"#);
        assert_eq!(
            serde_json::from_str::<Lifecycle>(&json).unwrap(),
            Lifecycle::Spare
        );
    }

    #[test]
    fn only_a_ready_worker_can_lose_its_vm() {
        assert_eq!(
            Lifecycle::Ready.lost_vm("VmGone").unwrap(),
            Lifecycle::Failed {
                step: Step::Start,
                reason: "VmGone".into()
            }
        );
        for phase in Phase::ALL.into_iter().filter(|p| *p != Ready) {
            assert!(state(phase).lost_vm("VmGone").is_err(), "{phase}");
        }
    }
}
