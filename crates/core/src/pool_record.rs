//! The durable per-pool record: one small document per pool, kept in the
//! cluster beside the claims and written only with an optimistic
//! precondition (the version read), so of two writers racing from the same
//! version exactly one wins. It holds
//! - the names admitted to the pool whose claims may not exist yet (a
//!   creation in flight): counting them makes a limit check and the
//!   creation it allows one atomic step across processes;
//! - the autoscaler's timers — the last scale-down, since when CPU and
//!   memory pressure has held, since when each worker has been idle — so
//!   they survive a restart and a failover.
//!
//! Pure: time and the claims that exist come in as values.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::planner::PoolState;
use crate::pool::PoolUsage;

/// How long an admitted name counts toward its pool while its claim does
/// not exist: longer than any creation takes, short enough that a process
/// killed between admitting and creating holds the room only briefly.
/// Measured on the controller's clock.
pub const ADMISSION_BOUND: Duration = Duration::from_secs(10 * 60);

/// One pool's durable record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRecord {
    /// Names admitted to the pool, by claim name, until their claim exists
    /// or the admission expires ([`ADMISSION_BOUND`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub admitted: BTreeMap<String, Admission>,
    /// The autoscaler's timers.
    #[serde(default)]
    pub timers: PoolTimers,
    /// The pool's rolling upgrade, the latest one asked for (kept once
    /// finished, for `tidepool upgrade status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
}

/// A name admitted to a pool whose claim is being created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// The worker's size (what it counts against the pool's limits).
    pub size: String,
    /// When it was admitted.
    pub at: Timestamp,
}

/// The autoscaler's memory of a pool, kept durably.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolTimers {
    /// When the last scale-down batch started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<Timestamp>,
    /// Since when CPU request pressure has stayed above the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pressure_since: Option<Timestamp>,
    /// Since when memory request pressure has stayed above the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_pressure_since: Option<Timestamp>,
    /// What the autoscaler last saw each worker doing, by claim name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workers: BTreeMap<String, Activity>,
}

/// What a worker was last seen doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Activity {
    /// Running workload pods.
    Busy,
    /// Without workload pods since then.
    IdleSince(Timestamp),
}

impl PoolRecord {
    /// Drops the admissions whose claim exists (the claim now counts
    /// itself) or that are older than [`ADMISSION_BOUND`] at `now`; true
    /// when any was dropped.
    pub fn prune_admitted(&mut self, claims: &BTreeSet<&str>, now: Timestamp) -> bool {
        let before = self.admitted.len();
        let bound = SignedDuration::try_from(ADMISSION_BOUND).unwrap_or(SignedDuration::MAX);
        self.admitted
            .retain(|name, a| !claims.contains(name.as_str()) && now.duration_since(a.at) < bound);
        self.admitted.len() != before
    }

    /// What the admitted names add to the pool's usage. A size the
    /// configuration no longer knows still counts as a node.
    pub fn in_flight(&self, cfg: &Config, mut usage: PoolUsage) -> PoolUsage {
        for a in self.admitted.values() {
            usage = match cfg.size(&a.size) {
                Some(size) => usage.with_worker(&size.size),
                None => PoolUsage {
                    nodes: usage.nodes + 1,
                    ..usage
                },
            };
        }
        usage
    }
}

impl PoolTimers {
    /// The timers as the planner takes them.
    pub fn pool_state(&self) -> PoolState {
        PoolState {
            emergency: false,
            last_scale_down: self.last_scale_down,
            cpu_pressure_since: self.cpu_pressure_since,
            memory_pressure_since: self.memory_pressure_since,
        }
    }

    /// Takes the pool-wide timers of `state` (the worker map is left alone).
    pub fn set_pool_state(&mut self, state: &PoolState) {
        self.last_scale_down = state.last_scale_down;
        self.cpu_pressure_since = state.cpu_pressure_since;
        self.memory_pressure_since = state.memory_pressure_since;
    }

    /// Records one look at a worker and answers since when it is idle.
    ///
    /// `busy` is whether it runs workload pods now; `idle_from` is the
    /// observer's own answer when it is idle (since it became Ready), `None`
    /// when it is not idle or not known to be. A worker seen busy and then
    /// idle is idle since `now`, the moment the change was seen; a worker
    /// first seen idle (never seen busy) is idle since `idle_from`. A
    /// worker neither busy nor idle (no Ready node) keeps what was recorded
    /// and is not idle.
    pub fn observe_worker(
        &mut self,
        name: &str,
        busy: bool,
        idle_from: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        if busy {
            self.workers.insert(name.to_owned(), Activity::Busy);
            return None;
        }
        let idle_from = idle_from?;
        let since = match self.workers.get(name) {
            Some(Activity::IdleSince(t)) => *t,
            Some(Activity::Busy) => now,
            None => idle_from,
        };
        self.workers
            .insert(name.to_owned(), Activity::IdleSince(since));
        Some(since)
    }

    /// Forgets the workers whose claims are gone.
    pub fn forget_workers_but(&mut self, claims: &BTreeSet<&str>) {
        self.workers
            .retain(|name, _| claims.contains(name.as_str()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{self, EXAMPLE};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).unwrap()
    }

    fn admission(size: &str, at: Timestamp) -> Admission {
        Admission {
            size: size.into(),
            at,
        }
    }

    #[test]
    fn admissions_count_until_their_claim_exists_or_they_expire() {
        let cfg = config::load(EXAMPLE).unwrap();
        let mut record = PoolRecord::default();
        record
            .admitted
            .insert("burst-aaaaa".into(), admission("small", t(0)));
        record
            .admitted
            .insert("burst-bbbbb".into(), admission("medium", t(0)));
        record
            .admitted
            .insert("burst-ccccc".into(), admission("small", t(-700)));
        let usage = record.in_flight(&cfg, PoolUsage::default());
        assert_eq!(usage.nodes, 3);

        let existing = BTreeSet::from(["burst-aaaaa"]);
        assert!(record.prune_admitted(&existing, t(1)));
        assert_eq!(
            record.admitted.keys().collect::<Vec<_>>(),
            ["burst-bbbbb"],
            "the created one and the expired one are gone"
        );
        assert!(!record.prune_admitted(&existing, t(2)));
    }

    #[test]
    fn a_worker_is_idle_since_it_was_last_seen_to_stop_being_busy() {
        let mut timers = PoolTimers::default();
        // First seen idle, never busy: idle since it became Ready.
        assert_eq!(
            timers.observe_worker("w", false, Some(t(0)), t(10)),
            Some(t(0))
        );
        assert_eq!(timers.observe_worker("w", true, None, t(20)), None);
        // Busy in between: idle from the moment it was seen idle again.
        assert_eq!(
            timers.observe_worker("w", false, Some(t(0)), t(30)),
            Some(t(30))
        );
        assert_eq!(
            timers.observe_worker("w", false, Some(t(0)), t(90)),
            Some(t(30))
        );
        // Not Ready: not idle, and the record is kept.
        assert_eq!(timers.observe_worker("w", false, None, t(95)), None);
        assert_eq!(timers.workers["w"], Activity::IdleSince(t(30)));
        timers.forget_workers_but(&BTreeSet::new());
        assert!(timers.workers.is_empty());
    }

    #[test]
    fn the_record_reads_back_what_it_wrote() {
        let mut record = PoolRecord::default();
        record
            .admitted
            .insert("burst-aaaaa".into(), admission("small", t(0)));
        record.timers.cpu_pressure_since = Some(t(5));
        record
            .timers
            .workers
            .insert("burst-x".into(), Activity::Busy);
        record
            .timers
            .workers
            .insert("burst-y".into(), Activity::IdleSince(t(7)));
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<PoolRecord>(&json).unwrap(), record);
        assert_eq!(
            serde_json::from_str::<PoolRecord>("{}").unwrap(),
            PoolRecord::default()
        );
    }
}
