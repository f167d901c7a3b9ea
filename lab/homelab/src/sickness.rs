//! Sick workers on demand, for the health monitor's scenarios: a node
//! condition that turns bad (`Ready` False with kubelet stopped,
//! `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NetworkUnavailable`
//! True) and what cures it: a kubelet restart through the Talos API, a
//! reboot, the EPHEMERAL wipe, or nothing. A cure also works for the
//! milder ones (a reboot restarts kubelet too; the wipe reboots). Until
//! cured the condition is held bad, also after a reboot that did not cure
//! it. Crash loops of kubelet or containerd show as failures in the
//! machine's `ServiceList` until it boots again.
//!
//! Reachable through [`Sickness`] and the admin endpoint:
//! `POST /nodes/{node}/illness` `{"condition": "Ready", "curedBy":
//! "restart-kubelet"}` (`reboot`, `wipe-ephemeral`, `never`), `DELETE
//! /nodes/{node}/illness`, and `POST /nodes/{node}/crash` `{"service":
//! "kubelet", "times": 3}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kube_side::LabKube;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tidepool_lab_talos::{TalosEvent, TalosLab};

use crate::guest::Guests;

/// What cures an illness, mildest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cure {
    /// A kubelet restart (or anything stronger).
    RestartKubelet,
    /// A reboot (or the wipe, which reboots).
    Reboot,
    /// Only the EPHEMERAL wipe.
    WipeEphemeral,
    /// Nothing: the worker has to be replaced.
    Never,
}

/// One node's illness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Illness {
    /// The condition held bad (`Ready`, `DiskPressure`, ...).
    condition: &'static str,
    cure: Cure,
}

/// The condition types a node can be made sick with.
const CONDITIONS: [&str; 5] = [
    "Ready",
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
    "NetworkUnavailable",
];

/// The sick nodes of a lab; a cheap clone.
#[derive(Clone)]
pub struct Sickness {
    kube: LabKube,
    talos: TalosLab,
    guests: Guests,
    ills: Arc<Mutex<BTreeMap<String, Illness>>>,
}

/// Why an illness could not be given.
#[derive(Debug, thiserror::Error)]
pub enum SicknessError {
    /// Not a condition the lab knows.
    #[error(
        "unknown node condition `{0}` (known: Ready, MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable)"
    )]
    UnknownCondition(String),
    /// The node's machine is not known.
    #[error("no machine behind node `{0}`")]
    UnknownNode(String),
}

fn bad(condition: &str) -> &'static str {
    if condition == "Ready" {
        "False"
    } else {
        "True"
    }
}

fn good(condition: &str) -> &'static str {
    if condition == "Ready" {
        "True"
    } else {
        "False"
    }
}

impl Sickness {
    /// The sick nodes of the lab's emulators.
    pub fn new(kube: LabKube, talos: TalosLab, guests: Guests) -> Self {
        Self {
            kube,
            talos,
            guests,
            ills: Arc::default(),
        }
    }

    fn ills(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Illness>> {
        self.ills.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `node` sick with `condition` until `cure`. `Ready` also stops
    /// its kubelet.
    ///
    /// # Errors
    /// An unknown condition or node.
    pub fn fall_ill(&self, node: &str, condition: &str, cure: Cure) -> Result<(), SicknessError> {
        let condition = CONDITIONS
            .into_iter()
            .find(|c| *c == condition)
            .ok_or_else(|| SicknessError::UnknownCondition(condition.to_owned()))?;
        let ip = self
            .guests
            .address_of_node(node)
            .ok_or_else(|| SicknessError::UnknownNode(node.to_owned()))?;
        if condition == "Ready" {
            self.talos.stop_service(ip, "kubelet");
            self.guests.hold_not_ready(node, true);
        }
        self.ills()
            .insert(node.to_owned(), Illness { condition, cure });
        let _ = self
            .kube
            .set_node_condition(node, condition, bad(condition));
        Ok(())
    }

    /// Makes `service` of `node`'s machine crash `times` times.
    ///
    /// # Errors
    /// An unknown node.
    pub fn crash(&self, node: &str, service: &str, times: u32) -> Result<(), SicknessError> {
        let ip = self
            .guests
            .address_of_node(node)
            .ok_or_else(|| SicknessError::UnknownNode(node.to_owned()))?;
        self.talos.crash_service(ip, service, times);
        Ok(())
    }

    /// Cures `node` at once.
    pub fn heal(&self, node: &str) {
        self.guests.hold_not_ready(node, false);
        if let Some(ill) = self.ills().remove(node) {
            let _ = self
                .kube
                .set_node_condition(node, ill.condition, good(ill.condition));
        }
    }

    /// Whether `node` is still sick.
    pub fn is_ill(&self, node: &str) -> bool {
        self.ills().contains_key(node)
    }

    /// Cures the node of `ip` when `strength` is enough for its illness.
    fn treat(&self, event: &TalosEvent) {
        let (ip, strength) = match event {
            TalosEvent::ServiceRestarted { ip, service } if service == "kubelet" => {
                (*ip, Cure::RestartKubelet)
            }
            TalosEvent::Rebooted { ip } => (*ip, Cure::Reboot),
            TalosEvent::ResetRequested { ip, partitions, .. }
                if partitions.iter().any(|p| p == "EPHEMERAL") =>
            {
                (*ip, Cure::WipeEphemeral)
            }
            _ => return,
        };
        let cured: Vec<String> = self
            .ills()
            .iter()
            .filter(|(node, ill)| {
                ill.cure != Cure::Never
                    && ill.cure <= strength
                    && self.guests.address_of_node(node) == Some(ip)
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in cured {
            tracing::info!(%node, ?strength, "sick node cured");
            self.heal(&node);
        }
    }

    /// Holds every uncured node's condition bad (a reboot that did not
    /// cure it brings it back bad).
    fn hold(&self) {
        let ills: Vec<(String, Illness)> =
            self.ills().iter().map(|(n, i)| (n.clone(), *i)).collect();
        for (node, ill) in ills {
            let Ok(n) = self.kube.get("v1", "Node", "", &node) else {
                continue;
            };
            let status = n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == ill.condition))
                .and_then(|c| c["status"].as_str())
                .map(str::to_owned);
            if status.as_deref() == Some(good(ill.condition)) {
                let _ = self
                    .kube
                    .set_node_condition(&node, ill.condition, bad(ill.condition));
            }
        }
    }

    /// Runs the cures (on Talos events) and the hold (every `tick` of real
    /// time) until the lab stops.
    pub fn spawn(&self, tick: Duration) -> Vec<tokio::task::JoinHandle<()>> {
        let me = self.clone();
        let mut events = self.talos.subscribe();
        let cures = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => me.treat(&e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        });
        let me = self.clone();
        let hold = tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                me.hold();
            }
        });
        vec![cures, hold]
    }

    /// The admin routes.
    pub(crate) fn router(&self) -> Router {
        Router::new()
            .route("/nodes/{node}/illness", post(ill).delete(cure))
            .route("/nodes/{node}/crash", post(crash))
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IllnessRequest {
    condition: String,
    cured_by: Cure,
}

#[derive(Deserialize)]
struct CrashRequest {
    service: String,
    times: u32,
}

async fn ill(
    State(s): State<Sickness>,
    Path(node): Path<String>,
    Json(req): Json<IllnessRequest>,
) -> (StatusCode, String) {
    match s.fall_ill(&node, &req.condition, req.cured_by) {
        Ok(()) => (StatusCode::CREATED, String::new()),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn cure(State(s): State<Sickness>, Path(node): Path<String>) -> StatusCode {
    s.heal(&node);
    StatusCode::NO_CONTENT
}

async fn crash(
    State(s): State<Sickness>,
    Path(node): Path<String>,
    Json(req): Json<CrashRequest>,
) -> (StatusCode, String) {
    match s.crash(&node, &req.service, req.times) {
        Ok(()) => (StatusCode::CREATED, String::new()),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}
