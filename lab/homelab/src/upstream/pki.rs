//! The credentials of the lab's real control plane: a CA and the API
//! server's serving certificate, the service-account signing key, and a
//! static token file whose tokens the lab's kubeconfig and the components'
//! kubeconfigs carry (authentication is on; RBAC decides the rest).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tidepool_lab_sim::certs::{KeyAlgorithm, TestCa};

/// Why the credentials could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating a key or certificate failed.
    #[error("generating the {what} of the lab's control plane: {message}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The cause, as text.
        message: String,
    },
    /// Writing a file failed.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The users the static token file defines: the lab's administrator (the
/// kubeconfig in the state directory) and one per component. All are in
/// `system:masters`; the components' own names let audit and RBAC tell them
/// apart.
const USERS: [&str; 4] = [
    "tidepool-lab-admin",
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "kwok-controller",
];

/// Paths of the files this module wrote, and the tokens.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The CA certificate, as text.
    pub ca_pem: String,
    /// The API server's serving certificate (the lab's endpoint serves it
    /// too: it names 127.0.0.1 and localhost).
    pub serving_cert: PathBuf,
    /// The serving certificate and key, as text.
    pub serving_pem: (String, String),
    /// Its key.
    pub serving_key: PathBuf,
    /// The service-account signing key.
    pub service_account_key: PathBuf,
    /// A certificate of the signing key's public half, which verifies
    /// (the API server reads public keys from certificates, not from
    /// PKCS#8 private keys).
    pub service_account_public: PathBuf,
    /// The static token file.
    pub token_file: PathBuf,
    /// The tokens, in [`USERS`] order.
    tokens: Vec<String>,
}

impl Pki {
    /// The administrator's bearer token.
    pub fn admin_token(&self) -> &str {
        self.tokens.first().map_or("", String::as_str)
    }

    /// The token of a component user (`system:kube-scheduler`, ...).
    pub fn token_of(&self, user: &str) -> &str {
        USERS
            .iter()
            .position(|u| *u == user)
            .and_then(|i| self.tokens.get(i))
            .map_or("", String::as_str)
    }

    /// Writes a kubeconfig for `user` that reaches the API server at
    /// `server` (https) and trusts the lab's CA.
    ///
    /// # Errors
    /// [`PkiError::Write`].
    pub fn write_kubeconfig(&self, path: &Path, server: &str, user: &str) -> Result<(), PkiError> {
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: lab
  context:
    cluster: lab
    user: {user}
current-context: lab
",
            ca = self.ca_cert.display(),
            token = self.token_of(user),
        );
        write(path, &text)
    }
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    std::fs::write(path, text).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

fn generate(what: &'static str) -> impl Fn(tidepool_lab_sim::certs::CertError) -> PkiError {
    move |e| PkiError::Generate {
        what,
        message: e.to_string(),
    }
}

/// A token no other lab shares: a hash of this process, the time and `salt`.
fn token(salt: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = Sha256::digest(format!("{}:{nanos}:{salt}", std::process::id()));
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Generates and writes everything into `dir`.
///
/// # Errors
/// [`PkiError`] naming what failed.
pub fn create(dir: &Path) -> Result<Pki, PkiError> {
    let ca = TestCa::new("tidepool-lab-kubernetes-ca", KeyAlgorithm::EcdsaP256)
        .map_err(generate("CA"))?;
    let serving = ca
        .issue_server(
            &["localhost", "kubernetes", "kubernetes.default.svc"],
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            ],
        )
        .map_err(generate("serving certificate"))?;
    let signer = TestCa::new("tidepool-lab-service-accounts", KeyAlgorithm::EcdsaP256)
        .map_err(generate("service-account key"))?;
    let tokens: Vec<String> = USERS.iter().map(|u| token(u)).collect();
    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_pem: ca.cert_pem().to_owned(),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        serving_pem: (serving.cert_pem.clone(), serving.key_pem.clone()),
        service_account_key: dir.join("sa.key"),
        service_account_public: dir.join("sa.crt"),
        token_file: dir.join("tokens.csv"),
        tokens,
    };
    write(&pki.ca_cert, ca.cert_pem())?;
    write(&pki.serving_cert, &serving.cert_pem)?;
    write(&pki.serving_key, &serving.key_pem)?;
    write(&pki.service_account_key, signer.key_pem())?;
    write(&pki.service_account_public, signer.cert_pem())?;
    let csv: String = USERS
        .iter()
        .zip(&pki.tokens)
        .enumerate()
        .map(|(i, (user, token))| format!("{token},{user},uid-{i},\"system:masters\"\n"))
        .collect();
    write(&pki.token_file, &csv)?;
    Ok(pki)
}
