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
use tidepool_core::conventions::worker_name;
use tidepool_core::planner::triggers::{PressureKind, pressure_above};
use tidepool_core::planner::{Action, Plan, plan};
use tracing::{info, warn};

use crate::claim::{Claim, ClaimSpec, ClaimStatus, Intent};
use crate::live::connect::LiveExecutor;
use crate::live::snapshot::plan_input;
use crate::ports::{ClaimStore, ProviderError};

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
    suffix: u64,
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
    fn next_name(&mut self, pool: &str, now: jiff::Timestamp) -> String {
        self.suffix += 1;
        let mut x = (now.as_nanosecond() as u64) ^ self.suffix.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
        let suffix: String = (0..tidepool_core::conventions::WORKER_SUFFIX_LEN)
            .map(|_| {
                let c = alphabet[(x % alphabet.len() as u64) as usize];
                x /= alphabet.len() as u64;
                char::from(c)
            })
            .collect();
        worker_name(pool, &suffix)
    }

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

    /// One pass: observe, plan, act.
    ///
    /// # Errors
    /// Observation or claim-store failures (the next pass retries).
    pub async fn pass(&mut self, exec: &LiveExecutor) -> Result<(Plan, PassReport), ProviderError> {
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
        let planned = plan(&input);
        let mut report = PassReport::default();
        for action in &planned.actions {
            match action {
                Action::Provision {
                    pool,
                    size,
                    host,
                    count,
                    reason,
                } => {
                    let ttl = exec.config().pool(pool).and_then(|p| p.ttl);
                    for _ in 0..*count {
                        let name = self.next_name(pool, input.now);
                        let claim = Claim {
                            name: name.clone(),
                            spec: ClaimSpec {
                                pool: pool.clone(),
                                size: size.clone(),
                                ttl,
                                requested_by: "autoscaler".into(),
                                reason: reason.to_string(),
                            },
                            status: ClaimStatus {
                                host: Some(host.clone()),
                                ..ClaimStatus::default()
                            },
                            intent: Intent::Keep,
                            finalizer: true,
                        };
                        exec.store().create(&claim).await?;
                        exec.store().save_status(&name, &claim.status).await?;
                        info!(claim = %name, %pool, %size, %host, reason = %reason, "scale up");
                        report.created.push(name);
                    }
                }
                Action::Remove {
                    worker,
                    drain,
                    reason,
                    ..
                } => {
                    if let Some(mut claim) = exec.store().get(worker).await?
                        && claim.intent == Intent::Keep
                    {
                        claim.intent = Intent::Remove { force: !drain };
                        exec.store().update(&claim).await?;
                        self.pools
                            .entry(claim.spec.pool.clone())
                            .or_default()
                            .last_scale_down = Some(input.now);
                        info!(worker = %worker, reason = %reason, "scale down");
                        report.removed.push(worker.clone());
                    }
                }
            }
        }
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
        Ok((planned, report))
    }
}

/// Plans and acts every `window` until `stop` turns true or leadership is
/// lost (`leading` turns false).
pub async fn run(
    exec: std::sync::Arc<LiveExecutor>,
    window: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    metrics: Option<std::sync::Arc<crate::run::Metrics>>,
) {
    let mut autoscaler = Autoscaler::default();
    loop {
        if *stop.borrow() {
            break;
        }
        match autoscaler.pass(&exec).await {
            Ok((plan, report)) => {
                if let Some(m) = &metrics {
                    m.pending(report.pending);
                    for a in &plan.actions {
                        m.decision(a.reason().code.as_str());
                    }
                    for u in &plan.unhelpable {
                        m.decision(u.reason.code.as_str());
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "autoscaler pass failed");
                if let Some(m) = &metrics {
                    m.error(e.kind.as_str());
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(window) => {}
            _ = stop.changed() => {}
        }
    }
}
