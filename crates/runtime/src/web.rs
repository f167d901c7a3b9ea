//! The read-only web dashboard `tidepool run` serves beside `/metrics`:
//! one page (`web/index.html`, no build step) that polls `/api/state` and
//! draws the pools and their workers (phase, TTL, idle time), each host's
//! room per dimension as bars, and a timeline of what Tidepool did and why.
//!
//! The state is put together from what the controller already has: the
//! workers from the service layer's watch-fed caches, the hosts' room as
//! the last plan saw it, and the [`Timeline`], which records the actions
//! the autoscaler carried out (with the planner's reasons) and what the
//! claims went through (Ready, Failed, gone). Nothing here writes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Serialize;
use tidepool_controller::claim::{Claim, Condition};
use tidepool_controller::service::WorkerFilter;
use tidepool_core::Phase;
use tidepool_core::planner::Action;
use tidepool_core::planner::capacity::HostCapacity;
use tidepool_live::{LiveExecutor, LiveService};
use tokio::sync::watch;

use crate::run::Metrics;

/// How many timeline entries are kept (the oldest go first).
const TIMELINE_LEN: usize = 200;

/// The page, served as is.
const INDEX: &str = include_str!("web/index.html");

/// One thing that happened to a pool or a worker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// When (RFC 3339, the controller's clock).
    pub at: String,
    /// `scale-up`, `scale-down`, `ready`, `failed`, `removed`, `repair` or
    /// `escalated`.
    pub kind: &'static str,
    /// The pool.
    pub pool: String,
    /// The workers concerned.
    pub workers: Vec<String>,
    /// The planner's reason code, for the autoscaler's actions.
    pub code: Option<String>,
    /// Why, in words.
    pub message: String,
}

/// What the dashboard's timeline shows: the autoscaler's actions and the
/// claims' milestones, newest last, bounded.
#[derive(Debug, Default)]
pub struct Timeline {
    entries: Mutex<VecDeque<Entry>>,
    /// Each claim's pool, phase and health at the last look.
    seen: Mutex<BTreeMap<String, Seen>>,
}

/// What the timeline last saw of a claim.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    pool: String,
    phase: Phase,
    /// Repairs started over the worker's life.
    repairs: u32,
    /// Whether its current trouble was escalated.
    escalated: bool,
}

impl Timeline {
    fn push(&self, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == TIMELINE_LEN {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Records an action the autoscaler carried out.
    pub fn acted(&self, action: &Action, workers: &[String], now: Timestamp) {
        let (kind, pool) = match action {
            Action::Provision { pool, .. } => ("scale-up", pool),
            Action::Remove { pool, .. } => ("scale-down", pool),
        };
        let reason = action.reason();
        self.push(Entry {
            at: now.to_string(),
            kind,
            pool: pool.clone(),
            workers: workers.to_vec(),
            code: Some(reason.code.as_str().to_owned()),
            message: reason.message.clone(),
        });
    }

    /// Records the milestones the claims reached since the last look: a
    /// worker turning Ready (with how long it took), failing (with the
    /// error), repaired or escalated by the health monitor, or gone. The
    /// first look only learns the claims.
    pub fn observe(&self, claims: &[Claim], now: Timestamp) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let first = seen.is_empty();
        let mut next = BTreeMap::new();
        for c in claims {
            let phase = c.status.lifecycle.phase();
            let health = &c.status.health;
            let now_seen = Seen {
                pool: c.spec.pool.clone(),
                phase,
                repairs: health.repairs,
                escalated: health.escalated_at.is_some(),
            };
            let before = seen.get(&c.name).cloned();
            next.insert(c.name.clone(), now_seen.clone());
            if first {
                continue;
            }
            let entry = |kind, message: String| Entry {
                at: now.to_string(),
                kind,
                pool: c.spec.pool.clone(),
                workers: vec![c.name.clone()],
                code: None,
                message,
            };
            let was = before.as_ref();
            if let Some(r) = &health.last_repair
                && was.map_or(0, |b| b.repairs) < health.repairs
            {
                let how = r
                    .outcome
                    .map_or("started".to_owned(), |o| format!("{o:?}").to_lowercase());
                self.push(entry(
                    "repair",
                    format!("{} for {} ({how})", r.action, r.problem),
                ));
            }
            if now_seen.escalated && !was.is_some_and(|b| b.escalated) {
                let problems: Vec<&str> = health.problems.keys().map(|p| p.as_str()).collect();
                self.push(entry(
                    "escalated",
                    format!("escalated to people: {}", problems.join(", ")),
                ));
            }
            if was.map(|b| b.phase) == Some(phase) {
                continue;
            }
            match phase {
                Phase::Ready => {
                    let took = match (
                        c.status.provisioned_at,
                        c.status.conditions.get(&Condition::NodeReady),
                    ) {
                        (Some(start), Some(ready)) => {
                            format!(" in {}s", ready.duration_since(start).as_secs().max(0))
                        }
                        _ => String::new(),
                    };
                    self.push(entry("ready", format!("node Ready{took}")));
                }
                Phase::Failed => self.push(entry(
                    "failed",
                    c.status
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "failed".into()),
                )),
                _ => {}
            }
        }
        if !first {
            for (name, gone) in seen.iter().filter(|(n, _)| !next.contains_key(*n)) {
                self.push(Entry {
                    at: now.to_string(),
                    kind: "removed",
                    pool: gone.pool.clone(),
                    workers: vec![name.clone()],
                    code: None,
                    message: "VM and node deleted".into(),
                });
            }
        }
        *seen = next;
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}

/// The hosts' room as the last plan saw it.
#[derive(Debug, Default)]
pub struct LastHosts(Mutex<Vec<HostCapacity>>);

impl LastHosts {
    /// Keeps `hosts` as the latest.
    pub fn set(&self, hosts: &[HostCapacity]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = hosts.to_vec();
    }

    fn get(&self) -> Vec<HostCapacity> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A pool as the page shows it.
#[derive(Debug, Serialize)]
struct PoolView {
    name: String,
    kind: String,
    max_nodes: u32,
    workers: usize,
}

/// What `/api/state` answers.
#[derive(Debug, Serialize)]
struct StateView {
    at: String,
    leading: bool,
    pools: Vec<PoolView>,
    workers: Vec<serde_json::Value>,
    hosts: Vec<HostCapacity>,
    timeline: Vec<Entry>,
}

#[derive(Clone)]
struct Web {
    service: Arc<LiveService>,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
}

/// The dashboard's routes: `/` (the page) and `/api/state`.
pub fn routes(
    exec: Arc<LiveExecutor>,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/state", get(state))
        .with_state(Web {
            service: Arc::new(LiveService::new(exec)),
            metrics,
            leading,
        })
}

async fn index() -> Html<&'static str> {
    Html(INDEX)
}

async fn state(State(web): State<Web>) -> Response {
    let filter = WorkerFilter {
        worker_type: None,
        pool: None,
    };
    let workers = match web.service.list_workers(&filter).await {
        Ok(w) => w,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the workers cannot be listed: {e}"),
            )
                .into_response();
        }
    };
    let config = web.service.executor().config();
    let pools = config
        .pools
        .iter()
        .map(|p| PoolView {
            name: p.name.clone(),
            kind: p.kind.to_string(),
            max_nodes: p.limits.max_nodes,
            workers: workers
                .iter()
                .filter(|w| w.managed && w.pool.as_deref() == Some(p.name.as_str()))
                .count(),
        })
        .collect();
    let view = StateView {
        at: web.service.executor().now().to_string(),
        leading: *web.leading.borrow(),
        pools,
        workers: workers
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
        hosts: web.metrics.last_hosts().get(),
        timeline: web.metrics.timeline().entries(),
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(view)).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use tidepool_core::claim::{ClaimSpec, Intent};
    use tidepool_core::health::{Action as Repair, Outcome, Problem};

    use super::*;

    fn claim() -> Claim {
        Claim::new(
            "burst-a1",
            ClaimSpec {
                pool: "burst".into(),
                size: "small".into(),
                ttl: Some(Duration::from_secs(3600)),
                requested_by: "test".into(),
                reason: "a test".into(),
                intent: Intent::Keep,
                host: None,
            },
        )
    }

    #[test]
    fn the_timeline_shows_each_repair_and_one_escalation() {
        let t = Timeline::default();
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let mut c = claim();
        t.observe(std::slice::from_ref(&c), now);
        c.status.health.problems.insert(Problem::NotReady, now);
        c.status
            .health
            .start(Repair::RestartKubelet, Problem::NotReady, now);
        t.observe(std::slice::from_ref(&c), now);
        c.status.health.finish(Outcome::Done, None, now);
        t.observe(std::slice::from_ref(&c), now);
        c.status.health.escalated_at = Some(now);
        t.observe(std::slice::from_ref(&c), now);
        t.observe(std::slice::from_ref(&c), now);
        let shown: Vec<(&str, String)> = t
            .entries()
            .into_iter()
            .map(|e| (e.kind, e.message))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "repair",
                    "restart-kubelet for NotReady (started)".to_owned()
                ),
                ("escalated", "escalated to people: NotReady".to_owned()),
            ]
        );
    }
}
