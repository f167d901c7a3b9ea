//! Errors of the emulator: [`ApiError`], what a handler answers instead of
//! data (rendered exactly as pve-http-server renders it), and [`LabError`],
//! what the in-process API returns.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::config::ErrorBodies;

/// An error answered over HTTP the way pveproxy answers it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The full message (its first line becomes the reason phrase).
    pub message: String,
    /// Per-parameter errors of a 400 "Parameter verification failed.".
    pub errors: BTreeMap<String, String>,
}

impl ApiError {
    /// A plain `die` in a handler: HTTP 500 with `message`.
    pub fn die(message: impl Into<String>) -> Self {
        Self::status(500, message)
    }

    /// An error with an explicit status.
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
        }
    }

    /// A 400 parameter-verification failure with one error per parameter.
    pub fn params(errors: BTreeMap<String, String>) -> Self {
        Self {
            status: 400,
            message: "Parameter verification failed.".to_owned(),
            errors,
        }
    }

    /// A 400 for a single parameter.
    pub fn param(name: &str, message: impl Into<String>) -> Self {
        Self::params(BTreeMap::from([(name.to_owned(), message.into())]))
    }

    /// `Configuration file 'nodes/<node>/qemu-server/<vmid>.conf' does not exist`.
    pub fn no_config(node: &str, vmid: u32) -> Self {
        Self::die(format!(
            "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
        ))
    }

    /// A 401 with the reason phrase the server uses and an empty body.
    pub fn unauthorized(reason: &str) -> Self {
        Self::status(401, reason)
    }

    /// Renders the error as pve-http-server would.
    pub(crate) fn into_response(self, bodies: ErrorBodies) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let first_line = self.message.lines().next().unwrap_or("").trim_end();
        let body = if self.status == 401 {
            Body::empty()
        } else {
            let mut obj = serde_json::Map::new();
            obj.insert("data".into(), serde_json::Value::Null);
            if !self.errors.is_empty() {
                obj.insert(
                    "errors".into(),
                    serde_json::to_value(&self.errors).unwrap_or_default(),
                );
            }
            if bodies == ErrorBodies::WithMessage {
                let mut msg = self.message.clone();
                if !msg.ends_with('\n') {
                    msg.push('\n');
                }
                obj.insert("message".into(), serde_json::Value::String(msg));
            }
            Body::from(serde_json::Value::Object(obj).to_string())
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(first_line.as_bytes().to_vec()) {
            resp.extensions_mut().insert(reason);
        }
        let headers = resp.headers_mut();
        daemon_headers(headers, self.status != 401);
        // pve-http-server stops keeping the connection alive after an error.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// The headers pve-api-daemon puts on its answers: the JSON content type
/// when `json`, then the server's name.
pub(crate) fn daemon_headers(headers: &mut HeaderMap, json: bool) {
    if json {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    headers.insert(
        header::SERVER,
        HeaderValue::from_static("pve-api-daemon/3.0"),
    );
}

/// Errors of the in-process API ([`crate::PveLab`]).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The configuration is inconsistent (unknown node, duplicate vmid, …).
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// Creating the self-signed certificate failed.
    #[error("creating the emulator's certificate")]
    Cert(#[source] tidepool_lab_sim::CertError),
    /// The TLS configuration was refused.
    #[error("configuring TLS")]
    Tls(#[source] rustls::Error),
    /// Binding the listening socket failed.
    #[error("binding {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The VM does not exist.
    #[error("VM {0} does not exist")]
    NoSuchVm(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_error_names_the_parameter_in_the_errors_map() {
        let e = ApiError::param("vmid", "VM 200 already exists");
        assert_eq!(e.status, 400);
        assert_eq!(e.message, "Parameter verification failed.");
        assert_eq!(e.errors["vmid"], "VM 200 already exists");
    }
}
