//! Tidepool's Kubernetes adapter, built on kube-rs.
//!
//! - [`claim`]: the `WorkerClaim` custom resource, the durable record of
//!   each worker, and its generated CRD;
//! - [`client`]: [`ClusterClient`], with watch-fed node and pod caches
//!   ([`cache`]) and node operations (labels, taints, cordon, delete);
//! - [`pods`]: what the pod cache keeps of each pod (the planner's view);
//! - [`drain`]: draining a node through the Eviction API;
//! - [`claims`]: reading and writing worker claims;
//! - [`events`]: the Events that form the audit trail;
//! - [`pool_records`]: each pool's durable record, a ConfigMap written
//!   with a resourceVersion precondition;
//! - [`nodes`]: what the node cache keeps of each node;
//! - [`storage`]: the storage objects of the volume-attach ceiling
//!   (CSINodes, classes, volumes, claims, VolumeAttachments);
//! - [`error`]: the error type and its stable categories.
//!
//! The library enables no Kubernetes version feature of `k8s-openapi`; the
//! binary that links it chooses one.

pub mod cache;
pub mod claim;
pub mod claims;
pub mod client;
pub mod drain;
pub mod error;
pub mod events;
pub mod nodes;
pub mod pods;
pub mod pool_records;
pub mod storage;

pub use cache::Cache;
pub use claim::{FINALIZER, WorkerClaim, WorkerClaimSpec};
pub use client::{
    ClusterClient, ClusterOptions, Deletion, client_from_kubeconfig, client_in_cluster,
};
pub use drain::{DrainError, DrainOptions, DrainReport};
pub use error::{ClusterError, ErrorCategory};
pub use events::{EventRecord, EventTarget, EventType};
pub use pods::{CachedPod, PodPhase};
