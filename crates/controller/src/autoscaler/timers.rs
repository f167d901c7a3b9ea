//! The autoscaler's timers, kept durably in each pool's record so that a
//! restart or a new leader goes on from them instead of starting every
//! window again: when the last scale-down started (the gradual-removal
//! interval counts from it), since when CPU and memory pressure has held,
//! and since when each worker has been idle — the moment it was seen to
//! stop running workload pods, not the moment its node became Ready.
//!
//! Read once per pool by a new autoscaler, kept in memory between passes,
//! and written back only when they change, never once per pass.

use std::collections::{BTreeMap, BTreeSet};

use tidepool_core::planner::PlanInput;
use tidepool_core::planner::triggers::{PressureKind, pressure_above};
use tidepool_core::pool_record::PoolTimers;
use tracing::warn;

use crate::pools::modify;
use crate::ports::{PoolRecords, ProviderError};

/// Hands the planner the timers the controller keeps, as the running
/// autoscaler would now: each pool's pressure windows and last scale-down
/// from its record, and each worker's idle time. Read-only: nothing is
/// written. For the dry-run plans (`tidepool plan`, the MCP
/// `plan_scaling` tool), so that they show the windows and idle times the
/// controller acts on rather than ones started afresh.
///
/// # Errors
/// The store's, when a pool's record cannot be read.
pub async fn with_stored_timers<P: PoolRecords + ?Sized>(
    store: &P,
    input: &mut PlanInput,
) -> Result<(), ProviderError> {
    let mut timers = Timers::default();
    timers.load(store, input).await?;
    timers.track(input);
    Ok(())
}

/// Each pool's timers: as they are now, and as the record holds them.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// By pool: the timers as this autoscaler keeps them.
    current: BTreeMap<String, PoolTimers>,
    /// By pool: what the record held when last read or written.
    stored: BTreeMap<String, PoolTimers>,
}

impl Timers {
    /// Reads the record of every configured pool not read yet.
    ///
    /// # Errors
    /// The store's, when a record cannot be read (the pass fails and the
    /// next one reads again).
    pub(super) async fn load<P: PoolRecords + ?Sized>(
        &mut self,
        store: &P,
        input: &PlanInput,
    ) -> Result<(), ProviderError> {
        for pool in &input.config.pools {
            if self.stored.contains_key(&pool.name) {
                continue;
            }
            let timers = store.read_pool(&pool.name).await?.record.timers;
            self.current.insert(pool.name.clone(), timers.clone());
            self.stored.insert(pool.name.clone(), timers);
        }
        Ok(())
    }

    /// Brings the timers up to what `input` shows and hands them to the
    /// planner: each pool's pressure windows (begun now when pressure is
    /// above its threshold and was not, ended when it is not) and last
    /// scale-down, and each worker's idle time in place of the observer's.
    pub(super) fn track(&mut self, input: &mut PlanInput) {
        for pool in &input.config.pools {
            let timers = self.current.entry(pool.name.clone()).or_default();
            let mut state = timers.pool_state();
            for (kind, since) in [
                (PressureKind::Cpu, &mut state.cpu_pressure_since),
                (PressureKind::Memory, &mut state.memory_pressure_since),
            ] {
                if pressure_above(input, pool, kind) {
                    since.get_or_insert(input.now);
                } else {
                    *since = None;
                }
            }
            timers.set_pool_state(&state);
            let members: BTreeSet<&str> = input
                .claims
                .iter()
                .filter(|c| c.pool == pool.name)
                .map(|c| c.name.as_str())
                .collect();
            timers.forget_workers_but(&members);
            input.pool_state.insert(pool.name.clone(), state);
        }
        let busy: BTreeMap<&str, bool> = input
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.has_workload()))
            .collect();
        for claim in &mut input.claims {
            let Some(timers) = self.current.get_mut(&claim.pool) else {
                continue;
            };
            let busy = busy.get(claim.name.as_str()).copied().unwrap_or(false);
            claim.idle_since =
                timers.observe_worker(&claim.name, busy, claim.idle_since, input.now);
        }
    }

    /// Notes that a scale-down of `pool` started at `at`.
    pub(super) fn scaled_down(&mut self, pool: &str, at: tidepool_core::jiff::Timestamp) {
        self.current
            .entry(pool.to_owned())
            .or_default()
            .last_scale_down = Some(at);
    }

    /// Writes the timers of every pool whose timers changed since they were
    /// last read or written. A failed write is logged and tried again after
    /// the next pass.
    pub(super) async fn save<P: PoolRecords + ?Sized>(&mut self, store: &P) {
        let changed: Vec<(String, PoolTimers)> = self
            .current
            .iter()
            .filter(|(pool, timers)| self.stored.get(*pool) != Some(*timers))
            .map(|(pool, timers)| (pool.clone(), timers.clone()))
            .collect();
        for (pool, timers) in changed {
            let written = modify(
                store,
                &pool,
                || std::future::ready(Ok(())),
                |record, ()| {
                    let changed = record.timers != timers;
                    record.timers.clone_from(&timers);
                    Ok(((), changed))
                },
            )
            .await;
            match written {
                Ok(()) => {
                    self.stored.insert(pool, timers);
                }
                Err(e) => warn!(%pool, error = %e, "the pool's timers were not recorded"),
            }
        }
    }
}
