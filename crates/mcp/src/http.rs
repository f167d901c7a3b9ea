//! MCP over streamable HTTP at `/mcp`, through rmcp's server transport,
//! behind two gates that run before any MCP message is read: the `Origin`
//! allowlist (DNS-rebinding protection; a request from another origin gets
//! 403) and bearer-token authentication (no token or a wrong one gets 401).
//! An authenticated request carries its [`Identity`] on to the handler,
//! where [`crate::access::Guarded`] applies the token's scope.
//!
//! Tokens are given by reference, like every secret; a [`TokenSource`]
//! resolves them (an environment variable, a file, a Kubernetes Secret)
//! when first needed and keeps the value, so a token whose Secret cannot be
//! read yet is tried again on the next request. Presented tokens are
//! compared in constant time, through SHA-256 digests, against every
//! configured token. Token values never reach an answer or a log line.
//!
//! With a certificate and key the server speaks HTTPS (rustls, ring).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use rmcp::ServerHandler;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tidepool_core::config::{McpScope, McpToken, SecretRef};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::access::Identity;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("MCP over HTTP: cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TLS file could not be read or holds no usable PEM.
    #[error("MCP over HTTP: reading the TLS {what} {}: {message}", path.display())]
    TlsFile {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("MCP over HTTP: the TLS certificate and key are not usable")]
    Tls(#[source] rustls::Error),
}

/// Resolves a token reference to its value; the error names the reference
/// and why, never a value.
pub trait TokenSource: Send + Sync + 'static {
    /// The value `reference` points at.
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
}

/// One configured token and, once resolved, the digest of its value.
struct Key {
    name: String,
    scope: McpScope,
    reference: SecretRef,
    digest: Mutex<Option<[u8; 32]>>,
}

/// The configured bearer tokens.
pub struct Keyring {
    keys: Vec<Key>,
    source: Box<dyn TokenSource>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("Keyring").field("tokens", &names).finish()
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl Keyring {
    /// The keyring of `tokens`, resolved through `source`.
    pub fn new(tokens: &[McpToken], source: impl TokenSource) -> Self {
        Self {
            keys: tokens
                .iter()
                .map(|t| Key {
                    name: t.name.clone(),
                    scope: t.scope,
                    reference: t.token_from.clone(),
                    digest: Mutex::new(None),
                })
                .collect(),
            source: Box::new(source),
        }
    }

    /// The identity whose token is `presented`, comparing against every
    /// token in constant time.
    pub async fn authenticate(&self, presented: &str) -> Option<Identity> {
        let wanted = digest(presented.as_bytes());
        let mut found = None;
        for key in &self.keys {
            let Some(known) = self.digest_of(key).await else {
                continue;
            };
            if bool::from(known.ct_eq(&wanted)) && found.is_none() {
                found = Some(Identity {
                    name: key.name.clone(),
                    scope: key.scope,
                });
            }
        }
        found
    }

    /// The digest of `key`'s value, resolving it when not done yet.
    async fn digest_of(&self, key: &Key) -> Option<[u8; 32]> {
        let mut slot = key.digest.lock().await;
        if let Some(d) = *slot {
            return Some(d);
        }
        match self.source.resolve(&key.reference).await {
            Ok(value) => {
                let value = value.trim();
                if value.is_empty() {
                    warn!(token = %key.name, reference = %key.reference, "MCP token is empty; ignored");
                    return None;
                }
                let d = digest(value.as_bytes());
                *slot = Some(d);
                Some(d)
            }
            Err(why) => {
                warn!(token = %key.name, error = %why, "MCP token cannot be read yet");
                None
            }
        }
    }
}

/// Where and how the HTTP server listens, and whom it lets in.
#[derive(Debug)]
pub struct HttpOptions {
    /// The listen address.
    pub addr: SocketAddr,
    /// The bearer tokens.
    pub keyring: Arc<Keyring>,
    /// Browser origins allowed; a request with another `Origin` gets 403.
    pub allowed_origins: Vec<String>,
    /// `Host` values allowed besides loopback; empty allows any host when
    /// listening beyond loopback.
    pub allowed_hosts: Vec<String>,
    /// Certificate chain and key files (PEM), to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    /// The address bound.
    pub addr: SocketAddr,
    /// Whether it speaks HTTPS.
    pub tls: bool,
    /// The serving task; it ends when the stop token is cancelled.
    pub task: JoinHandle<()>,
}

/// What the gate needs.
#[derive(Clone)]
struct Gate {
    keyring: Arc<Keyring>,
    origins: Arc<Vec<String>>,
}

/// `scheme://host:port`, lower-case, with the scheme's default port
/// filled in; `null` stays as it is.
fn normalized_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some((scheme, rest)) = origin.split_once("://") else {
        return origin;
    };
    let has_port = if rest.starts_with('[') {
        rest.contains("]:")
    } else {
        rest.contains(':')
    };
    if has_port {
        return origin;
    }
    let port = if scheme == "https" { 443 } else { 80 };
    format!("{scheme}://{rest}:{port}")
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    let mut response = (status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"tidepool\""),
        );
    }
    response
}

/// The Origin check, then authentication; the identity goes on with the
/// request.
async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = normalized_origin(origin.to_str().unwrap_or_default());
        if !gate.origins.iter().any(|o| normalized_origin(o) == origin) {
            debug!(%origin, "MCP request from an origin not allowed");
            return refuse(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .map(str::to_owned);
    let Some(presented) = presented else {
        return refuse(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    };
    let Some(identity) = gate.keyring.authenticate(&presented).await else {
        info!(target: "tidepool::audit", actor = "-", op = "authenticate", result = "refused", "audit");
        return refuse(StatusCode::UNAUTHORIZED, "the bearer token is not valid\n");
    };
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The rustls configuration from the certificate and key files.
fn tls_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<rustls::ServerConfig>, HttpError> {
    let file_error = |what, path: &PathBuf, message: String| HttpError::TlsFile {
        what,
        path: path.clone(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("certificate", cert, "no certificate".into()));
    }
    // The key's error never quotes the key.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| file_error("key", key, "no usable private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(HttpError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the MCP handlers `factory` makes (one per session) at `/mcp` on
/// `options.addr` until `stop` is cancelled.
///
/// # Errors
/// [`HttpError`] when the address cannot be bound or the TLS files are not
/// usable.
pub async fn serve_http<S, F>(
    factory: F,
    options: HttpOptions,
    stop: CancellationToken,
) -> Result<HttpServer, HttpError>
where
    S: ServerHandler + Send + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let tls = match &options.tls {
        Some((cert, key)) => Some(tls_config(cert, key)?),
        None => None,
    };
    let listener = TcpListener::bind(options.addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: options.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: options.addr,
        source,
    })?;
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(stop.clone());
    if !options.allowed_hosts.is_empty() {
        let mut hosts = config.allowed_hosts.clone();
        hosts.extend(options.allowed_hosts.iter().cloned());
        config = config.with_allowed_hosts(hosts);
    } else if !addr.ip().is_loopback() {
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(factory()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let gate_state = Gate {
        keyring: options.keyring,
        origins: Arc::new(options.allowed_origins),
    };
    let app = Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(gate_state, gate));
    info!(%addr, tls = tls.is_some(), "serving MCP over streamable HTTP at /mcp");
    let task = match tls {
        None => tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                warn!(error = %e, "MCP HTTP server stopped");
            }
        }),
        Some(tls) => tokio::spawn(serve_tls(listener, app, tls, stop)),
    };
    Ok(HttpServer {
        addr,
        tls: options.tls.is_some(),
        task,
    })
}

/// The HTTPS accept loop: TLS, then HTTP/1.1 or HTTP/2 as negotiated.
async fn serve_tls(
    listener: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let app = app.clone();
                conns.spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    if let Err(e) = builder.serve_connection(io, svc).await {
                        debug!(error = %e, "MCP HTTPS connection ended");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}
