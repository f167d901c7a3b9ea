//! An emulator of the Proxmox VE 8.4 REST API for the Tidepool lab.
//!
//! It speaks HTTPS + JSON on loopback exactly as pveproxy does for the
//! calls Tidepool makes: API-token authentication, the `{"data": …}`
//! envelope, both error-body formats, form and JSON bodies, UPID-tracked
//! worker tasks with real lock and accounting failures. The lab composition
//! holds a [`PveLab`], serves it, watches [`VmEvent`]s to drive simulated
//! boots and marks guest agents up with [`PveLab::set_agent`].

mod access;
mod api;
pub mod config;
pub mod error;
mod lab;
mod options;
pub mod params;
mod server;
mod state;

pub use access::ALL_PRIVILEGES;
pub use config::{
    AclSpec, ErrorBodies, HostSpec, PciDevice, PciMapping, PoolSpec, PveConfig, PveDurations,
    RoleSpec, StorageSpec, VmSpec,
};
pub use error::{ApiError, LabError};
pub use lab::{PveLab, VmEvent, VmSnapshot};
pub use options::normalize_tags;
