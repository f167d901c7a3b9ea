//! The controller manager inside the emulator: one task that, whenever
//! something changed (debounced) or a simulated delay is due, runs the node
//! lifecycle, workload, volume, scheduling, kubelet, disruption and
//! garbage collection passes in that order.

pub mod disruption;
pub mod gc;
pub mod kubelet;
pub mod nodes;
pub mod volumes;
pub mod workloads;

use std::sync::Weak;
use std::time::Duration;

use crate::Shared;
use crate::scheduler;

/// Errors of controllers are API errors; passes log and retry on the next round.
pub type ControllerError = crate::error::ApiError;

/// Runs the controllers until every handle of the lab is gone.
pub async fn run(shared: Weak<Shared>) {
    let mut kubelets = kubelet::Kubelets::default();
    loop {
        let Some(lab) = shared.upgrade() else { return };
        let store = &lab.store;
        // A pass that trips over a malformed object must not stop the
        // controllers for good: log it and carry on with the next round.
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            nodes::reconcile(store);
            workloads::reconcile_deployments(store);
            workloads::reconcile_replicasets(store);
            workloads::reconcile_daemonsets(store);
            volumes::reconcile(store);
            scheduler::reconcile(store);
            volumes::reconcile(store);
            let due = kubelets.reconcile(store, &lab.faults, &lab.options.kubelet_timings());
            disruption::reconcile(store);
            gc::reconcile(store);
            due
        }));
        let due = pass.unwrap_or_else(|_| {
            tracing::error!("a controller pass of the Kubernetes emulator failed; retrying");
            None
        });
        let wait = due
            .map(|d| store.clock().real(d) + Duration::from_millis(1))
            .unwrap_or(lab.options.resync_interval)
            .min(lab.options.resync_interval);
        let debounce = lab.options.controller_debounce;
        let changed = tokio::time::timeout(wait, store.changed()).await.is_ok();
        drop(lab);
        if changed {
            tokio::time::sleep(debounce).await;
        }
    }
}
