//! The configured machine's read and service handlers: version, hostname,
//! the service list, and starting, stopping and restarting a service (only
//! kubelet may be controlled).

use std::net::IpAddr;
use std::sync::Arc;

use tidepool_talos_proto::machine as pb;
use tonic::Status;

use super::dial_error;
use crate::lab::{Inner, ServingMode, TalosEvent, hostname_of};

pub(super) fn running(lab: &Inner, ip: IpAddr) -> Result<(), Status> {
    match lab.with_machine(ip, |m| m.serving) {
        Some(Some(ServingMode::Configured)) => Ok(()),
        _ => Err(dial_error(&ip.to_string())),
    }
}

pub(super) async fn version(lab: Arc<Inner>, ip: IpAddr, _: ()) -> Result<pb::Version, Status> {
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

pub(super) async fn hostname(lab: Arc<Inner>, ip: IpAddr, _: ()) -> Result<pb::Hostname, Status> {
    running(&lab, ip)?;
    let hostname = lab
        .with_machine(ip, |m| hostname_of(ip, m))
        .unwrap_or_default();
    Ok(pb::Hostname {
        metadata: None,
        hostname,
    })
}

pub(super) async fn service_list(
    lab: Arc<Inner>,
    ip: IpAddr,
    _: (),
) -> Result<pb::ServiceList, Status> {
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
pub(super) enum ServiceOp {
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
pub(super) fn control_service(
    lab: &Arc<Inner>,
    ip: IpAddr,
    id: &str,
    op: ServiceOp,
) -> Result<String, Status> {
    running(lab, ip)?;
    let asked = op;
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
        // A restart asked of a stopped service starts it: still a restart.
        if asked == ServiceOp::Restart {
            lab.emit(TalosEvent::ServiceRestarted {
                ip,
                service: id.to_owned(),
            });
        }
    }
    Ok(format!("Service {id:?} {}", op.past()))
}
