//! Reading a talosconfig: the YAML file `talosctl` uses to find and
//! authenticate to nodes (`context`, `contexts.<name>.{endpoints, nodes,
//! ca, crt, key}` with base64-encoded PEMs), and turning a context into a
//! rustls mutual-TLS client configuration.
//!
//! Talos writes Ed25519 keys as PKCS#8 under the non-standard PEM label
//! `ED25519 PRIVATE KEY`, which rustls does not recognise; the label is
//! rewritten to the standard `PRIVATE KEY` (the DER inside is PKCS#8
//! either way) before parsing.
//!
//! The private key never appears in `Debug` output, logs or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// Why a talosconfig could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalosconfigError {
    /// Not valid talosconfig YAML. Only the position is reported: the
    /// parser's message could quote the line, which may hold the key.
    #[error("the talosconfig is not valid YAML{}", location(*.line, *.column))]
    Yaml {
        /// 1-based line, when known.
        line: Option<u64>,
        /// 1-based column, when known.
        column: Option<u64>,
    },
    /// No context is selected (`context:` empty) and none was named.
    #[error("the talosconfig selects no context")]
    NoContext,
    /// The named context does not exist.
    #[error("the talosconfig has no context {0:?}")]
    UnknownContext(String),
    /// A field the client needs is missing or empty.
    #[error("context {context:?} of the talosconfig has no {field}")]
    MissingField {
        /// The context.
        context: String,
        /// `endpoints`, `ca`, `crt` or `key`.
        field: &'static str,
    },
    /// A field is not base64 of a PEM.
    #[error("field {field} of context {context:?} is not valid: {reason}")]
    InvalidField {
        /// The context.
        context: String,
        /// `ca`, `crt` or `key`.
        field: &'static str,
        /// What is wrong (never the content).
        reason: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("building the TLS client of context {context:?}: {reason}")]
    Tls {
        /// The context.
        context: String,
        /// rustls' message.
        reason: String,
    },
}

fn location(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

impl TalosconfigError {
    /// A stable category string for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            TalosconfigError::Yaml { .. } => "yaml",
            TalosconfigError::NoContext => "no_context",
            TalosconfigError::UnknownContext(_) => "unknown_context",
            TalosconfigError::MissingField { .. } => "missing_field",
            TalosconfigError::InvalidField { .. } => "invalid_field",
            TalosconfigError::Tls { .. } => "tls",
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    context: String,
    #[serde(default)]
    contexts: BTreeMap<String, RawContext>,
}

#[derive(Deserialize)]
struct RawContext {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default)]
    ca: String,
    #[serde(default)]
    crt: String,
    #[serde(default)]
    key: String,
}

/// A PEM private key; shown as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
struct SecretPem(String);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One context of a talosconfig, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TalosContext {
    /// The context's name.
    pub name: String,
    /// Endpoints to dial (`host` or `host:port`; port 50000 when absent).
    pub endpoints: Vec<String>,
    /// Default target nodes (informational; see
    /// [`TalosClient::for_node`](crate::client::TalosClient::for_node)).
    pub nodes: Vec<String>,
    /// The Talos OS CA certificate (PEM) the servers are verified against.
    pub ca_pem: String,
    /// The client certificate (PEM).
    pub crt_pem: String,
    key_pem: SecretPem,
}

/// A parsed talosconfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Talosconfig {
    /// The selected context's name (may be empty).
    pub context: String,
    /// Context names, sorted.
    pub context_names: Vec<String>,
    raw: BTreeMap<String, TalosContextFields>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct TalosContextFields {
    endpoints: Vec<String>,
    nodes: Vec<String>,
    ca: String,
    crt: String,
    key: SecretPem,
}

impl Talosconfig {
    /// Parses talosconfig YAML (contexts are decoded when selected).
    ///
    /// # Errors
    /// [`TalosconfigError::Yaml`] when the text is not a talosconfig.
    pub fn parse(yaml: &str) -> Result<Self, TalosconfigError> {
        let raw: RawConfig = serde_saphyr::from_str(yaml).map_err(|e| {
            let loc = e.location();
            TalosconfigError::Yaml {
                line: loc.map(|l| l.line()),
                column: loc.map(|l| l.column()),
            }
        })?;
        let context_names = raw.contexts.keys().cloned().collect();
        let contexts = raw
            .contexts
            .into_iter()
            .map(|(name, c)| {
                (
                    name,
                    TalosContextFields {
                        endpoints: c.endpoints,
                        nodes: c.nodes,
                        ca: c.ca,
                        crt: c.crt,
                        key: SecretPem(c.key),
                    },
                )
            })
            .collect();
        Ok(Self {
            context: raw.context,
            context_names,
            raw: contexts,
        })
    }

    /// The selected context (`context:`), decoded.
    ///
    /// # Errors
    /// [`TalosconfigError::NoContext`], or the errors of
    /// [`Talosconfig::context`].
    pub fn current(&self) -> Result<TalosContext, TalosconfigError> {
        if self.context.is_empty() {
            return Err(TalosconfigError::NoContext);
        }
        self.context(&self.context)
    }

    /// The context `name`, decoded: base64 fields to PEM text.
    ///
    /// # Errors
    /// [`TalosconfigError::UnknownContext`],
    /// [`TalosconfigError::MissingField`] (no endpoints, ca, crt or key),
    /// [`TalosconfigError::InvalidField`] (not base64 of a PEM).
    pub fn context(&self, name: &str) -> Result<TalosContext, TalosconfigError> {
        let raw = self
            .raw
            .get(name)
            .ok_or_else(|| TalosconfigError::UnknownContext(name.to_owned()))?;
        if raw.endpoints.is_empty() {
            return Err(TalosconfigError::MissingField {
                context: name.to_owned(),
                field: "endpoints",
            });
        }
        let decode = |field: &'static str, value: &str| -> Result<String, TalosconfigError> {
            if value.trim().is_empty() {
                return Err(TalosconfigError::MissingField {
                    context: name.to_owned(),
                    field,
                });
            }
            let invalid = |reason: &str| TalosconfigError::InvalidField {
                context: name.to_owned(),
                field,
                reason: reason.to_owned(),
            };
            let bytes = STANDARD
                .decode(value.trim())
                .map_err(|_| invalid("not base64"))?;
            let text = String::from_utf8(bytes).map_err(|_| invalid("not a PEM text"))?;
            if !text.contains("-----BEGIN ") {
                return Err(invalid("not a PEM text"));
            }
            Ok(text)
        };
        Ok(TalosContext {
            name: name.to_owned(),
            endpoints: raw.endpoints.clone(),
            nodes: raw.nodes.clone(),
            ca_pem: decode("ca", &raw.ca)?,
            crt_pem: decode("crt", &raw.crt)?,
            key_pem: SecretPem(decode("key", &raw.key.0)?),
        })
    }
}

/// Rewrites Talos' `ED25519 PRIVATE KEY` PEM label to the standard PKCS#8
/// `PRIVATE KEY` label; other PEMs are returned unchanged.
pub fn normalize_key_label(pem: &str) -> String {
    pem.replace(
        "-----BEGIN ED25519 PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----",
    )
    .replace(
        "-----END ED25519 PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
    )
}

impl TalosContext {
    /// A rustls client configuration for this context: servers verified
    /// against the context's CA, the client certificate and key presented,
    /// ALPN `h2`.
    ///
    /// # Errors
    /// [`TalosconfigError::InvalidField`] when a PEM holds no certificate
    /// or key, [`TalosconfigError::Tls`] when rustls refuses them.
    pub fn client_tls(&self) -> Result<rustls::ClientConfig, TalosconfigError> {
        let invalid = |field: &'static str, reason: &str| TalosconfigError::InvalidField {
            context: self.name.clone(),
            field,
            reason: reason.to_owned(),
        };
        let mut roots = rustls::RootCertStore::empty();
        let mut any_ca = false;
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|_| invalid("ca", "not a PEM certificate"))?;
            roots
                .add(cert)
                .map_err(|e| invalid("ca", &format!("not a usable CA certificate: {e}")))?;
            any_ca = true;
        }
        if !any_ca {
            return Err(invalid("ca", "holds no certificate"));
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.crt_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| invalid("crt", "not a PEM certificate"))?;
        if chain.is_empty() {
            return Err(invalid("crt", "holds no certificate"));
        }
        let key_pem = normalize_key_label(&self.key_pem.0);
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| invalid("key", "holds no PKCS#8, PKCS#1 or SEC1 private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TalosconfigError::Tls {
                context: self.name.clone(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TalosconfigError::Tls {
                context: self.name.clone(),
                reason: e.to_string(),
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_key(key_pem: &str) -> String {
        format!(
            "context: lab\ncontexts:\n  lab:\n    endpoints: [10.0.0.5]\n    ca: {}\n    crt: {}\n    key: {}\n",
            STANDARD.encode("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"),
            STANDARD.encode("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"),
            STANDARD.encode(key_pem),
        )
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let cfg = Talosconfig::parse(&config_with_key(secret)).unwrap();
        let ctx = cfg.current().unwrap();
        let shown = format!("{cfg:?} {ctx:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains(&STANDARD.encode(secret)), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn the_talos_key_label_is_rewritten_to_pkcs8() {
        let pem = "-----BEGIN ED25519 PRIVATE KEY-----\nAAAA\n-----END ED25519 PRIVATE KEY-----\n";
        assert_eq!(
            normalize_key_label(pem),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        );
    }

    #[test]
    fn a_missing_context_is_named() {
        let cfg = Talosconfig::parse(&config_with_key("x")).unwrap();
        let err = cfg.context("prod").unwrap_err();
        assert_eq!(err.category(), "unknown_context");
        assert_eq!(err.to_string(), "the talosconfig has no context \"prod\"");
    }

    #[test]
    fn a_yaml_error_reports_only_its_position() {
        let err = Talosconfig::parse("context: [\n  key: c2VjcmV0\n").unwrap_err();
        assert_eq!(err.category(), "yaml");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn a_field_that_is_not_base64_is_refused_without_its_content() {
        let text = "context: lab\ncontexts:\n  lab:\n    endpoints: [a]\n    ca: '%%%secret'\n";
        let err = Talosconfig::parse(text).unwrap().current().unwrap_err();
        assert_eq!(err.category(), "invalid_field");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
