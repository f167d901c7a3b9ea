//! The errors of talking to a Talos node (maintenance or configured API),
//! mapped from gRPC statuses and connection failures to what a caller
//! decides on: retry, give up, or fix the configuration. Callers decide on
//! [`TalosError::kind`]; [`TalosError::category`] is its stable name.

use std::time::Duration;

use tonic::Code;

/// What a failed call means to its caller, one arm per [`TalosError`]
/// variant: the value to `match` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The node does not answer yet.
    NotReady,
    /// The call did not finish in time.
    Timeout,
    /// The node refused the machine configuration.
    ConfigRejected,
    /// The client certificate's role may not call the method.
    PermissionDenied,
    /// The node does not serve the method in its current mode (a
    /// maintenance-mode method on a configured node, for one).
    Unimplemented,
    /// The server certificate is not the pinned one.
    FingerprintMismatch,
    /// The TLS handshake failed (on a maintenance apply: the node already
    /// asks for a client certificate, so it left maintenance mode).
    Tls,
    /// The node named in the request answered with an error.
    Node,
    /// The request was refused.
    Refused,
    /// The reply had no message for the node.
    EmptyReply,
    /// Another gRPC status.
    Status,
    /// The endpoint could not be used as given.
    InvalidEndpoint,
    /// The client could not be set up.
    Setup,
}

impl ErrorKind {
    /// The kind's stable name, for metrics and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReady => "not_ready",
            Self::Timeout => "timeout",
            Self::ConfigRejected => "config_rejected",
            Self::PermissionDenied => "permission_denied",
            Self::Unimplemented => "unimplemented",
            Self::FingerprintMismatch => "fingerprint_mismatch",
            Self::Tls => "tls",
            Self::Node => "node_error",
            Self::Refused => "refused",
            Self::EmptyReply => "empty_reply",
            Self::Status => "status",
            Self::InvalidEndpoint => "invalid_endpoint",
            Self::Setup => "setup",
        }
    }
}

/// Why a call to a Talos node failed.
#[derive(Debug, thiserror::Error)]
pub enum TalosError {
    /// The node does not answer yet (connection refused or reset, gRPC
    /// `Unavailable`): it is booting, rebooting or installing. Retryable.
    #[error("Talos API at {endpoint} is not ready: {message}")]
    NotReady {
        /// `ip:port` dialed.
        endpoint: String,
        /// What happened.
        message: String,
    },
    /// The call did not finish within its timeout. Retryable.
    #[error("{operation} on {endpoint} timed out after {timeout:?}")]
    Timeout {
        /// The RPC or step (`connect`, `ApplyConfiguration`, ...).
        operation: String,
        /// `ip:port` dialed.
        endpoint: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The node refused the machine configuration (gRPC `InvalidArgument`,
    /// or `Unknown` with Talos' "failed to parse config"). Not retryable
    /// with the same config.
    #[error("the node rejected the machine configuration: {message}")]
    ConfigRejected {
        /// Talos' message (the validation errors).
        message: String,
    },
    /// The client certificate's role may not call the method (gRPC
    /// `PermissionDenied`).
    #[error("{method} was denied by the node: {message}")]
    PermissionDenied {
        /// The RPC.
        method: String,
        /// Talos' message.
        message: String,
    },
    /// The node does not serve the method in its current mode (gRPC
    /// `Unimplemented`; e.g. `Version` in maintenance mode before v1.13).
    #[error("{method} is not available on the node: {message}")]
    Unimplemented {
        /// The RPC.
        method: String,
        /// Talos' message.
        message: String,
    },
    /// The server certificate does not have the pinned SHA-256
    /// fingerprint: possibly not the machine we mean to configure.
    #[error(
        "the server certificate of {endpoint} does not match the pinned fingerprint {expected} (it has {actual})"
    )]
    FingerprintMismatch {
        /// `ip:port` dialed.
        endpoint: String,
        /// The pin.
        expected: String,
        /// SHA-256 of the presented certificate (hex).
        actual: String,
    },
    /// The TLS handshake failed (untrusted server certificate, client
    /// certificate refused, protocol mismatch).
    #[error("TLS handshake with {endpoint} failed: {message}")]
    Tls {
        /// `ip:port` dialed.
        endpoint: String,
        /// The TLS library's description (never key material).
        message: String,
    },
    /// The node answered, but the reply for a node in the `nodes` header
    /// carries an error (apid's one-to-many proxying).
    #[error("node {node} failed {method}: {message}")]
    Node {
        /// The node as named in the request.
        node: String,
        /// The RPC.
        method: String,
        /// The node's error.
        message: String,
    },
    /// A service id unknown to the node or otherwise refused (gRPC
    /// `NotFound`, or Talos' plain errors such as "service doesn't support
    /// restart").
    #[error("{method} failed: {message}")]
    Refused {
        /// The RPC.
        method: String,
        /// Talos' message.
        message: String,
    },
    /// The reply had no message for the node.
    #[error("{method} returned an empty reply")]
    EmptyReply {
        /// The RPC.
        method: String,
    },
    /// Any other gRPC status.
    #[error("{method} failed with {code:?}: {message}")]
    Status {
        /// The RPC.
        method: String,
        /// The gRPC code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// The endpoint could not be used as given (bad address).
    #[error("invalid Talos endpoint {endpoint:?}: {message}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The client could not be set up (TLS material rejected by rustls).
    #[error("setting up the Talos client: {0}")]
    Setup(String),
}

impl TalosError {
    /// What the failure means to the caller: the value to decide on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TalosError::NotReady { .. } => ErrorKind::NotReady,
            TalosError::Timeout { .. } => ErrorKind::Timeout,
            TalosError::ConfigRejected { .. } => ErrorKind::ConfigRejected,
            TalosError::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            TalosError::Unimplemented { .. } => ErrorKind::Unimplemented,
            TalosError::FingerprintMismatch { .. } => ErrorKind::FingerprintMismatch,
            TalosError::Tls { .. } => ErrorKind::Tls,
            TalosError::Node { .. } => ErrorKind::Node,
            TalosError::Refused { .. } => ErrorKind::Refused,
            TalosError::EmptyReply { .. } => ErrorKind::EmptyReply,
            TalosError::Status { .. } => ErrorKind::Status,
            TalosError::InvalidEndpoint { .. } => ErrorKind::InvalidEndpoint,
            TalosError::Setup(_) => ErrorKind::Setup,
        }
    }

    /// A stable category string for metrics and Events: the kind's name.
    pub fn category(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            TalosError::NotReady { .. } | TalosError::Timeout { .. } => true,
            TalosError::Status { code, .. } => {
                matches!(code, Code::ResourceExhausted | Code::Aborted)
            }
            _ => false,
        }
    }

    /// Maps a gRPC status of `method` to an error. For
    /// `ApplyConfiguration`, `InvalidArgument` and Talos' `Unknown`
    /// "failed to parse config" mean the configuration was refused.
    pub(crate) fn from_status(endpoint: &str, method: &str, status: &tonic::Status) -> Self {
        // A status with a source was made on this side from a failed
        // connection, not sent by the node.
        if let Some(cause) = std::error::Error::source(status) {
            return crate::tls::classify_transport_error(endpoint, cause);
        }
        let message = status.message().to_owned();
        let method_s = method.to_owned();
        match status.code() {
            Code::Unavailable => TalosError::NotReady {
                endpoint: endpoint.to_owned(),
                message,
            },
            Code::DeadlineExceeded => TalosError::Timeout {
                operation: method_s,
                endpoint: endpoint.to_owned(),
                timeout: Duration::ZERO,
            },
            Code::InvalidArgument if method == "ApplyConfiguration" => {
                TalosError::ConfigRejected { message }
            }
            Code::Unknown
                if method == "ApplyConfiguration"
                    && message.starts_with("failed to parse config") =>
            {
                TalosError::ConfigRejected { message }
            }
            Code::PermissionDenied | Code::Unauthenticated => TalosError::PermissionDenied {
                method: method_s,
                message,
            },
            Code::Unimplemented => TalosError::Unimplemented {
                method: method_s,
                message,
            },
            Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument | Code::Unknown => {
                TalosError::Refused {
                    method: method_s,
                    message,
                }
            }
            code => TalosError::Status {
                method: method_s,
                code,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_a_retryable_not_ready() {
        let e = TalosError::from_status(
            "10.0.0.5:50000",
            "Version",
            &tonic::Status::unavailable("x"),
        );
        assert_eq!(e.category(), "not_ready");
        assert!(e.is_retryable());
    }

    #[test]
    fn a_parse_failure_of_an_apply_is_a_rejected_config() {
        let e = TalosError::from_status(
            "a",
            "ApplyConfiguration",
            &tonic::Status::unknown("failed to parse config: decode error"),
        );
        assert_eq!(e.category(), "config_rejected");
        assert!(!e.is_retryable());
    }

    #[test]
    fn grpc_statuses_map_to_kinds() {
        use ErrorKind as K;
        use tonic::Status as S;
        const APPLY: &str = "ApplyConfiguration";
        for (method, status, kind) in [
            ("Version", S::unavailable("connection refused"), K::NotReady),
            ("Version", S::deadline_exceeded("slow"), K::Timeout),
            (
                APPLY,
                S::invalid_argument("1 error occurred"),
                K::ConfigRejected,
            ),
            (
                APPLY,
                S::unknown("failed to parse config: x"),
                K::ConfigRejected,
            ),
            (APPLY, S::unknown("something else"), K::Refused),
            ("Reboot", S::permission_denied("no"), K::PermissionDenied),
            ("Reboot", S::unauthenticated("who"), K::PermissionDenied),
            ("Version", S::unimplemented("maintenance"), K::Unimplemented),
            (
                "ServiceRestart",
                S::not_found("no such service"),
                K::Refused,
            ),
            ("Reset", S::aborted("busy"), K::Status),
        ] {
            let e = TalosError::from_status("10.0.0.5:50000", method, &status);
            assert_eq!(e.kind(), kind, "{method} {status:?}");
            assert_eq!(e.category(), kind.as_str());
        }
    }

    #[test]
    fn invalid_argument_outside_apply_is_a_refusal() {
        let e = TalosError::from_status(
            "a",
            "Upgrade",
            &tonic::Status::invalid_argument("image is required"),
        );
        assert_eq!(e.category(), "refused");
    }
}
