//! Observation as a port: whatever can look at the cluster, the hypervisor
//! and the claims and hand the planner a [`PlanInput`].
//!
//! The live stack observes through its watch-fed caches and the Proxmox
//! API ([`crate::live::snapshot::plan_input`]); front-ends that only need
//! the observation (the capacity report, the dry-run plan) take an
//! [`Observe`] so they can be tested with a hand-built input.

use std::future::Future;
use std::pin::Pin;

use tidepool_core::planner::PlanInput;

use crate::live::connect::LiveExecutor;
use crate::ports::ProviderError;

/// The future an [`Observe`] returns.
pub type Observation<'a> =
    Pin<Box<dyn Future<Output = Result<PlanInput, ProviderError>> + Send + 'a>>;

/// Something that can observe the world for the planner.
///
/// Object safe, so a server can hold an `Arc<dyn Observe>` without becoming
/// generic over it.
pub trait Observe: Send + Sync {
    /// Everything the planner looks at, observed now.
    ///
    /// # Errors
    /// The observation failed (caches not synced, a provider unreachable);
    /// the error names what could not be read.
    fn plan_input(&self) -> Observation<'_>;
}

impl Observe for LiveExecutor {
    fn plan_input(&self) -> Observation<'_> {
        Box::pin(crate::live::snapshot::plan_input(self))
    }
}
