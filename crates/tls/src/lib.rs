//! Server-certificate checks that replace chain validation, for the clients
//! that cannot use a CA: a Proxmox API pinned by fingerprint, a Talos
//! machine in maintenance mode (self-signed, trust on first use).
//!
//! [`CustomVerifier`] runs a [`CertificateCheck`] on the server's leaf
//! certificate instead of building a chain, and still verifies the
//! handshake signatures with the crypto provider's algorithms, so a server
//! must hold the private key of the certificate it presents.

use std::fmt::Debug;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Decides whether a server's leaf certificate is acceptable.
pub trait CertificateCheck: Debug + Send + Sync {
    /// `Ok` to accept the certificate.
    ///
    /// # Errors
    /// The TLS error that aborts the handshake.
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error>;
}

/// Accepts any certificate. Only for modes the user asked for explicitly
/// (`insecureSkipVerify`) or that cannot be verified otherwise (a first
/// contact with a machine in maintenance mode).
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAny;

impl CertificateCheck for AcceptAny {
    fn check(&self, _end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        Ok(())
    }
}

/// A rustls verifier running `C` on the leaf certificate.
#[derive(Debug)]
pub struct CustomVerifier<C> {
    check: C,
    provider: Arc<CryptoProvider>,
}

impl<C: CertificateCheck> CustomVerifier<C> {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(check: C, provider: Arc<CryptoProvider>) -> Self {
        Self { check, provider }
    }

    /// The check.
    pub fn check(&self) -> &C {
        &self.check
    }
}

impl<C: CertificateCheck> ServerCertVerifier for CustomVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
