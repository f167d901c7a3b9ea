//! Applying a machine configuration to a node in maintenance mode, as
//! `talosctl apply-config --insecure` does.
//!
//! A node without a configuration serves the maintenance API on port
//! 50000 with a certificate from an ephemeral CA it generated at boot, and
//! asks for no client certificate. There is no CA to verify against, so:
//!
//! - **with a pin** ([`Sha256Fingerprint`]) the server certificate must
//!   match it (whole certificate or its public key, see the type), else
//!   [`TalosError::FingerprintMismatch`] and nothing is sent;
//! - **without a pin** any certificate is accepted — trust on first use.
//!   The connection is still encrypted, but a machine that answers on the
//!   address in place of the intended one (address reuse, a spoofed DHCP
//!   lease, a man in the middle on the path) receives the configuration,
//!   and with it the cluster's join secrets (`machine.token`,
//!   `cluster.token`, the CA certificates). Use this only on a network you
//!   trust between the VM's creation and the apply, or pin the fingerprint
//!   the node prints on its console (or read it once with
//!   [`probe_maintenance_certificate`] over a trusted path).
//!
//! The handshake signature is always checked against the presented
//! certificate's key, so a pinned key cannot be replayed without its
//! private half.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_talos_proto::machine::machine_service_client::MachineServiceClient;
use tidepool_talos_proto::machine::{ApplyConfigurationRequest, apply_configuration_request};

use crate::error::TalosError;
use crate::tls::{
    HandshakeRecord, PresentedCertificate, Sha256Fingerprint, Target, connect, maintenance_config,
};

/// How a configuration is applied, as Talos' `ApplyConfigurationRequest.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Apply and reboot.
    Reboot,
    /// Let the node decide (talosctl's default).
    Auto,
    /// Apply without a reboot (refused if the change needs one).
    NoReboot,
    /// Store for the next reboot.
    Staged,
    /// Apply without a reboot and roll back after a timeout.
    Try,
}

impl ApplyMode {
    pub(crate) fn to_proto(self) -> apply_configuration_request::Mode {
        use apply_configuration_request::Mode as M;
        match self {
            ApplyMode::Reboot => M::Reboot,
            ApplyMode::Auto => M::Auto,
            ApplyMode::NoReboot => M::NoReboot,
            ApplyMode::Staged => M::Staged,
            ApplyMode::Try => M::Try,
        }
    }

    pub(crate) fn from_proto(raw: i32) -> Self {
        use apply_configuration_request::Mode as M;
        match M::try_from(raw).unwrap_or(M::Reboot) {
            M::Reboot => ApplyMode::Reboot,
            M::Auto => ApplyMode::Auto,
            M::NoReboot => ApplyMode::NoReboot,
            M::Staged => ApplyMode::Staged,
            M::Try => ApplyMode::Try,
        }
    }
}

/// What the node said about an accepted configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Validation warnings.
    pub warnings: Vec<String>,
    /// The mode the node used (maintenance mode leaves it at `Reboot`, the
    /// wire default).
    pub mode: ApplyMode,
    /// Details of the mode (the diff of a dry run).
    pub mode_details: String,
}

/// Applies `config` to the node at `ip:port` in maintenance mode (mode
/// `auto`), over TLS without a client certificate.
///
/// # Errors
/// - [`TalosError::NotReady`] (retryable): nothing listens yet, or the
///   node is between states;
/// - [`TalosError::Timeout`] (retryable): no answer within `timeout`
///   (connect and call each);
/// - [`TalosError::FingerprintMismatch`]: `pin` given and not matched;
///   nothing was sent;
/// - [`TalosError::ConfigRejected`]: the node refused the configuration;
/// - [`TalosError::Unimplemented`]: the node is not in maintenance mode
///   (a configured node asks for a client certificate and fails the
///   handshake instead: [`TalosError::Tls`]).
pub async fn apply_maintenance(
    ip: IpAddr,
    port: u16,
    config: &[u8],
    pin: Option<Sha256Fingerprint>,
    timeout: Duration,
) -> Result<ApplyOutcome, TalosError> {
    let Session {
        target,
        endpoint,
        record,
        tls,
    } = Session::new(ip, port, pin)?;
    let channel = connect(&target, tls, timeout, pin.map(|p| (&record, p))).await?;
    if pin.is_none() {
        let fingerprint = record
            .lock()
            .ok()
            .and_then(|r| r.presented.as_ref().map(|p| p.sha256.to_string()));
        tracing::warn!(
            %endpoint,
            fingerprint = fingerprint.as_deref().unwrap_or("unknown"),
            "applying a machine config without a pinned server certificate (trust on first use)"
        );
    }
    let mut client = MachineServiceClient::new(channel).max_decoding_message_size(32 << 20);
    let request = ApplyConfigurationRequest {
        data: config.to_vec(),
        mode: ApplyMode::Auto.to_proto() as i32,
        dry_run: false,
        try_mode_timeout: None,
    };
    let reply = tokio::time::timeout(timeout, client.apply_configuration(request))
        .await
        .map_err(|_| TalosError::Timeout {
            operation: "ApplyConfiguration".to_owned(),
            endpoint: endpoint.clone(),
            timeout,
        })?
        .map_err(|status| TalosError::from_status(&endpoint, "ApplyConfiguration", &status))?
        .into_inner();
    let message = reply.messages.into_iter().next();
    if let Some(error) = message
        .as_ref()
        .and_then(|m| m.metadata.as_ref())
        .filter(|m| !m.error.is_empty())
    {
        return Err(TalosError::ConfigRejected {
            message: error.error.clone(),
        });
    }
    let outcome = message.map_or(
        ApplyOutcome {
            warnings: Vec::new(),
            mode: ApplyMode::Reboot,
            mode_details: String::new(),
        },
        |m| ApplyOutcome {
            warnings: m.warnings,
            mode: ApplyMode::from_proto(m.mode),
            mode_details: m.mode_details,
        },
    );
    tracing::info!(%endpoint, warnings = outcome.warnings.len(), "machine config applied in maintenance mode");
    Ok(outcome)
}

/// What a connection to the maintenance API at one address starts from.
struct Session {
    /// Where the API listens.
    target: Target,
    /// The address as errors and logs show it.
    endpoint: String,
    /// What the handshake saw of the server's certificate.
    record: Arc<Mutex<HandshakeRecord>>,
    /// The TLS client configuration, checking `pin` when there is one.
    tls: rustls::ClientConfig,
}

impl Session {
    fn new(ip: IpAddr, port: u16, pin: Option<Sha256Fingerprint>) -> Result<Self, TalosError> {
        let target = Target {
            host: ip.to_string(),
            port,
        };
        let endpoint = target.display();
        let record = Arc::new(Mutex::new(HandshakeRecord::default()));
        let tls = maintenance_config(pin, record.clone())?;
        Ok(Self {
            target,
            endpoint,
            record,
            tls,
        })
    }
}

/// Reads the certificate the maintenance API at `ip:port` presents,
/// without sending anything — to show or record its fingerprint (trust on
/// first use), or to pin it for the apply.
///
/// # Errors
/// [`TalosError::NotReady`], [`TalosError::Timeout`] or
/// [`TalosError::Tls`] when no handshake completes.
pub async fn probe_maintenance_certificate(
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<PresentedCertificate, TalosError> {
    let Session {
        endpoint,
        record,
        tls,
        ..
    } = Session::new(ip, port, None)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
        connector
            .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
            .await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(TalosError::Timeout {
            operation: "TLS handshake".to_owned(),
            endpoint,
            timeout,
        }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(TalosError::NotReady {
                endpoint,
                message: e.to_string(),
            })
        }
        Ok(Err(e)) => Err(TalosError::Tls {
            endpoint,
            message: e.to_string(),
        }),
        Ok(Ok(_stream)) => record
            .lock()
            .ok()
            .and_then(|r| r.presented.clone())
            .ok_or_else(|| TalosError::Tls {
                endpoint,
                message: "the server presented no certificate".to_owned(),
            }),
    }
}
