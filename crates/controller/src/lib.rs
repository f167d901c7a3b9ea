//! Tidepool's controller: the ports through which it acts on the world
//! (hypervisor, cluster nodes, machine join, durable claims), and the
//! executor that walks each worker claim through the lifecycle of spec §6,
//! one idempotent, recorded step at a time.
//!
//! The executor never keeps state of its own between steps: everything it
//! knows is in the claim's status or can be observed from the providers.
//! A process killed at any point therefore resumes on restart without
//! leaking, duplicating or half-deleting a VM.

pub mod autoscaler;
pub mod claim;
pub mod executor;
pub mod leader;
pub mod live;
pub mod observe;
pub mod ports;
pub mod reconciler;
pub mod run;
pub mod service;
pub mod testing;
mod wake;

pub use claim::{Claim, ClaimSpec, ClaimStatus, Condition, Intent, VmIdentity};
pub use executor::{Executor, ExecutorError, Progress};
pub use ports::{ClaimStore, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind};
