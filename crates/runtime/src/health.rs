//! Readiness: what `/readyz` checks, and the probe that keeps an idle
//! replica's view of Proxmox fresh.
//!
//! A replica is ready when the node and pod caches and the WorkerClaim
//! cache have completed their first list, and the Proxmox API answered
//! within the freshness window (a few resync periods). A standby does not
//! otherwise talk to Proxmox, so [`probe_proxmox`] asks for the API's
//! version whenever nothing else got an answer within a resync period.

use std::sync::Arc;
use std::time::Duration;

use tidepool_live::LiveExecutor;
use tokio::sync::watch;
use tracing::warn;

/// The readiness checks of one replica.
pub struct Readiness {
    exec: Arc<LiveExecutor>,
    fresh: Duration,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("fresh", &self.fresh)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Checks over `exec`'s caches and Proxmox client; Proxmox counts as
    /// answering while its last answer is younger than `fresh` (real time).
    pub fn new(exec: Arc<LiveExecutor>, fresh: Duration) -> Self {
        Self { exec, fresh }
    }

    /// Every check that fails now, one sentence each; empty when ready.
    pub fn failures(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let cluster = self.exec.nodes().cluster();
        if !cluster.is_synced() {
            failed.push("the node and pod caches have not synced".to_owned());
        }
        if !cluster.claim_cache().is_synced() {
            failed.push("the WorkerClaim cache has not synced".to_owned());
        }
        match self.exec.hypervisor().last_answer() {
            None => failed.push("the Proxmox API has not answered yet".to_owned()),
            Some(at) if at.elapsed() > self.fresh => failed.push(format!(
                "the Proxmox API last answered {}s ago (more than {}s)",
                at.elapsed().as_secs(),
                self.fresh.as_secs()
            )),
            Some(_) => {}
        }
        failed
    }
}

/// Asks Proxmox for its version whenever it has not answered anything
/// within `every` (real time), until `stop` turns true. A failed probe is
/// logged; readiness reports it once the last answer grows old.
pub async fn probe_proxmox(
    exec: Arc<LiveExecutor>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        let stale = exec
            .hypervisor()
            .last_answer()
            .is_none_or(|at| at.elapsed() >= every);
        if stale {
            match tokio::time::timeout(every, exec.hypervisor().probe()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "the Proxmox API did not answer the probe"),
                Err(_) => warn!(after = ?every, "the Proxmox API probe timed out"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = tidepool_controller::wake::changed(&mut stop) => {}
        }
    }
}
