//! Tidepool's Talos side: rendering a worker's machine configuration from
//! the user's base `worker.yaml`, applying it to a node in maintenance
//! mode, talking to configured nodes over mutual TLS from a talosconfig,
//! and serving nocloud user-data.
//!
//! Every TLS connection uses rustls with the ring provider; install it as
//! the process default
//! (`rustls::crypto::ring::default_provider().install_default()`) at the
//! start of `main`, as the rest of Tidepool does.

pub mod client;
pub mod error;
pub mod maintenance;
pub mod nocloud;
pub mod render;
pub mod talosconfig;
pub mod tls;

pub use client::{RebootMode, ResetOptions, ServiceStatus, TalosClient, VersionInfo, WipeMode};
pub use error::{ErrorKind, TalosError};
pub use maintenance::{ApplyMode, ApplyOutcome, apply_maintenance, probe_maintenance_certificate};
pub use nocloud::{
    DEFAULT_KUBEADM_TEMPLATE, KubeadmVars, NocloudError, NocloudOptions, NocloudServer,
    Registration, render_kubeadm_cloud_config, render_template, smbios_serial,
    smbios_serial_base64,
};
pub use render::{RenderError, WorkerIdentity, render_worker_config};
pub use talosconfig::{TalosContext, Talosconfig, TalosconfigError};
pub use tls::{PresentedCertificate, Sha256Fingerprint};
