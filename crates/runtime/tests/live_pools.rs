//! Pool limits under concurrency against the lab's Kubernetes API over real
//! sockets: requesters with their own connections, as separate processes
//! would be, ask for workers of one pool at the same moment; the pool's
//! maximum is never exceeded and every refusal says why. And the pool
//! record itself: a write from a stale version is refused by the API
//! server, so of two racing writers exactly one wins.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{CLAIMS, bare_lab, lab_executor};
use tidepool_controller::ports::{PoolRecords, ProviderErrorKind};
use tidepool_controller::service::{ProvisionRequest, Service, ServiceError};
use tidepool_core::jiff::Timestamp;
use tidepool_core::pool_record::{Admission, PoolRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requesters_over_the_api_never_exceed_the_pools_maximum() {
    let lab = bare_lab("pools-race", 100.0, 5).await;
    // Eight requesters ask for three burst workers each at the same moment:
    // 24 against the pool's maxNodes of 10.
    let mut services = Vec::new();
    for _ in 0..8 {
        services.push(Service::new(Arc::new(lab_executor(&lab).await)));
    }
    let start = Arc::new(tokio::sync::Barrier::new(services.len()));
    let racers: Vec<_> = services
        .into_iter()
        .map(|svc| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                svc.provision(&ProvisionRequest {
                    pool: "burst".into(),
                    size: Some("small".into()),
                    count: 3,
                    ttl: None,
                    requested_by: "race-test".into(),
                    reason: "limits under concurrency".into(),
                })
                .await
            })
        })
        .collect();
    let mut granted = 0;
    let mut refusals = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Ok(names) => granted += names.len(),
            Err(ServiceError::Invalid(errors)) => {
                refusals.extend(errors.iter().map(ToString::to_string));
            }
            Err(other) => panic!("a request failed instead of being admitted or refused: {other}"),
        }
    }

    let claims = lab.kube.list(CLAIMS, "WorkerClaim", "", "").unwrap();
    assert_eq!(claims.len(), granted);
    assert_eq!(granted, 9, "three requests of three fit under ten");
    assert_eq!(refusals.len(), 5);
    for refusal in &refusals {
        assert_eq!(
            refusal,
            "pool `burst`: pool would have 12 workers, above its maxNodes of 10"
        );
    }
    // The record is a ConfigMap in Tidepool's namespace, naming the pool.
    let record = lab
        .kube
        .get("v1", "ConfigMap", "tidepool-system", "tidepool-pool-burst")
        .unwrap();
    assert_eq!(record["metadata"]["labels"]["tidepool.dev/pool"], "burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_record_written_from_a_stale_version_is_refused() {
    let lab = bare_lab("pools-stale", 100.0, 5).await;
    let (one, two) = (lab_executor(&lab).await, lab_executor(&lab).await);
    let mut record = PoolRecord::default();
    record.admitted.insert(
        "burst-aaaaa".into(),
        Admission {
            size: "small".into(),
            at: Timestamp::from_second(1_767_225_600).unwrap(),
        },
    );

    // Both find no record; both create it; only the first succeeds.
    assert_eq!(one.store().read_pool("burst").await.unwrap().version, None);
    one.store()
        .write_pool("burst", &record, None)
        .await
        .unwrap();
    let lost = two.store().write_pool("burst", &record, None).await;
    assert_eq!(lost.unwrap_err().kind, ProviderErrorKind::Conflict);

    // Both read version v; both write from it; only the first succeeds.
    let read = two.store().read_pool("burst").await.unwrap();
    assert_eq!(read.record, record);
    let v = read.version.unwrap();
    record.admitted.clear();
    one.store()
        .write_pool("burst", &record, Some(&v))
        .await
        .unwrap();
    let lost = two.store().write_pool("burst", &record, Some(&v)).await;
    assert_eq!(lost.unwrap_err().kind, ProviderErrorKind::Conflict);
    let now = one.store().read_pool("burst").await.unwrap();
    assert_eq!(now.record, record);
    assert_ne!(now.version.as_deref(), Some(v.as_str()));
}
