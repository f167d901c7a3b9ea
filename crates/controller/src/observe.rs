//! Observation as a port: whatever can look at the cluster, the hypervisor
//! and the claims and hand the planner a [`PlanInput`], and say when what
//! it looks at has changed.
//!
//! The live stack observes through its watch-fed caches and the Proxmox
//! API (`tidepool-live`); front-ends that only need the observation (the
//! capacity report, the dry-run plan) and the autoscaler take an
//! [`Observe`], so they can be tested with a hand-built input.

use std::future::Future;
use std::pin::Pin;

use tidepool_core::planner::PlanInput;
use tokio::sync::watch;

use crate::ports::ProviderError;

/// The future an [`Observe`] returns.
pub type Observation<'a> =
    Pin<Box<dyn Future<Output = Result<PlanInput, ProviderError>> + Send + 'a>>;

/// Something that can observe the world for the planner.
///
/// Object safe, so a server can hold an `Arc<dyn Observe>` without becoming
/// generic over it.
pub trait Observe: Send + Sync {
    /// Everything the planner looks at, observed now. Never from a cache
    /// that has not completed its first list.
    ///
    /// # Errors
    /// The observation failed (caches not synced, a provider unreachable);
    /// the error names what could not be read.
    fn plan_input(&self) -> Observation<'_>;

    /// Receivers whose values change whenever something the planner looks
    /// at may have changed (pods, nodes), so a loop can sleep until then.
    /// Empty when the observer cannot tell: callers then look again on a
    /// timer. Claims have their own feed ([`crate::ClaimStore::changes`]).
    fn changes(&self) -> Vec<watch::Receiver<u64>> {
        Vec::new()
    }
}
