//! The views both front-ends print: what `tidepool … -o json|yaml` shows
//! and what every MCP tool answers, as serialisable data owned by the
//! layer the front-ends call rather than by either of them.
//!
//! The service layer returns these types; the CLI renders them as tables
//! or documents, the MCP server as tool results. With the `schemars`
//! feature they derive their JSON schemas (the tools' output schemas) from
//! the doc comments below, so those comments are user-facing.
//!
//! Nothing here reads a clock: conversions that depend on the time (the
//! "expires in 3h 12m" of a worker) take `now`. Every timestamp is written
//! as an RFC 3339 string to the second; nothing here carries a secret.

mod health;
mod node;
mod plan;
mod worker;

use jiff::Timestamp;

pub use health::{
    HealthReport, HealthSubject, NextView, ProblemView, ServiceState, WorkerDetails, WorkerHealth,
    worker_health,
};
pub use node::{NodeCondition, NodeDetail, NodeEvent, NodePod, talos_version};
pub use plan::{CapacityResult, DeferredTrigger, HeldWorker, PlanResult, PlannedAction, PodReason};
pub use worker::{
    ActionResult, NewWorker, ProvisionResult, TtlResult, WorkerInfo, WorkerList, WorkerPhase,
};

/// `at` as RFC 3339 in UTC, to the second (e.g. `2026-01-01T02:00:00Z`).
pub fn rfc3339(at: Timestamp) -> String {
    Timestamp::from_second(at.as_second())
        .unwrap_or(at)
        .to_string()
}

/// The time from `now` to `at` in words: `2d 3h`, `3h 59m`, `45m`,
/// `less than a minute`, or `expired 5m ago` once past.
pub fn expires_in(at: Timestamp, now: Timestamp) -> String {
    let secs = at.as_second() - now.as_second();
    if secs < 0 {
        format!("expired {} ago", words(secs.unsigned_abs()))
    } else {
        words(secs.unsigned_abs())
    }
}

fn words(secs: u64) -> String {
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => "less than a minute".to_owned(),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Serde helpers writing timestamps as [`rfc3339`] strings, exactly as a
/// `String` field would (jiff's own parser reads them back).
mod seconds {
    use jiff::Timestamp;
    use serde::{Serialize, Serializer};

    /// A timestamp written to the second.
    struct Rfc3339(Timestamp);

    impl Serialize for Rfc3339 {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&super::rfc3339(self.0))
        }
    }

    /// Writes `at` to the second.
    pub(super) fn serialize<S: Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        Rfc3339(*at).serialize(s)
    }

    /// Writes `at`, if any, to the second, as an `Option<String>` would be.
    pub(super) fn serialize_opt<S: Serializer>(
        at: &Option<Timestamp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        at.map(Rfc3339).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn time_left_reads_as_words_at_every_scale() {
        let now = at(1_000_000);
        assert_eq!(expires_in(at(1_000_030), now), "less than a minute");
        assert_eq!(expires_in(at(1_000_000 + 45 * 60), now), "45m");
        assert_eq!(
            expires_in(at(1_000_000 + 3 * 3600 + 59 * 60), now),
            "3h 59m"
        );
        assert_eq!(
            expires_in(at(1_000_000 + 2 * 86_400 + 3 * 3600), now),
            "2d 3h"
        );
        assert_eq!(expires_in(at(1_000_000 - 300), now), "expired 5m ago");
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_second() {
        let t = Timestamp::new(1_767_225_600, 267_750_639).unwrap();
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00Z");
    }
}
