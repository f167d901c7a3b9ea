//! The `machine.MachineService` implementation one simulated machine
//! serves: the maintenance API (only `ApplyConfiguration`) or the
//! configured API (mTLS, RBAC from the client certificate, the `nodes`
//! header fan-out of apid), with fault injection per call.

mod apply;
mod lifecycle;
mod services;

pub use lifecycle::UPGRADE_BOOT_FAULT;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tidepool_talos_proto::common::Metadata;
use tidepool_talos_proto::google::rpc::Status as RpcStatus;
use tidepool_talos_proto::machine as pb;
use tidepool_talos_proto::machine::apply_configuration_request::Mode;
use tidepool_talos_proto::machine::machine_service_server::MachineService;
use tidepool_talos_proto::machine::{
    ApplyConfigurationRequest, ApplyConfigurationResponse, HostnameResponse, RebootRequest,
    RebootResponse, ResetRequest, ResetResponse, ServiceListResponse, ServiceRestartRequest,
    ServiceRestartResponse, ServiceStartRequest, ServiceStartResponse, ServiceStopRequest,
    ServiceStopResponse, ShutdownRequest, ShutdownResponse, UpgradeRequest, UpgradeResponse,
    VersionResponse,
};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use crate::lab::{ApplyMode, Inner, ServingMode};
use crate::tls::{Role, roles_of_certificate};
use apply::apply_configured;
use lifecycle::{reboot, reset, shutdown, upgrade};
use services::{ServiceOp, control_service, hostname, service_list, version};

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
