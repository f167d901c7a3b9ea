//! Fencing through the claim store: a status write succeeds only if nobody
//! else wrote the claim since the writer last read it, so a deposed leader
//! that still has a step in flight cannot overwrite what the new leader
//! recorded.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::claim::{Claim, ClaimSpec, ClaimStatus};
use tidepool_controller::executor::{ExecutorError, Moment};
use tidepool_controller::ports::{ClaimStore, ProviderErrorKind};
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_controller::{Executor, Intent};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;

fn claim(name: &str) -> Claim {
    Claim {
        name: name.into(),
        spec: ClaimSpec {
            pool: "burst".into(),
            size: "small".into(),
            ttl: Some(Duration::from_secs(4 * 3600)),
            requested_by: "test".into(),
            reason: "fencing".into(),
            intent: Intent::Keep,
            host: None,
        },
        status: ClaimStatus::default(),
        finalizer: true,
        generation: None,
        deleting: false,
    }
}

#[tokio::test]
async fn a_deposed_leaders_status_write_fails_once_the_new_leader_wrote() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-a"));
    let deposed = fake.clone();
    let leader = fake.another_process();

    // The deposed leader read the claim before it lost its Lease.
    let stale = deposed.get("burst-a").await.unwrap().unwrap();
    // The new leader reads and records a step.
    let mut current = leader.get("burst-a").await.unwrap().unwrap();
    current.status.vmid = Some(1300);
    leader
        .save_status("burst-a", &current.status)
        .await
        .unwrap();

    let mut late = stale.status.clone();
    late.vmid = Some(1250);
    let err = deposed.save_status("burst-a", &late).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Conflict, "{err}");
    assert_eq!(fake.world().claims["burst-a"].status.vmid, Some(1300));

    // The new leader keeps writing: its own write is the last it saw.
    current.status.last_error = Some("still going".into());
    leader
        .save_status("burst-a", &current.status)
        .await
        .unwrap();
    // Having read the claim again, the other store may write too.
    deposed.get("burst-a").await.unwrap();
    deposed.save_status("burst-a", &late).await.unwrap();
}

#[tokio::test]
async fn a_step_whose_claim_another_process_wrote_meanwhile_records_nothing() {
    let fake = Fake::new();
    fake.put_claim(claim("burst-b"));
    let other = fake.another_process();
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    let clock = Arc::new(ManualClock::at(
        Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    // While this executor's first step is in flight, another process
    // records something of its own on the claim.
    let hook_fake = other.clone();
    let exec = Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        clock,
    )
    .with_kill_hook(Arc::new(move |_, moment| {
        if moment == Moment::AfterEffect {
            let mut theirs = hook_fake.world().claims["burst-b"].clone();
            theirs.status.last_error = Some("the new leader's record".into());
            hook_fake.put_claim(theirs);
        }
        true
    }));
    let err = exec.step("burst-b").await.unwrap_err();
    match err {
        ExecutorError::Store { source, .. } => {
            assert_eq!(source.kind, ProviderErrorKind::Conflict, "{source}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let status = &fake.world().claims["burst-b"].status;
    assert_eq!(
        status.last_error.as_deref(),
        Some("the new leader's record")
    );
}

#[tokio::test]
async fn a_drive_reads_a_claim_written_meanwhile_again_and_carries_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions};

    let fake = Fake::new();
    fake.put_claim(claim("burst-c"));
    let other = fake.another_process();
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    let clock = Arc::new(ManualClock::at(
        Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    let once = Arc::new(AtomicBool::new(false));
    let exec = Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        clock,
    )
    .with_kill_hook(Arc::new(move |_, moment| {
        if moment == Moment::AfterEffect && !once.swap(true, Ordering::SeqCst) {
            let theirs = other.world().claims["burst-c"].clone();
            other.put_claim(theirs);
        }
        true
    }));
    let options = ReconcilerOptions {
        min_wait: Duration::from_millis(1),
        ..ReconcilerOptions::default()
    };
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    Reconciler::new(Arc::new(exec), options)
        .drive("burst-c", &stop_rx)
        .await
        .unwrap();
    let world = fake.world();
    assert_eq!(world.claims["burst-c"].phase(), tidepool_core::Phase::Ready);
    assert_eq!(world.clones.len(), 1, "{:?}", world.clones);
}

/// A join method whose `prepare` never returns, and that says when a call
/// entered it and when that call was dropped (cancelled).
struct Stuck {
    entered: Arc<tokio::sync::Notify>,
    dropped: Arc<tokio::sync::Notify>,
}

struct Dropped(Arc<tokio::sync::Notify>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl tidepool_controller::Joiner for Stuck {
    async fn prepare(
        &self,
        _claim: &Claim,
        _meta: &tidepool_core::NodeMetadata,
    ) -> tidepool_controller::ports::ProviderResult<Option<String>> {
        let _guard = Dropped(self.dropped.clone());
        self.entered.notify_one();
        std::future::pending().await
    }

    async fn deliver(
        &self,
        _claim: &Claim,
        _ip: std::net::IpAddr,
        _meta: &tidepool_core::NodeMetadata,
    ) -> tidepool_controller::ports::ProviderResult<()> {
        Ok(())
    }
}

#[tokio::test]
async fn aborting_the_reconciler_cancels_the_claim_steps_in_flight() {
    use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions};

    let fake = Fake::new();
    fake.put_claim(claim("burst-d"));
    let entered = Arc::new(tokio::sync::Notify::new());
    let dropped = Arc::new(tokio::sync::Notify::new());
    let exec = Executor::new(
        fake.clone(),
        Stuck {
            entered: entered.clone(),
            dropped: dropped.clone(),
        },
        fake.clone(),
        fake.clone(),
        Arc::new(config::load(EXAMPLE).unwrap()),
        Arc::new(ManualClock::at(
            Timestamp::from_second(1_767_225_600).unwrap(),
        )),
    );
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let options = ReconcilerOptions {
        min_wait: Duration::from_millis(1),
        ..ReconcilerOptions::default()
    };
    let reconciler = Reconciler::new(Arc::new(exec), options).spawn(stop_rx);
    // A step of the claim is in flight (preparing the machine config).
    tokio::time::timeout(Duration::from_secs(10), entered.notified())
        .await
        .expect("the claim's drive reached prepare");
    // Leadership is lost: the reconciler is aborted, and with it the step.
    reconciler.abort();
    let _ = reconciler.await;
    tokio::time::timeout(Duration::from_secs(10), dropped.notified())
        .await
        .expect("the step in flight was cancelled with the reconciler");
}
