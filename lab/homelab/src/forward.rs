//! The control plane's API endpoint as the worker config names it
//! (`https://<control-plane address>:6443`): a TCP forwarder from that
//! address to the Kubernetes emulator, so what a worker (or `tidepool
//! doctor`) connects to answers as on a real cluster. The bytes are passed
//! through untouched (the emulator speaks plain HTTP).

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Errors of this module (binding is best effort; kept for the convention).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {}

/// The port of a control plane's API endpoint.
pub const API_PORT: u16 = 6443;

/// Forwards `ip:6443` to `target` until the task is aborted; `None` when
/// the address cannot be bound (another lab on the same address).
pub async fn control_plane(ip: IpAddr, target: SocketAddr) -> Option<JoinHandle<()>> {
    let listener = match TcpListener::bind((ip, API_PORT)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(%ip, error = %e, "control-plane endpoint not forwarded");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    }))
}
