//! The repair matrix of spec §7 for one worker: from its record, its
//! pool's policy and the time, the next action and when it is due.
//!
//! Each problem has a ladder of repairs, each due once the problem has
//! lasted its threshold (NotReady: restart kubelet at 5 min, reboot at 10,
//! replace at 20; MemoryPressure: drain and reboot at 10; DiskPressure:
//! free disk at once; a kubelet crash loop: reboot; a containerd crash
//! loop: replace). A window climbs its ladder one level at a time, never
//! repeating a level that was done: when a problem has lasted past several
//! thresholds (after a restart, or a long brake), the highest one passed
//! is taken. After any repair the worker gets the policy's recovery time
//! before the next; a failed repair is tried again after the backoff,
//! doubled each time, up to the policy's attempts. Past the top of the
//! ladder the problem is escalated, once. Replacing a worker the pool may
//! not replace (always for permanent pools) is escalated instead, and so
//! is every repair of a pool whose repairs are disabled.

use std::time::Duration;

use jiff::Timestamp;

use super::{Action, HealthRecord, Outcome, Problem, Repair, RepairPolicy};
use crate::pool::PoolKind;

/// Why the next action is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Why {
    /// The matrix asks for it.
    Matrix,
    /// The last try failed; this is the next one.
    Retry,
    /// The matrix asks for a replacement the pool does not allow.
    NotAllowed,
    /// The pool's repairs are disabled.
    Disabled,
    /// Too many workers of the pool or the cluster are unhealthy.
    Braked,
    /// The pool already repairs as many workers as it may at once.
    WaitingForSlot,
}

impl Why {
    /// The stable name (CLI, Events).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matrix => "matrix",
            Self::Retry => "retry",
            Self::NotAllowed => "replace-not-allowed",
            Self::Disabled => "repairs-disabled",
            Self::Braked => "too-many-unhealthy",
            Self::WaitingForSlot => "waiting-for-slot",
        }
    }
}

/// The next action for a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    /// What to do.
    pub action: Action,
    /// The problem it is for.
    pub problem: Problem,
    /// When it is due (until then: watch).
    pub at: Timestamp,
    /// Why this action.
    pub why: Why,
}

impl Next {
    /// Whether it should be carried out at `now`.
    pub fn due(&self, now: Timestamp) -> bool {
        self.at <= now && self.why != Why::WaitingForSlot
    }
}

/// The repairs for `problem`, each with the time the problem must have
/// lasted before it.
fn ladder(problem: Problem, policy: &RepairPolicy) -> Vec<(Duration, Action)> {
    match problem {
        Problem::NotReady => vec![
            (policy.restart_kubelet_after, Action::RestartKubelet),
            (policy.reboot_after, Action::Reboot),
            (policy.replace_after, Action::Replace),
        ],
        Problem::MemoryPressure => vec![(policy.memory_pressure_after, Action::DrainReboot)],
        Problem::DiskPressure => vec![(Duration::ZERO, Action::FreeDisk)],
        Problem::PidPressure | Problem::NetworkUnavailable => Vec::new(),
        Problem::KubeletCrashLoop => vec![(Duration::ZERO, Action::Reboot)],
        Problem::ContainerdCrashLoop => vec![(Duration::ZERO, Action::Replace)],
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.saturating_add(d).unwrap_or(t)
}

/// The next action for the worker, or `None` when there is nothing more
/// to do: healthy, a repair still running (one at a time), or escalated
/// with no repair left. Control-plane nodes are never given one.
pub fn next(
    record: &HealthRecord,
    policy: &RepairPolicy,
    kind: PoolKind,
    control_plane: bool,
    now: Timestamp,
) -> Option<Next> {
    if control_plane || record.last_repair.as_ref().is_some_and(Repair::running) {
        return None;
    }
    record
        .problems
        .iter()
        .filter_map(|(p, since)| for_problem(record, policy, kind, *p, *since, now))
        .min_by(|a, b| a.at.cmp(&b.at).then(b.action.cmp(&a.action)))
}

/// The next action for one problem that started at `since`.
fn for_problem(
    record: &HealthRecord,
    policy: &RepairPolicy,
    kind: PoolKind,
    problem: Problem,
    since: Timestamp,
    now: Timestamp,
) -> Option<Next> {
    let steps = ladder(problem, policy);
    let last = record.last_repair.as_ref();
    // The worker recovers from any repair before the next one.
    let recovered = last
        .and_then(|r| r.finished_at)
        .map_or(since, |f| after(f, policy.recovery));
    let in_window = last.filter(|r| r.problem == problem && r.started_at >= since);
    let mut done = None;
    if let Some(r) = in_window {
        let level = steps.iter().position(|(_, a)| *a == r.action);
        if r.outcome == Some(Outcome::Failed) && r.attempt < policy.max_attempts {
            let finished = r.finished_at.unwrap_or(r.started_at);
            let factor = 2_u32.saturating_pow(r.attempt.saturating_sub(1));
            let at = after(finished, policy.backoff.saturating_mul(factor));
            return shape(record, policy, kind, problem, r.action, at, Why::Retry);
        }
        done = level;
    }
    let first = done.map_or(0, |d| d + 1);
    let left = steps.get(first..).unwrap_or_default();
    let Some(&(threshold, action)) = left
        .iter()
        .rev()
        .find(|(d, _)| after(since, *d) <= now)
        .or_else(|| left.first())
    else {
        let at = match in_window {
            Some(_) => recovered,
            None => after(since, policy.escalate_after).max(recovered),
        };
        return escalation(record, problem, at, Why::Matrix);
    };
    let at = after(since, threshold).max(recovered);
    shape(record, policy, kind, problem, action, at, Why::Matrix)
}

/// `action` as the policy allows it: a replacement the pool may not make,
/// or any repair of a disabled pool, becomes an escalation.
fn shape(
    record: &HealthRecord,
    policy: &RepairPolicy,
    kind: PoolKind,
    problem: Problem,
    action: Action,
    at: Timestamp,
    why: Why,
) -> Option<Next> {
    if !policy.enabled {
        return escalation(record, problem, at, Why::Disabled);
    }
    if action == Action::Replace && !policy.may_replace(kind) {
        return escalation(record, problem, at, Why::NotAllowed);
    }
    Some(Next {
        action,
        problem,
        at,
        why,
    })
}

/// An escalation, unless the trouble was escalated already.
fn escalation(record: &HealthRecord, problem: Problem, at: Timestamp, why: Why) -> Option<Next> {
    record.escalated_at.is_none().then_some(Next {
        action: Action::Escalate,
        problem,
        at,
        why,
    })
}
