//! An emulator of the Talos machine API (gRPC) for the Tidepool lab.
//!
//! Each simulated machine serves `machine.MachineService` on its own
//! address (e.g. `127.0.1.N:50000`; Linux routes all of `127.0.0.0/8` to
//! the loopback interface), speaking the real wire protocol through the
//! generated code of `tidepool-talos-proto`:
//!
//! - **Maintenance mode**: TLS with an ephemeral self-signed Ed25519
//!   certificate and no client certificate; only `ApplyConfiguration` is
//!   served (modes `auto`, `reboot`, `try`). `Version`, `Upgrade` and
//!   `Reset` answer `Unimplemented` "API is not implemented in maintenance
//!   mode"; the other methods answer the default `Unimplemented` stub
//!   "method X not implemented", as Talos v1.8–v1.12 do. An accepted config
//!   makes the machine install and reboot into configured mode.
//! - **Configured mode**: mTLS against the lab's Talos CA (Ed25519), RBAC
//!   from the client certificate's organization (`os:admin`,
//!   `os:operator`, `os:reader`), the `nodes` header fan-out of apid, and
//!   `Version`, `Hostname`, `ServiceList`, `ServiceRestart`/`Start`/`Stop`,
//!   `Reboot`, `Shutdown`, `Reset`, `Upgrade` and `ApplyConfiguration`.
//!
//! Every call consults the lab's fault table with
//! [`Service::Talos`](tidepool_lab_sim::Service::Talos) and the operation
//! name `<Method>:<ip>` (e.g. `ApplyConfiguration:127.0.1.5`); the
//! operation `UpgradeBoot:<ip>` makes an accepted upgrade's new image fail
//! to boot, so the machine rolls back to its previous version. The lab
//! composition drives machines through [`TalosLab`] and follows them through
//! [`TalosEvent`]s.

mod api;
pub mod config;
mod lab;
pub mod tls;

pub use api::{MAINTENANCE_UNIMPLEMENTED, UPGRADE_BOOT_FAULT};
pub use config::{ConfigError, MachineConfig, RegisterTaint};
pub use lab::{
    ApplyMode, BootMode, DEFAULT_PORT, DEFAULT_TALOS_VERSION, MachinePhase, MachineStatus,
    ServingMode, TalosDurations, TalosEvent, TalosLab, TalosLabError, WipeMode,
};
pub use tls::Role;
