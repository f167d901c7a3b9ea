//! The chaos harness in CI: the real `tidepool run`, two replicas, killed
//! with SIGKILL and frozen with SIGSTOP at random moments during bursts and
//! scale-downs, with faults injected into every emulated API and CLI
//! requests racing the controller. No invariant may break, and everything
//! converges once the chaos stops. The long run is `examples/chaos.rs`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/chaos.rs"]
mod chaos;

use std::time::Duration;

use chaos::{ChaosOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_frozen_and_faulted_controllers_never_break_the_safety_rules() {
    let report = run(ChaosOptions {
        binary: env!("CARGO_BIN_EXE_tidepool").into(),
        seed: 7,
        replicas: 2,
        kills: 12,
        kill_every: (Duration::from_millis(500), Duration::from_millis(2500)),
        faults: true,
        cli: true,
        time_scale: 100.0,
        converge_within: Duration::from_secs(240),
        dir: std::env::temp_dir().join(format!("tidepool-chaos-{}", std::process::id())),
    })
    .await;
    eprintln!("chaos: {}", report.summary());
    if !report.converged {
        eprintln!("chaos: not converged: {}", report.leftover);
    }
    assert!(
        report.violations.is_empty(),
        "violations:\n{}",
        report.violations.join("\n")
    );
    assert!(report.converged, "did not converge: {}", report.leftover);
    assert!(
        report.kills >= 12 && report.claims_seen > 0,
        "{}",
        report.summary()
    );
}
