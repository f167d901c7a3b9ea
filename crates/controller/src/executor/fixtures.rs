//! Test fixtures shared by the executor's unit tests: an executor over the
//! in-memory fake with a clock the test moves, claims, and helpers that
//! change a claim's intent or run it until it settles.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_core::Phase;
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;

use super::Executor;
use crate::claim::{Claim, ClaimSpec, ClaimStatus, Intent};
use crate::testing::{Fake, ManualClock};

/// The clock's start: 2026-01-01T00:00:00Z.
pub(super) const START: i64 = 1_767_225_600;

/// The clock the tests move, reading [`START`].
pub(super) fn clock() -> ManualClock {
    ManualClock::at(Timestamp::from_second(START).unwrap())
}

/// An executor over `fake` whose clock is `clock`.
pub(super) fn executor(fake: &Fake, clock: &ManualClock) -> Executor<Fake, Fake, Fake, Fake> {
    Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        Arc::new(config::load(EXAMPLE).unwrap()),
        Arc::new(clock.clone()),
    )
}

/// A claim to keep a worker of `pool` and `size`.
pub(super) fn claim(name: &str, pool: &str, size: &str) -> Claim {
    Claim {
        name: name.into(),
        spec: ClaimSpec {
            pool: pool.into(),
            size: size.into(),
            ttl: None,
            requested_by: "test".into(),
            reason: "executor unit test".into(),
            intent: Intent::Keep,
            host: None,
        },
        status: ClaimStatus::default(),
        finalizer: true,
        generation: None,
        deleting: false,
    }
}

/// Changes the intent of claim `name` in the fake's store.
pub(super) fn set_intent(fake: &Fake, name: &str, intent: Intent) {
    fake.world().claims.get_mut(name).unwrap().spec.intent = intent;
}

/// Steps claim `name` until it is idle.
pub(super) async fn settle(exec: &Executor<Fake, Fake, Fake, Fake>, name: &str) -> Phase {
    exec.run_until_idle(name, Duration::from_secs(5), Duration::from_millis(1))
        .await
        .unwrap()
}
