//! The API token (`user@realm!tokenid=secret`, facts §1.1): parsing,
//! resolution from a [`SecretRef`], and a redacting wrapper so the secret
//! never reaches `Debug` output, logs or error messages.

use std::fmt;
use std::path::{Path, PathBuf};

use tidepool_core::config::SecretRef;

/// A string that must not be shown: `Debug` and `Display` print
/// `<redacted>`. Read it with [`Redacted::expose`], only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A Proxmox API token: the public id `user@realm!tokenid` and the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    id: String,
    secret: Redacted,
}

/// Why a token could not be obtained. Messages name where the token was
/// looked for, never its value.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The environment variable is not set or not UTF-8.
    #[error("API token: environment variable {0} is not set")]
    MissingEnv(String),
    /// The token file could not be read.
    #[error("API token: cannot read {}", path.display())]
    File {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Kubernetes Secret reference: the caller resolves it and passes the
    /// value to [`ApiToken::parse`].
    #[error("API token: {0} must be resolved by the caller")]
    SecretRef(String),
    /// The value is not `user@realm!tokenid=secret`.
    #[error("API token from {origin} is not of the form user@realm!tokenid=secret")]
    Malformed {
        /// Where the value came from (`env:X`, `file:Y`, `value`).
        origin: String,
    },
}

impl ApiToken {
    /// Parses `user@realm!tokenid=secret`. Surrounding whitespace and a
    /// leading `PVEAPIToken=` are tolerated (token files often end in a
    /// newline; some tools store the header form). The id and secret are
    /// split at the last `=`, as the server does.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] (without the value) when the id is not
    /// `user@realm!name` or the secret is empty.
    pub fn parse(value: &str) -> Result<Self, TokenError> {
        Self::parse_from(value, "value")
    }

    fn parse_from(value: &str, origin: &str) -> Result<Self, TokenError> {
        let malformed = || TokenError::Malformed {
            origin: origin.to_owned(),
        };
        let value = value.trim();
        let value = value.strip_prefix("PVEAPIToken=").unwrap_or(value);
        let (id, secret) = value.rsplit_once('=').ok_or_else(malformed)?;
        let (user, name) = id.split_once('!').ok_or_else(malformed)?;
        let user_ok = user.contains('@')
            && !user
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == '/');
        let name_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !user_ok || !name_ok || secret.is_empty() || secret.contains(char::is_whitespace) {
            return Err(malformed());
        }
        Ok(Self {
            id: id.to_owned(),
            secret: Redacted::new(secret),
        })
    }

    /// Resolves a [`SecretRef`]: an environment variable, or a file whose
    /// relative path is taken from `base_dir` (the config file's directory).
    ///
    /// # Errors
    /// [`TokenError::SecretRef`] for Kubernetes Secret references (resolve
    /// them and call [`ApiToken::parse`]); otherwise a missing variable, an
    /// unreadable file or a malformed value.
    pub fn resolve(reference: &SecretRef, base_dir: &Path) -> Result<Self, TokenError> {
        match reference {
            SecretRef::Env(var) => {
                let value = std::env::var(var).map_err(|_| TokenError::MissingEnv(var.clone()))?;
                Self::parse_from(&value, &reference.to_string())
            }
            SecretRef::File(file) => {
                let path = base_dir.join(file);
                let value = std::fs::read_to_string(&path)
                    .map_err(|source| TokenError::File { path, source })?;
                Self::parse_from(&value, &reference.to_string())
            }
            SecretRef::Secret { .. } => Err(TokenError::SecretRef(reference.to_string())),
        }
    }

    /// The public token id, `user@realm!tokenid`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `Authorization` header value. Only the request builder calls it.
    pub(crate) fn header_value(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret.expose())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0b7c5cc2-6f3e-4d0a-9a4f-2d1f3c7e9b11";

    #[test]
    fn a_token_parses_and_its_debug_output_hides_the_secret() {
        let t = ApiToken::parse(&format!("root@pam!tidepool={SECRET}\n")).unwrap();
        assert_eq!(t.id(), "root@pam!tidepool");
        let debug = format!("{t:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert_eq!(
            t.header_value(),
            format!("PVEAPIToken=root@pam!tidepool={SECRET}")
        );
    }

    #[test]
    fn the_header_form_is_accepted_too() {
        let t = ApiToken::parse(&format!("PVEAPIToken=capmox@pve!capi={SECRET}")).unwrap();
        assert_eq!(t.id(), "capmox@pve!capi");
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_the_value() {
        for bad in [
            "hunter2",
            "root@pam=hunter2",
            "root!x=hunter2",
            "root@pam!=hunter2",
            "root@pam!x=",
        ] {
            let err = ApiToken::parse(bad).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_file_reference_is_read_relative_to_the_base_dir() {
        let dir = std::env::temp_dir().join(format!("tidepool-proxmox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), format!("root@pam!tidepool={SECRET}\n")).unwrap();
        let t = ApiToken::resolve(&SecretRef::File("token".into()), &dir).unwrap();
        assert_eq!(t.id(), "root@pam!tidepool");
        let missing = ApiToken::resolve(&SecretRef::File("absent".into()), &dir).unwrap_err();
        assert!(matches!(missing, TokenError::File { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_kubernetes_secret_reference_is_left_to_the_caller() {
        let r = SecretRef::Secret {
            namespace: None,
            name: "pve".into(),
            key: "token".into(),
        };
        assert!(matches!(
            ApiToken::resolve(&r, Path::new(".")),
            Err(TokenError::SecretRef(_))
        ));
    }
}
