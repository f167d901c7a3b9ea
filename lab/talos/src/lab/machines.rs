//! The machines' shared core: lookups by address, node name and epoch,
//! events, fault injection per call, and each machine's gRPC server, started
//! on its own address, stopped, and cycled to a new epoch.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tidepool_lab_sim::Service;

use crate::config::MachineConfig;
use tidepool_talos_proto::machine::machine_service_server::MachineServiceServer;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::{
    Inner, MAX_MESSAGE, Machine, MachinePhase, RunningServer, ServingMode, TalosEvent,
    TalosLabError, fresh_services, hostname_of, lock,
};
use crate::api::MachineApi;
use crate::tls::maintenance_cert;

impl Inner {
    pub(crate) fn emit(&self, event: TalosEvent) {
        tracing::debug!(?event, "talos lab event");
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    pub(crate) fn with_machine<R>(
        &self,
        ip: IpAddr,
        f: impl FnOnce(&mut Machine) -> R,
    ) -> Option<R> {
        let mut machines = lock(&self.machines);
        machines.get_mut(&ip).map(f)
    }

    pub(crate) fn epoch(&self, ip: IpAddr) -> Option<u64> {
        self.with_machine(ip, |m| m.epoch)
    }

    /// Finds a machine by IP, `ip:port` or hostname (how a `nodes` header
    /// may name it).
    pub(crate) fn resolve_node(&self, node: &str) -> Option<IpAddr> {
        if let Ok(ip) = node.parse::<IpAddr>() {
            return Some(ip);
        }
        if let Ok(addr) = node.parse::<SocketAddr>() {
            return Some(addr.ip());
        }
        let machines = lock(&self.machines);
        machines
            .iter()
            .find(|(ip, m)| m.serving.is_some() && hostname_of(**ip, m) == node)
            .map(|(ip, _)| *ip)
    }

    pub(crate) fn next_actor_id(&self) -> String {
        let n = self.actor_ids.fetch_add(1, Ordering::SeqCst) + 1;
        let mut z = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x7461_6c6f_735f_6c61;
        z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            z >> 32,
            (z >> 16) & 0xffff,
            z & 0xfff,
            n & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    /// Consults the fault table for `method` on `ip`, sleeping any injected
    /// latency; an injected error becomes a gRPC status (code from the
    /// rule, default `Unavailable`).
    pub(crate) async fn fault(&self, method: &str, ip: IpAddr) -> Result<(), tonic::Status> {
        let injected = self.faults.check(Service::Talos, &format!("{method}:{ip}"));
        if !injected.latency.is_zero() {
            self.clock.sleep(injected.latency).await;
        }
        match injected.error {
            None => Ok(()),
            Some(e) => {
                let code = e
                    .status
                    .map(|s| tonic::Code::from_i32(i32::from(s)))
                    .unwrap_or(tonic::Code::Unavailable);
                Err(tonic::Status::new(code, e.message))
            }
        }
    }

    /// Starts serving `mode` on the machine's address, bumping its epoch.
    pub(crate) async fn start_server(
        self: &Arc<Self>,
        ip: IpAddr,
        mode: ServingMode,
    ) -> Result<(), TalosLabError> {
        let addr = SocketAddr::new(ip, self.port.load(Ordering::SeqCst));
        let tls = match mode {
            ServingMode::Maintenance => {
                let cert = maintenance_cert(ip)?;
                self.with_machine(ip, |m| m.maintenance_ca = Some(cert.ca_pem.clone()));
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&cert.leaf.cert_pem, &cert.leaf.key_pem))
            }
            ServingMode::Configured => {
                let hostname = self
                    .with_machine(ip, |m| hostname_of(ip, m))
                    .unwrap_or_default();
                let leaf = self
                    .ca
                    .issue_server(&[hostname.as_str()], &[ip])
                    .or_else(|_| self.ca.issue_server(&[], &[ip]))?;
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem))
                    .client_ca_root(Certificate::from_pem(self.ca.cert_pem()))
            }
        };
        let listener = bind(addr).map_err(|source| TalosLabError::Bind { addr, source })?;
        let epoch = self
            .with_machine(ip, |m| {
                m.epoch += 1;
                m.serving = Some(mode);
                m.boots += 1;
                if mode == ServingMode::Configured {
                    let control_plane = m
                        .config
                        .as_ref()
                        .is_some_and(MachineConfig::is_control_plane);
                    m.services = fresh_services(self.clock.now(), control_plane);
                    m.phase = MachinePhase::Running;
                } else {
                    m.phase = MachinePhase::Maintenance;
                }
                m.epoch
            })
            .unwrap_or_default();
        let api = MachineApi::new(self.clone(), ip, epoch, mode);
        let service = MachineServiceServer::new(api)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let router = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(|source| TalosLabError::Tls { ip, source })?
            .add_service(service);
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::warn!(%ip, error = %e, "talos emulator server ended with an error");
            }
        });
        let replaced = self.with_machine(ip, |m| {
            m.server.replace(RunningServer { shutdown: tx, task })
        });
        if let Some(Some(old)) = replaced {
            old.task.abort();
        }
        self.emit(TalosEvent::Booted { ip, mode });
        Ok(())
    }

    /// Stops the machine's server (if any), bumping its epoch; waits briefly
    /// for open connections to drain, then drops them.
    pub(crate) async fn stop_server(&self, ip: IpAddr) {
        let server = self
            .with_machine(ip, |m| {
                m.epoch += 1;
                m.serving = None;
                m.server.take()
            })
            .flatten();
        if let Some(server) = server {
            let _ = server.shutdown.send(());
            let abort = server.task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server.task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Takes the API down now (after the current reply is sent), waits
    /// `down_for`, applies `prepare`, then serves `next` (or stays off).
    /// Cancelled if the machine's epoch moves meanwhile (power-off).
    pub(crate) fn cycle(
        self: &Arc<Self>,
        ip: IpAddr,
        phase: MachinePhase,
        wait_before: Duration,
        down_for: Duration,
        next: Option<ServingMode>,
        prepare: impl FnOnce(&mut Machine) + Send + 'static,
    ) {
        let inner = self.clone();
        tokio::spawn(async move {
            let Some(start) = inner.with_machine(ip, |m| {
                m.phase = phase;
                m.epoch
            }) else {
                return;
            };
            // Let the reply that triggered this leave first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            inner.clock.sleep(wait_before).await;
            if inner.epoch(ip) != Some(start) {
                return;
            }
            inner.stop_server(ip).await;
            let Some(down) = inner.epoch(ip) else { return };
            inner.clock.sleep(down_for).await;
            let proceed = inner
                .with_machine(ip, |m| {
                    if m.epoch != down {
                        return false;
                    }
                    prepare(m);
                    if next.is_none() {
                        m.phase = MachinePhase::Off;
                    }
                    true
                })
                .unwrap_or(false);
            if !proceed {
                return;
            }
            if let Some(mode) = next
                && let Err(e) = inner.start_server(ip, mode).await
            {
                tracing::warn!(%ip, error = %e, "talos emulator machine failed to come back");
                inner.with_machine(ip, |m| m.phase = MachinePhase::Off);
            }
        });
    }
}

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}
