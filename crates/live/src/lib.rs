//! Tidepool's production adapters: the controller's ports implemented over
//! the three clients. Proxmox VE is the [`Hypervisor`](tidepool_controller::Hypervisor)
//! ([`pve`]); Talos, by API apply or nocloud user-data, the
//! [`Joiner`](tidepool_controller::Joiner) ([`join`]); Kubernetes the
//! [`Nodes`](tidepool_controller::Nodes), the
//! [`ClaimStore`](tidepool_controller::ClaimStore) and the pod
//! [`Events`](tidepool_controller::ports::Events) ([`kube`]); Talos the
//! workers' [`GuestOs`](tidepool_controller::ports::GuestOs) ([`guest`]). [`snapshot`]
//! observes all three for the planner (the volume-attach ceiling in
//! [`volumes`]), and [`connect`] builds the whole
//! stack from a configuration; [`doctor`] checks a setup read-only; [`dry_run`] has the adapters
//! of `tidepool run --dry-run`.

pub mod connect;
pub mod doctor;
pub mod dry_run;
pub mod guest;
pub mod join;
pub mod kube;
pub mod node_detail;
pub mod pve;
pub mod snapshot;
pub mod volumes;

pub use connect::{ConnectError, LiveExecutor, LiveOptions, LiveService, connect};
pub use snapshot::LiveObserver;
