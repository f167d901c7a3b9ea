//! Tidepool's wire-compatible subset of the Talos machine API protobufs,
//! with tonic clients and servers.
//!
//! The `.proto` files under `proto/` are our own, written to match real
//! Talos on the wire: the package names (`machine`, `common`, `cluster`),
//! service and method names, field numbers and wire types are those of
//! Talos v1.8 through v1.13. Message names match too, but only the wire
//! format matters to a peer.
//!
//! Every unary reply has the shape `XxxResponse { repeated Xxx messages = 1 }`
//! with `Xxx { common.Metadata metadata = 1; ... }`: a node answering
//! directly leaves `metadata` unset, while apid fanning a call out to the
//! nodes named in the `nodes` request header sets `metadata.hostname` (and
//! `metadata.error` for a node that failed) in each message.
//!
//! `google.protobuf.Empty` requests map to `()`; other well-known types
//! come from `prost-types`.

/// Messages shared by every Talos API: the reply [`common::Metadata`].
#[allow(missing_docs)]
pub mod common {
    tonic::include_proto!("common");
}

/// The machine API: `machine.MachineService` messages, its client
/// ([`machine::machine_service_client::MachineServiceClient`]) and server
/// ([`machine::machine_service_server::MachineServiceServer`]).
#[allow(missing_docs)]
pub mod machine {
    tonic::include_proto!("machine");
}

/// The cluster health API: `cluster.ClusterService/HealthCheck`.
#[allow(missing_docs)]
pub mod cluster {
    tonic::include_proto!("cluster");
}

/// Google's shared protos that Talos imports.
pub mod google {
    /// A vendored three-field copy of `google.rpc.Status`.
    #[allow(missing_docs)]
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The gRPC path of a `machine.MachineService` method, e.g.
/// `/machine.MachineService/ApplyConfiguration`.
pub fn machine_method_path(method: &str) -> String {
    format!("/machine.MachineService/{method}")
}
