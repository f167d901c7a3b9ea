//! Certificates for the emulators: a self-signed CA per service and the
//! server and client certificates it issues.
//!
//! The Proxmox emulator uses an ECDSA P-256 CA (any algorithm rustls
//! accepts will do for a client that pins the CA); the Talos emulator uses
//! Ed25519, like the CAs real Talos generates.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Errors creating certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
}

/// The key algorithm of a CA and everything it issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// Ed25519, as Talos uses.
    Ed25519,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// A certificate and its private key, both PEM-encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// A self-signed certificate authority.
pub struct TestCa {
    algorithm: KeyAlgorithm,
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Generate { what, source }
}

impl TestCa {
    /// A new CA whose subject common name is `common_name`.
    ///
    /// # Errors
    /// Fails only if the crypto backend cannot generate a key.
    pub fn new(common_name: &str, algorithm: KeyAlgorithm) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(algorithm.rcgen()).map_err(cert_err("CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("CA certificate"))?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let issuer = Issuer::new(params, key);
        Ok(Self {
            algorithm,
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a server certificate valid for the given DNS names and IP
    /// addresses.
    ///
    /// # Errors
    /// Fails if a name is not a valid DNS name or key generation fails.
    pub fn issue_server(&self, dns_names: &[&str], ips: &[IpAddr]) -> Result<Issued, CertError> {
        let mut params = CertificateParams::new(
            dns_names
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .map_err(cert_err("server certificate names"))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("localhost"),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, "server certificate")
    }

    /// Issues a client certificate with the given common name and
    /// organizations (Talos reads roles from the organization field, e.g.
    /// `os:admin`).
    ///
    /// # Errors
    /// Fails if key generation or signing fails.
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[&str],
    ) -> Result<Issued, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        for org in organizations {
            dn.push(DnType::OrganizationName, *org);
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, "client certificate")
    }

    fn sign(&self, params: CertificateParams, what: &'static str) -> Result<Issued, CertError> {
        let key = KeyPair::generate_for(self.algorithm.rcgen()).map_err(cert_err(what))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(cert_err(what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ed25519_ca_issues_server_and_client_certificates() {
        let ca = TestCa::new("talos", KeyAlgorithm::Ed25519).unwrap();
        let server = ca
            .issue_server(&["talos.local"], &["127.0.1.5".parse().unwrap()])
            .unwrap();
        let client = ca.issue_client("admin", &["os:admin"]).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(server.key_pem.contains("PRIVATE KEY"));
        assert!(client.cert_pem.contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn an_ecdsa_ca_issues_a_server_certificate_for_loopback() {
        let ca = TestCa::new("pve", KeyAlgorithm::EcdsaP256).unwrap();
        let server = ca
            .issue_server(&["localhost"], &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
    }
}
