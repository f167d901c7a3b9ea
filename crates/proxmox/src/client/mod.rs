//! [`ProxmoxClient`]: building a client, and the retry rules its calls
//! follow. The request path (auth header, envelope, error classification,
//! tracing span) is in `call`; the typed calls are grouped by API area in
//! `cluster`, `vms`, `tasks` and `agent`.
//!
//! # Which calls are retried
//!
//! Only [`ProxmoxError::Transient`] failures are retried, at most
//! [`RetryPolicy::max_attempts`] times with jittered exponential backoff:
//!
//! | call | retried | why it is safe |
//! |---|---|---|
//! | every `GET` | yes | reads have no effect |
//! | `PUT …/config`, `POST …/config` | yes | the update sets absolute values; applying it twice gives the same config (`delete=` of a gone key is accepted) |
//! | `PUT /pools` membership | yes | adding or removing the same members again changes nothing |
//! | `DELETE …/qemu/{vmid}` | **no** | by the time of a repeat the VMID may hold another VM: the caller checks identity again (VMID, SMBIOS UUID, marker) before it sends the delete again |
//! | `status/start`, `shutdown`, `stop`, `reboot` | yes | a repeated power action starts a second task that ends OK (stop, shutdown) or fails "already running" (start); callers confirm with `status/current` |
//! | `POST …/clone` | **not blindly** | see [`ProxmoxClient::clone_vm`] |
//!
//! A clone is never retried blindly: if its answer is lost after the
//! server accepted it, a second clone to a *new* id would leave two VMs.
//! After a transient failure the client first looks for the new VMID; if it
//! exists the clone was accepted ([`CloneStarted::Accepted`]), and only if
//! it does not is the clone sent again, with the same `newid`, so the worst
//! case is the server refusing it with "config file already exists", which
//! is read as acceptance too.

mod agent;
mod call;
mod cluster;
mod tasks;
mod vms;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::HeaderValue;
use tidepool_core::config::{ProxmoxProvider, TlsVerify};
use url::Url;

use crate::auth::{ApiToken, TokenError};
use crate::retry::{RetryPolicy, TaskPolling};
use crate::tls::{self, TlsSetupError};
use crate::types::Upid;

/// Tunables of a client.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientOptions {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Polling cadence of task waits.
    pub polling: TaskPolling,
    /// Limit of one HTTP request, connect to last byte. Must exceed the
    /// server's 10 s config-lock wait and its 3 s delay on a bad token.
    pub request_timeout: Duration,
    /// Limit of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            polling: TaskPolling::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The token could not be resolved.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The endpoint is not an `https://` URL.
    #[error("Proxmox endpoint '{0}' is not an https:// URL")]
    Endpoint(String),
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// The result of starting a clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneStarted {
    /// The server answered with the clone task.
    Task(Upid),
    /// The answer was lost, but the new VM exists (or the server said its
    /// config already exists on a repeat): the clone was accepted and runs
    /// under a task whose UPID is unknown. Wait for the VM's `clone` lock to
    /// clear, as [`ProxmoxClient::clone_and_wait`] does.
    Accepted {
        /// The new VM id.
        vmid: u32,
    },
}

/// A typed Proxmox VE API client. Cheap to clone; share one per cluster.
#[derive(Clone)]
pub struct ProxmoxClient {
    http: reqwest::Client,
    base: Url,
    token: ApiToken,
    auth: HeaderValue,
    options: ClientOptions,
}

impl fmt::Debug for ProxmoxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxClient")
            .field("base", &self.base.as_str())
            .field("token", &self.token)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProxmoxClient {
    /// A client for `endpoint` (`https://host:8006`, with or without the
    /// `/api2/json` suffix) authenticating with `token`. Relative CA file
    /// paths are taken from `base_dir`.
    ///
    /// # Errors
    /// [`BuildError`] for a non-https endpoint, unusable TLS settings or a
    /// token that cannot go into a header.
    pub fn new(
        endpoint: &str,
        token: ApiToken,
        tls: &TlsVerify,
        base_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        let bad = || BuildError::Endpoint(endpoint.to_owned());
        let mut base = Url::parse(endpoint).map_err(|_| bad())?;
        if base.scheme() != "https" || base.cannot_be_a_base() {
            return Err(bad());
        }
        let path = base.path().trim_end_matches('/').to_owned();
        let path = if path.ends_with("/api2/json") {
            path
        } else {
            format!("{path}/api2/json")
        };
        base.set_path(&path);
        base.set_query(None);
        let config = tls::client_config(tls, base_dir)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .http1_only()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("tidepool-proxmox/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BuildError::Http)?;
        let mut auth = HeaderValue::from_str(&token.header_value()).map_err(|_| {
            BuildError::Token(TokenError::Malformed {
                origin: "value".to_owned(),
            })
        })?;
        auth.set_sensitive(true);
        Ok(Self {
            http,
            base,
            token,
            auth,
            options,
        })
    }

    /// A client for a configured provider, resolving its token from the
    /// environment or a file (relative to `base_dir`).
    ///
    /// # Errors
    /// As [`ProxmoxClient::new`]; [`TokenError::SecretRef`] for a
    /// Kubernetes Secret reference, which needs
    /// [`ProxmoxClient::from_provider_with_token`].
    pub fn from_provider(
        provider: &ProxmoxProvider,
        base_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        let token = ApiToken::resolve(&provider.token, base_dir)?;
        Self::from_provider_with_token(provider, token, base_dir, options)
    }

    /// A client for a configured provider with a token the caller resolved
    /// (e.g. from a Kubernetes Secret).
    ///
    /// # Errors
    /// As [`ProxmoxClient::new`].
    pub fn from_provider_with_token(
        provider: &ProxmoxProvider,
        token: ApiToken,
        base_dir: &Path,
        options: ClientOptions,
    ) -> Result<Self, BuildError> {
        Self::new(&provider.endpoint, token, &provider.tls, base_dir, options)
    }

    /// The API base URL, ending in `/api2/json`.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The token id this client authenticates as.
    pub fn token_id(&self) -> &str {
        self.token.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_without_the_api_suffix_gets_it_and_http_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = ApiToken::parse("root@pam!tp=s3cr3t-value").unwrap();
        let c = ProxmoxClient::new(
            "https://pve.example:8006/",
            token.clone(),
            &TlsVerify::InsecureSkipVerify,
            Path::new("."),
            ClientOptions::default(),
        )
        .unwrap();
        assert_eq!(c.base_url().as_str(), "https://pve.example:8006/api2/json");
        assert!(!format!("{c:?}").contains("s3cr3t-value"));
        let plain = ProxmoxClient::new(
            "http://pve.example:8006",
            token,
            &TlsVerify::InsecureSkipVerify,
            Path::new("."),
            ClientOptions::default(),
        );
        assert!(matches!(plain, Err(BuildError::Endpoint(_))));
    }
}
