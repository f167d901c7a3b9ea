//! A step that keeps failing never turns into a hot loop: it records its
//! reason once, tells the claim's Events once, and is tried again with an
//! exponential backoff per claim (issue 11 hole 7). The failure used is the
//! one seen in the lab: Proxmox refusing to delete a VM with protection=1.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_controller::executor::ExecutorError;
use tidepool_controller::ports::{ProviderError, ProviderErrorKind};
use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions, StepMetrics};
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_controller::{Claim, ClaimSpec, Executor, Intent};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;
use tidepool_core::{Lifecycle, Phase, Step};

type FakeExecutor = Executor<Fake, Fake, Fake, Fake>;

fn executor(fake: &Fake) -> Arc<FakeExecutor> {
    Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        Arc::new(config::load(EXAMPLE).unwrap()),
        Arc::new(ManualClock::at(
            Timestamp::from_second(1_767_225_600).unwrap(),
        )),
    ))
}

fn claim(name: &str) -> Claim {
    Claim::new(
        name,
        ClaimSpec {
            pool: "burst".into(),
            size: "small".into(),
            ttl: None,
            requested_by: "test".into(),
            reason: "hot loop test".into(),
            intent: Intent::Keep,
            host: None,
        },
    )
}

const PROTECTED: &str = "can't remove VM 1250 - protection mode enabled";

/// A Ready burst worker whose VM Proxmox refuses to delete, asked to go.
async fn protected_worker_asked_to_go(fake: &Fake, exec: &FakeExecutor, name: &str) {
    fake.put_claim(claim(name));
    let phase = exec
        .run_until_idle(name, Duration::from_secs(5), Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(phase, Phase::Ready);
    for _ in 0..10_000 {
        fake.inject(
            "delete",
            ProviderError::new(ProviderErrorKind::Permanent, PROTECTED),
        );
    }
    fake.world().claims.get_mut(name).unwrap().spec.intent = Intent::Remove { force: true };
}

fn failure_events(fake: &Fake, name: &str) -> usize {
    fake.world()
        .audit
        .iter()
        .filter(|(c, e)| c == name && e.operation == "step deleteVm")
        .count()
}

#[tokio::test]
async fn a_refused_vm_delete_records_its_reason_once_and_then_writes_nothing() {
    let fake = Fake::new();
    let exec = executor(&fake);
    protected_worker_asked_to_go(&fake, &exec, "burst-pr0t").await;
    // On its way out until the delete is refused and recorded.
    for _ in 0..20 {
        if exec.step("burst-pr0t").await.is_err() {
            break;
        }
        if matches!(
            fake.world().claims["burst-pr0t"].status.lifecycle,
            Lifecycle::Failed { .. }
        ) {
            break;
        }
    }
    let status = fake.world().claims["burst-pr0t"].status.clone();
    assert_eq!(
        status.lifecycle,
        Lifecycle::Failed {
            step: Step::DeleteVm,
            reason: PROTECTED.into()
        }
    );
    assert_eq!(failure_events(&fake, "burst-pr0t"), 1);

    // Every further try fails the same way: nothing is written, nothing
    // more is told, and the caller is asked to back off.
    let writes = fake.claim_writes();
    let deletes = fake.calls("delete");
    for _ in 0..50 {
        match exec.step("burst-pr0t").await {
            Err(ExecutorError::Retry { step, .. }) => assert_eq!(step, Step::DeleteVm),
            other => panic!("expected a retry, got {other:?}"),
        }
    }
    assert_eq!(
        fake.claim_writes(),
        writes,
        "no claim write while nothing changes"
    );
    assert_eq!(fake.calls("delete"), deletes + 50, "one delete per try");
    assert_eq!(
        failure_events(&fake, "burst-pr0t"),
        1,
        "one Event per change"
    );
    assert_eq!(fake.world().claims["burst-pr0t"].status, status);

    // Once protection is lifted, the next try removes the worker.
    fake.world().inject.remove("delete");
    let phase = exec
        .run_until_idle(
            "burst-pr0t",
            Duration::from_secs(5),
            Duration::from_millis(1),
        )
        .await
        .unwrap();
    assert_eq!(phase, Phase::Terminated);
    assert!(fake.owned("burst-pr0t").is_empty());
}

#[tokio::test]
async fn a_transient_error_that_repeats_is_recorded_once() {
    let fake = Fake::new();
    let exec = executor(&fake);
    fake.put_claim(claim("burst-fl4ky"));
    for _ in 0..30 {
        fake.inject(
            "start",
            ProviderError::new(ProviderErrorKind::Transient, "proxy timeout"),
        );
    }
    let mut writes_at_first_retry = None;
    let mut retries = 0;
    for _ in 0..60 {
        if let Err(ExecutorError::Retry { step, .. }) = exec.step("burst-fl4ky").await {
            assert_eq!(step, Step::Start);
            retries += 1;
            writes_at_first_retry.get_or_insert(fake.claim_writes());
        }
        if retries == 30 {
            break;
        }
    }
    assert_eq!(retries, 30);
    assert_eq!(Some(fake.claim_writes()), writes_at_first_retry);
    let events = fake
        .world()
        .audit
        .iter()
        .filter(|(_, e)| e.operation == "step start")
        .count();
    assert_eq!(events, 1);
}

/// Counts what the reconciler reports.
#[derive(Default)]
struct Counted {
    failures: Mutex<Vec<(Step, String)>>,
    backing_off: Mutex<Vec<usize>>,
}

impl StepMetrics for Counted {
    fn step_failed(&self, step: Step, category: &str) {
        self.failures
            .lock()
            .unwrap()
            .push((step, category.to_owned()));
    }
    fn backing_off(&self, claims: usize) {
        self.backing_off.lock().unwrap().push(claims);
    }
}

#[tokio::test]
async fn the_reconciler_backs_off_exponentially_from_a_failing_step_and_counts_it() {
    let fake = Fake::new();
    let exec = executor(&fake);
    protected_worker_asked_to_go(&fake, &exec, "burst-pr0t").await;
    let metrics = Arc::new(Counted::default());
    let options = ReconcilerOptions {
        resync: Duration::from_secs(3600),
        min_wait: Duration::from_millis(1),
        max_backoff: Duration::from_millis(16),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = Reconciler::new(exec.clone(), options)
        .with_metrics(metrics.clone())
        .spawn(stop_rx);
    // Wait for the refusal to be recorded.
    for _ in 0..2000 {
        if failure_events(&fake, "burst-pr0t") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(failure_events(&fake, "burst-pr0t"), 1);
    let writes = fake.claim_writes();
    let deletes = fake.calls("delete");
    let started = tokio::time::Instant::now();
    // Twelve more tries: each waits at least the doubled backoff (2, 4, 8,
    // then the 16 ms cap), and none of them writes.
    for _ in 0..4000 {
        if fake.calls("delete") >= deletes + 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let tries = fake.calls("delete") - deletes;
    assert!(tries >= 12);
    let least: u64 = [2, 4, 8, 16, 16, 16, 16, 16, 16, 16, 16].iter().sum();
    assert!(
        started.elapsed() >= Duration::from_millis(least),
        "{tries} tries in {:?}: the backoff was not kept",
        started.elapsed()
    );
    assert_eq!(fake.claim_writes(), writes);
    assert_eq!(failure_events(&fake, "burst-pr0t"), 1);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
    let failures = metrics.failures.lock().unwrap().clone();
    assert!(failures.len() >= 12);
    assert!(
        failures
            .iter()
            .all(|(s, c)| *s == Step::DeleteVm && c == "permanent"),
        "{failures:?}"
    );
    let backing_off = metrics.backing_off.lock().unwrap().clone();
    assert_eq!(backing_off.first(), Some(&1), "{backing_off:?}");
}
