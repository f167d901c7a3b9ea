//! The autoscaler: observe, plan (pure), act. While this replica leads, it
//! plans every batching window from the watch-fed caches and carries the
//! plan out through the claims — new claims for `Provision`, a removal
//! intent for `Remove` — so every worker goes through the same executor
//! and safety rules as a manual request. Pods are told why: a
//! `TriggeredScaleUp` Event when capacity is on its way, `NotTriggerScaleUp`
//! with the blocking reason when it is not.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tidepool_core::Phase;
use tidepool_core::jiff::{SignedDuration, Timestamp};
use tidepool_core::planner::{Action, Plan, PlanInput, plan};
use tidepool_core::pool::PoolKind;
use tidepool_core::safety::MAX_REQUEST_COUNT;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::claim::Intent;
use crate::observe::Observe;
use crate::ports::{ClaimStore, Events, Hypervisor, Joiner, Nodes, ProviderError, ScalingMetrics};
use crate::service::{ProvisionRequest, Service};

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassReport {
    /// Claims created.
    pub created: Vec<String>,
    /// Workers asked to go.
    pub removed: Vec<String>,
    /// Pods that cannot be helped, with the reason.
    pub unhelpable: usize,
    /// Unschedulable pods the plan saw.
    pub pending: usize,
    /// Each host's room as the plan saw it (for the headroom metrics).
    pub hosts: Vec<tidepool_core::planner::capacity::HostCapacity>,
    /// The plan's actions that were carried out, with the workers each
    /// created or removed (spares activated included).
    pub acted: Vec<(Action, Vec<String>)>,
    /// Cold spares requested by the refill.
    pub spares: Vec<String>,
}

/// The autoscaler over its ports: the service it acts through, what it
/// observes, and where it tells pods why. Its memory between passes keeps
/// Events from repeating; each pool's pressure, scale-down and idle times
/// are kept in the pool's durable record ([`timers`]), so a restart or a
/// new leader goes on from them.
pub struct Autoscaler<H, J, N, S, O: ?Sized, E> {
    service: Arc<Service<H, J, N, S>>,
    observe: Arc<O>,
    events: E,
    told: BTreeMap<String, String>,
    /// Per pool: when pressure began, when the last scale-down started
    /// (the gradual-removal interval counts from it), since when each
    /// worker is idle.
    timers: timers::Timers,
}

impl<H, J, N, S, O, E> Autoscaler<H, J, N, S, O, E>
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
    O: Observe + ?Sized,
    E: Events,
{
    /// An autoscaler acting through `service`, planning from `observe`,
    /// telling pods through `events`.
    pub fn new(service: Arc<Service<H, J, N, S>>, observe: Arc<O>, events: E) -> Self {
        Self {
            service,
            observe,
            events,
            told: BTreeMap::new(),
            timers: timers::Timers::default(),
        }
    }

    /// Tells a pod (`namespace/name`) once per distinct reason and message.
    async fn tell(&mut self, pod: &str, reason: &str, message: &str) {
        let key = format!("{reason}: {message}");
        if self.told.get(pod) == Some(&key) {
            return;
        }
        let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
        self.events.tell_pod(namespace, name, reason, message).await;
        self.told.insert(pod.to_owned(), key);
    }

    /// One pass: observe, plan, act. Also returns the next moment a
    /// time-based rule may change the plan (see `next_deadline`).
    ///
    /// # Errors
    /// Observation or claim-store failures (the next pass retries).
    pub async fn pass(&mut self) -> Result<(Plan, PassReport, Option<Timestamp>), ProviderError> {
        let mut input = self.observe.plan_input().await?;
        let service = self.service.clone();
        let store = service.executor().store();
        self.timers.load(store, &input).await?;
        self.track(&mut input);
        self.timers.save(store).await;
        let planned = plan(&input);
        let deadline = next_deadline(&input);
        let mut report = PassReport::default();
        let claims = store.observed().await?;
        let mut activated = BTreeSet::new();
        for action in &planned.actions {
            let done = match action {
                Action::Provision { .. } => {
                    let (mut done, rest) = spares::activate_first(
                        &self.service,
                        ACTOR,
                        action,
                        &claims,
                        &mut activated,
                    )
                    .await;
                    if let Some(rest) = rest {
                        done.extend(carry_out(&self.service, &rest, ACTOR).await);
                    }
                    done
                }
                Action::Remove {
                    worker,
                    pool,
                    drain,
                    reason,
                } => {
                    if self.scale_down(worker, *drain, reason).await {
                        self.timers.scaled_down(pool, input.now);
                        vec![worker.clone()]
                    } else {
                        Vec::new()
                    }
                }
            };
            match action {
                Action::Provision { .. } => report.created.extend(done.iter().cloned()),
                Action::Remove { .. } => report.removed.extend(done.iter().cloned()),
            }
            if !done.is_empty() {
                report.acted.push((action.clone(), done));
            }
        }
        self.timers.save(store).await;
        report.spares = spares::refill(&self.service, ACTOR, &input, &claims, &planned).await;
        report
            .removed
            .extend(clear_failed_launches(&self.service).await?);
        self.explain(&input, &planned, &report).await;
        report.unhelpable = planned.unhelpable.len();
        report.pending = input.pending.len();
        report.hosts = tidepool_core::planner::capacity::hosts(&input);
        Ok((planned, report, deadline))
    }

    /// The planner keeps no memory: each pool's timers are kept by the
    /// autoscaler (durably) and handed to it; what was told to pods no
    /// longer waiting is forgotten, so that memory stays as small as the
    /// set of pending pods.
    fn track(&mut self, input: &mut PlanInput) {
        self.timers.track(input);
        self.told.retain(|pod, _| {
            input
                .pending
                .iter()
                .any(|p| pod.split_once('/') == Some((&*p.pod.namespace, &*p.pod.name)))
        });
    }

    /// Asks a worker to go through the service; true when it was asked now.
    async fn scale_down(
        &self,
        worker: &str,
        drain: bool,
        reason: &tidepool_core::planner::Reason,
    ) -> bool {
        match self
            .service
            .retire(ACTOR, worker, drain, reason.code.as_str())
            .await
        {
            Ok(true) => {
                info!(%worker, reason = %reason, "scale down");
                let how = if drain {
                    "drained and removed"
                } else {
                    "removed"
                };
                self.service
                    .executor()
                    .nodes()
                    .announce(
                        worker,
                        "ScaleDown",
                        &format!("node {worker} is being {how}: {}", reason.message),
                    )
                    .await;
                true
            }
            Ok(false) => false,
            Err(e) => {
                warn!(%worker, error = %e, "scale-down refused");
                false
            }
        }
    }

    /// Tells each pending pod why: `TriggeredScaleUp` when workers are on
    /// their way for it, `NotTriggerScaleUp` with the reason when none can help.
    async fn explain(&mut self, input: &PlanInput, planned: &Plan, report: &PassReport) {
        if !report.created.is_empty() {
            let message = format!("pod triggered scale-up: {}", report.created.join(", "));
            for p in &input.pending {
                let id = format!("{}/{}", p.pod.namespace, p.pod.name);
                let helped = !planned.unhelpable.iter().any(|u| u.pod == id)
                    && !planned.waiting.iter().any(|w| w.pod == id);
                if helped {
                    self.tell(&id, "TriggeredScaleUp", &message).await;
                }
            }
        }
        for u in &planned.unhelpable {
            let message = format!("pod didn't trigger scale-up: {}", u.reason.message);
            self.tell(&u.pod, "NotTriggerScaleUp", &message).await;
        }
    }

    /// Waits (a few seconds at most) until the claim watch shows this
    /// pass's writes, so the next plan counts the workers it just asked
    /// for instead of asking again.
    async fn await_own_writes(&self, report: &PassReport) {
        let deadline = tokio::time::Instant::now() + OWN_WRITES;
        while tokio::time::Instant::now() < deadline {
            if let Ok(claims) = self.service.executor().store().observed().await {
                // Activated spares show their new intent, new spares exist.
                let created = report.created.iter().all(|n| {
                    claims
                        .iter()
                        .any(|c| &c.name == n && !c.is_unactivated_spare())
                });
                let spares = report
                    .spares
                    .iter()
                    .all(|n| claims.iter().any(|c| &c.name == n));
                let removed = report.removed.iter().all(|n| {
                    claims
                        .iter()
                        .find(|c| &c.name == n)
                        .is_none_or(|c| c.spec.intent.is_removal())
                });
                if created && spares && removed {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        warn!("the claim watch has not shown this pass's writes yet; planning on");
    }
}

/// Repair: a burst, spot or GPU worker the autoscaler asked for that
/// failed before it ever served (while being provisioned or joining) is
/// removed — its VM is deleted — so it neither lingers nor keeps its
/// host's room, and the pods that wanted it get a new one from the next
/// plan. A worker an operator asked for is never cleared silently. A worker that
/// failed while draining is left for a person: pods that forbid
/// disruption or a budget may still be on it. Permanent pools are left
/// to their operators. Returns the workers asked to go.
async fn clear_failed_launches<H, J, N, S>(
    service: &Service<H, J, N, S>,
) -> Result<Vec<String>, ProviderError>
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
{
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
        // Only the autoscaler's own workers: one an operator asked for stays
        // Failed, with its reason, for the operator to see and decide.
        let ours = claim.spec.requested_by == ACTOR;
        // A spare fails while being made or parked: it is replaced too.
        let launching = launching || claim.spec.intent.is_spare();
        let kept = matches!(claim.spec.intent, Intent::Keep | Intent::Spare);
        if !launching || !replaceable || !ours || !kept {
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
async fn carry_out<H, J, N, S>(
    service: &Service<H, J, N, S>,
    action: &Action,
    actor: &str,
) -> Vec<String>
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
{
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
pub async fn emergency<H, J, N, S, O>(
    service: &Service<H, J, N, S>,
    observe: &O,
    pools: &[String],
    actor: &str,
) -> Result<(PlanInput, Plan, Vec<String>), ProviderError>
where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
    O: Observe + ?Sized,
{
    let mut input = observe.plan_input().await?;
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
    /// The longest the autoscaler sleeps without a change, in the clock's
    /// time: the net for time-based rules it cannot foresee (cron windows).
    pub idle_tick: Duration,
}

impl Timing {
    /// A real-time `window` and an `idle_tick` of one minute.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            idle_tick: Duration::from_secs(60),
        }
    }

    /// How long (the clock's time) to sleep without a change: the idle
    /// tick, or until just after `deadline` if that comes first.
    /// Timestamps in the cluster have whole seconds, so it wakes a moment
    /// after the deadline, never before it.
    fn sleep_until(&self, deadline: Option<Timestamp>, now: Timestamp) -> Duration {
        match deadline {
            Some(at) => {
                let left = at.duration_since(now).unsigned_abs() + Duration::from_millis(1100);
                self.idle_tick.min(left)
            }
            None => self.idle_tick,
        }
    }
}

/// The next moment a time-based rule may give a different answer for the
/// same observations: a pending pod reaching a pool's trigger window (or
/// the starvation window), a TTL expiring, an idle timeout passing, a
/// pressure or scale-down interval completing. Conservative: it may name a
/// moment at which nothing changes, never one after a change.
pub fn next_deadline(input: &PlanInput) -> Option<Timestamp> {
    let now = input.now;
    let later = |t: Timestamp, d: Duration| {
        SignedDuration::try_from(d)
            .ok()
            .and_then(|d| t.checked_add(d).ok())
    };
    let mut candidates: Vec<Timestamp> = Vec::new();
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
/// (or the next time-based deadline comes, on the executor's clock), waits
/// the batching window so a burst settles into one plan, and passes again.
pub async fn run<H, J, N, S, O, E>(
    mut autoscaler: Autoscaler<H, J, N, S, O, E>,
    timing: Timing,
    mut stop: watch::Receiver<bool>,
    metrics: Arc<dyn ScalingMetrics>,
) where
    H: Hypervisor,
    J: Joiner,
    N: Nodes,
    S: ClaimStore,
    O: Observe + ?Sized,
    E: Events,
{
    let mut feeds = autoscaler.observe.changes();
    let (_no_changes, never) = watch::channel(0_u64);
    feeds.push(
        autoscaler
            .service
            .executor()
            .store()
            .changes()
            .unwrap_or(never),
    );
    let clock = autoscaler.service.executor().clock().clone();
    loop {
        if *stop.borrow() {
            break;
        }
        // Changes seen from here on wake the next pass.
        for feed in &mut feeds {
            feed.mark_unchanged();
        }
        // Sleep on the clock until the next deadline; after a failed pass,
        // look again within the window (at least a second, real time).
        let (sleep_for, retry_within) = match autoscaler.pass().await {
            Ok((plan, report, deadline)) => {
                record(metrics.as_ref(), &plan, &report);
                if !report.created.is_empty()
                    || !report.removed.is_empty()
                    || !report.spares.is_empty()
                {
                    autoscaler.await_own_writes(&report).await;
                }
                (timing.sleep_until(deadline, clock.now()), Duration::MAX)
            }
            Err(e) => {
                warn!(error = %e, "autoscaler pass failed");
                metrics.error(e.kind.as_str());
                (timing.idle_tick, timing.window.max(Duration::from_secs(1)))
            }
        };
        tokio::select! {
            () = any_change(&mut feeds) => {}
            () = clock.sleep(sleep_for) => {}
            () = tokio::time::sleep(retry_within) => {}
            () = crate::wake::changed(&mut stop) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(timing.window) => {}
            () = crate::wake::changed(&mut stop) => {}
        }
    }
}

/// Reports a pass's plan to the metrics.
fn record(metrics: &dyn ScalingMetrics, plan: &Plan, report: &PassReport) {
    metrics.pending(report.pending);
    metrics.host_room(&report.hosts);
    for (action, workers) in &report.acted {
        metrics.acted(action, workers);
    }
    for a in &plan.actions {
        metrics.decision(a.reason().code.as_str());
    }
    for u in &plan.unhelpable {
        metrics.decision(u.reason.code.as_str());
    }
}

/// Resolves when any of `feeds` changes (never when there are none, nor
/// for a feed whose sender is gone).
async fn any_change(feeds: &mut [watch::Receiver<u64>]) {
    let mut waits: Vec<_> = feeds
        .iter_mut()
        .map(|f| Box::pin(crate::wake::changed(f)))
        .collect();
    std::future::poll_fn(|cx| {
        if waits.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

mod spares;
mod timers;

pub use timers::with_stored_timers;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
