//! Tidepool's controller: the ports through which it acts on the world
//! (hypervisor, machine join, cluster nodes and Events, durable claims,
//! observation, the clock), each with its written contract, and the
//! generic machinery over them:
//! - the [`executor`], which walks each worker claim through the
//!   lifecycle of spec §6, one idempotent, recorded step at a time;
//! - the [`service`] layer every front-end calls (CLI, MCP), where the
//!   validation and safety rules of spec §8 live once;
//! - the [`reconciler`], which drives every claim while this replica leads;
//! - the [`autoscaler`]: observe, plan (the pure planner of `core`), act;
//! - [`pools`]: each pool's durable record, through which new claims are
//!   admitted within the pool's limits atomically and where the
//!   autoscaler's timers survive a restart.
//! - the [`sweep`], which reconciles VMs and claims both ways (orphans,
//!   vanished and drifted VMs);
//! - the [`health`] monitor, which repairs sick workers by spec §7's
//!   matrix.
//!
//! Nothing here does I/O of its own: the production adapters are in
//! `tidepool-live`, the process around them in `tidepool-runtime`, and the
//! in-memory fakes of [`testing`] let every loop be tested on its own.
//!
//! The executor never keeps state of its own between steps: everything it
//! knows is in the claim's status or can be observed from the providers.
//! A process killed at any point therefore resumes on restart without
//! leaking, duplicating or half-deleting a VM.

pub mod autoscaler;
pub mod claim;
pub mod clock;
pub mod executor;
pub mod health;
pub mod observe;
pub mod pools;
pub mod ports;
pub mod reconciler;
pub mod rollout;
pub mod service;
pub mod sweep;
pub mod testing;
pub mod wake;

pub use claim::{Claim, ClaimSpec, ClaimStatus, Condition, Intent, VmIdentity};
pub use clock::{ScaledClock, SystemClock};
pub use executor::{Executor, ExecutorError, Progress};
pub use ports::{ClaimStore, Clock, Hypervisor, Joiner, Nodes, ProviderError, ProviderErrorKind};
