//! The background reconciler brings every claim to its goal and stops on
//! request.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::reconciler::{Reconciler, ReconcilerOptions};
use tidepool_controller::service::{ProvisionRequest, Service};
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_controller::{Executor, Intent};
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;

#[tokio::test]
async fn the_reconciler_provisions_new_claims_and_removes_unwanted_ones() {
    let fake = Fake::new();
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    let now = Arc::new(ManualClock::at(
        Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    let exec = Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        now,
    ));
    let svc = Service::new(exec.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options = ReconcilerOptions {
        resync: Duration::from_millis(10),
        min_wait: Duration::from_millis(1),
        ..ReconcilerOptions::default()
    };
    let task = Reconciler::new(exec.clone(), options).spawn(stop_rx);
    let names = svc
        .provision(&ProvisionRequest {
            pool: "burst".into(),
            size: None,
            count: 3,
            ttl: None,
            requested_by: "t".into(),
            reason: "r".into(),
        })
        .await
        .unwrap();
    let ready = || {
        let w = fake.world();
        names
            .iter()
            .all(|n| w.nodes.get(n).is_some_and(|node| node.ready))
    };
    for _ in 0..500 {
        if ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ready(), "all three workers Ready");
    // Each worker announces itself on its node once labelled.
    let announced = || {
        let w = fake.world();
        let mut nodes: Vec<String> = w
            .node_events
            .iter()
            .filter(|(_, reason, message)| {
                reason == "WorkerReady" && message.starts_with("worker of pool burst (")
            })
            .map(|(node, _, _)| node.clone())
            .collect();
        nodes.sort();
        nodes
    };
    for _ in 0..500 {
        if announced().len() == names.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(announced(), sorted);
    for n in &names {
        fake.world().claims.get_mut(n).unwrap().spec.intent = Intent::Remove { force: true };
    }
    for _ in 0..500 {
        if fake.world().claims.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(fake.world().claims.is_empty(), "claims removed");
    assert!(fake.world().vms.is_empty(), "VMs removed");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}
