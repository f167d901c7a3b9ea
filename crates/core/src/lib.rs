//! Tidepool's pure core: the domain model (pools, sizes, the worker
//! lifecycle, node conventions, TTLs), the safety rules, and the
//! configuration schema with its validation; and the views the front-ends
//! print ([`view`]).
//!
//! It re-exports [`jiff`], whose `Timestamp` is the time type of every
//! crate above it.
//!
//! Nothing here performs I/O or reads a clock: time is passed in, so every
//! function is deterministic and testable with plain values.

pub mod claim;
pub mod config;
pub mod conventions;
pub mod cron;
pub mod duration;
pub mod health;
pub mod k8s_names;
pub mod lifecycle;
pub mod planner;
pub mod pool;
pub mod pool_record;
pub mod quantity;
pub mod rollout;
pub mod safety;
pub mod sched;
pub mod spares;
pub mod ttl;
pub mod view;
pub mod volumes;

pub use claim::{Claim, ClaimSpec, ClaimStatus, Condition, Intent, VmIdentity};
pub use config::{Config, ConfigError, ConfigErrors};
pub use conventions::{LabelKeys, NodeMetadata, Taint, TaintEffect};
pub use jiff;
pub use lifecycle::{Lifecycle, Phase, Step};
pub use pool::{Limits, PoolKind, Size, WorkerType};
