//! Graceful removal against the lab over the production adapters: the
//! executor asks Talos to shut the machine down (with the talosconfig the
//! lab writes) before Proxmox sees any stop, and the VM powers off on its
//! own (the lab's guest reports that to Proxmox as one stop), so no ACPI
//! shutdown or hard stop follows.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidepool_controller::service::Service;
use tidepool_core::Phase;
use tidepool_lab_pve::VmEvent;
use tidepool_lab_talos::TalosEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_calls_talos_shutdown_before_any_proxmox_stop() {
    let lab = common::bare_lab("removal", 200.0, 11).await;
    let exec = Arc::new(common::lab_executor(&lab).await);
    let svc = Service::new(exec.clone());
    let name = common::provision_one(&svc, "removal-test").await;
    let settle = |name: String| {
        let exec = exec.clone();
        async move {
            exec.run_until_idle(&name, Duration::from_secs(60), Duration::from_millis(20))
                .await
                .unwrap()
        }
    };
    assert_eq!(settle(name.clone()).await, Phase::Ready);
    let vmid = svc.get_worker(&name).await.unwrap().vmid.unwrap();

    // One log of both emulators' power events, in the order they happen.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut talos = lab.talos.subscribe();
    let talos_log = log.clone();
    tokio::spawn(async move {
        while let Ok(event) = talos.recv().await {
            if let TalosEvent::ShutdownRequested { ip, force } = event {
                talos_log
                    .lock()
                    .unwrap()
                    .push(format!("talos shutdown {ip} force={force}"));
            }
        }
    });
    let mut pve = lab.pve.subscribe();
    let pve_log = log.clone();
    tokio::spawn(async move {
        while let Ok(event) = pve.recv().await {
            if let VmEvent::Stopped { vmid } = event {
                pve_log
                    .lock()
                    .unwrap()
                    .push(format!("proxmox stopped {vmid}"));
            }
        }
    });

    svc.destroy("removal-test", &name, true).await.unwrap();
    assert_eq!(settle(name.clone()).await, Phase::Terminated);
    let log = log.lock().unwrap().clone();
    let talos_at = log
        .iter()
        .position(|l| l.starts_with("talos shutdown"))
        .unwrap_or_else(|| panic!("no Talos shutdown: {log:?}"));
    let stopped_at = log
        .iter()
        .position(|l| *l == format!("proxmox stopped {vmid}"))
        .unwrap_or_else(|| panic!("the VM never stopped: {log:?}"));
    assert!(talos_at < stopped_at, "{log:?}");
    assert!(log[talos_at].ends_with("force=true"), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("proxmox stopped"))
            .count(),
        1,
        "the machine powered itself off once: {log:?}"
    );
    lab.shutdown().await;
}
