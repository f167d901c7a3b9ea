//! Serving an axum app over TLS on a bound listener, one task per
//! connection (HTTP/1.1): what the lab's HTTPS endpoints (the Proxmox
//! emulator, the real control plane's clock-mapping endpoint) share.

use std::future::Future;
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// A task that lives and dies with the server (e.g. a status refresher).
pub type Companion = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Accepts TLS connections on `listener` and serves `app` on each until
/// the returned task is aborted, which also ends every connection and
/// `companion`. `name` labels the debug line of a connection that ends in
/// an error.
pub fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    name: &'static str,
    companion: Option<Companion>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        if let Some(companion) = companion {
            conns.spawn(companion);
        }
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _peer)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let app = app.clone();
                    conns.spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let svc = hyper_util::service::TowerToHyperService::new(app);
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                        {
                            tracing::debug!(error = %e, "{name} connection ended");
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}
