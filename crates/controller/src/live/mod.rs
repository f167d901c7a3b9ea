//! The ports implemented over the production clients: Proxmox VE for the
//! hypervisor, Talos (API apply or nocloud) for joining, Kubernetes for
//! nodes and claims.

pub mod connect;
pub mod join;
pub mod kube;
pub mod pve;
pub mod snapshot;
