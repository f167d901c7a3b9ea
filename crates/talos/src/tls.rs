//! TLS for the Talos API: the server-only TLS of maintenance mode (with an
//! optional SHA-256 pin, trust on first use otherwise), the mutual TLS of a
//! configured node, and the tonic channel built over either.
//!
//! Both use rustls with the ring provider: Talos' certificates and keys
//! are Ed25519, which ring signs and verifies.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidepool_tls::{CertificateCheck, CustomVerifier};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};

use crate::error::TalosError;

/// A SHA-256 fingerprint a server certificate is pinned to.
///
/// A pin matches a certificate when it equals the SHA-256 of the
/// certificate (DER, what `openssl x509 -fingerprint -sha256` prints) or of
/// its SubjectPublicKeyInfo (what the Talos console prints for the
/// maintenance API and `talosctl --cert-fingerprint` takes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Fingerprint([u8; 32]);

impl Sha256Fingerprint {
    /// The fingerprint of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses hex (64 digits, `:` separators allowed, any case) or
    /// standard base64 (44 characters, as Talos prints SPKI fingerprints).
    ///
    /// # Errors
    /// [`TalosError::Setup`] when the text is neither.
    pub fn parse(text: &str) -> Result<Self, TalosError> {
        let text = text.trim();
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|e| TalosError::Setup(format!("fingerprint: {e}")))?;
            }
            return Ok(Self(out));
        }
        let bytes = STANDARD.decode(text).map_err(|_| {
            TalosError::Setup(format!(
                "fingerprint {text:?} is neither 64 hex digits nor base64 of 32 bytes"
            ))
        })?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TalosError::Setup(format!("fingerprint {text:?} is not 32 bytes long")))?;
        Ok(Self(digest))
    }

    /// The base64 form the Talos console prints.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Display for Sha256Fingerprint {
    /// Lowercase hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Fingerprint({self})")
    }
}

impl std::str::FromStr for Sha256Fingerprint {
    type Err = TalosError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The certificate a server presented in a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresentedCertificate {
    /// The leaf certificate, DER.
    pub der: Vec<u8>,
    /// SHA-256 of the DER certificate.
    pub sha256: Sha256Fingerprint,
    /// SHA-256 of its SubjectPublicKeyInfo (`None` if the certificate does
    /// not parse).
    pub spki_sha256: Option<Sha256Fingerprint>,
}

impl PresentedCertificate {
    pub(crate) fn new(der: &[u8]) -> Self {
        let spki_sha256 = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| Sha256Fingerprint::of(cert.tbs_certificate.subject_pki.raw));
        Self {
            der: der.to_vec(),
            sha256: Sha256Fingerprint::of(der),
            spki_sha256,
        }
    }

    /// Whether `pin` names this certificate (whole or by its key).
    pub fn matches(&self, pin: &Sha256Fingerprint) -> bool {
        self.sha256 == *pin || self.spki_sha256.as_ref() == Some(pin)
    }
}

/// What a handshake saw, for turning connector failures into typed errors.
#[derive(Debug, Default)]
pub(crate) struct HandshakeRecord {
    pub(crate) presented: Option<PresentedCertificate>,
    pub(crate) pin_mismatch: bool,
}

/// The maintenance-mode verifier: accepts the server certificate without a
/// chain (the maintenance CA is ephemeral and unknown), but still checks
/// the handshake signature against the certificate's key — so a pin on the
/// certificate or its key really identifies the peer.
#[derive(Debug)]
pub(crate) struct MaintenanceVerifier {
    pin: Option<Sha256Fingerprint>,
    record: Arc<Mutex<HandshakeRecord>>,
}

impl MaintenanceVerifier {
    pub(crate) fn new(pin: Option<Sha256Fingerprint>, record: Arc<Mutex<HandshakeRecord>>) -> Self {
        Self { pin, record }
    }
}

impl CertificateCheck for MaintenanceVerifier {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let presented = PresentedCertificate::new(end_entity.as_ref());
        let mismatch = self.pin.is_some_and(|pin| !presented.matches(&pin));
        if let Ok(mut record) = self.record.lock() {
            record.presented = Some(presented);
            record.pin_mismatch = mismatch;
        }
        if mismatch {
            return Err(rustls::Error::General(
                "server certificate does not match the pinned fingerprint".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The ring provider, shared.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client config for maintenance mode: no client certificate,
/// [`MaintenanceVerifier`].
pub(crate) fn maintenance_config(
    pin: Option<Sha256Fingerprint>,
    record: Arc<Mutex<HandshakeRecord>>,
) -> Result<rustls::ClientConfig, TalosError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TalosError::Setup(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CustomVerifier::new(
            MaintenanceVerifier::new(pin, record),
            provider,
        )))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Where to dial: the address and the name the certificate must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Target {
    pub(crate) fn display(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    fn server_name(&self) -> Result<ServerName<'static>, TalosError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        ServerName::try_from(self.host.clone()).map_err(|e| TalosError::InvalidEndpoint {
            endpoint: self.host.clone(),
            message: e.to_string(),
        })
    }
}

/// Opens a gRPC channel to `target` over TLS with `config`, eagerly (the
/// handshake happens here), within `timeout`.
///
/// # Errors
/// [`TalosError::NotReady`] when the node refuses or resets the
/// connection, [`TalosError::Timeout`], [`TalosError::FingerprintMismatch`]
/// when `record` says the pin failed, [`TalosError::Tls`] for other
/// handshake failures.
pub(crate) async fn connect(
    target: &Target,
    config: rustls::ClientConfig,
    timeout: Duration,
    record: Option<(&Arc<Mutex<HandshakeRecord>>, Sha256Fingerprint)>,
) -> Result<Channel, TalosError> {
    let endpoint_name = target.display();
    let server_name = target.server_name()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let host = target.host.clone();
    let port = target.port;
    let endpoint = Endpoint::from_shared(format!("http://{endpoint_name}"))
        .map_err(|e| TalosError::InvalidEndpoint {
            endpoint: endpoint_name.clone(),
            message: e.to_string(),
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let host = host.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    }));
    let result = tokio::time::timeout(timeout, connecting).await;
    let error = match result {
        Ok(Ok(channel)) => return Ok(channel),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(TalosError::Timeout {
                operation: "connect".to_owned(),
                endpoint: endpoint_name,
                timeout,
            });
        }
    };
    if let Some((record, pin)) = record
        && let Ok(record) = record.lock()
        && record.pin_mismatch
    {
        let actual = record
            .presented
            .as_ref()
            .map(|p| p.sha256.to_string())
            .unwrap_or_default();
        return Err(TalosError::FingerprintMismatch {
            endpoint: endpoint_name,
            expected: pin.to_string(),
            actual,
        });
    }
    Err(classify_transport_error(&endpoint_name, &error))
}

/// Turns a failed connection (at connect or under a call) into
/// [`TalosError::NotReady`] (refused, reset, unreachable),
/// [`TalosError::Timeout`] or [`TalosError::Tls`] (a TLS alert, e.g. the
/// server requiring a client certificate).
pub(crate) fn classify_transport_error(
    endpoint: &str,
    error: &(dyn std::error::Error + 'static),
) -> TalosError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        chain.push(e.to_string());
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused
                | K::ConnectionReset
                | K::ConnectionAborted
                | K::NotConnected
                | K::AddrNotAvailable
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::BrokenPipe
                | K::UnexpectedEof => {
                    return TalosError::NotReady {
                        endpoint: endpoint.to_owned(),
                        message: io.to_string(),
                    };
                }
                K::TimedOut => {
                    return TalosError::Timeout {
                        operation: "connect".to_owned(),
                        endpoint: endpoint.to_owned(),
                        timeout: Duration::ZERO,
                    };
                }
                _ => {}
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return TalosError::Tls {
                    endpoint: endpoint.to_owned(),
                    message: io.to_string(),
                };
            }
        }
        if e.downcast_ref::<rustls::Error>().is_some() {
            return TalosError::Tls {
                endpoint: endpoint.to_owned(),
                message: e.to_string(),
            };
        }
        source = e.source();
    }
    let message = chain.join(": ");
    // h2 keeps only the kind and text of an I/O error, so a TLS alert that
    // arrives under an open HTTP/2 connection is recognised by its text.
    let lower = message.to_lowercase();
    if ["alert", "certificate", "handshake"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return TalosError::Tls {
            endpoint: endpoint.to_owned(),
            message,
        };
    }
    TalosError::NotReady {
        endpoint: endpoint.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_from_hex_with_colons_and_from_base64() {
        let fp = Sha256Fingerprint::of(b"hello");
        let hex = fp.to_string();
        let colons: Vec<String> = (0..32)
            .map(|i| hex[2 * i..2 * i + 2].to_uppercase())
            .collect();
        assert_eq!(Sha256Fingerprint::parse(&colons.join(":")).unwrap(), fp);
        assert_eq!(Sha256Fingerprint::parse(&fp.to_base64()).unwrap(), fp);
        assert!(Sha256Fingerprint::parse("abc").is_err());
    }
}
