//! Typed requests and answers of the endpoints Tidepool uses (facts §3),
//! one submodule per API area; every type is re-exported here.
//!
//! Proxmox is loose with JSON types: numbers arrive as strings (`nextid`,
//! `memory`, `mhz`), booleans as `0`/`1`, lists as `;`- or `,`-joined
//! strings. The deserializers of `de` accept every form the facts list,
//! and the types expose what Tidepool reasons about.

mod agent;
mod cluster;
mod de;
mod pci;
mod tasks;
mod vm;

pub(crate) use agent::RawAgentResult;
pub use agent::{GuestAddress, GuestInterface};
pub use cluster::{
    ClusterStorage, ClusterVm, CpuInfo, MemoryStatus, NodeInfo, NodeStatus, NodeVm, PoolInfo,
    Version,
};
pub(crate) use cluster::{RawPoolDetails, guest_members};
pub(crate) use pci::RawPciMapping;
pub use pci::{MappingCheck, PciMapEntry, PciMapping};
pub use tasks::{TaskLogLine, TaskStatus, Upid, UpidParseError};
pub use vm::{
    CloneRequest, CloudInit, ConfigUpdate, DeleteOptions, ShutdownOptions, VmConfig, VmStatus,
};
