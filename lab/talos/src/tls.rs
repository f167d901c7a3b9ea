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

/// Renders a talosconfig with one context.
pub fn render_talosconfig(
    context: &str,
    endpoints: &[String],
    ca_pem: &str,
    client: &Issued,
    talos_key_label_quirk: bool,
) -> String {
    let key = if talos_key_label_quirk {
        talos_key_label(&client.key_pem)
    } else {
        client.key_pem.clone()
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

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }
}
