//! The lab's Kubernetes endpoint in upstream mode: an HTTPS proxy on
//! loopback (the API server's certificate, so kubeconfigs trust the lab's
//! CA; client-go sends no bearer token over plain HTTP) in front of the
//! real API server that moves every timestamp
//! across the [`ClockMap`], so that whoever uses the lab's kubeconfig —
//! Tidepool, kubectl, the Python client — reads the lab's simulated time in
//! objects the real components stamped, exactly as with the emulator.
//!
//! Credentials pass through untouched: the API server authenticates the
//! kubeconfig's bearer token and authorizes it with RBAC. Request bodies
//! are mapped simulated → real, JSON answers real → simulated, watch
//! streams one event (line) at a time. Tidepool's own resources
//! (`/apis/tidepool.dev/...`) carry only times Tidepool wrote and pass
//! unmapped, byte for byte. Protobuf is not offered to the API server
//! (clients fall back to JSON), so every answer can be mapped.
//!
//! The lab's fault table applies here as on the emulator: each request is
//! named `"<verb> <resource>[/<subresource>]"` (`"update leases"`,
//! `"evict pods"`, ...) and an injected latency (simulated time) or error
//! (a `Status` with the injected code) is served before the request goes
//! on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use tidepool_lab_sim::{Faults, Service, SimClock};

use super::clock_map::{ClockMap, Direction};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Binding the socket failed.
    #[error("binding the lab's Kubernetes endpoint")]
    Bind(#[source] std::io::Error),
    /// The HTTP client could not be built.
    #[error("building the proxy's client of the API server: {0}")]
    Client(String),
    /// The serving certificate was refused.
    #[error("the lab endpoint's TLS configuration")]
    Tls(#[source] rustls::Error),
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    map: ClockMap,
    faults: Arc<Faults>,
    clock: SimClock,
}

/// Where the proxy forwards to and what it applies on the way.
pub struct Upstream<'a> {
    /// The API server's URL.
    pub server: &'a str,
    /// The lab's CA, which signed the API server's certificate.
    pub ca_pem: &'a str,
    /// The certificate and key the proxy serves.
    pub serving: &'a (String, String),
    /// The lab's fault table.
    pub faults: Arc<Faults>,
    /// The lab's clock (injected latencies are simulated time).
    pub clock: SimClock,
}

/// Bodies larger than this are refused (a list of 30,000 pods is ~100 MiB).
const BODY_LIMIT: usize = 1 << 30;

fn tls_config(serving: &(String, String)) -> Result<rustls::ServerConfig, ProxyError> {
    let general =
        |e: rustls::pki_types::pem::Error| ProxyError::Tls(rustls::Error::General(e.to_string()));
    let cert = CertificateDer::from_pem_slice(serving.0.as_bytes()).map_err(general)?;
    let key = PrivateKeyDer::from_pem_slice(serving.1.as_bytes()).map_err(general)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ProxyError::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(ProxyError::Tls)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Serves the proxy over HTTPS with the `serving` certificate and key on
/// `addr` until the task is aborted; the bound address and the task.
///
/// # Errors
/// [`ProxyError`].
pub async fn serve(
    addr: SocketAddr,
    upstream: Upstream<'_>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ProxyError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(upstream.serving)?));
    let ca = reqwest::Certificate::from_pem(upstream.ca_pem.as_bytes())
        .map_err(|e| ProxyError::Client(e.to_string()))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .map_err(|e| ProxyError::Client(e.to_string()))?;
    let proxy = Arc::new(Proxy {
        upstream: upstream.server.trim_end_matches('/').to_owned(),
        http,
        map: ClockMap::of(&upstream.clock),
        faults: upstream.faults,
        clock: upstream.clock,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(ProxyError::Bind)?;
    let bound = listener.local_addr().map_err(ProxyError::Bind)?;
    let app = Router::new().fallback(forward).with_state(proxy);
    let task = tidepool_lab_sim::serve::serve_tls(listener, acceptor, app, "lab endpoint", None);
    Ok((bound, task))
}

/// Whether a path names Tidepool's own API group (mapped by nobody).
fn own_group(path: &str) -> bool {
    path.starts_with("/apis/tidepool.dev/")
}

fn is_watch(path: &str, query: &str) -> bool {
    path.contains("/watch/")
        || query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1")
}

fn is_json(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The headers to send upstream: the client's, without hop-by-hop ones,
/// with protobuf taken out of `Accept`.
fn upstream_headers(headers: &HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "accept-encoding" | "transfer-encoding"
        ) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    let protobuf = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("protobuf"));
    if protobuf {
        out.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    }
    out
}

fn bad_gateway(message: String) -> Response {
    (StatusCode::BAD_GATEWAY, message).into_response()
}

/// The fault table's name of a request, as the emulator names it:
/// `"<verb> <resource>[/<subresource>]"`, `"evict pods"` for evictions;
/// `None` for paths that name no resource (discovery, `/readyz`).
fn operation(method: &axum::http::Method, path: &str, query: &str) -> Option<String> {
    use axum::http::Method;
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut rest = match segs.as_slice() {
        ["api", "v1", rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return None,
    };
    let legacy_watch = rest.first() == Some(&"watch");
    if legacy_watch {
        rest = &rest[1..];
    }
    if rest.len() >= 3 && rest[0] == "namespaces" {
        rest = &rest[2..];
    }
    let (resource, name, sub) = (rest.first()?, rest.get(1), rest.get(2));
    let verb = match *method {
        Method::GET if legacy_watch || is_watch(path, query) => "watch",
        Method::GET if name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    };
    Some(match (verb, sub) {
        ("create", Some(&"eviction")) => format!("evict {resource}"),
        (v, Some(sub)) => format!("{v} {resource}/{sub}"),
        (v, None) => format!("{v} {resource}"),
    })
}

/// The injected fault for this request, served instead of forwarding it.
async fn injected(proxy: &Proxy, op: &str) -> Option<Response> {
    let fault = proxy.faults.check(Service::Kubernetes, op);
    if !fault.latency.is_zero() {
        proxy.clock.sleep(fault.latency).await;
    }
    let err = fault.error?;
    let e = tidepool_lab_kube::ApiError::injected(err.status, err.message);
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            e.to_status().to_string(),
        )
            .into_response(),
    )
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    if let Some(op) = operation(&parts.method, &path, &query)
        && let Some(served) = injected(&proxy, &op).await
    {
        return served;
    }
    let mapped = !own_group(&path);
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("reading the request: {e}")),
    };
    let request_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json") || v.contains("yaml"));
    let body = if mapped && request_json {
        Bytes::from(proxy.map.map_bytes(&body, Direction::ToReal))
    } else {
        body
    };
    let url = if query.is_empty() {
        format!("{}{path}", proxy.upstream)
    } else {
        format!("{}{path}?{query}", proxy.upstream)
    };
    let resp = match proxy
        .http
        .request(parts.method, &url)
        .headers(upstream_headers(&parts.headers))
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("forwarding to the API server: {e}")),
    };
    let status = resp.status();
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            headers.append(name.clone(), value.clone());
        }
    }
    let json = is_json(resp.headers());
    let body = if mapped && json && !is_watch(&path, &query) {
        match resp.bytes().await {
            Ok(b) => Body::from(proxy.map.map_bytes(&b, Direction::ToSim)),
            Err(e) => return bad_gateway(format!("reading the API server's answer: {e}")),
        }
    } else if mapped && json {
        Body::from_stream(events(resp, proxy.map))
    } else {
        Body::from_stream(chunks(resp))
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The body as it arrives, chunk by chunk.
fn chunks(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send {
    futures::stream::unfold(Some(resp), |resp| async move {
        let mut resp = resp?;
        match resp.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// A watch stream, one mapped event per line.
fn events(
    resp: reqwest::Response,
    map: ClockMap,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send {
    futures::stream::unfold(Some((resp, Vec::<u8>::new())), move |state| async move {
        let (mut resp, mut pending) = state?;
        loop {
            if let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let mut out = map.map_bytes(&line[..end], Direction::ToSim);
                out.push(b'\n');
                return Some((Ok(Bytes::from(out)), Some((resp, pending))));
            }
            match resp.chunk().await {
                Ok(Some(chunk)) => pending.extend_from_slice(&chunk),
                Ok(None) if pending.is_empty() => return None,
                Ok(None) => {
                    let out = map.map_bytes(&pending, Direction::ToSim);
                    return Some((Ok(Bytes::from(out)), None));
                }
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_recognised_by_query_or_legacy_path() {
        assert!(is_watch("/api/v1/pods", "watch=true&resourceVersion=5"));
        assert!(is_watch("/api/v1/watch/pods", ""));
        assert!(!is_watch("/api/v1/pods", "limit=50"));
    }

    #[test]
    fn requests_are_named_as_the_emulator_names_them_for_the_fault_table() {
        use axum::http::Method;
        let op = |m: Method, p: &str, q: &str| operation(&m, p, q);
        assert_eq!(
            op(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/tidepool-system/leases/tidepool",
                ""
            ),
            Some("update leases".into())
        );
        assert_eq!(
            op(
                Method::POST,
                "/api/v1/namespaces/default/pods/web-1/eviction",
                ""
            ),
            Some("evict pods".into())
        );
        assert_eq!(
            op(Method::GET, "/api/v1/pods", "watch=1"),
            Some("watch pods".into())
        );
        assert_eq!(
            op(Method::GET, "/api/v1/namespaces", ""),
            Some("list namespaces".into())
        );
        assert_eq!(
            op(Method::PATCH, "/api/v1/nodes/worker-1/status", ""),
            Some("patch nodes/status".into())
        );
        assert_eq!(op(Method::GET, "/apis/apps/v1", ""), None);
        assert_eq!(op(Method::GET, "/readyz", ""), None);
    }

    #[test]
    fn protobuf_is_not_offered_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf,application/json"),
        );
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:1"));
        let out = upstream_headers(&h);
        assert_eq!(out[header::ACCEPT], "application/json");
        assert!(out.get(header::HOST).is_none());
    }
}
