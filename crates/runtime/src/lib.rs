//! The `tidepool run` process: it competes for leadership with a Lease
//! ([`leader`]), and while it leads drives every WorkerClaim through its
//! lifecycle and autoscales, over the live adapters; it serves `/healthz`,
//! `/readyz` and `/metrics` ([`run`]), `/readyz` telling the truth about
//! the caches and the Proxmox API ([`health`]). [`dry_run`] is `tidepool
//! run --dry-run`: the autoscaler only, acting on nothing.

pub mod dry_run;
pub mod health;
pub mod leader;
pub mod run;
mod upgrades;
pub mod web;

pub use run::{Metrics, RunError, RunOptions, run};
