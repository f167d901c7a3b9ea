//! HTTPS serving: the TLS listener (rustls with the ring provider, HTTP/1.1
//! as pveproxy speaks), token authentication, per-request fault injection,
//! parameter decoding, and the `{"data": …}` envelope around the routes of
//! [`crate::api`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, header};
use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tidepool_lab_sim::Service;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Reply};
use crate::error::{ApiError, LabError, daemon_headers};
use crate::lab::{Shared, fingerprint_of};
use crate::params::{MAX_BODY, Params};

/// Binds `addr`, starts the accept loop and the pvestatd ticker.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), LabError> {
    let mut dns: Vec<&str> = vec!["localhost"];
    dns.extend(shared.config.hosts.iter().map(|h| h.name.as_str()));
    let mut ips: Vec<IpAddr> = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    let issued = shared.ca.issue_server(&dns, &ips).map_err(LabError::Cert)?;
    let cert = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .map_err(|e| LabError::Tls(rustls::Error::General(e.to_string())))?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|e| LabError::Tls(rustls::Error::General(e.to_string())))?;
    *shared.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = fingerprint_of(&cert);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(LabError::Tls)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(LabError::Tls)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| LabError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| LabError::Bind { addr, source })?;
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let handle = tidepool_lab_sim::serve::serve_tls(
        listener,
        acceptor,
        app,
        "pve",
        Some(Box::pin(pvestatd(shared.clone()))),
    );
    Ok((bound, handle))
}

/// The simulated pvestatd: refreshes the `/cluster/resources` snapshot.
async fn pvestatd(shared: Arc<Shared>) {
    let every = Duration::from_millis(shared.config.durations.status_interval_ms.max(1));
    loop {
        shared.clock.sleep(every).await;
        let now = shared.clock.now_unix();
        shared.state().pvestatd_tick(now);
    }
}

/// Checks a `PVEAPIToken` header as pve-http-server and pve-access-control do.
fn authenticate(shared: &Shared, req: &Request) -> Result<(), &'static str> {
    let Some(raw) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err("No ticket");
    };
    let Some(rest) = raw.strip_prefix("PVEAPIToken") else {
        return Err("Authentication failed!");
    };
    let Some(rest) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(' ')) else {
        return Err("Authentication failed!");
    };
    let value = rest.split(';').next().unwrap_or("");
    let value = percent_decode_str(value).decode_utf8_lossy();
    let Some((id, secret)) = value.rsplit_once('=') else {
        return Err("Authentication failed!");
    };
    if id == shared.config.token_id && secret == shared.config.token_secret {
        Ok(())
    } else {
        Err("Authentication failed!")
    }
}

/// Every request enters here.
async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let bodies = shared.config.error_bodies;
    match handle_inner(&shared, req).await {
        Ok(reply) => success(reply),
        Err(e) => e.into_response(bodies),
    }
}

async fn handle_inner(shared: &Arc<Shared>, req: Request) -> Result<Reply, ApiError> {
    let method = req.method().clone();
    let raw_path = req.uri().path().to_owned();
    let path = percent_decode_str(&raw_path)
        .decode_utf8_lossy()
        .into_owned();
    let Some(rel) = path.strip_prefix("/api2/json") else {
        return Err(ApiError::status(
            501,
            format!("Method '{method} {path}' not implemented"),
        ));
    };
    let rel = if rel.is_empty() { "/" } else { rel }.to_owned();
    if let Err(reason) = authenticate(shared, &req) {
        let delay = shared.config.durations.unauthorized_delay_ms;
        shared.clock.sleep(Duration::from_millis(delay)).await;
        return Err(ApiError::unauthorized(reason));
    }
    let op = format!("{method} {}", rel.trim_end_matches('/'));
    shared.count_request(method.as_str(), rel.trim_end_matches('/'));
    let injected = shared.faults.check(Service::Proxmox, &op);
    if !injected.latency.is_zero() {
        shared.clock.sleep(injected.latency).await;
    }
    if let Some(err) = injected.error {
        return Err(ApiError::status(err.status.unwrap_or(500), err.message));
    }
    let query = req.uri().query().map(str::to_owned);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY + 1)
        .await
        .map_err(|_| ApiError::status(501, "for data too large"))?;
    let params = Params::parse(&method, query.as_deref(), content_type.as_deref(), &body)?;
    let segments: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    api::route(shared, &method, &segments, &params)
        .await
        .map_err(|e| {
            if e.status == 501 && e.message.is_empty() {
                ApiError::status(501, format!("Method '{method} {rel}' not implemented"))
            } else {
                e
            }
        })
}

fn success(reply: Reply) -> Response {
    let mut obj = serde_json::Map::new();
    obj.insert("data".into(), reply.data);
    if let Some(total) = reply.total {
        obj.insert("total".into(), total.into());
    }
    let mut resp = Response::new(Body::from(serde_json::Value::Object(obj).to_string()));
    let h = resp.headers_mut();
    daemon_headers(h, true);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}
