//! The `machine.MachineService` implementation one simulated machine
//! serves: the maintenance API (only `ApplyConfiguration`) or the
//! configured API (mTLS, RBAC from the client certificate, the `nodes`
//! header fan-out of apid), with fault injection per call.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_talos_proto::common::Metadata;
use tidepool_talos_proto::google::rpc::Status as RpcStatus;
use tidepool_talos_proto::machine::{
    self as pb, ApplyConfigurationRequest, ApplyConfigurationResponse, HostnameResponse,
    RebootRequest, RebootResponse, ResetRequest, ResetResponse, ServiceListResponse,
    ServiceRestartRequest, ServiceRestartResponse, ServiceStartRequest, ServiceStartResponse,
    ServiceStopRequest, ServiceStopResponse, ShutdownRequest, ShutdownResponse, UpgradeRequest,
    UpgradeResponse, VersionResponse, apply_configuration_request::Mode,
    machine_service_server::MachineService, reset_request,
};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::config::{ConfigError, MachineConfig};
use crate::lab::{ApplyMode, Inner, MachinePhase, ServingMode, TalosEvent, WipeMode, hostname_of};
use crate::tls::{Role, roles_of_certificate};

/// The error maintenance mode gives for admin-only methods.
pub const MAINTENANCE_UNIMPLEMENTED: &str = "API is not implemented in maintenance mode";

/// Default rollback delay of a try-mode apply (Talos' `ConfigTryTimeout`).
const TRY_TIMEOUT: Duration = Duration::from_secs(60);

/// The server side of one machine's API at one epoch.
pub(crate) struct MachineApi {
    lab: Arc<Inner>,
    ip: IpAddr,
    epoch: u64,
    mode: ServingMode,
}

/// Roles allowed per method (Talos' machined RBAC rules).
fn allowed_roles(method: &str) -> &'static [Role] {
    match method {
        "Version" | "Hostname" | "ServiceList" => &[Role::Admin, Role::Operator, Role::Reader],
        "Reboot" | "Shutdown" | "ServiceRestart" | "ServiceStart" | "ServiceStop" => {
            &[Role::Admin, Role::Operator]
        }
        _ => &[Role::Admin],
    }
}

/// Messages that carry `common.Metadata` in field 1.
trait WithMetadata: Default {
    fn set_metadata(&mut self, metadata: Metadata);
}

macro_rules! with_metadata {
    ($($t:ty),* $(,)?) => {
        $(impl WithMetadata for $t {
            fn set_metadata(&mut self, metadata: Metadata) {
                self.metadata = Some(metadata);
            }
        })*
    };
}

with_metadata!(
    pb::ApplyConfiguration,
    pb::Version,
    pb::Hostname,
    pb::ServiceList,
    pb::ServiceRestart,
    pb::ServiceStart,
    pb::ServiceStop,
    pb::Reboot,
    pb::Shutdown,
    pb::Reset,
    pb::Upgrade,
);

/// Go's name of a gRPC code, as `status.Error(...).Error()` prints it.
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The metadata apid puts in place of a failed node's reply.
fn error_metadata(node: &str, status: &Status) -> Metadata {
    Metadata {
        hostname: node.to_owned(),
        error: format!(
            "rpc error: code = {} desc = {}",
            go_code_name(status.code()),
            status.message()
        ),
        status: Some(RpcStatus {
            code: status.code() as i32,
            message: status.message().to_owned(),
            details: Vec::new(),
        }),
    }
}

/// The nodes listed in the `nodes` header (repeated values or
/// comma-separated).
fn nodes_header(headers: &MetadataMap) -> Vec<String> {
    headers
        .get_all("nodes")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn mode_of(raw: i32) -> Mode {
    Mode::try_from(raw).unwrap_or(Mode::Reboot)
}

fn apply_mode(mode: Mode) -> ApplyMode {
    match mode {
        Mode::Reboot => ApplyMode::Reboot,
        Mode::Auto => ApplyMode::Auto,
        Mode::NoReboot => ApplyMode::NoReboot,
        Mode::Staged => ApplyMode::Staged,
        Mode::Try => ApplyMode::Try,
    }
}

/// The `--mode` spelling talosctl uses (`no-reboot`, `staged`, ...).
fn mode_flag(mode: Mode) -> String {
    mode.as_str_name().to_lowercase().replace('_', "-")
}

impl MachineApi {
    pub(crate) fn new(lab: Arc<Inner>, ip: IpAddr, epoch: u64, mode: ServingMode) -> Self {
        Self {
            lab,
            ip,
            epoch,
            mode,
        }
    }

    /// Refuses calls that reach a server the machine has moved past (a
    /// connection kept open across a reboot).
    fn check_current(&self) -> Result<(), Status> {
        if self.lab.epoch(self.ip) == Some(self.epoch) {
            Ok(())
        } else {
            Err(Status::unavailable(
                "connection closed: the machine is restarting",
            ))
        }
    }

    /// Checks the caller's roles for `method` (configured mode only).
    fn authorize<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        let roles: Vec<Role> = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| roles_of_certificate(c.as_ref())))
            .unwrap_or_default();
        let allowed = allowed_roles(method);
        if roles.iter().any(|r| allowed.contains(r)) {
            Ok(())
        } else {
            Err(Status::permission_denied("not authorized"))
        }
    }

    /// In maintenance mode: the error every method except
    /// `ApplyConfiguration` gives.
    fn maintenance_refusal(&self, method: &str) -> Result<(), Status> {
        if self.mode != ServingMode::Maintenance {
            return Ok(());
        }
        match method {
            "Version" | "Upgrade" | "Reset" => {
                Err(Status::unimplemented(MAINTENANCE_UNIMPLEMENTED))
            }
            _ => Err(Status::unimplemented(format!(
                "method {method} not implemented"
            ))),
        }
    }

    /// Runs `call` for this machine, or, with a `nodes` header, for every
    /// listed node as apid's one-to-many proxy does: each reply message is
    /// tagged with the node as given, and a failing node contributes an
    /// error message instead of failing the call.
    async fn fan_out<Req, T, F, Fut>(
        &self,
        request: Request<Req>,
        method: &'static str,
        call: F,
    ) -> Result<Vec<T>, Status>
    where
        T: WithMetadata,
        F: Fn(Arc<Inner>, IpAddr, Req) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
        Req: Clone,
    {
        self.check_current()?;
        self.maintenance_refusal(method)?;
        self.authorize(&request, method)?;
        let nodes = nodes_header(request.metadata());
        let body = request.into_inner();
        if nodes.is_empty() {
            self.lab.fault(method, self.ip).await?;
            return Ok(vec![call(self.lab.clone(), self.ip, body).await?]);
        }
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let result = async {
                let ip = self
                    .lab
                    .resolve_node(&node)
                    .ok_or_else(|| dial_error(&node))?;
                let serving = self.lab.with_machine(ip, |m| m.serving).flatten();
                if serving != Some(ServingMode::Configured) {
                    return Err(dial_error(&node));
                }
                self.lab.fault(method, ip).await?;
                call(self.lab.clone(), ip, body.clone()).await
            }
            .await;
            let mut message = match &result {
                Ok(_) => None,
                Err(status) => Some(error_metadata(&node, status)),
            };
            let mut reply = result.unwrap_or_default();
            reply.set_metadata(message.take().unwrap_or(Metadata {
                hostname: node.clone(),
                ..Default::default()
            }));
            out.push(reply);
        }
        Ok(out)
    }
}

fn dial_error(node: &str) -> Status {
    Status::unavailable(format!(
        "connection error: desc = \"transport: Error while dialing: dial tcp {node}:50000: connect: connection refused\""
    ))
}

// ---- per-machine handlers (configured mode) ----

fn running(lab: &Inner, ip: IpAddr) -> Result<(), Status> {
    match lab.with_machine(ip, |m| m.serving) {
        Some(Some(ServingMode::Configured)) => Ok(()),
        _ => Err(dial_error(&ip.to_string())),
    }
}

async fn version(lab: Arc<Inner>, ip: IpAddr, _: ()) -> Result<pb::Version, Status> {
    running(&lab, ip)?;
    let tag = lab
        .with_machine(ip, |m| m.version.clone())
        .unwrap_or_default();
    Ok(pb::Version {
        metadata: None,
        version: Some(pb::VersionInfo {
            tag,
            sha: "0000000".to_owned(),
            built: String::new(),
            go_version: "go1.24.6".to_owned(),
            os: "linux".to_owned(),
            arch: "amd64".to_owned(),
        }),
        platform: Some(pb::PlatformInfo {
            name: "nocloud".to_owned(),
            mode: "cloud".to_owned(),
        }),
        features: Some(pb::FeaturesInfo { rbac: true }),
    })
}

async fn hostname(lab: Arc<Inner>, ip: IpAddr, _: ()) -> Result<pb::Hostname, Status> {
    running(&lab, ip)?;
    let hostname = lab
        .with_machine(ip, |m| hostname_of(ip, m))
        .unwrap_or_default();
    Ok(pb::Hostname {
        metadata: None,
        hostname,
    })
}

async fn service_list(lab: Arc<Inner>, ip: IpAddr, _: ()) -> Result<pb::ServiceList, Status> {
    running(&lab, ip)?;
    let services = lab
        .with_machine(ip, |m| {
            m.services
                .iter()
                .map(|(id, s)| pb::ServiceInfo {
                    id: id.clone(),
                    state: s.state.to_owned(),
                    events: Some(pb::ServiceEvents {
                        events: s
                            .events
                            .iter()
                            .map(|(msg, state, ts)| pb::ServiceEvent {
                                msg: msg.clone(),
                                state: (*state).to_owned(),
                                ts: Some((*ts).into()),
                            })
                            .collect(),
                    }),
                    health: Some(pb::ServiceHealth {
                        unknown: false,
                        healthy: s.healthy,
                        last_message: if s.healthy {
                            String::new()
                        } else {
                            "service is not running".to_owned()
                        },
                        last_change: Some(s.last_change.into()),
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(pb::ServiceList {
        metadata: None,
        services,
    })
}

/// What a service-control request does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ServiceOp {
    Restart,
    Start,
    Stop,
}

impl ServiceOp {
    fn verb(self) -> &'static str {
        match self {
            ServiceOp::Restart => "restart",
            ServiceOp::Start => "start",
            ServiceOp::Stop => "stop",
        }
    }

    fn past(self) -> &'static str {
        match self {
            ServiceOp::Restart => "restarted",
            ServiceOp::Start => "started",
            ServiceOp::Stop => "stopped",
        }
    }
}

/// Controls a service: only kubelet (and extension services, which the
/// emulator has none of) may be controlled through the API.
fn control_service(
    lab: &Arc<Inner>,
    ip: IpAddr,
    id: &str,
    op: ServiceOp,
) -> Result<String, Status> {
    running(lab, ip)?;
    let now = lab.clock.now();
    let outcome = lab
        .with_machine(ip, |m| {
            let epoch = m.epoch;
            let Some(service) = m.services.get_mut(id) else {
                return Err(Status::unknown(format!("service {id:?} not defined")));
            };
            let is_running = service.state == "Running" || service.state == "Starting";
            // Restarting a stopped service starts it; starting a running
            // one and stopping a stopped one do nothing.
            let op = match (op, is_running) {
                (ServiceOp::Restart, false) => ServiceOp::Start,
                (op, _) => op,
            };
            if (op == ServiceOp::Start && is_running) || (op == ServiceOp::Stop && !is_running) {
                return Ok(None);
            }
            if !(id == "kubelet" || id.starts_with("ext-")) {
                return Err(Status::unknown(format!(
                    "service {id:?} doesn't support {} operation via API",
                    op.verb()
                )));
            }
            match op {
                ServiceOp::Stop => {
                    service.state = "Finished";
                    service.healthy = false;
                    service.events.push((
                        "Service finished successfully".to_owned(),
                        "Finished",
                        now,
                    ));
                }
                ServiceOp::Restart | ServiceOp::Start => {
                    service.state = "Starting";
                    service.healthy = false;
                    service
                        .events
                        .push(("Starting service".to_owned(), "Starting", now));
                }
            }
            service.last_change = now;
            Ok(Some((op, epoch)))
        })
        .unwrap_or_else(|| Err(dial_error(&ip.to_string())))?;
    if let Some((op, epoch)) = outcome {
        if op != ServiceOp::Stop {
            let inner = lab.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                inner.clock.sleep(inner.durations.service_restart).await;
                let now = inner.clock.now();
                inner.with_machine(ip, |m| {
                    if m.epoch != epoch {
                        return;
                    }
                    if let Some(s) = m.services.get_mut(&id)
                        && s.state == "Starting"
                    {
                        s.state = "Running";
                        s.healthy = true;
                        s.last_change = now;
                        s.events
                            .push(("Health check successful".to_owned(), "Running", now));
                    }
                });
            });
        }
        if op == ServiceOp::Restart {
            lab.emit(TalosEvent::ServiceRestarted {
                ip,
                service: id.to_owned(),
            });
        }
    }
    Ok(format!("Service {id:?} {}", op.past()))
}

async fn reboot(lab: Arc<Inner>, ip: IpAddr, _: RebootRequest) -> Result<pb::Reboot, Status> {
    running(&lab, ip)?;
    lab.emit(TalosEvent::Rebooted { ip });
    let down = lab.durations.reboot;
    lab.cycle(
        ip,
        MachinePhase::Rebooting,
        Duration::ZERO,
        down,
        Some(ServingMode::Configured),
        apply_staged,
    );
    Ok(pb::Reboot {
        metadata: None,
        actor_id: lab.next_actor_id(),
    })
}

fn apply_staged(m: &mut crate::lab::Machine) {
    if let Some(staged) = m.staged.take() {
        m.config = Some(staged);
    }
}

async fn shutdown(
    lab: Arc<Inner>,
    ip: IpAddr,
    req: ShutdownRequest,
) -> Result<pb::Shutdown, Status> {
    running(&lab, ip)?;
    lab.emit(TalosEvent::ShutdownRequested {
        ip,
        force: req.force,
    });
    let down = lab.durations.shutdown;
    lab.cycle(
        ip,
        MachinePhase::ShuttingDown,
        Duration::ZERO,
        down,
        None,
        |_| {},
    );
    Ok(pb::Shutdown {
        metadata: None,
        actor_id: lab.next_actor_id(),
    })
}

async fn reset(lab: Arc<Inner>, ip: IpAddr, req: ResetRequest) -> Result<pb::Reset, Status> {
    running(&lab, ip)?;
    let wipe = match reset_request::WipeMode::try_from(req.mode) {
        Ok(reset_request::WipeMode::SystemDisk) => WipeMode::SystemDisk,
        Ok(reset_request::WipeMode::UserDisks) => WipeMode::UserDisks,
        _ => WipeMode::All,
    };
    if !req.user_disks_to_wipe.is_empty() && wipe == WipeMode::SystemDisk {
        return Err(Status::unknown(
            "reset failed: invalid input, wipe mode SYSTEM_DISK doesn't support UserDisksToWipe parameter",
        ));
    }
    let partitions: Vec<String> = req
        .system_partitions_to_wipe
        .iter()
        .filter(|p| p.wipe)
        .map(|p| p.label.clone())
        .collect();
    let wipes_state = wipe != WipeMode::UserDisks
        && (req.system_partitions_to_wipe.is_empty() || partitions.iter().any(|p| p == "STATE"));
    lab.emit(TalosEvent::ResetRequested {
        ip,
        graceful: req.graceful,
        reboot: req.reboot,
        wipe,
        partitions,
    });
    let next = match (req.reboot, wipes_state) {
        (false, _) => None,
        (true, true) => Some(ServingMode::Maintenance),
        (true, false) => Some(ServingMode::Configured),
    };
    let down = if req.reboot {
        lab.durations.reboot
    } else {
        lab.durations.shutdown
    };
    lab.cycle(
        ip,
        MachinePhase::Resetting,
        Duration::ZERO,
        down,
        next,
        move |m| {
            if wipes_state {
                m.config = None;
                m.staged = None;
            }
        },
    );
    Ok(pb::Reset {
        metadata: None,
        actor_id: lab.next_actor_id(),
    })
}

/// The version tag of an installer image reference
/// (`ghcr.io/siderolabs/installer:v1.10.6` → `v1.10.6`).
fn image_tag(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag.to_owned())
}

async fn upgrade(lab: Arc<Inner>, ip: IpAddr, req: UpgradeRequest) -> Result<pb::Upgrade, Status> {
    running(&lab, ip)?;
    if req.image.is_empty() {
        return Err(Status::invalid_argument("image is required"));
    }
    lab.emit(TalosEvent::UpgradeRequested {
        ip,
        image: req.image.clone(),
    });
    let tag = image_tag(&req.image);
    let (wait, down) = (lab.durations.upgrade, lab.durations.reboot);
    lab.cycle(
        ip,
        MachinePhase::Upgrading,
        wait,
        down,
        Some(ServingMode::Configured),
        move |m| {
            apply_staged(m);
            if let Some(tag) = tag {
                m.version = tag;
            }
        },
    );
    Ok(pb::Upgrade {
        metadata: None,
        ack: "Upgrade request received".to_owned(),
        actor_id: lab.next_actor_id(),
    })
}

/// `ApplyConfiguration` on a configured machine.
async fn apply_configured(
    lab: Arc<Inner>,
    ip: IpAddr,
    req: ApplyConfigurationRequest,
) -> Result<pb::ApplyConfiguration, Status> {
    running(&lab, ip)?;
    let config = MachineConfig::parse(&req.data)
        .map_err(|e: ConfigError| Status::invalid_argument(e.to_string()))?;
    let requested = mode_of(req.mode);
    // Every change the emulator models applies live, so AUTO resolves to
    // NO_REBOOT.
    let resolved = if requested == Mode::Auto {
        Mode::NoReboot
    } else {
        requested
    };
    let warnings = config.warnings().to_vec();
    if req.dry_run {
        let same = lab
            .with_machine(ip, |m| m.config.as_ref().map(|c| c.raw() == config.raw()))
            .flatten()
            .unwrap_or(false);
        let summary = if same {
            "No changes."
        } else {
            "Config diff: the configuration changes."
        };
        return Ok(pb::ApplyConfiguration {
            metadata: None,
            warnings,
            mode: resolved as i32,
            mode_details: format!(
                "Dry run summary:\nApplied configuration with mode {}\n{summary}",
                resolved.as_str_name()
            ),
        });
    }
    let raw = config.raw().to_owned();
    let details = match resolved {
        Mode::Staged => {
            lab.with_machine(ip, |m| m.staged = Some(config));
            "Staged configuration to be applied after the next reboot".to_owned()
        }
        Mode::Reboot => {
            lab.with_machine(ip, |m| m.config = Some(config));
            "Applied configuration with a reboot".to_owned()
        }
        Mode::Try => {
            let timeout = req
                .try_mode_timeout
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(TRY_TIMEOUT);
            let state = lab.with_machine(ip, |m| {
                let previous = m.config.replace(config);
                m.try_token += 1;
                (previous, m.try_token)
            });
            if let Some((Some(previous), token)) = state {
                let inner = lab.clone();
                tokio::spawn(async move {
                    inner.clock.sleep(timeout).await;
                    let reverted = inner
                        .with_machine(ip, |m| {
                            if m.try_token != token || m.serving.is_none() {
                                return None;
                            }
                            let raw = previous.raw().to_owned();
                            m.config = Some(previous);
                            Some(raw)
                        })
                        .flatten();
                    if let Some(config_yaml) = reverted {
                        inner.emit(TalosEvent::ConfigApplied {
                            ip,
                            config_yaml,
                            mode: ApplyMode::NoReboot,
                        });
                    }
                });
            }
            format!(
                "Applied configuration in try mode: it will be rolled back in {}s unless applied again",
                timeout.as_secs()
            )
        }
        _ => {
            lab.with_machine(ip, |m| {
                m.config = Some(config);
                m.try_token += 1;
            });
            "Applied configuration without a reboot".to_owned()
        }
    };
    lab.emit(TalosEvent::ConfigApplied {
        ip,
        config_yaml: raw,
        mode: apply_mode(resolved),
    });
    if resolved == Mode::Reboot {
        lab.emit(TalosEvent::Rebooted { ip });
        let down = lab.durations.reboot;
        lab.cycle(
            ip,
            MachinePhase::Rebooting,
            Duration::ZERO,
            down,
            Some(ServingMode::Configured),
            apply_staged,
        );
    }
    Ok(pb::ApplyConfiguration {
        metadata: None,
        warnings,
        mode: resolved as i32,
        mode_details: details,
    })
}

impl MachineApi {
    /// `ApplyConfiguration` in maintenance mode.
    async fn apply_maintenance(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        self.check_current()?;
        self.lab.fault("ApplyConfiguration", self.ip).await?;
        let req = request.into_inner();
        let mode = mode_of(req.mode);
        if !matches!(mode, Mode::Try | Mode::Reboot | Mode::Auto) {
            return Err(Status::unimplemented(format!(
                "apply configuration --mode='{}' is not supported in maintenance mode",
                mode_flag(mode)
            )));
        }
        let config = MachineConfig::parse(&req.data).map_err(|e| match e {
            ConfigError::Load(_) => Status::unknown(e.to_string()),
            ConfigError::Invalid(_) => Status::invalid_argument(e.to_string()),
        })?;
        let mut reply = pb::ApplyConfiguration {
            metadata: None,
            warnings: config.warnings().to_vec(),
            mode: 0,
            mode_details: String::new(),
        };
        if req.dry_run {
            reply.mode_details = "Dry run summary:\nNode is running in maintenance mode and does not have a config yet.".to_owned();
            return Ok(Response::new(ApplyConfigurationResponse {
                messages: vec![reply],
            }));
        }
        // Only the first apply wins: the maintenance server goes away.
        let accepted = self
            .lab
            .with_machine(self.ip, |m| {
                if m.epoch != self.epoch || m.phase != MachinePhase::Maintenance {
                    return false;
                }
                m.staged = Some(config.clone());
                m.phase = MachinePhase::Installing;
                true
            })
            .unwrap_or(false);
        if !accepted {
            return Err(Status::unavailable(
                "connection closed: the machine is installing",
            ));
        }
        self.lab.emit(TalosEvent::ConfigApplied {
            ip: self.ip,
            config_yaml: config.raw().to_owned(),
            mode: ApplyMode::Reboot,
        });
        let install = self.lab.durations.install;
        self.lab.cycle(
            self.ip,
            MachinePhase::Installing,
            Duration::ZERO,
            install,
            Some(ServingMode::Configured),
            apply_staged,
        );
        Ok(Response::new(ApplyConfigurationResponse {
            messages: vec![reply],
        }))
    }
}

#[tonic::async_trait]
impl MachineService for MachineApi {
    async fn apply_configuration(
        &self,
        request: Request<ApplyConfigurationRequest>,
    ) -> Result<Response<ApplyConfigurationResponse>, Status> {
        if self.mode == ServingMode::Maintenance {
            return self.apply_maintenance(request).await;
        }
        let messages = self
            .fan_out(request, "ApplyConfiguration", apply_configured)
            .await?;
        Ok(Response::new(ApplyConfigurationResponse { messages }))
    }

    async fn hostname(&self, request: Request<()>) -> Result<Response<HostnameResponse>, Status> {
        let messages = self.fan_out(request, "Hostname", hostname).await?;
        Ok(Response::new(HostnameResponse { messages }))
    }

    async fn reboot(
        &self,
        request: Request<RebootRequest>,
    ) -> Result<Response<RebootResponse>, Status> {
        let messages = self.fan_out(request, "Reboot", reboot).await?;
        Ok(Response::new(RebootResponse { messages }))
    }

    async fn reset(
        &self,
        request: Request<ResetRequest>,
    ) -> Result<Response<ResetResponse>, Status> {
        let messages = self.fan_out(request, "Reset", reset).await?;
        Ok(Response::new(ResetResponse { messages }))
    }

    async fn service_list(
        &self,
        request: Request<()>,
    ) -> Result<Response<ServiceListResponse>, Status> {
        let messages = self.fan_out(request, "ServiceList", service_list).await?;
        Ok(Response::new(ServiceListResponse { messages }))
    }

    async fn service_restart(
        &self,
        request: Request<ServiceRestartRequest>,
    ) -> Result<Response<ServiceRestartResponse>, Status> {
        let messages = self
            .fan_out(
                request,
                "ServiceRestart",
                |lab, ip, req: ServiceRestartRequest| async move {
                    let resp = control_service(&lab, ip, &req.id, ServiceOp::Restart)?;
                    Ok(pb::ServiceRestart {
                        metadata: None,
                        resp,
                    })
                },
            )
            .await?;
        Ok(Response::new(ServiceRestartResponse { messages }))
    }

    async fn service_start(
        &self,
        request: Request<ServiceStartRequest>,
    ) -> Result<Response<ServiceStartResponse>, Status> {
        let messages = self
            .fan_out(
                request,
                "ServiceStart",
                |lab, ip, req: ServiceStartRequest| async move {
                    let resp = control_service(&lab, ip, &req.id, ServiceOp::Start)?;
                    Ok(pb::ServiceStart {
                        metadata: None,
                        resp,
                    })
                },
            )
            .await?;
        Ok(Response::new(ServiceStartResponse { messages }))
    }

    async fn service_stop(
        &self,
        request: Request<ServiceStopRequest>,
    ) -> Result<Response<ServiceStopResponse>, Status> {
        let messages = self
            .fan_out(
                request,
                "ServiceStop",
                |lab, ip, req: ServiceStopRequest| async move {
                    let resp = control_service(&lab, ip, &req.id, ServiceOp::Stop)?;
                    Ok(pb::ServiceStop {
                        metadata: None,
                        resp,
                    })
                },
            )
            .await?;
        Ok(Response::new(ServiceStopResponse { messages }))
    }

    async fn shutdown(
        &self,
        request: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        let messages = self.fan_out(request, "Shutdown", shutdown).await?;
        Ok(Response::new(ShutdownResponse { messages }))
    }

    async fn upgrade(
        &self,
        request: Request<UpgradeRequest>,
    ) -> Result<Response<UpgradeResponse>, Status> {
        let messages = self.fan_out(request, "Upgrade", upgrade).await?;
        Ok(Response::new(UpgradeResponse { messages }))
    }

    async fn version(&self, request: Request<()>) -> Result<Response<VersionResponse>, Status> {
        let messages = self.fan_out(request, "Version", version).await?;
        Ok(Response::new(VersionResponse { messages }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installer_images_name_their_version_tag() {
        assert_eq!(
            image_tag("ghcr.io/siderolabs/installer:v1.10.6").as_deref(),
            Some("v1.10.6")
        );
        assert_eq!(
            image_tag("localhost:5000/installer:v1.11.0@sha256:abc").as_deref(),
            Some("v1.11.0")
        );
        assert_eq!(image_tag("localhost:5000/installer"), None);
    }

    #[test]
    fn readers_may_read_and_only_admins_may_reset() {
        assert!(allowed_roles("Version").contains(&Role::Reader));
        assert!(!allowed_roles("Reboot").contains(&Role::Reader));
        assert!(allowed_roles("Reboot").contains(&Role::Operator));
        assert_eq!(allowed_roles("Reset"), &[Role::Admin]);
        assert_eq!(allowed_roles("SomethingNew"), &[Role::Admin]);
    }

    #[test]
    fn per_node_errors_read_like_go_grpc_errors() {
        let m = error_metadata("10.0.0.5", &Status::permission_denied("not authorized"));
        assert_eq!(
            m.error,
            "rpc error: code = PermissionDenied desc = not authorized"
        );
        assert_eq!(m.status.map(|s| s.code), Some(7));
    }
}
