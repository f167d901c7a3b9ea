//! The claim as the controller sees it: the one vocabulary of
//! [`tidepool_core::claim`], re-exported where the ports use it.

pub use tidepool_core::claim::{
    Claim, ClaimSpec, ClaimStatus, Condition, Intent, VmIdentity, drain_failed, next_step,
    phase_change,
};
