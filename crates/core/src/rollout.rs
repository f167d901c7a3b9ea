//! Rolling upgrades of a pool: the durable rollout and the pure planner
//! that carries it batch by batch.
//!
//! A rollout brings every worker of one pool to a target Talos version,
//! in place (the Talos Upgrade API), a batch at a time. It lives on the
//! pool's durable record ([`crate::pool_record::PoolRecord::rollout`]),
//! written with the record's optimistic precondition, so of two leaders
//! only one moves it, and a restart or a failover finds each batch, and
//! each worker's step within it, where the last process left it.
//!
//! The planner ([`next`]) answers what to do now from the rollout and the
//! pool's workers as observed:
//! - a batch in progress is carried on, never a second one started beside it;
//! - a worker already in an earlier batch is never put in another one
//!   (a batch never runs twice), unless the operator resumed after a
//!   failure, which starts afresh from what is still drifted;
//! - a new batch takes the drifted workers (their reported version is not
//!   the target), at most `max_unavailable` less the pool's workers that
//!   are not Ready already;
//! - control-plane nodes are never in a batch.
//!
//! Pure: time comes in as values.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Why a rollout cannot be started or its limit read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// `--max-unavailable` is neither a count nor a percentage.
    #[error("reading max-unavailable {0:?}: expected a count (2) or a percentage (20%) above zero")]
    MaxUnavailable(String),
    /// The installer image names no version tag.
    #[error("reading the Talos version of installer image {0:?}: it has no tag (e.g. :v1.10.6)")]
    ImageTag(String),
}

/// How many workers of the pool may be unavailable at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MaxUnavailable {
    /// A number of workers.
    Count(u32),
    /// A percentage of the pool's workers, rounded down, at least one.
    Percent(u32),
}

impl Default for MaxUnavailable {
    /// 20 % of the pool.
    fn default() -> Self {
        Self::Percent(20)
    }
}

impl MaxUnavailable {
    /// Reads `3` or `20%`.
    ///
    /// # Errors
    /// Neither form, or zero.
    pub fn parse(text: &str) -> Result<Self, RolloutError> {
        let bad = || RolloutError::MaxUnavailable(text.to_owned());
        let t = text.trim();
        let value = match t.strip_suffix('%') {
            Some(p) => Self::Percent(p.trim().parse().map_err(|_| bad())?),
            None => Self::Count(t.parse().map_err(|_| bad())?),
        };
        match value {
            Self::Count(0) | Self::Percent(0) => Err(bad()),
            Self::Percent(p) if p > 100 => Err(bad()),
            v => Ok(v),
        }
    }

    /// The most workers of a pool of `workers` unavailable at once: never
    /// below one.
    pub fn of(self, workers: usize) -> usize {
        let n = match self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => workers.saturating_mul(p as usize) / 100,
        };
        n.max(1)
    }
}

impl std::fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The version tag an installer image carries (`ghcr.io/siderolabs/installer:v1.10.6`
/// is `v1.10.6`; a digest after the tag is ignored).
///
/// # Errors
/// The image has no tag.
pub fn image_version(image: &str) -> Result<String, RolloutError> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => Ok(tag.to_owned()),
        _ => Err(RolloutError::ImageTag(image.to_owned())),
    }
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RolloutState {
    /// Batches are being carried out.
    Running,
    /// A batch failed; nothing moves until the operator resumes or aborts.
    Paused {
        /// Why, in words.
        reason: String,
    },
    /// Every worker reports the target version.
    Done,
    /// The operator stopped it; workers keep the version they have.
    Aborted,
}

/// A worker's step within its batch, recorded before the step's action is
/// taken, so a process that takes over neither repeats nor skips one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum WorkerStep {
    /// Chosen; not yet touched.
    Chosen,
    /// Being cordoned and drained, since then (a drain blocked by a
    /// PodDisruptionBudget is tried again until the pool's drain timeout).
    Draining {
        /// When the drain began.
        since: Timestamp,
    },
    /// The upgrade was asked for (or is about to be): never asked again;
    /// the worker is waited for.
    Upgrading {
        /// When it was asked.
        at: Timestamp,
        /// The version it ran before.
        from: Option<String>,
    },
    /// Back on the target version, healthy, and uncordoned.
    Done,
    /// Failed; the reason is the batch's.
    Failed {
        /// Why, in words.
        reason: String,
    },
}

/// One batch: the workers upgraded together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// When it started.
    pub started: Timestamp,
    /// When it ended (all done, or one failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Its workers by claim name, with each one's step.
    pub workers: BTreeMap<String, WorkerStep>,
}

impl Batch {
    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// The first failure among its workers.
    pub fn failure(&self) -> Option<(&str, &str)> {
        self.workers.iter().find_map(|(name, step)| match step {
            WorkerStep::Failed { reason } => Some((name.as_str(), reason.as_str())),
            _ => None,
        })
    }
}

/// A pool's rolling upgrade, kept on its durable record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The Talos installer image to upgrade to.
    pub image: String,
    /// The version it installs (the image's tag).
    pub version: String,
    /// How many workers may be unavailable at once.
    pub max_unavailable: MaxUnavailable,
    /// Who asked (`cli:<user>`, `mcp:<client>`).
    pub requested_by: String,
    /// When it was asked for.
    pub started: Timestamp,
    /// When it ended (done or aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
    /// Where it stands.
    #[serde(flatten)]
    pub state: RolloutState,
    /// The batches so far, oldest first; only the last may be unfinished.
    #[serde(default)]
    pub batches: Vec<Batch>,
    /// How many batches there were when the operator last resumed: the
    /// workers of earlier batches may be chosen again.
    #[serde(default)]
    pub resumed_at_batch: usize,
}

impl Rollout {
    /// A new rollout to `image`.
    ///
    /// # Errors
    /// The image names no version.
    pub fn new(
        image: &str,
        max_unavailable: MaxUnavailable,
        requested_by: &str,
        now: Timestamp,
    ) -> Result<Self, RolloutError> {
        Ok(Self {
            image: image.to_owned(),
            version: image_version(image)?,
            max_unavailable,
            requested_by: requested_by.to_owned(),
            started: now,
            finished: None,
            state: RolloutState::Running,
            batches: Vec::new(),
            resumed_at_batch: 0,
        })
    }

    /// Whether it still has work (running or paused).
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            RolloutState::Running | RolloutState::Paused { .. }
        )
    }

    /// The batch in progress, if any.
    pub fn current(&self) -> Option<&Batch> {
        self.batches.last().filter(|b| !b.is_finished())
    }

    /// The batch in progress, to change.
    pub fn current_mut(&mut self) -> Option<&mut Batch> {
        self.batches.last_mut().filter(|b| !b.is_finished())
    }

    /// Whether `worker` was in a batch since the last resume.
    pub fn visited(&self, worker: &str) -> bool {
        self.batches
            .iter()
            .skip(self.resumed_at_batch)
            .any(|b| b.workers.contains_key(worker))
    }

    /// Pauses with `reason` (a paused, done or aborted one is left alone).
    pub fn pause(&mut self, reason: &str) {
        if self.state == RolloutState::Running {
            self.state = RolloutState::Paused {
                reason: reason.to_owned(),
            };
        }
    }

    /// Resumes a paused rollout: the workers of earlier batches may be
    /// chosen again when still drifted. True when it was paused.
    pub fn resume(&mut self) -> bool {
        if !matches!(self.state, RolloutState::Paused { .. }) {
            return false;
        }
        self.state = RolloutState::Running;
        self.resumed_at_batch = self.batches.len();
        true
    }

    /// Aborts it: no further batch starts; an unfinished batch is closed
    /// as it stands. True when it was active.
    pub fn abort(&mut self, now: Timestamp) -> bool {
        if !self.is_active() {
            return false;
        }
        self.state = RolloutState::Aborted;
        self.finished = Some(now);
        if let Some(b) = self.current_mut() {
            b.finished = Some(now);
        }
        true
    }
}

/// One worker of the pool as observed now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerView {
    /// Its claim's (and node's) name.
    pub name: String,
    /// Whether its node carries the control-plane label.
    pub control_plane: bool,
    /// Whether its node is Ready.
    pub ready: bool,
    /// The Talos version it reports; `None` when it could not be asked.
    pub version: Option<String>,
}

/// What the rollout should do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Carry on the batch in progress.
    Continue,
    /// Start a batch of these workers.
    Start(Vec<String>),
    /// Nothing can start now (say why); look again later.
    Wait(String),
    /// Drifted workers are left that were all in a batch already: they
    /// came back on another version. The rollout should pause (say why).
    Stuck(String),
    /// No worker is drifted: the rollout is done.
    Done,
    /// Paused, done or aborted: nothing to do.
    Idle,
}

/// The workers whose reported version is not `version`, control-plane
/// nodes left out, by name. A worker whose version could not be read is
/// not counted as drifted: it is not known to be.
pub fn drifted<'a>(version: &str, workers: &'a [WorkerView]) -> Vec<&'a str> {
    workers
        .iter()
        .filter(|w| !w.control_plane)
        .filter(|w| w.version.as_deref().is_some_and(|v| v != version))
        .map(|w| w.name.as_str())
        .collect()
}

/// What the rollout should do now, given the pool's workers.
pub fn next(rollout: &Rollout, workers: &[WorkerView]) -> Next {
    if rollout.state != RolloutState::Running {
        return Next::Idle;
    }
    if rollout.current().is_some() {
        return Next::Continue;
    }
    let drifted = drifted(&rollout.version, workers);
    if drifted.is_empty() {
        let unknown = workers
            .iter()
            .filter(|w| !w.control_plane && w.version.is_none())
            .count();
        return if unknown == 0 {
            Next::Done
        } else {
            Next::Wait(format!("{unknown} worker(s) did not report their version"))
        };
    }
    let pool = workers.iter().filter(|w| !w.control_plane).count();
    let budget = rollout.max_unavailable.of(pool);
    let unavailable = workers
        .iter()
        .filter(|w| !w.control_plane && !w.ready)
        .count();
    let room = budget.saturating_sub(unavailable);
    if room == 0 {
        return Next::Wait(format!(
            "{unavailable} worker(s) not Ready already, max unavailable {budget}"
        ));
    }
    let unvisited: Vec<&str> = drifted
        .into_iter()
        .filter(|w| !rollout.visited(w))
        .collect();
    if unvisited.is_empty() {
        return Next::Stuck(format!(
            "every drifted worker was upgraded once already and still does not report {}",
            rollout.version
        ));
    }
    let fresh: Vec<String> = unvisited
        .into_iter()
        .filter(|w| workers.iter().any(|v| v.name == *w && v.ready))
        .take(room)
        .map(str::to_owned)
        .collect();
    if fresh.is_empty() {
        return Next::Wait("the drifted workers left are not Ready".to_owned());
    }
    Next::Start(fresh)
}

/// How many workers a dry run's plan would put in each batch, in order:
/// the drifted workers, `max_unavailable` at a time.
pub fn plan(
    version: &str,
    max_unavailable: MaxUnavailable,
    workers: &[WorkerView],
) -> Vec<Vec<String>> {
    let pool = workers.iter().filter(|w| !w.control_plane).count();
    let size = max_unavailable.of(pool);
    drifted(version, workers)
        .chunks(size)
        .map(|c| c.iter().map(|s| (*s).to_owned()).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const IMAGE: &str = "ghcr.io/siderolabs/installer:v1.11.0";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).unwrap()
    }

    /// Workers `w1..=wn`, Ready, on `version`.
    fn pool(n: usize, version: &str) -> Vec<WorkerView> {
        (1..=n)
            .map(|i| WorkerView {
                name: format!("w{i}"),
                control_plane: false,
                ready: true,
                version: Some(version.to_owned()),
            })
            .collect()
    }

    fn rollout() -> Rollout {
        Rollout::new(IMAGE, MaxUnavailable::default(), "cli:test", t(0)).unwrap()
    }

    fn batch(workers: &[(&str, WorkerStep)], finished: bool) -> Batch {
        Batch {
            started: t(1),
            finished: finished.then(|| t(2)),
            workers: workers
                .iter()
                .map(|(n, s)| ((*n).to_owned(), s.clone()))
                .collect(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn max_unavailable_reads_counts_and_percentages_and_is_never_below_one() {
        let table: &[(&str, usize, Option<usize>)] = &[
            ("20%", 5, Some(1)),
            ("20%", 10, Some(2)),
            ("20%", 3, Some(1)),
            ("50%", 5, Some(2)),
            ("100%", 4, Some(4)),
            ("2", 5, Some(2)),
            (" 3 ", 1, Some(3)),
            ("0", 5, None),
            ("0%", 5, None),
            ("101%", 5, None),
            ("-1", 5, None),
            ("a%", 5, None),
            ("", 5, None),
        ];
        for (text, workers, want) in table {
            let got = MaxUnavailable::parse(text).ok().map(|m| m.of(*workers));
            assert_eq!(got, *want, "{text:?} of {workers}");
        }
        assert_eq!(MaxUnavailable::default().of(0), 1);
        assert_eq!(MaxUnavailable::parse("20%").unwrap().to_string(), "20%");
    }

    #[test]
    fn installer_images_name_their_version() {
        let table: &[(&str, Option<&str>)] = &[
            ("ghcr.io/siderolabs/installer:v1.10.6", Some("v1.10.6")),
            (
                "localhost:5000/installer:v1.11.0@sha256:abc",
                Some("v1.11.0"),
            ),
            ("localhost:5000/installer", None),
            ("installer:", None),
        ];
        for (image, want) in table {
            assert_eq!(image_version(image).ok().as_deref(), *want, "{image}");
        }
    }

    #[test]
    fn only_workers_on_another_known_version_are_drifted_and_never_the_control_plane() {
        let mut workers = pool(4, "v1.10.6");
        workers[1].version = Some("v1.11.0".into());
        workers[2].version = None;
        workers[3].control_plane = true;
        assert_eq!(drifted("v1.11.0", &workers), ["w1"]);
    }

    #[test]
    fn the_next_step_follows_the_rollout_and_the_pool() {
        use WorkerStep::{Chosen, Done};
        struct Case {
            name: &'static str,
            rollout: Rollout,
            workers: Vec<WorkerView>,
            want: Next,
        }
        let old = || pool(5, "v1.10.6");
        let with = |batches: Vec<Batch>| Rollout {
            batches,
            ..rollout()
        };
        let cases = vec![
            Case {
                name: "a fresh rollout of five at 20% starts a batch of one",
                rollout: rollout(),
                workers: old(),
                want: Next::Start(names(&["w1"])),
            },
            Case {
                name: "at 40% the batch holds two",
                rollout: Rollout {
                    max_unavailable: MaxUnavailable::Percent(40),
                    ..rollout()
                },
                workers: old(),
                want: Next::Start(names(&["w1", "w2"])),
            },
            Case {
                name: "a batch in progress is carried on, never a second one beside it",
                rollout: with(vec![batch(&[("w1", Chosen)], false)]),
                workers: old(),
                want: Next::Continue,
            },
            Case {
                name: "a finished batch's workers are never chosen again",
                rollout: with(vec![batch(&[("w1", Done)], true)]),
                workers: {
                    let mut w = old();
                    w[0].version = Some("v1.11.0".into());
                    w
                },
                want: Next::Start(names(&["w2"])),
            },
            Case {
                name: "a worker not Ready already takes the room of the batch",
                rollout: rollout(),
                workers: {
                    let mut w = old();
                    w[4].ready = false;
                    w
                },
                want: Next::Wait("1 worker(s) not Ready already, max unavailable 1".into()),
            },
            Case {
                name: "control-plane nodes neither count nor are chosen",
                rollout: Rollout {
                    max_unavailable: MaxUnavailable::Count(10),
                    ..rollout()
                },
                workers: {
                    let mut w = old();
                    w[0].control_plane = true;
                    w[1].control_plane = true;
                    w
                },
                want: Next::Start(names(&["w3", "w4", "w5"])),
            },
            Case {
                name: "every worker on the target: done",
                rollout: with(vec![batch(&[("w1", Done)], true)]),
                workers: pool(5, "v1.11.0"),
                want: Next::Done,
            },
            Case {
                name: "a worker whose version is unknown keeps it from being done",
                rollout: rollout(),
                workers: {
                    let mut w = pool(2, "v1.11.0");
                    w[1].version = None;
                    w
                },
                want: Next::Wait("1 worker(s) did not report their version".into()),
            },
            Case {
                name: "a worker that came back on the old version after its batch: stuck",
                rollout: with(vec![batch(&[("w1", Done)], true)]),
                workers: {
                    let mut w = pool(2, "v1.11.0");
                    w[0].version = Some("v1.10.6".into());
                    w
                },
                want: Next::Stuck(
                    "every drifted worker was upgraded once already and still does not report v1.11.0"
                        .into(),
                ),
            },
            Case {
                name: "a paused rollout does nothing",
                rollout: {
                    let mut r = rollout();
                    r.pause("w1 rolled back");
                    r
                },
                workers: old(),
                want: Next::Idle,
            },
        ];
        for case in cases {
            assert_eq!(
                next(&case.rollout, &case.workers),
                case.want,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn a_resumed_rollout_may_choose_the_failed_batch_again() {
        let mut r = rollout();
        r.batches.push(batch(
            &[(
                "w1",
                WorkerStep::Failed {
                    reason: "rolled back".into(),
                },
            )],
            true,
        ));
        r.pause("w1: rolled back");
        let workers = pool(2, "v1.10.6");
        assert_eq!(next(&r, &workers), Next::Idle);
        assert!(r.resume());
        assert!(!r.resume(), "only a paused rollout resumes");
        assert_eq!(next(&r, &workers), Next::Start(names(&["w1"])));
    }

    #[test]
    fn an_aborted_rollout_closes_its_batch_and_stays_aborted() {
        let mut r = rollout();
        r.batches.push(batch(
            &[("w1", WorkerStep::Draining { since: t(2) })],
            false,
        ));
        assert!(r.abort(t(9)));
        assert_eq!(r.state, RolloutState::Aborted);
        assert!(r.current().is_none());
        assert!(!r.abort(t(10)));
        assert!(!r.resume());
        assert_eq!(next(&r, &pool(2, "v1.10.6")), Next::Idle);
    }

    #[test]
    fn a_dry_run_plans_the_drifted_workers_in_batches() {
        let mut workers = pool(5, "v1.10.6");
        workers[2].version = Some("v1.11.0".into());
        let plan = plan("v1.11.0", MaxUnavailable::Count(3), &workers);
        assert_eq!(plan, [names(&["w1", "w2", "w4"]), names(&["w5"])]);
    }

    #[test]
    fn the_rollout_reads_back_what_it_wrote() {
        let mut r = rollout();
        r.batches.push(batch(
            &[(
                "w1",
                WorkerStep::Upgrading {
                    at: t(3),
                    from: Some("v1.10.6".into()),
                },
            )],
            false,
        ));
        r.pause("why");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rollout>(&json).unwrap(), r);
    }
}
