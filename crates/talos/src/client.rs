//! The client of a configured Talos node: mutual TLS from a talosconfig
//! context, and the machine API calls a worker provisioner needs.
//!
//! Each call targets one machine: the endpoint itself, or — after
//! [`TalosClient::for_node`] — a node reached through the endpoint's apid
//! (the `nodes` request header, as `talosctl -n` sends it). Errors a node
//! reports inside an otherwise successful reply (apid's one-to-many
//! proxying) become [`TalosError::Node`].

use std::time::Duration;

use tidepool_talos_proto::common::Metadata;
use tidepool_talos_proto::machine as pb;
use tidepool_talos_proto::machine::machine_service_client::MachineServiceClient;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::error::TalosError;
use crate::maintenance::{ApplyMode, ApplyOutcome};
use crate::talosconfig::TalosContext;
use crate::tls::{Target, connect};

/// The port apid listens on.
pub const APID_PORT: u16 = 50000;

/// What `Version` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The Talos version tag (`v1.10.6`).
    pub tag: String,
    /// The git commit.
    pub sha: String,
    /// The OS (`linux`).
    pub os: String,
    /// The architecture (`amd64`).
    pub arch: String,
    /// The platform (`nocloud`, `metal`, ...), if reported.
    pub platform: Option<String>,
}

/// One service in `ServiceList`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// The service id (`kubelet`).
    pub id: String,
    /// Its state (`Running`, `Failed`, ...).
    pub state: String,
    /// Health: `None` when unknown.
    pub healthy: Option<bool>,
    /// The last health message.
    pub last_message: String,
    /// How many times it failed among the events the node keeps (since
    /// boot): a crash loop shows as a growing count.
    pub failures: u32,
}

/// How a reboot proceeds, as Talos' `RebootRequest.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RebootMode {
    /// The normal reboot (kexec where possible).
    #[default]
    Default,
    /// A full power cycle.
    PowerCycle,
    /// Skip graceful teardown (Talos v1.12+).
    Force,
}

/// Which disks a reset wipes, as Talos' `ResetRequest.WipeMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WipeMode {
    /// System disk and user disks (talosctl's default).
    #[default]
    All,
    /// The system disk only.
    SystemDisk,
    /// User disks only.
    UserDisks,
}

/// A reset request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetOptions {
    /// Cordon and drain (and leave etcd) first.
    pub graceful: bool,
    /// Reboot afterwards instead of powering off.
    pub reboot: bool,
    /// Which disks to wipe.
    pub wipe: WipeMode,
}

impl Default for ResetOptions {
    /// talosctl's defaults: graceful, power off, wipe all.
    fn default() -> Self {
        Self {
            graceful: true,
            reboot: false,
            wipe: WipeMode::All,
        }
    }
}

/// A client of one configured Talos node (or of the nodes behind one
/// apid endpoint). Cheap to clone.
#[derive(Clone, Debug)]
pub struct TalosClient {
    inner: MachineServiceClient<Channel>,
    endpoint: String,
    node: Option<String>,
    timeout: Duration,
}

/// Splits `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
fn parse_endpoint(endpoint: &str) -> Result<Target, TalosError> {
    let invalid = |message: &str| TalosError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        message: message.to_owned(),
    };
    let trimmed = endpoint
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if let Ok(addr) = trimmed.parse::<std::net::SocketAddr>() {
        return Ok(Target {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    if let Ok(ip) = trimmed.parse::<std::net::IpAddr>() {
        return Ok(Target {
            host: ip.to_string(),
            port: APID_PORT,
        });
    }
    match trimmed.rsplit_once(':') {
        Some((host, port)) => Ok(Target {
            host: host.to_owned(),
            port: port
                .parse()
                .map_err(|_| invalid("the port is not a number"))?,
        }),
        None => Ok(Target {
            host: trimmed.to_owned(),
            port: APID_PORT,
        }),
    }
}

/// Checks a reply's messages for per-node errors and returns the first.
fn single<T>(
    method: &str,
    messages: Vec<T>,
    metadata: impl Fn(&T) -> Option<&Metadata>,
) -> Result<T, TalosError> {
    if let Some(failed) = messages
        .iter()
        .filter_map(&metadata)
        .find(|m| !m.error.is_empty())
    {
        return Err(TalosError::Node {
            node: failed.hostname.clone(),
            method: method.to_owned(),
            message: failed.error.clone(),
        });
    }
    messages
        .into_iter()
        .next()
        .ok_or_else(|| TalosError::EmptyReply {
            method: method.to_owned(),
        })
}

impl TalosClient {
    /// Connects to the first endpoint of `context` that completes a
    /// mutual-TLS handshake (the others are tried in order on failure),
    /// with `timeout` for the connect and for each call.
    ///
    /// # Errors
    /// [`TalosError::Setup`] when the context's TLS material is unusable,
    /// otherwise the error of the last endpoint tried
    /// ([`TalosError::NotReady`], [`TalosError::Timeout`],
    /// [`TalosError::Tls`], ...).
    pub async fn connect(context: &TalosContext, timeout: Duration) -> Result<Self, TalosError> {
        let tls = context
            .client_tls()
            .map_err(|e| TalosError::Setup(e.to_string()))?;
        let mut last = TalosError::InvalidEndpoint {
            endpoint: String::new(),
            message: "the context has no endpoints".to_owned(),
        };
        for endpoint in &context.endpoints {
            let target = match parse_endpoint(endpoint) {
                Ok(t) => t,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match connect(&target, tls.clone(), timeout, None).await {
                Ok(channel) => {
                    return Ok(Self {
                        inner: MachineServiceClient::new(channel)
                            .max_decoding_message_size(32 << 20),
                        endpoint: target.display(),
                        node: None,
                        timeout,
                    });
                }
                Err(e) => {
                    tracing::debug!(endpoint = %target.display(), error = %e, "Talos endpoint unusable");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The same connection, with calls addressed to `node` through the
    /// endpoint's apid (the `nodes` header).
    pub fn for_node(&self, node: impl Into<String>) -> Self {
        Self {
            node: Some(node.into()),
            ..self.clone()
        }
    }

    /// The endpoint this client is connected to (`ip:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request<T>(&self, body: T) -> Result<tonic::Request<T>, TalosError> {
        let mut request = tonic::Request::new(body);
        request.set_timeout(self.timeout);
        if let Some(node) = &self.node {
            let value = node.parse().map_err(|_| TalosError::InvalidEndpoint {
                endpoint: node.clone(),
                message: "not a valid header value".to_owned(),
            })?;
            request.metadata_mut().insert("nodes", value);
        }
        Ok(request)
    }

    async fn call<R, F, Fut>(&self, method: &'static str, call: F) -> Result<R, TalosError>
    where
        F: FnOnce(MachineServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let span = tracing::debug_span!("talos_call", method, endpoint = %self.endpoint);
        let reply = tokio::time::timeout(self.timeout, call(self.inner.clone()))
            .instrument(span)
            .await;
        match reply {
            Err(_) => Err(TalosError::Timeout {
                operation: method.to_owned(),
                endpoint: self.endpoint.clone(),
                timeout: self.timeout,
            }),
            Ok(Err(status)) => Err(TalosError::from_status(&self.endpoint, method, &status)),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
        }
    }

    /// The node's Talos version and platform.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn version(&self) -> Result<VersionInfo, TalosError> {
        let request = self.request(())?;
        let reply = self
            .call("Version", |mut c| async move { c.version(request).await })
            .await?;
        let message = single("Version", reply.messages, |m| m.metadata.as_ref())?;
        let version = message.version.unwrap_or_default();
        Ok(VersionInfo {
            tag: version.tag,
            sha: version.sha,
            os: version.os,
            arch: version.arch,
            platform: message.platform.map(|p| p.name),
        })
    }

    /// The node's hostname.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn hostname(&self) -> Result<String, TalosError> {
        let request = self.request(())?;
        let reply = self
            .call("Hostname", |mut c| async move { c.hostname(request).await })
            .await?;
        Ok(single("Hostname", reply.messages, |m| m.metadata.as_ref())?.hostname)
    }

    /// The node's services and their states.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn service_list(&self) -> Result<Vec<ServiceStatus>, TalosError> {
        let request = self.request(())?;
        let reply = self
            .call("ServiceList", |mut c| async move {
                c.service_list(request).await
            })
            .await?;
        let message = single("ServiceList", reply.messages, |m| m.metadata.as_ref())?;
        Ok(message
            .services
            .into_iter()
            .map(|s| {
                let health = s.health.unwrap_or_default();
                let failures = s
                    .events
                    .map(|e| e.events.iter().filter(|e| e.state == "Failed").count())
                    .unwrap_or_default();
                ServiceStatus {
                    id: s.id,
                    state: s.state,
                    healthy: (!health.unknown).then_some(health.healthy),
                    last_message: health.last_message,
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                }
            })
            .collect())
    }

    /// Restarts a service (Talos allows it for `kubelet` and extension
    /// services); returns the node's acknowledgement.
    ///
    /// # Errors
    /// [`TalosError::Refused`] for a service that cannot be restarted, and
    /// see [`TalosError`].
    pub async fn service_restart(&self, id: &str) -> Result<String, TalosError> {
        let request = self.request(pb::ServiceRestartRequest { id: id.to_owned() })?;
        let reply = self
            .call("ServiceRestart", |mut c| async move {
                c.service_restart(request).await
            })
            .await?;
        Ok(single("ServiceRestart", reply.messages, |m| m.metadata.as_ref())?.resp)
    }

    /// Reboots the node; returns the actor id of the operation. Talos does
    /// not drain before a reboot: drain through Kubernetes first.
    ///
    /// # Errors
    /// [`TalosError::PermissionDenied`] for a reader, and see
    /// [`TalosError`].
    pub async fn reboot(&self, mode: RebootMode) -> Result<String, TalosError> {
        let mode = match mode {
            RebootMode::Default => pb::reboot_request::Mode::Default,
            RebootMode::PowerCycle => pb::reboot_request::Mode::Powercycle,
            RebootMode::Force => pb::reboot_request::Mode::Force,
        };
        let request = self.request(pb::RebootRequest { mode: mode as i32 })?;
        let reply = self
            .call("Reboot", |mut c| async move { c.reboot(request).await })
            .await?;
        Ok(single("Reboot", reply.messages, |m| m.metadata.as_ref())?.actor_id)
    }

    /// Shuts the node down; `force` skips cordon and drain. Returns the
    /// actor id.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn shutdown(&self, force: bool) -> Result<String, TalosError> {
        let request = self.request(pb::ShutdownRequest { force })?;
        let reply = self
            .call("Shutdown", |mut c| async move { c.shutdown(request).await })
            .await?;
        Ok(single("Shutdown", reply.messages, |m| m.metadata.as_ref())?.actor_id)
    }

    /// Resets the node (wipes it). Returns the actor id.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn reset(&self, options: ResetOptions) -> Result<String, TalosError> {
        let mode = match options.wipe {
            WipeMode::All => pb::reset_request::WipeMode::All,
            WipeMode::SystemDisk => pb::reset_request::WipeMode::SystemDisk,
            WipeMode::UserDisks => pb::reset_request::WipeMode::UserDisks,
        };
        let request = self.request(pb::ResetRequest {
            graceful: options.graceful,
            reboot: options.reboot,
            system_partitions_to_wipe: Vec::new(),
            user_disks_to_wipe: Vec::new(),
            mode: mode as i32,
        })?;
        let reply = self
            .call("Reset", |mut c| async move { c.reset(request).await })
            .await?;
        Ok(single("Reset", reply.messages, |m| m.metadata.as_ref())?.actor_id)
    }

    /// Wipes the node's EPHEMERAL partition (`/var`: container images,
    /// pod volumes, logs) and reboots it, keeping its configuration (the
    /// STATE partition): `talosctl reset --system-labels-to-wipe EPHEMERAL
    /// --reboot`. Talos' API has no call that prunes images, so this is how
    /// disk is freed on a Talos node. Returns the actor id.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn wipe_ephemeral(&self) -> Result<String, TalosError> {
        let request = self.request(pb::ResetRequest {
            graceful: true,
            reboot: true,
            system_partitions_to_wipe: vec![pb::ResetPartitionSpec {
                label: "EPHEMERAL".to_owned(),
                wipe: true,
            }],
            user_disks_to_wipe: Vec::new(),
            mode: pb::reset_request::WipeMode::SystemDisk as i32,
        })?;
        let reply = self
            .call("Reset", |mut c| async move { c.reset(request).await })
            .await?;
        Ok(single("Reset", reply.messages, |m| m.metadata.as_ref())?.actor_id)
    }

    /// Upgrades the node to the installer `image` (the legacy
    /// `MachineService/Upgrade`, served v1.8 through v1.17), keeping its
    /// ephemeral data; `stage` defers the install to early in the next
    /// boot. Returns the node's acknowledgement.
    ///
    /// # Errors
    /// See [`TalosError`].
    pub async fn upgrade(&self, image: &str, stage: bool) -> Result<String, TalosError> {
        let request = self.request(pb::UpgradeRequest {
            image: image.to_owned(),
            preserve: true,
            stage,
            force: false,
            reboot_mode: pb::upgrade_request::RebootMode::Default as i32,
        })?;
        let reply = self
            .call("Upgrade", |mut c| async move { c.upgrade(request).await })
            .await?;
        Ok(single("Upgrade", reply.messages, |m| m.metadata.as_ref())?.ack)
    }

    /// Applies a new machine configuration to the configured node.
    ///
    /// # Errors
    /// [`TalosError::ConfigRejected`] when the node refuses it (including
    /// `NoReboot` for a change that needs a reboot), and see
    /// [`TalosError`].
    pub async fn apply_configuration(
        &self,
        config: &[u8],
        mode: ApplyMode,
    ) -> Result<ApplyOutcome, TalosError> {
        let request = self.request(pb::ApplyConfigurationRequest {
            data: config.to_vec(),
            mode: mode.to_proto() as i32,
            dry_run: false,
            try_mode_timeout: None,
        })?;
        let reply = self
            .call("ApplyConfiguration", |mut c| async move {
                c.apply_configuration(request).await
            })
            .await?;
        let message = single("ApplyConfiguration", reply.messages, |m| {
            m.metadata.as_ref()
        })?;
        Ok(ApplyOutcome {
            warnings: message.warnings,
            mode: ApplyMode::from_proto(message.mode),
            mode_details: message.mode_details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_port_50000_unless_they_name_one() {
        let t = parse_endpoint("10.0.0.5").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 50000));
        let t = parse_endpoint("10.0.0.5:50123").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 50123));
        let t = parse_endpoint("[fd00::5]:50000").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::5", 50000));
        let t = parse_endpoint("fd00::5").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::5", 50000));
        let t = parse_endpoint("talos.home.arpa").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("talos.home.arpa", 50000));
        assert!(parse_endpoint("host:http").is_err());
    }
}
