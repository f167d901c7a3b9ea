//! Worker claims against the Kubernetes API emulator: the CRD installs,
//! claims are created with the finalizer, read, listed, status-patched,
//! and deleted only once the finalizer goes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use tidepool_cluster::{Deletion, FINALIZER, WorkerClaimSpec};
use tidepool_core::claim::{Claim, ClaimSpec, ClaimStatus, Condition, Intent, VmIdentity};
use tidepool_core::{Lifecycle, Step};

fn claim(name: &str) -> Claim {
    Claim::new(name, spec().claim)
}

fn spec() -> WorkerClaimSpec {
    WorkerClaimSpec {
        claim: ClaimSpec {
            pool: "burst".into(),
            size: "medium".into(),
            ttl: Some(Duration::from_secs(4 * 3600)),
            requested_by: "alice".into(),
            reason: "3 pending pods in namespace ml".into(),
            intent: Intent::Keep,
            host: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_created_with_its_finalizer_and_its_status_is_patched() {
    let lab = common::lab("claims-crud").await;
    let c = &lab.cluster;
    c.install_crd().await.unwrap();
    // Installing twice is harmless (server-side apply).
    c.install_crd().await.unwrap();

    let created = c.create_claim(&claim("burst-abcde")).await.unwrap();
    assert_eq!(created.finalizers(), [FINALIZER.to_owned()]);
    assert_eq!(created.spec, spec());
    assert!(created.status.is_none());
    let again = c.create_claim(&claim("burst-abcde")).await.unwrap_err();
    assert_eq!(again.category().as_str(), "AlreadyExists");

    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let mut status = ClaimStatus {
        lifecycle: Lifecycle::Provisioning,
        vmid: Some(9001),
        vm: Some(VmIdentity {
            vmid: 9001,
            node: "pve1".into(),
            uuid: "6c1e8f52-0000-4000-8000-000000000001".into(),
        }),
        last_error: Some("clone task timed out; retrying".into()),
        observed_generation: created.metadata.generation,
        ..ClaimStatus::default()
    };
    status.conditions.insert(Condition::VmCloned, now);
    let patched = c.patch_claim_status("burst-abcde", &status).await.unwrap();
    assert_eq!(patched.status.as_ref(), Some(&status));
    // The spec is untouched by a status patch.
    assert_eq!(patched.spec, spec());

    // A later patch clears what is no longer set (lastError here).
    status.lifecycle = Lifecycle::Ready;
    status.last_error = None;
    status.node_name = Some("burst-abcde".into());
    status.provisioned_at = Some(now);
    status.expires_at = Some(now + jiff::SignedDuration::from_hours(4));
    c.patch_claim_status("burst-abcde", &status).await.unwrap();
    let read = c.get_claim("burst-abcde").await.unwrap().unwrap();
    assert_eq!(read.status.as_ref(), Some(&status));
    assert_eq!(read.status.unwrap().last_error, None);

    let listed = c.list_claims(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name_any(), "burst-abcde");
    assert!(c.get_claim("nope").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_claim_stays_until_its_finalizer_is_removed() {
    let lab = common::lab("claims-finalizer").await;
    let c = &lab.cluster;
    c.install_crd().await.unwrap();
    c.create_claim(&claim("burst-fghij")).await.unwrap();
    // Adding the finalizer again changes nothing.
    let same = c.add_claim_finalizer("burst-fghij").await.unwrap();
    assert_eq!(same.finalizers(), [FINALIZER.to_owned()]);

    assert_eq!(
        c.delete_claim("burst-fghij").await.unwrap(),
        Deletion::Deleted
    );
    let dying = c.get_claim("burst-fghij").await.unwrap().unwrap();
    assert!(dying.metadata.deletion_timestamp.is_some());

    // Status can still be written while the claim is terminating.
    let status = ClaimStatus {
        lifecycle: Lifecycle::Failed {
            step: Step::StopVm,
            reason: "stop task failed".into(),
        },
        ..ClaimStatus::default()
    };
    c.patch_claim_status("burst-fghij", &status).await.unwrap();

    assert!(
        c.remove_claim_finalizer("burst-fghij")
            .await
            .unwrap()
            .is_none()
    );
    assert!(c.get_claim("burst-fghij").await.unwrap().is_none());
    // Idempotent once gone.
    assert!(
        c.remove_claim_finalizer("burst-fghij")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        c.delete_claim("burst-fghij").await.unwrap(),
        Deletion::AlreadyGone
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_crd_file_is_accepted_by_the_api_server() {
    let lab = common::lab("claims-crd-file").await;
    let yaml = tidepool_cluster::claim::crd_yaml().unwrap();
    let crd: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    lab.kube.apply(crd).unwrap();
    let created = lab.cluster.create_claim(&claim("gpu-klmno")).await.unwrap();
    assert_eq!(created.name_any(), "gpu-klmno");
}
