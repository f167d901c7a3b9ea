//! The `tidepool run` process: it competes for leadership with a Lease
//! ([`leader`]), and while it leads drives every WorkerClaim through its
//! lifecycle and autoscales, over the live adapters; it serves `/healthz`,
//! `/readyz` and `/metrics` ([`run`]).

pub mod leader;
pub mod run;

pub use run::{Metrics, RunOptions, run};
