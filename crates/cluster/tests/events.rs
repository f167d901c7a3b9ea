//! Events recorded on worker claims, nodes and pods, and read back.

#![allow(clippy::unwrap_used)]

mod common;

use common::{eventually, lab, node, pod_on};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use serde_json::json;
use tidepool_cluster::events::REPORTING_CONTROLLER;
use tidepool_cluster::{EventRecord, EventTarget, EventType};
use tidepool_core::claim::{Claim, ClaimSpec, Intent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_a_claim_a_node_and_a_pod_are_recorded_and_listed() {
    let lab = lab("events").await;
    let c = &lab.cluster;
    c.install_crd().await.unwrap();
    let claim = c
        .create_claim(&Claim::new(
            "burst-abcde",
            ClaimSpec {
                pool: "burst".into(),
                size: "small".into(),
                ttl: None,
                requested_by: "alice".into(),
                reason: "manual".into(),
                intent: Intent::Keep,
                host: None,
            },
        ))
        .await
        .unwrap();
    lab.kube.register_node(&node("burst-abcde")).unwrap();
    lab.kube
        .create(pod_on("web", "burst-abcde", json!({}), json!([])))
        .unwrap();
    let node: Node = Api::all(c.client().clone())
        .get("burst-abcde")
        .await
        .unwrap();
    let pod: Pod = Api::namespaced(c.client().clone(), "default")
        .get("web")
        .await
        .unwrap();

    let claim_target = EventTarget::of(&claim);
    assert_eq!(claim_target.api_version, "tidepool.dev/v1alpha1");
    assert_eq!(claim_target.event_namespace(), "default");
    c.record_event(
        &claim_target,
        &EventRecord {
            event_type: EventType::Normal,
            reason: "ProvisionRequested",
            action: "Provision",
            message: "alice requested a small worker in pool burst",
        },
    )
    .await
    .unwrap();
    c.record_event(
        &claim_target,
        &EventRecord {
            event_type: EventType::Warning,
            reason: "CloneFailed",
            action: "Provision",
            message: "clone of template 9000 failed: storage full (Transient)",
        },
    )
    .await
    .unwrap();
    let node_target = EventTarget::of(&node);
    c.record_event(
        &node_target,
        &EventRecord {
            event_type: EventType::Normal,
            reason: "Cordoned",
            action: "Drain",
            message: "cordoned before draining",
        },
    )
    .await
    .unwrap();
    let pod_target = EventTarget::of(&pod);
    assert_eq!(pod_target.event_namespace(), "default");
    c.record_event(
        &pod_target,
        &EventRecord {
            event_type: EventType::Warning,
            reason: "EvictionBlocked",
            action: "Drain",
            message: "blocked by PodDisruptionBudget web-pdb",
        },
    )
    .await
    .unwrap();

    let on_claim = c.events_for(&claim_target).await.unwrap();
    assert_eq!(on_claim.len(), 2);
    let reasons: Vec<_> = on_claim.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons.contains(&"ProvisionRequested".to_owned()));
    assert!(reasons.contains(&"CloneFailed".to_owned()));
    for e in &on_claim {
        assert_eq!(e.reporting_component.as_deref(), Some(REPORTING_CONTROLLER));
        assert_eq!(e.involved_object.kind.as_deref(), Some("WorkerClaim"));
        assert_eq!(e.involved_object.uid, claim.metadata.uid);
    }
    let warning = on_claim
        .iter()
        .find(|e| e.reason.as_deref() == Some("CloneFailed"))
        .unwrap();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    let on_node = c.events_for(&node_target).await.unwrap();
    assert_eq!(on_node.len(), 1);
    assert_eq!(on_node[0].reason.as_deref(), Some("Cordoned"));
    let on_pod = c.events_for(&pod_target).await.unwrap();
    assert_eq!(on_pod.len(), 1);
    assert_eq!(on_pod[0].type_.as_deref(), Some("Warning"));

    // kubectl-style readers see them too.
    let kube = lab.kube.clone();
    eventually(5, "the emulator lists four events", || {
        kube.list("v1", "Event", "default", "")
            .unwrap()
            .iter()
            .filter(|e| e["reportingComponent"] == REPORTING_CONTROLLER)
            .count()
            == 4
    })
    .await;
}
