//! The error type of the Kubernetes adapter and its stable categories.
//!
//! Every failed API call becomes a [`ClusterError`] naming the operation;
//! the kube-rs error stays in `source`. [`ClusterError::category`] maps it
//! to a small, bounded set the controller uses to decide between retrying,
//! failing and ignoring, and that metrics and Events use as a label.

use std::fmt;

/// A bounded classification of failures, stable for metrics and Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// The object does not exist (HTTP 404).
    NotFound,
    /// An object of that name already exists (HTTP 409, reason AlreadyExists).
    AlreadyExists,
    /// A write lost a race with another writer (HTTP 409); re-read and retry.
    Conflict,
    /// The credentials are missing or lack the permission (HTTP 401/403).
    Forbidden,
    /// The request was malformed or refused by validation (HTTP 400/422).
    Invalid,
    /// Worth retrying: throttling, server errors, connection trouble.
    Transient,
    /// A deadline passed before the operation finished.
    Timeout,
    /// The operation is refused by a policy (a disruption budget, a
    /// do-not-disrupt annotation) until something changes.
    Blocked,
    /// The client could not be configured (kubeconfig, in-cluster environment).
    Config,
    /// Anything else; a bug or an unexpected answer.
    Internal,
}

impl ErrorCategory {
    /// The category's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::AlreadyExists => "AlreadyExists",
            Self::Conflict => "Conflict",
            Self::Forbidden => "Forbidden",
            Self::Invalid => "Invalid",
            Self::Transient => "Transient",
            Self::Timeout => "Timeout",
            Self::Blocked => "Blocked",
            Self::Config => "Config",
            Self::Internal => "Internal",
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Conflict | Self::Transient | Self::Timeout)
    }

    /// Classifies an error returned by kube-rs.
    pub fn of_kube(error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::of_status(status.code, &status.reason),
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::HttpError(_) => Self::Transient,
            kube::Error::Auth(_) => Self::Forbidden,
            kube::Error::InferConfig(_)
            | kube::Error::InferKubeconfig(_)
            | kube::Error::RustlsTls(_)
            | kube::Error::TlsRequired
            | kube::Error::ProxyProtocolUnsupported { .. }
            | kube::Error::ProxyProtocolDisabled { .. } => Self::Config,
            _ => Self::Internal,
        }
    }

    /// Classifies an API status by HTTP code and reason.
    pub fn of_status(code: u16, reason: &str) -> Self {
        match code {
            404 => Self::NotFound,
            409 if reason == "AlreadyExists" => Self::AlreadyExists,
            409 => Self::Conflict,
            401 | 403 => Self::Forbidden,
            400 | 405 | 406 | 415 | 422 => Self::Invalid,
            408 | 504 => Self::Timeout,
            410 | 429 | 500..=599 => Self::Transient,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of the Kubernetes adapter.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An API request failed; `operation` says which, for example
    /// `"patching labels of node worker-1"`.
    #[error("{operation}")]
    Api {
        /// What was being done, with the object it was done to.
        operation: String,
        /// The kube-rs error.
        #[source]
        source: kube::Error,
    },
    /// Reading the kubeconfig file failed.
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Building a client from the in-cluster environment failed.
    #[error("configuring the in-cluster Kubernetes client")]
    InCluster(#[source] kube::config::InClusterError),
    /// The caches had not finished their first list before the deadline.
    #[error("the node and pod caches did not sync within {0:?}")]
    NotSynced(std::time::Duration),
    /// A value could not be turned into a request body.
    #[error("encoding {what}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value could not be read back.
    #[error("decoding {what}")]
    Decode {
        /// What was being decoded, naming the object.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The object disappeared between reading and writing it.
    #[error("{operation}: the object was deleted meanwhile")]
    Vanished {
        /// What was being done.
        operation: String,
    },
    /// A write kept losing races with other writers.
    #[error("{operation}: still conflicting after {attempts} attempts")]
    ConflictRetriesExhausted {
        /// What was being done.
        operation: String,
        /// How many attempts were made.
        attempts: u32,
    },
}

impl ClusterError {
    /// Wraps a kube-rs error with the operation that failed.
    pub fn api(operation: impl Into<String>, source: kube::Error) -> Self {
        Self::Api {
            operation: operation.into(),
            source,
        }
    }

    /// The error's category, for retry decisions, metrics and Events.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Api { source, .. } => ErrorCategory::of_kube(source),
            Self::Kubeconfig { .. } | Self::InCluster(_) => ErrorCategory::Config,
            Self::NotSynced(_) => ErrorCategory::Timeout,
            Self::Encode { .. } | Self::Decode { .. } => ErrorCategory::Internal,
            Self::ConflictRetriesExhausted { .. } => ErrorCategory::Conflict,
            Self::Vanished { .. } => ErrorCategory::NotFound,
        }
    }

    /// Whether the error says the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.category() == ErrorCategory::NotFound
    }

    /// The HTTP status code of a failed API call, if the server answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_the_categories_the_controller_acts_on() {
        assert_eq!(
            ErrorCategory::of_status(404, "NotFound"),
            ErrorCategory::NotFound
        );
        assert_eq!(
            ErrorCategory::of_status(409, "AlreadyExists"),
            ErrorCategory::AlreadyExists
        );
        assert_eq!(
            ErrorCategory::of_status(409, "Conflict"),
            ErrorCategory::Conflict
        );
        assert_eq!(
            ErrorCategory::of_status(403, "Forbidden"),
            ErrorCategory::Forbidden
        );
        assert_eq!(
            ErrorCategory::of_status(422, "Invalid"),
            ErrorCategory::Invalid
        );
        assert_eq!(
            ErrorCategory::of_status(429, "TooManyRequests"),
            ErrorCategory::Transient
        );
        assert_eq!(
            ErrorCategory::of_status(503, "ServiceUnavailable"),
            ErrorCategory::Transient
        );
        assert_eq!(
            ErrorCategory::of_status(410, "Expired"),
            ErrorCategory::Transient
        );
        assert!(ErrorCategory::Conflict.is_retryable());
        assert!(!ErrorCategory::Invalid.is_retryable());
    }
}
