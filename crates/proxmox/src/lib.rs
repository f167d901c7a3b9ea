//! The production Proxmox VE REST client of Tidepool.
//!
//! - [`ProxmoxClient`]: typed calls for what Tidepool needs (nodes,
//!   capacity, clone, config, power, delete, tasks, guest agent, PCI
//!   mappings, pools), over reqwest + rustls (ring) with API-token auth.
//! - TLS is verified against a CA file, a pinned SHA-256 fingerprint or the
//!   system roots; skipping verification must be configured and warns.
//! - [`ProxmoxError`] classifies every failure (HTTP status plus the real
//!   Proxmox message strings) and names the operation; `kind()` gives the
//!   [`ErrorKind`] callers decide on, `category()` a stable label.
//! - Transient failures of idempotent calls are retried with jittered
//!   backoff ([`RetryPolicy`]); clones are never retried blindly (see
//!   [`client`]).
//! - The token lives in a redacting wrapper ([`Redacted`]) and never shows
//!   in `Debug` output, logs or errors.

pub mod auth;
pub mod client;
pub mod error;
pub mod power;
pub mod props;
pub mod retry;
pub mod tls;
pub mod types;

pub use auth::{ApiToken, Redacted, TokenError};
pub use client::{BuildError, ClientOptions, CloneStarted, ProxmoxClient};
pub use error::{Capacity, Cause, ErrorKind, ProxmoxError, TaskExit};
pub use power::VmState;
pub use props::{HostPci, Smbios1};
pub use retry::{RetryPolicy, TaskPolling};
pub use tls::TlsSetupError;
pub use types::{
    CloneRequest, CloudInit, ClusterStorage, ClusterVm, ConfigUpdate, DeleteOptions, GuestAddress,
    GuestInterface, NodeInfo, NodeStatus, NodeVm, PciMapEntry, PciMapping, PoolInfo,
    ShutdownOptions, TaskLogLine, TaskStatus, Upid, Version, VmConfig, VmStatus,
};
