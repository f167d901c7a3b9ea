//! Shared machinery of the lab emulators: the scalable clock, deterministic
//! fault injection, the certificates the emulators serve, and serving an
//! app over TLS.
//!
//! Every emulator of the lab (Proxmox, Kubernetes, Talos) takes a
//! [`SimClock`] for its simulated durations and a [`Faults`] table that it
//! consults once per operation, so a scenario or a test can slow down or
//! break any endpoint, reproducibly for a given seed.

pub mod certs;
pub mod clock;
pub mod faults;
pub mod serve;

pub use certs::{CertError, Issued, KeyAlgorithm, TestCa};
pub use clock::SimClock;
pub use faults::{FaultRule, Faults, Injected, InjectedError, Service};
