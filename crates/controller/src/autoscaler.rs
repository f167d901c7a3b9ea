//! The autoscaler: observe, plan (pure), act. While this replica leads, it
//! plans every batching window from the watch-fed caches and carries the
//! plan out through the claims — new claims for `Provision`, a removal
//! intent for `Remove` — so every worker goes through the same executor
//! and safety rules as a manual request. Pods are told why: a
//! `TriggeredScaleUp` Event when capacity is on its way, `NotTriggerScaleUp`
//! with the blocking reason when it is not.

use std::collections::BTreeMap;
use std::time::Duration;

use tidepool_cluster::{EventRecord, EventTarget, EventType};
use tidepool_core::Phase;
use tidepool_core::planner::triggers::{PressureKind, pressure_above};
use tidepool_core::planner::{Action, Plan, PlanInput, plan};
use tidepool_core::pool::PoolKind;
use tidepool_core::safety::MAX_REQUEST_COUNT;
use tracing::{info, warn};

use crate::claim::Intent;
use crate::live::connect::{LiveExecutor, LiveService};
use crate::live::snapshot::plan_input;
use crate::ports::{ClaimStore, Nodes, ProviderError};
use crate::service::ProvisionRequest;

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Claims created.
    pub created: Vec<String>,
    /// Workers asked to go.
    pub removed: Vec<String>,
    /// Pods that cannot be helped, with the reason.
    pub unhelpable: usize,
    /// Unschedulable pods the plan saw.
    pub pending: usize,
}

/// The autoscaler's memory between passes: only what keeps Events from
/// repeating. Losing it (a restart, a new leader) is harmless.
#[derive(Debug, Default)]
pub struct Autoscaler {
    told: BTreeMap<String, String>,
    /// Per pool, when the last scale-down started (the gradual-removal
    /// interval counts from it).
    pools: BTreeMap<String, tidepool_core::planner::PoolState>,
}

fn pod_target(pod: &str) -> EventTarget {
    let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
    EventTarget {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
        uid: None,
    }
}

impl Autoscaler {
    async fn tell(
        &mut self,
        exec: &LiveExecutor,
        pod: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) {
        let key = format!("{reason}: {message}");
        if self.told.get(pod) == Some(&key) {
            return;
        }
        let record = EventRecord {
            event_type,
            reason,
            action: "Autoscale",
            message,
        };
        if let Err(e) = exec
            .nodes()
            .cluster()
            .record_event(&pod_target(pod), &record)
            .await
        {
            warn!(pod, error = %e, "could not record the scaling Event");
        }
        self.told.insert(pod.to_owned(), key);
    }

    /// One pass: observe, plan, act. Also returns the next moment a
    /// time-based rule may change the plan (see `next_deadline`).
    ///
    /// # Errors
    /// Observation or claim-store failures (the next pass retries).
    pub async fn pass(
        &mut self,
        service: &LiveService,
    ) -> Result<(Plan, PassReport, Option<jiff::Timestamp>), ProviderError> {
        let exec = service.executor();
        let mut input = plan_input(exec).await?;
        // The planner keeps no memory: when each pool's CPU and memory
        // pressure began is kept here, between passes.
        for pool in &input.config.pools {
            let state = self.pools.entry(pool.name.clone()).or_default();
            for (kind, since) in [
                (PressureKind::Cpu, &mut state.cpu_pressure_since),
                (PressureKind::Memory, &mut state.memory_pressure_since),
            ] {
                if pressure_above(&input, pool, kind) {
                    since.get_or_insert(input.now);
                } else {
                    *since = None;
                }
            }
        }
        input.pool_state = self.pools.clone();
        // What was told to pods no longer waiting is forgotten, so the
        // memory stays as small as the set of pending pods.
        self.told.retain(|pod, _| {
            input
                .pending
                .iter()
                .any(|p| pod.split_once('/') == Some((&*p.pod.namespace, &*p.pod.name)))
        });
        let planned = plan(&input);
        let deadline = next_deadline(&input);
        let mut report = PassReport::default();
        for action in &planned.actions {
            match action {
                Action::Provision { .. } => {
                    report
                        .created
                        .extend(carry_out(service, action, ACTOR).await);
                }
                Action::Remove {
                    worker,
                    pool,
                    drain,
                    reason,
                } => match service
                    .retire(ACTOR, worker, *drain, reason.code.as_str())
                    .await
                {
                    Ok(true) => {
                        self.pools.entry(pool.clone()).or_default().last_scale_down =
                            Some(input.now);
                        info!(%worker, reason = %reason, "scale down");
                        let how = if *drain {
                            "drained and removed"
                        } else {
                            "removed"
                        };
                        exec.nodes()
                            .announce(
                                worker,
                                "ScaleDown",
                                &format!("node {worker} is being {how}: {}", reason.message),
                            )
                            .await;
                        report.removed.push(worker.clone());
                    }
                    Ok(false) => {}
                    Err(e) => warn!(%worker, error = %e, "scale-down refused"),
                },
            }
        }
        report.removed.extend(clear_failed_launches(service).await?);
        if !report.created.is_empty() {
            let message = format!("pod triggered scale-up: {}", report.created.join(", "));
            for p in &input.pending {
                let id = format!("{}/{}", p.pod.namespace, p.pod.name);
                let helped = !planned.unhelpable.iter().any(|u| u.pod == id)
                    && !planned.waiting.iter().any(|w| w.pod == id);
                if helped {
                    self.tell(exec, &id, EventType::Normal, "TriggeredScaleUp", &message)
                        .await;
                }
            }
        }
        for u in &planned.unhelpable {
            let message = format!("pod didn't trigger scale-up: {}", u.reason.message);
            self.tell(
                exec,
                &u.pod,
                EventType::Normal,
                "NotTriggerScaleUp",
                &message,
            )
            .await;
        }
        report.unhelpable = planned.unhelpable.len();
        report.pending = input.pending.len();
        Ok((planned, report, deadline))
    }

    /// Waits (a few seconds at most) until the claim watch shows this
    /// pass's writes, so the next plan counts the workers it just asked
    /// for instead of asking again.
    async fn await_own_writes(&self, exec: &LiveExecutor, report: &PassReport) {
        let deadline = tokio::time::Instant::now() + OWN_WRITES;
        while tokio::time::Instant::now() < deadline {
            if let Ok(claims) = exec.store().observed().await {
                let created = report
                    .created
                    .iter()
                    .all(|n| claims.iter().any(|c| &c.name == n));
                let removed = report.removed.iter().all(|n| {
                    claims
                        .iter()
                        .find(|c| &c.name == n)
                        .is_none_or(|c| matches!(c.spec.intent, Intent::Remove { .. }))
                });
                if created && removed {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        warn!("the claim watch has not shown this pass's writes yet; planning on");
    }
}

/// Repair: a burst, spot or GPU worker that failed before it ever
/// served (while being provisioned or joining) is removed — its VM is
/// deleted — so it neither lingers nor keeps its host's room, and the
/// pods that wanted it get a new one from the next plan. A worker that
/// failed while draining is left for a person: pods that forbid
/// disruption or a budget may still be on it. Permanent pools are left
/// to their operators. Returns the workers asked to go.
async fn clear_failed_launches(service: &LiveService) -> Result<Vec<String>, ProviderError> {
    let exec = service.executor();
    let mut removed = Vec::new();
    for claim in exec.store().observed().await? {
        let tidepool_core::Lifecycle::Failed { step, reason } = &claim.status.lifecycle else {
            continue;
        };
        let launching = matches!(
            step.phase(),
            Phase::Requested | Phase::Provisioning | Phase::Joining
        );
        let replaceable = exec
            .config()
            .pool(&claim.spec.pool)
            .is_some_and(|p| p.kind != PoolKind::Permanent);
        if !launching || !replaceable || claim.spec.intent != Intent::Keep {
            continue;
        }
        match service
            .retire(ACTOR, &claim.name, false, "launch-failed")
            .await
        {
            Ok(true) => {
                info!(worker = %claim.name, %step, %reason, "a failed launch is cleared");
                removed.push(claim.name);
            }
            Ok(false) => {}
            Err(e) => {
                warn!(worker = %claim.name, error = %e, "a failed launch was not cleared")
            }
        }
    }
    Ok(removed)
}

/// Who the audit trail names for the autoscaler's own requests.
const ACTOR: &str = "autoscaler";

/// Carries out one `Provision` action through the service (the same limit
/// checks and audit trail as a manual request), in requests of at most
/// [`MAX_REQUEST_COUNT`] workers; returns the claims created. A refusal
/// (limits changed since the plan, a race with another requester) is
/// logged and ends the action.
async fn carry_out(service: &LiveService, action: &Action, actor: &str) -> Vec<String> {
    let Action::Provision {
        pool,
        size,
        host,
        count,
        reason,
    } = action
    else {
        return Vec::new();
    };
    let mut created = Vec::new();
    let mut left = *count;
    while left > 0 {
        let chunk = left.min(MAX_REQUEST_COUNT);
        left -= chunk;
        let req = ProvisionRequest {
            pool: pool.clone(),
            size: Some(size.clone()),
            count: chunk,
            ttl: None,
            requested_by: actor.to_owned(),
            reason: reason.to_string(),
        };
        match service.provision_on(&req, Some(host)).await {
            Ok(names) => {
                info!(claims = ?names, %pool, %size, %host, reason = %reason, "scale up");
                created.extend(names);
            }
            Err(e) => {
                warn!(%pool, %size, error = %e, "scale-up refused");
                break;
            }
        }
    }
    created
}

/// An emergency request (spec §4): plans now with the trigger windows of
/// `pools` skipped — never their limits — and provisions what the plan
/// asks for in those pools, on behalf of `actor`. Returns what was
/// observed, the plan and the claims created.
///
/// # Errors
/// Observation failures.
pub async fn emergency(
    service: &LiveService,
    pools: &[String],
    actor: &str,
) -> Result<(PlanInput, Plan, Vec<String>), ProviderError> {
    let mut input = plan_input(service.executor()).await?;
    for pool in pools {
        input.pool_state.entry(pool.clone()).or_default().emergency = true;
    }
    let mut planned = plan(&input);
    planned.actions.retain(|a| match a {
        Action::Provision { pool, .. } => pools.contains(pool),
        Action::Remove { .. } => false,
    });
    let mut created = Vec::new();
    for action in &planned.actions {
        created.extend(carry_out(service, action, actor).await);
    }
    Ok((input, planned, created))
}

/// How long a pass waits for the claim watch to show its own writes.
const OWN_WRITES: Duration = Duration::from_secs(5);

/// When the autoscaler looks again.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The batching window: after the first change, wait this long (real
    /// time) so a burst of pods is planned as one.
    pub window: Duration,
    /// The controller clock's speed relative to real time (the lab's time
    /// scale; 1 in production).
    pub time_scale: f64,
    /// The longest the autoscaler sleeps without a change, in controller
    /// time: the net for time-based rules it cannot foresee (cron windows).
    pub idle_tick: Duration,
}

impl Timing {
    /// Real-time `window` and `idle_tick` of one minute, under `time_scale`.
    pub fn new(window: Duration, time_scale: f64) -> Self {
        Self {
            window,
            time_scale,
            idle_tick: Duration::from_secs(60),
        }
    }

    fn real(&self, controller: Duration) -> Duration {
        controller.div_f64(self.time_scale.max(1.0))
    }
}

/// The next moment a time-based rule may give a different answer for the
/// same observations: a pending pod reaching a pool's trigger window (or
/// the starvation window), a TTL expiring, an idle timeout passing, a
/// pressure or scale-down interval completing. Conservative: it may name a
/// moment at which nothing changes, never one after a change.
fn next_deadline(input: &PlanInput) -> Option<jiff::Timestamp> {
    let now = input.now;
    let later = |t: jiff::Timestamp, d: Duration| {
        jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| t.checked_add(d).ok())
    };
    let mut candidates: Vec<jiff::Timestamp> = Vec::new();
    for pool in &input.config.pools {
        let window = pool.scale_up.pending_for;
        let starvation = window.saturating_mul(
            u32::try_from(tidepool_core::planner::scale_up::STARVATION_WINDOWS).unwrap_or(u32::MAX),
        );
        for p in &input.pending {
            candidates.extend(later(p.unschedulable_since, window));
            candidates.extend(later(p.unschedulable_since, starvation));
        }
        for c in input.claims.iter().filter(|c| c.pool == pool.name) {
            if let (Some(idle), Some(timeout)) = (c.idle_since, pool.idle_timeout) {
                candidates.extend(later(idle, timeout));
            }
        }
        if let Some(state) = input.pool_state.get(&pool.name) {
            if let Some(t) = state.last_scale_down {
                candidates.extend(later(t, pool.scale_down.interval));
            }
            for (since, pressure) in [
                (state.cpu_pressure_since, pool.scale_up.cpu_pressure),
                (state.memory_pressure_since, pool.scale_up.memory_pressure),
            ] {
                if let (Some(since), Some(p)) = (since, pressure) {
                    candidates.extend(later(since, p.for_duration));
                }
            }
        }
    }
    candidates.extend(input.claims.iter().filter_map(|c| c.expires_at));
    candidates.into_iter().filter(|t| *t > now).min()
}

/// Plans and acts until `stop` turns true (the caller stops it when
/// leadership is lost).
///
/// Watch-driven: after a pass it sleeps until a node, pod or claim changes
/// (or the next time-based deadline comes), waits the batching window so
/// a burst settles into one plan, and passes again.
pub async fn run(
    exec: std::sync::Arc<LiveExecutor>,
    timing: Timing,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics: Option<std::sync::Arc<crate::run::Metrics>>,
) {
    let mut autoscaler = Autoscaler::default();
    let service = LiveService::new(exec.clone());
    let cluster = exec.nodes().cluster().clone();
    let mut pods = cluster.pods().changes();
    let mut nodes = cluster.nodes().changes();
    let (_no_changes, never) = tokio::sync::watch::channel(0_u64);
    let mut claims = exec.store().changes().unwrap_or(never);
    loop {
        if *stop.borrow() {
            break;
        }
        // Changes seen from here on wake the next pass.
        pods.mark_unchanged();
        nodes.mark_unchanged();
        claims.mark_unchanged();
        let mut sleep_for = timing.real(timing.idle_tick);
        match autoscaler.pass(&service).await {
            Ok((plan, report, deadline)) => {
                if let Some(m) = &metrics {
                    m.pending(report.pending);
                    for a in &plan.actions {
                        m.decision(a.reason().code.as_str());
                    }
                    for u in &plan.unhelpable {
                        m.decision(u.reason.code.as_str());
                    }
                }
                if let Some(at) = deadline {
                    // Timestamps in the cluster have whole seconds: wake a
                    // moment after the deadline, not before it.
                    let left =
                        at.duration_since(exec.now()).unsigned_abs() + Duration::from_millis(1100);
                    sleep_for = sleep_for.min(timing.real(left));
                }
                if !report.created.is_empty() || !report.removed.is_empty() {
                    autoscaler.await_own_writes(&exec, &report).await;
                }
            }
            Err(e) => {
                warn!(error = %e, "autoscaler pass failed");
                if let Some(m) = &metrics {
                    m.error(e.kind.as_str());
                }
                sleep_for = sleep_for.min(timing.window.max(Duration::from_secs(1)));
            }
        }
        tokio::select! {
            () = crate::wake::changed(&mut pods) => {}
            () = crate::wake::changed(&mut nodes) => {}
            () = crate::wake::changed(&mut claims) => {}
            () = tokio::time::sleep(sleep_for) => {}
            () = crate::wake::changed(&mut stop) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(timing.window) => {}
            () = crate::wake::changed(&mut stop) => {}
        }
    }
}
