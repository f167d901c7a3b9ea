//! TLS for the API connection, always with the ring provider (rust-stack
//! trap 2): verification against a CA file, against the system roots, by
//! pinning the SHA-256 fingerprint of the server's leaf certificate in
//! Proxmox's `AA:BB:…` form (facts §1.4), or, only when configured
//! explicitly, not at all, with a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tidepool_tls::{AcceptAny, CertificateCheck, CustomVerifier};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tidepool_core::config::TlsVerify;

/// Why the TLS settings could not be turned into a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no PEM certificate.
    #[error("TLS: cannot load CA certificates from {}", path.display())]
    CaFile {
        /// The resolved path.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The pinned fingerprint is not 32 colon-separated hex pairs.
    #[error("TLS: fingerprint '{0}' is not a SHA-256 fingerprint (32 hex pairs separated by ':')")]
    Fingerprint(String),
    /// No usable system trust root was found.
    #[error("TLS: no system trust roots could be loaded")]
    NoSystemRoots,
    /// rustls refused the configuration.
    #[error("TLS: invalid configuration")]
    Rustls(#[source] rustls::Error),
}

/// The SHA-256 fingerprint of a DER certificate, `AA:BB:…` upper-case.
pub fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `AA:BB:…` (either case) into 32 bytes.
fn parse_fingerprint(text: &str) -> Result<[u8; 32], TlsSetupError> {
    let bad = || TlsSetupError::Fingerprint(text.to_owned());
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (slot, part) in out.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Accepts exactly the server certificate whose SHA-256 matches the pin,
/// whatever issued it and whatever name it carries (Proxmox's default
/// certificate is self-signed by the cluster CA and often lacks the
/// address clients use). Handshake signatures are still verified by
/// [`CustomVerifier`].
#[derive(Debug)]
struct PinnedFingerprint {
    pin: [u8; 32],
}

impl CertificateCheck for PinnedFingerprint {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.pin {
            Ok(())
        } else {
            tracing::warn!(
                seen = %fingerprint_of(end_entity.as_ref()),
                "Proxmox server certificate does not match the pinned fingerprint"
            );
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let io = |source: std::io::Error| TlsSetupError::CaFile {
        path: path.to_owned(),
        source,
    };
    let pem = std::fs::read(path).map_err(io)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        roots.add(cert).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no PEM certificate found",
        )));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        return Err(TlsSetupError::NoSystemRoots);
    }
    Ok(roots)
}

/// Builds the rustls client configuration for `verify`; relative CA file
/// paths are taken from `base_dir`. ALPN offers HTTP/1.1 only, which is
/// what pveproxy speaks.
///
/// # Errors
/// [`TlsSetupError`] when the CA file, the fingerprint or the system roots
/// are unusable.
pub fn client_config(verify: &TlsVerify, base_dir: &Path) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?;
    let mut config = match verify {
        TlsVerify::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        TlsVerify::CaFile(file) => builder
            .with_root_certificates(load_ca_file(&base_dir.join(file))?)
            .with_no_client_auth(),
        TlsVerify::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CustomVerifier::new(
                PinnedFingerprint {
                    pin: parse_fingerprint(fp)?,
                },
                provider,
            )))
            .with_no_client_auth(),
        TlsVerify::InsecureSkipVerify => {
            tracing::warn!(
                "TLS certificate verification of the Proxmox API is DISABLED (insecureSkipVerify); \
                 anyone on the path can read the API token"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CustomVerifier::new(
                    AcceptAny, provider,
                )))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_either_case_and_refuse_other_shapes() {
        let upper = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&upper).unwrap(), [0xAB; 32]);
        assert_eq!(
            parse_fingerprint(&upper.to_ascii_lowercase()).unwrap(),
            [0xAB; 32]
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&vec!["ABC"; 32].join(":")).is_err());
        assert!(parse_fingerprint(&vec!["ZZ"; 32].join(":")).is_err());
    }

    #[test]
    fn the_fingerprint_format_matches_proxmox() {
        let fp = fingerprint_of(b"x");
        assert_eq!(fp.len(), 95);
        assert!(
            fp.chars()
                .all(|c| c == ':' || c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
    }
}
