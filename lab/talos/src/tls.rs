//! The emulator's certificates and the identity a client presents: the lab's
//! Talos OS CA (Ed25519, like `machine.ca`), the per-boot maintenance CA,
//! roles read from a client certificate, and the talosconfig the lab hands
//! out.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tidepool_lab_sim::{CertError, Issued, KeyAlgorithm, TestCa};

/// The Talos API roles (the client certificate's Subject Organization).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `os:admin`: everything.
    Admin,
    /// `os:operator`: reads plus reboot, shutdown and service control.
    Operator,
    /// `os:reader`: reads only.
    Reader,
}

impl Role {
    /// The organization string Talos uses for the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "os:admin",
            Role::Operator => "os:operator",
            Role::Reader => "os:reader",
        }
    }

    /// Parses an organization string; other roles (`os:etcd:backup`, ...)
    /// grant nothing the emulator serves.
    pub fn from_organization(org: &str) -> Option<Self> {
        match org {
            "os:admin" => Some(Role::Admin),
            "os:operator" => Some(Role::Operator),
            "os:reader" => Some(Role::Reader),
            _ => None,
        }
    }
}

/// The roles in a DER client certificate's Subject Organization. A
/// certificate that does not parse grants no role.
pub fn roles_of_certificate(der: &[u8]) -> Vec<Role> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    cert.subject()
        .iter_organization()
        .filter_map(|attr| attr.as_str().ok())
        .filter_map(Role::from_organization)
        .collect()
}

/// Rewrites a PKCS#8 PEM private key to the `ED25519 PRIVATE KEY` label
/// that Talos writes (which `rustls-pki-types` does not recognise, while
/// Go's `tls.X509KeyPair` accepts any `... PRIVATE KEY` label).
pub fn talos_key_label(pem: &str) -> String {
    pem.replace(
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN ED25519 PRIVATE KEY-----",
    )
    .replace(
        "-----END PRIVATE KEY-----",
        "-----END ED25519 PRIVATE KEY-----",
    )
}

/// A self-signed maintenance CA and the leaf the maintenance server
/// presents, generated afresh at every boot into maintenance mode.
#[derive(Debug, Clone)]
pub struct MaintenanceCert {
    /// The ephemeral CA certificate, PEM.
    pub ca_pem: String,
    /// The server certificate and key.
    pub leaf: Issued,
}

/// Generates the maintenance certificate for a node at `ip`.
///
/// # Errors
/// Fails only if key generation fails.
pub fn maintenance_cert(ip: IpAddr) -> Result<MaintenanceCert, CertError> {
    let ca = TestCa::new("maintenance", KeyAlgorithm::Ed25519)?;
    let leaf = ca.issue_server(&["talos-maintenance"], &[ip])?;
    Ok(MaintenanceCert {
        ca_pem: ca.cert_pem().to_owned(),
        leaf,
    })
}

/// The DER prefix of an Ed25519 PKCS#8 version 1 key (RFC 8410): the
/// sequence, version 0, the Ed25519 algorithm and the octet string
/// wrapping the 32-byte seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The DER of the version 2 form (ring's and rcgen's) after the outer
/// sequence's tag and length: version 1, the algorithm and the seed's
/// octet string header; the public key in `[1]` follows the seed.
const ED25519_PKCS8_V2_HEADER: [u8; 14] = [
    0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Rewrites an Ed25519 PKCS#8 version 2 PEM key (seed and public key) to
/// version 1 (seed only), which is what Go's `MarshalPKCS8PrivateKey` and
/// so real Talos write, and what OpenSSL-based clients load. Any other
/// key is returned unchanged.
pub fn ed25519_pkcs8_v1(pem: &str) -> String {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let Ok(der) = STANDARD.decode(body.trim()) else {
        return pem.to_owned();
    };
    if der.len() <= 48 || der[0] != 0x30 || der[2..16] != ED25519_PKCS8_V2_HEADER {
        return pem.to_owned();
    }
    let mut v1 = ED25519_PKCS8_V1_PREFIX.to_vec();
    v1.extend_from_slice(&der[16..48]);
    let encoded = STANDARD.encode(v1);
    format!("-----BEGIN PRIVATE KEY-----\n{encoded}\n-----END PRIVATE KEY-----\n")
}

/// How a talosconfig writes its client key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyForm {
    /// PKCS#8 version 1 under the standard `PRIVATE KEY` label.
    Standard,
    /// PKCS#8 version 1 under Talos' `ED25519 PRIVATE KEY` label, exactly
    /// as `talosctl gen config` writes it.
    TalosLabel,
    /// PKCS#8 version 2 (with the public key), which only some clients
    /// (Go, ring) load; kept to test that clients accept both forms.
    Pkcs8V2,
}

/// Renders a talosconfig with one context.
pub fn render_talosconfig(
    context: &str,
    endpoints: &[String],
    ca_pem: &str,
    client: &Issued,
    form: KeyForm,
) -> String {
    let key = match form {
        KeyForm::Standard => ed25519_pkcs8_v1(&client.key_pem),
        KeyForm::TalosLabel => talos_key_label(&ed25519_pkcs8_v1(&client.key_pem)),
        KeyForm::Pkcs8V2 => client.key_pem.clone(),
    };
    let mut out = format!("context: {context}\ncontexts:\n    {context}:\n        endpoints:\n");
    for e in endpoints {
        out.push_str(&format!("            - {e}\n"));
    }
    out.push_str(&format!(
        "        ca: {}\n        crt: {}\n        key: {}\n",
        STANDARD.encode(ca_pem),
        STANDARD.encode(&client.cert_pem),
        STANDARD.encode(key)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_subject_organization() {
        let ca = TestCa::new("talos", KeyAlgorithm::Ed25519).unwrap();
        let issued = ca.issue_client("ops", &["os:reader"]).unwrap();
        let der = pem_to_der(&issued.cert_pem);
        assert_eq!(roles_of_certificate(&der), vec![Role::Reader]);
    }

    #[test]
    fn the_talos_label_quirk_renames_both_pem_lines() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(
            talos_key_label(pem),
            "-----BEGIN ED25519 PRIVATE KEY-----\nAAAA\n-----END ED25519 PRIVATE KEY-----\n"
        );
    }

    #[test]
    fn an_ed25519_key_is_rewritten_to_pkcs8_version_1() {
        let ca = TestCa::new("talos", KeyAlgorithm::Ed25519).unwrap();
        let issued = ca.issue_client("ops", &["os:admin"]).unwrap();
        let v2 = pem_to_der(&issued.key_pem);
        assert_eq!(v2[2..16], ED25519_PKCS8_V2_HEADER);
        let v1 = pem_to_der(&ed25519_pkcs8_v1(&issued.key_pem));
        assert_eq!(v1.len(), 48);
        assert_eq!(v1[..16], ED25519_PKCS8_V1_PREFIX);
        assert_eq!(v1[16..], v2[16..48]);
        // Already version 1: unchanged.
        let again = ed25519_pkcs8_v1(&ed25519_pkcs8_v1(&issued.key_pem));
        assert_eq!(pem_to_der(&again), v1);
    }

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }
}
