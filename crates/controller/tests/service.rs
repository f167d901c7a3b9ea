//! The service layer over fakes: validation and the safety rules of spec §8
//! as every front-end sees them.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tidepool_controller::pools::admit;
use tidepool_controller::ports::Clock;
use tidepool_controller::service::{
    ErrorCategory, ProvisionRequest, Service, ServiceError, WorkerFilter,
};
use tidepool_controller::testing::{Fake, ManualClock};
use tidepool_controller::{Executor, ProviderError, ProviderErrorKind};
use tidepool_core::Phase;
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::jiff::Timestamp;
use tidepool_core::pool::WorkerType;

type Svc = Service<Fake, Fake, Fake, Fake>;

const NOW: i64 = 1_767_225_600;

fn service(fake: &Fake) -> Svc {
    service_on(
        fake,
        Arc::new(ManualClock::at(Timestamp::from_second(NOW).unwrap())),
    )
}

fn service_on(fake: &Fake, clock: Arc<ManualClock>) -> Svc {
    let config = Arc::new(config::load(EXAMPLE).unwrap());
    Service::new(Arc::new(Executor::new(
        fake.clone(),
        fake.clone(),
        fake.clone(),
        fake.clone(),
        config,
        clock,
    )))
}

fn request(pool: &str, size: Option<&str>, count: u32, ttl_hours: Option<u64>) -> ProvisionRequest {
    ProvisionRequest {
        pool: pool.into(),
        size: size.map(str::to_owned),
        count,
        ttl: ttl_hours.map(|h| Duration::from_secs(h * 3600)),
        requested_by: "tester".into(),
        reason: "tests".into(),
    }
}

async fn settle(svc: &Svc, names: &[String]) {
    for n in names {
        svc.executor()
            .run_until_idle(n, Duration::from_secs(5), Duration::from_millis(1))
            .await
            .unwrap();
    }
}

fn messages(err: ServiceError) -> Vec<String> {
    match err {
        ServiceError::Invalid(errs) => errs.iter().map(ToString::to_string).collect(),
        other => panic!("expected invalid, got {other}"),
    }
}

#[tokio::test]
async fn three_burst_workers_are_provisioned_and_listed_with_their_expiry() {
    let fake = Fake::new();
    fake.add_foreign_node(
        "k8s-node1",
        &[("node-pool", "permanent"), ("worker-type", "permanent")],
    );
    let svc = service(&fake);
    let names = svc
        .provision(&request("burst", Some("medium"), 3, Some(2)))
        .await
        .unwrap();
    assert_eq!(names.len(), 3);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("burst-") && n.len() == "burst-".len() + 5)
    );
    settle(&svc, &names).await;
    let temporary = svc
        .list_workers(&WorkerFilter {
            worker_type: Some(WorkerType::Temporary),
            pool: None,
        })
        .await
        .unwrap();
    assert_eq!(temporary.len(), 3);
    for w in &temporary {
        assert_eq!(w.phase, Phase::Ready);
        assert_eq!(w.size.as_deref(), Some("medium"));
        assert_eq!(
            w.expires_at,
            Some(Timestamp::from_second(NOW + 7200).unwrap())
        );
        assert_eq!(w.node_ready, Some(true));
    }
    let all = svc.list_workers(&WorkerFilter::default()).await.unwrap();
    let node1 = all.iter().find(|w| w.name == "k8s-node1").unwrap();
    assert!(!node1.managed);
    assert_eq!(node1.worker_type, "permanent");
}

#[tokio::test]
async fn an_invalid_request_reports_every_problem_and_creates_nothing() {
    let fake = Fake::new();
    let svc = service(&fake);
    let errs = messages(
        svc.provision(&request("brust", None, 11, Some(200)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        errs,
        [
            "count must be between 1 and 10, got 11",
            "ttl must be between 1h and 168h, got 8d8h",
            "unknown pool `brust`, did you mean `burst`?",
        ]
    );
    let errs = messages(
        svc.provision(&request("spot", Some("large"), 1, None))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        errs,
        ["pool `spot` does not offer size `large` (it offers: small)"]
    );
    let errs = messages(
        svc.provision(&request("permanent", None, 1, Some(4)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        errs,
        ["pool `permanent` is permanent: its workers have no TTL"]
    );
    let errs = messages(
        svc.provision(&request("burst", Some("xxl"), 1, None))
            .await
            .unwrap_err(),
    );
    assert!(errs[0].starts_with("unknown size `xxl`"), "{errs:?}");
    assert!(fake.world().claims.is_empty());
}

#[tokio::test]
async fn pool_limits_count_workers_on_their_way() {
    let fake = Fake::new();
    let svc = service(&fake);
    // burst: cpuCores 64 → eight 8-vCPU workers at most.
    svc.provision(&request("burst", Some("medium"), 8, None))
        .await
        .unwrap();
    let errs = messages(
        svc.provision(&request("burst", Some("medium"), 1, None))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        errs,
        ["pool `burst`: pool would use 72 vCPUs, above its cpuCores ceiling of 64"]
    );
}

#[tokio::test]
async fn racing_provisions_from_separate_services_never_exceed_the_pools_maximum() {
    let fake = Fake::new();
    // Every claim call lets the others run first, as over a network.
    fake.world().interleave = true;
    // Eight requesters, each its own service as separate processes would
    // be, ask for three burst workers at the same moment: 24 against a
    // maxNodes of 10.
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let svc = service(&fake);
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                svc.provision(&request("burst", Some("small"), 3, Some(1)))
                    .await
            })
        })
        .collect();
    let mut granted = 0;
    let mut refusals = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            Ok(names) => granted += names.len(),
            Err(e) => refusals.push(messages(e)),
        }
    }
    let claims = fake.world().claims.len();
    assert_eq!(claims, granted);
    assert_eq!(granted, 9, "three requests of three fit under ten");
    // Every refusal says which limit, and the count it would have reached.
    assert_eq!(refusals.len(), 5);
    for errs in refusals {
        assert_eq!(
            errs,
            ["pool `burst`: pool would have 12 workers, above its maxNodes of 10"]
        );
    }
}

#[tokio::test]
async fn racing_requests_of_mixed_sizes_keep_every_limit_of_the_pool() {
    let fake = Fake::new();
    fake.world().interleave = true;
    let cfg = config::load(EXAMPLE).unwrap();
    let pool = cfg.pool("burst").unwrap().clone();
    // Twelve requesters of every size and count: the burst pool's cores
    // (64) and memory bind before its ten nodes do.
    let start = Arc::new(tokio::sync::Barrier::new(12));
    let racers: Vec<_> = (0..12_u32)
        .map(|i| {
            let svc = service(&fake);
            let start = start.clone();
            let size = ["small", "medium", "large"][i as usize % 3];
            tokio::spawn(async move {
                start.wait().await;
                svc.provision(&request("burst", Some(size), 1 + i % 4, Some(1)))
                    .await
            })
        })
        .collect();
    let mut granted = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(names) => granted += names.len(),
            Err(e) => {
                for message in messages(e) {
                    assert!(
                        message.starts_with("pool `burst`: pool would "),
                        "{message}"
                    );
                }
            }
        }
    }
    let claims: Vec<_> = fake
        .world()
        .claims
        .values()
        .map(|c| c.planner_state())
        .collect();
    assert_eq!(claims.len(), granted);
    assert!(granted > 0);
    let usage = tidepool_core::planner::usage::pool_usage(&cfg, &claims, "burst");
    let any = &cfg.size("small").unwrap().size;
    assert!(
        pool.limits.check_add(usage, any, 0).is_ok(),
        "{usage:?} within {:?}",
        pool.limits
    );
}

#[tokio::test]
async fn a_name_admitted_but_never_created_holds_its_room_only_for_a_while() {
    let fake = Fake::new();
    let clock = Arc::new(ManualClock::at(Timestamp::from_second(NOW).unwrap()));
    let svc = service_on(&fake, clock.clone());
    let cfg = config::load(EXAMPLE).unwrap();
    // A requester killed between admitting four names to the spot pool
    // (maxNodes 4) and creating their claims.
    let lost: Vec<String> = (0..4).map(|i| format!("spot-l0st{i}")).collect();
    admit(
        &fake,
        &cfg,
        cfg.pool("spot").unwrap(),
        "small",
        &lost,
        clock.now(),
    )
    .await
    .unwrap();
    // Its room is held ...
    let errs = messages(
        svc.provision(&request("spot", None, 1, Some(1)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        errs,
        ["pool `spot`: pool would have 5 workers, above its maxNodes of 4"]
    );
    // ... until the admissions expire.
    clock.advance(tidepool_core::pool_record::ADMISSION_BOUND);
    let mut names = svc
        .provision(&request("spot", None, 4, Some(1)))
        .await
        .unwrap();
    assert_eq!(fake.world().claims.len(), 4);
    // The expired admissions were pruned; only the new names wait to be
    // pruned by the next admission, now that their claims exist.
    names.sort();
    let admitted: Vec<String> = fake.world().pool_records["spot"]
        .1
        .admitted
        .keys()
        .cloned()
        .collect();
    assert_eq!(admitted, names);
}

#[tokio::test]
async fn a_failed_creation_gives_its_room_back_at_once() {
    let fake = Fake::new();
    let svc = service(&fake);
    fake.inject(
        "create_claim",
        ProviderError::new(ProviderErrorKind::Transient, "the API server is restarting"),
    );
    svc.provision(&request("spot", None, 4, Some(1)))
        .await
        .unwrap_err();
    assert!(fake.world().pool_records["spot"].1.admitted.is_empty());
    svc.provision(&request("spot", None, 4, Some(1)))
        .await
        .unwrap();
}

#[tokio::test]
async fn destroying_permanent_unmanaged_or_protected_workers_is_refused_even_with_force() {
    let fake = Fake::new();
    fake.add_foreign_node("k8s-node2", &[("worker-type", "permanent")]);
    fake.add_foreign_node("control-plane-1", &[]);
    let svc = service(&fake);
    let err = svc.destroy("tester", "k8s-node2", true).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "refusing to destroy `k8s-node2`: it is not managed by Tidepool"
    );
    assert_eq!(err.category(), ErrorCategory::Refused);
    let err = svc
        .destroy("tester", "control-plane-1", true)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("protected pattern `^control-plane-.*`"),
        "{err}"
    );
    assert!(matches!(
        svc.destroy("tester", "nope", false).await,
        Err(ServiceError::NotFound(_))
    ));
    let names = svc
        .provision(&request("permanent", None, 1, None))
        .await
        .unwrap();
    settle(&svc, &names).await;
    // Workers of the example's `permanent` pool are doubly protected: by
    // their kind and by the `^permanent-.*` name pattern, checked first.
    let err = svc.destroy("tester", &names[0], true).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("protected pattern `^permanent-.*`"),
        "{err}"
    );
    assert!(matches!(
        svc.drain("tester", &names[0]).await,
        Err(ServiceError::Refused(_))
    ));
}

#[tokio::test]
async fn destroy_without_drain_is_refused_unless_forced_and_drain_then_destroy_removes_it() {
    let fake = Fake::new();
    let svc = service(&fake);
    let names = svc
        .provision(&request("burst", None, 2, None))
        .await
        .unwrap();
    settle(&svc, &names).await;
    fake.world().nodes.get_mut(&names[0]).unwrap().pods = 4;
    let err = svc.destroy("tester", &names[0], false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing to destroy `{}`: it is not cordoned; drain it first or pass force",
            names[0]
        )
    );
    svc.drain("tester", &names[0]).await.unwrap();
    settle(&svc, &names[..1]).await;
    let trail: Vec<(String, String, String)> = fake
        .world()
        .audit
        .iter()
        .filter(|(claim, _)| claim == &names[0])
        .map(|(_, e)| {
            (
                e.actor.clone(),
                e.operation.clone(),
                e.result.as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            ("tester".to_owned(), "provision".to_owned(), "ok".to_owned()),
            (
                "tester".to_owned(),
                "destroy".to_owned(),
                "refused".to_owned()
            ),
            ("tester".to_owned(), "drain".to_owned(), "ok".to_owned()),
        ]
    );
    svc.destroy("tester", &names[0], false).await.unwrap();
    settle(&svc, &names[..1]).await;
    assert!(fake.owned(&names[0]).is_empty());
    // The other one, forced without a drain.
    svc.destroy("tester", &names[1], true).await.unwrap();
    let phase = svc
        .executor()
        .run_until_idle(&names[1], Duration::from_secs(5), Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(phase, Phase::Terminated);
    assert!(fake.world().vms.is_empty());
}

#[tokio::test]
async fn extending_a_ttl_moves_the_expiry_and_the_node_label() {
    let fake = Fake::new();
    let svc = service(&fake);
    let names = svc
        .provision(&request("burst", None, 1, Some(4)))
        .await
        .unwrap();
    settle(&svc, &names).await;
    let expiry = svc.extend_ttl("tester", &names[0], 2).await.unwrap();
    assert_eq!(expiry, Timestamp::from_second(NOW + 6 * 3600).unwrap());
    assert_eq!(
        fake.world().nodes[&names[0]].labels["ttl"],
        (NOW + 6 * 3600).to_string()
    );
    assert_eq!(fake.world().nodes[&names[0]].labels["ttl-hours"], "6");
    let err = svc.extend_ttl("tester", &names[0], 200).await.unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Invalid);
    let err = svc.extend_ttl("tester", &names[0], 165).await.unwrap_err();
    assert!(
        err.to_string().contains("more than the maximum of 7d"),
        "{err}"
    );
}

#[tokio::test]
async fn cordon_refuses_protected_names_and_round_trips_on_workers() {
    let fake = Fake::new();
    fake.add_foreign_node("master-1", &[]);
    fake.add_foreign_node("k8s-node3", &[]);
    let svc = service(&fake);
    assert_eq!(
        svc.set_cordon("t", "master-1", true)
            .await
            .unwrap_err()
            .category(),
        ErrorCategory::Refused
    );
    svc.set_cordon("t", "k8s-node3", true).await.unwrap();
    assert!(fake.world().nodes["k8s-node3"].cordoned);
    svc.set_cordon("t", "k8s-node3", false).await.unwrap();
    assert!(!fake.world().nodes["k8s-node3"].cordoned);
}
