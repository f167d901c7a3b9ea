//! The lab's admin endpoint: read and change the fault table while the lab
//! runs (`GET`/`PUT`/`POST /faults`, `DELETE /faults`), and the routes of
//! [`crate::sickness`] (sick nodes, crash loops).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tidepool_lab_sim::{FaultRule, Faults};

use crate::LabError;

async fn list(State(faults): State<Arc<Faults>>) -> Json<Vec<FaultRule>> {
    Json(faults.rules())
}

async fn replace(
    State(faults): State<Arc<Faults>>,
    Json(rules): Json<Vec<FaultRule>>,
) -> Json<Vec<FaultRule>> {
    faults.set_rules(rules);
    Json(faults.rules())
}

async fn add(
    State(faults): State<Arc<Faults>>,
    Json(rule): Json<FaultRule>,
) -> (StatusCode, Json<Vec<FaultRule>>) {
    faults.add_rule(rule);
    (StatusCode::CREATED, Json(faults.rules()))
}

async fn clear(State(faults): State<Arc<Faults>>) -> StatusCode {
    faults.set_rules(Vec::new());
    StatusCode::NO_CONTENT
}

/// Serves the admin endpoint on `addr` until the task is aborted.
pub(crate) async fn serve(
    addr: SocketAddr,
    faults: Arc<Faults>,
    extra: Router,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), LabError> {
    let app = Router::new()
        .route("/faults", get(list).put(replace).post(add).delete(clear))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(faults)
        .merge(extra);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| LabError::Io(format!("binding the admin endpoint on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| LabError::Io(format!("admin endpoint address: {e}")))?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    Ok((bound, task))
}
