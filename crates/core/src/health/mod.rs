//! Worker health: the repair matrix of spec §7 as pure functions.
//!
//! What a worker shows ([`Observed`]: node conditions with the time each
//! turned bad, and the failed runs of kubelet and containerd since boot)
//! is merged into the worker's durable [`HealthRecord`] (kept on its
//! claim's status, so the windows survive a restart and a failover); the
//! record, the pool's [`RepairPolicy`] and the time give the next
//! [`Action`] and when ([`matrix::next`]); [`plan::plan`] applies the
//! brakes across a pool and the cluster.
//!
//! ```text
//!   observed ──merge──▶ record (problems since, last repair) ──matrix──▶ next action, at
//!                                                                  │
//!                          pool/cluster brakes (20 %, concurrency) ┘──▶ decisions
//! ```

pub mod matrix;
pub mod plan;
pub mod policy;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use matrix::{Next, Why};
pub use plan::{Decision, WorkerInput, plan};
pub use policy::RepairPolicy;

/// Something wrong with a worker, as spec §7 lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Problem {
    /// The node's Ready condition is not True.
    NotReady,
    /// The node reports MemoryPressure.
    MemoryPressure,
    /// The node reports DiskPressure.
    DiskPressure,
    /// The node reports PIDPressure.
    #[serde(rename = "PIDPressure")]
    PidPressure,
    /// The node reports NetworkUnavailable.
    NetworkUnavailable,
    /// kubelet failed at least the policy's number of times since boot.
    KubeletCrashLoop,
    /// containerd failed at least the policy's number of times since boot.
    ContainerdCrashLoop,
}

impl Problem {
    /// Every problem, in the order of spec §7.
    pub const ALL: [Problem; 7] = [
        Self::NotReady,
        Self::MemoryPressure,
        Self::DiskPressure,
        Self::PidPressure,
        Self::NetworkUnavailable,
        Self::KubeletCrashLoop,
        Self::ContainerdCrashLoop,
    ];

    /// The stable name (metrics label, Events, CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReady => "NotReady",
            Self::MemoryPressure => "MemoryPressure",
            Self::DiskPressure => "DiskPressure",
            Self::PidPressure => "PIDPressure",
            Self::NetworkUnavailable => "NetworkUnavailable",
            Self::KubeletCrashLoop => "KubeletCrashLoop",
            Self::ContainerdCrashLoop => "ContainerdCrashLoop",
        }
    }

    /// The problem a node condition of this type reports when its status
    /// is the bad one (`Ready` not True, the others True).
    pub fn of_condition(kind: &str) -> Option<Self> {
        match kind {
            "Ready" => Some(Self::NotReady),
            "MemoryPressure" => Some(Self::MemoryPressure),
            "DiskPressure" => Some(Self::DiskPressure),
            "PIDPressure" => Some(Self::PidPressure),
            "NetworkUnavailable" => Some(Self::NetworkUnavailable),
            _ => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the matrix may do about a problem, mildest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Action {
    /// Nothing yet: watch.
    Watch,
    /// Restart the kubelet service through the Talos API.
    RestartKubelet,
    /// Graceful reboot through the Talos API.
    Reboot,
    /// Cordon and drain the node, then reboot it.
    DrainReboot,
    /// Drain, then wipe the ephemeral partition (images, logs, emptyDirs)
    /// with a Talos reset that keeps the machine's configuration, and
    /// reboot.
    FreeDisk,
    /// Provision a replacement first, then drain and remove the worker.
    Replace,
    /// Tell people: an Event on the node, a metric, an alert.
    Escalate,
}

impl Action {
    /// The stable name (metrics label, Events, CLI).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::RestartKubelet => "restart-kubelet",
            Self::Reboot => "reboot",
            Self::DrainReboot => "drain-reboot",
            Self::FreeDisk => "free-disk",
            Self::Replace => "replace",
            Self::Escalate => "escalate",
        }
    }

    /// Whether it changes the worker (everything but watching and
    /// escalating).
    pub fn is_repair(self) -> bool {
        !matches!(self, Self::Watch | Self::Escalate)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a recorded repair ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Outcome {
    /// The action was carried out.
    Done,
    /// The action failed; it is tried again after the backoff.
    Failed,
    /// Dry run: announced, not carried out.
    DryRun,
    /// The process that started it stopped before it ended (a crash or a
    /// failover): taken as done, never repeated.
    Interrupted,
}

/// One repair, recorded on the claim before it is carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    /// What was done.
    pub action: Action,
    /// The problem it was for.
    pub problem: Problem,
    /// Which try of this action in the problem's window (from 1).
    pub attempt: u32,
    /// When it started.
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "String", extend("format" = "date-time"))
    )]
    pub started_at: Timestamp,
    /// When it ended; absent while it runs.
    #[serde(default)]
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "Option<String>", extend("format" = "date-time"))
    )]
    pub finished_at: Option<Timestamp>,
    /// How it ended; absent while it runs.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// What went wrong, for a failed one.
    #[serde(default)]
    pub message: Option<String>,
}

impl Repair {
    /// Whether it is still running.
    pub fn running(&self) -> bool {
        self.outcome.is_none()
    }
}

/// A worker's health as its claim records it: since when each current
/// problem has lasted, and the repairs of the current windows.
///
/// Every field is always written (unset ones as `null`, the problems as a
/// list), so a merge patch of the status replaces the record whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    /// Each current problem with the time it started.
    #[serde(default, with = "problem_list")]
    #[cfg_attr(feature = "schemars", schemars(with = "Vec<ProblemRecord>"))]
    pub problems: BTreeMap<Problem, Timestamp>,
    /// The latest repair (kept after the problem clears, for the history).
    #[serde(default)]
    pub last_repair: Option<Repair>,
    /// How many repairs were started over the worker's life.
    #[serde(default)]
    pub repairs: u32,
    /// When the current trouble was escalated (cleared once every problem
    /// is gone).
    #[serde(default)]
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "Option<String>", extend("format" = "date-time"))
    )]
    pub escalated_at: Option<Timestamp>,
    /// Whether a repair cordoned the node (it is uncordoned once healthy).
    #[serde(default)]
    pub cordoned: bool,
    /// Problems that cleared less than the policy's recovery time ago,
    /// each with the start of its window: one that comes back before then
    /// goes on in the same window (a node flapping Ready between reboots
    /// still climbs the ladder).
    #[serde(default, with = "cleared_list")]
    #[cfg_attr(feature = "schemars", schemars(with = "Vec<ClearedRecord>"))]
    pub recently_cleared: BTreeMap<Problem, Cleared>,
}

/// A problem that cleared, and the window it closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cleared {
    /// When its window started.
    pub since: Timestamp,
    /// When it cleared.
    pub at: Timestamp,
}

/// One current problem as the record lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
struct ProblemRecord {
    /// The problem.
    problem: Problem,
    /// When it started.
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "String", extend("format" = "date-time"))
    )]
    since: Timestamp,
}

/// One recently cleared problem as the record lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
struct ClearedRecord {
    /// The problem.
    problem: Problem,
    /// When its window started.
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "String", extend("format" = "date-time"))
    )]
    since: Timestamp,
    /// When it cleared.
    #[cfg_attr(
        feature = "schemars",
        schemars(with = "String", extend("format" = "date-time"))
    )]
    cleared_at: Timestamp,
}

mod cleared_list {
    //! The recently cleared problems as a list, like the current ones.
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Cleared, ClearedRecord, Problem};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Problem, Cleared>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(problem, c)| ClearedRecord {
                problem: *problem,
                since: c.since,
                cleared_at: c.at,
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Problem, Cleared>, D::Error> {
        Ok(Vec::<ClearedRecord>::deserialize(d)?
            .into_iter()
            .map(|r| {
                (
                    r.problem,
                    Cleared {
                        since: r.since,
                        at: r.cleared_at,
                    },
                )
            })
            .collect())
    }
}

mod problem_list {
    //! The map of current problems as a list (a merge patch replaces a
    //! list whole, where it would merge a map's keys).
    use std::collections::BTreeMap;

    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Problem, ProblemRecord};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Problem, Timestamp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(problem, since)| ProblemRecord {
                problem: *problem,
                since: *since,
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Problem, Timestamp>, D::Error> {
        Ok(Vec::<ProblemRecord>::deserialize(d)?
            .into_iter()
            .map(|r| (r.problem, r.since))
            .collect())
    }
}

/// What a worker shows now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The node's bad conditions, each with its last transition time.
    pub conditions: BTreeMap<Problem, Timestamp>,
    /// Failed runs of kubelet since boot (`None`: not known, the Talos API
    /// did not answer).
    pub kubelet_failures: Option<u32>,
    /// Failed runs of containerd since boot.
    pub containerd_failures: Option<u32>,
}

/// Which windows an observation opened and closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    /// Problems that started.
    pub opened: Vec<Problem>,
    /// Problems that ended.
    pub closed: Vec<Problem>,
    /// Problems that came back within the recovery time of clearing: their
    /// window goes on from its old start (not in `opened`).
    pub resumed: Vec<Problem>,
}

impl HealthRecord {
    /// Whether nothing is recorded (the status then leaves it out).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the worker has any problem.
    pub fn unhealthy(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Brings the windows up to date with `seen` at `now`: a problem
    /// already recorded keeps its start; a new one starts at the node's
    /// transition time (never later than `now`); crash loops start now.
    /// A problem that cleared less than the policy's recovery time ago and
    /// is back resumes its old window (flap hysteresis). Unknown service
    /// counts keep the crash loops as recorded. Once no problem is left,
    /// and none cleared within the recovery time, the escalation is
    /// forgotten.
    pub fn observe(
        &mut self,
        seen: &Observed,
        policy: &RepairPolicy,
        now: Timestamp,
    ) -> Transitions {
        let mut current: BTreeMap<Problem, Timestamp> = seen
            .conditions
            .iter()
            .map(|(p, t)| (*p, (*t).min(now)))
            .collect();
        let loops = [
            (Problem::KubeletCrashLoop, seen.kubelet_failures),
            (Problem::ContainerdCrashLoop, seen.containerd_failures),
        ];
        for (problem, failures) in loops {
            let looping = match failures {
                Some(n) => n >= policy.crash_loop_restarts,
                None => self.problems.contains_key(&problem),
            };
            if looping {
                current.insert(problem, now);
            }
        }
        let recovery =
            jiff::SignedDuration::try_from(policy.recovery).unwrap_or(jiff::SignedDuration::MAX);
        self.recently_cleared
            .retain(|_, c| now.duration_since(c.at) <= recovery);
        let mut t = Transitions::default();
        for (p, since) in &mut current {
            if let Some(recorded) = self.problems.get(p) {
                *since = *recorded;
            } else if let Some(c) = self.recently_cleared.remove(p) {
                *since = c.since;
                t.resumed.push(*p);
            } else {
                t.opened.push(*p);
            }
        }
        for (p, since) in &self.problems {
            if !current.contains_key(p) {
                t.closed.push(*p);
                self.recently_cleared.insert(
                    *p,
                    Cleared {
                        since: *since,
                        at: now,
                    },
                );
            }
        }
        self.problems = current;
        if self.problems.is_empty() && self.recently_cleared.is_empty() {
            self.escalated_at = None;
        }
        t
    }

    /// Takes a repair left running by a process that stopped as done, so
    /// it is never repeated. Whether there was one.
    pub fn interrupt(&mut self, now: Timestamp) -> bool {
        match &mut self.last_repair {
            Some(r) if r.running() => {
                r.outcome = Some(Outcome::Interrupted);
                r.finished_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Records the start of `action` for `problem` (the try after the
    /// last one of the same action in the same window).
    pub fn start(&mut self, action: Action, problem: Problem, now: Timestamp) -> &Repair {
        let since = self.problems.get(&problem).copied();
        let attempt = match &self.last_repair {
            Some(r)
                if r.action == action
                    && r.problem == problem
                    && since.is_some_and(|s| r.started_at >= s) =>
            {
                r.attempt + 1
            }
            _ => 1,
        };
        self.repairs += 1;
        self.last_repair.insert(Repair {
            action,
            problem,
            attempt,
            started_at: now,
            finished_at: None,
            outcome: None,
            message: None,
        })
    }

    /// Records how the running repair ended.
    pub fn finish(&mut self, outcome: Outcome, message: Option<String>, now: Timestamp) {
        if let Some(r) = &mut self.last_repair {
            r.outcome = Some(outcome);
            r.finished_at = Some(now);
            r.message = message;
        }
    }
}
