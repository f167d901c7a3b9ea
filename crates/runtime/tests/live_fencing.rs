//! Fencing and readiness against the lab: a leader whose Lease requests
//! hang stops leading before anyone could take over; a candidate judges a
//! Lease's expiry on its own clock, never by the holder's renewTime; a
//! replica that cannot bind its health port never takes the Lease; a
//! deposed store's status write fails; `/readyz` fails while Proxmox does
//! not answer.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{live_options, provision_one};
use serde_json::json;
use tidepool_controller::ports::{ClaimStore, ProviderErrorKind};
use tidepool_controller::service::Service;
use tidepool_lab::{LabOptions, RunningLab, Scenario};
use tidepool_lab_sim::{FaultRule, Service as Emulator};
use tidepool_live::connect::{LiveExecutor, connect};
use tidepool_runtime::leader::{Elector, LeaseConfig};
use tidepool_runtime::run::{RunError, RunOptions, run};

const SCALE: f64 = 200.0;
const NAMESPACE: &str = "tidepool-system";
const LEASE: &str = "tidepool-controller";

async fn lab(name: &str) -> RunningLab {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tidepool_lab::start(LabOptions {
        scenario: Scenario::default_home_lab().unwrap(),
        state_dir: std::env::temp_dir()
            .join(format!("tidepool-fencing-{name}-{}", std::process::id())),
        time_scale: SCALE,
        seed: 11,
        kubernetes: tidepool_lab::KubernetesMode::from_env(),
    })
    .await
    .unwrap()
}

async fn executor(lab: &RunningLab) -> Arc<LiveExecutor> {
    let config = Arc::new(
        tidepool_core::config::load(&std::fs::read_to_string(&lab.files.tidepool_yaml).unwrap())
            .unwrap(),
    );
    Arc::new(connect(config, &live_options(lab)).await.unwrap())
}

fn lease(identity: &str, duration: Duration) -> LeaseConfig {
    LeaseConfig {
        namespace: NAMESPACE.into(),
        name: LEASE.into(),
        identity: identity.into(),
        duration,
    }
}

struct Controller {
    stop: tokio::sync::watch::Sender<bool>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

async fn controller(exec: Arc<LiveExecutor>, lease: Option<LeaseConfig>) -> Controller {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let options = RunOptions {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        lease,
        autoscale: false,
    };
    let task = tokio::spawn(run(exec, options, stop_rx, Some(bound_tx)));
    let addr = bound_rx.await.unwrap();
    Controller { stop, addr, task }
}

fn holder(lab: &RunningLab) -> Option<String> {
    lab.kube
        .get("coordination.k8s.io/v1", "Lease", NAMESPACE, LEASE)
        .ok()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `check` every 50 ms for up to 20 s (a bound, not a measurement).
async fn until<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..400 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_requests_hang_stops_leading() {
    let lab = lab("hang").await;
    let a = controller(
        executor(&lab).await,
        Some(lease("controller-a", Duration::from_secs(3))),
    )
    .await;
    assert!(
        until(|| async {
            get(a.addr, "/metrics")
                .await
                .1
                .contains("tidepool_leader 1")
        })
        .await
    );
    assert_eq!(holder(&lab).as_deref(), Some("controller-a"));

    // Every Lease request now hangs for an hour of lab time (18 s real).
    lab.faults.add_rule(FaultRule {
        service: Emulator::Kubernetes,
        op: "* leases".into(),
        error_rate: 0.0,
        status: None,
        message: None,
        latency_ms: 3_600_000,
        times: None,
    });
    // It gives up leading by its renew deadline (2 s), long before the
    // hang ends, so no other replica can overlap with it.
    assert!(
        until(|| async {
            get(a.addr, "/metrics")
                .await
                .1
                .contains("tidepool_leader 0")
        })
        .await,
        "still leading with its Lease requests hanging"
    );
    assert!(get(a.addr, "/readyz").await.1.contains("standby"));
    lab.faults.set_rules(Vec::new());
    a.stop.send(true).unwrap();
    a.task.await.unwrap().unwrap();
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_judges_expiry_on_its_own_clock_not_by_the_holders_renew_time() {
    let lab = lab("skew").await;
    // A holder whose clock is far behind (its renewTime is years old) and
    // one whose clock is far ahead: neither record is expired until this
    // candidate has seen it unchanged for the Lease's duration.
    for renew in ["2001-01-01T00:00:00.000000Z", "2099-01-01T00:00:00.000000Z"] {
        lab.kube
            .apply(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": NAMESPACE},
                "spec": {"holderIdentity": "elsewhere", "leaseDurationSeconds": 1,
                         "renewTime": renew, "acquireTime": renew, "leaseTransitions": 0}
            }))
            .unwrap();
        let exec = executor(&lab).await;
        let client = exec.nodes().cluster().client().clone();
        let mut elector = Elector::new(client, lease("candidate", Duration::from_secs(1)));
        assert!(
            !elector
                .try_acquire_or_renew(jiff::Timestamp::now())
                .await
                .unwrap(),
            "took a Lease renewed at {renew} on first sight"
        );
        assert_eq!(holder(&lab).as_deref(), Some("elsewhere"));
        // Seen unchanged for the whole duration: expired.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert!(
            elector
                .try_acquire_or_renew(jiff::Timestamp::now())
                .await
                .unwrap()
        );
        assert_eq!(holder(&lab).as_deref(), Some("candidate"));
        elector.release().await.unwrap();
        assert_eq!(holder(&lab), None);
    }
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_cannot_bind_its_health_port_never_takes_the_lease() {
    let lab = lab("bind").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = RunOptions {
        metrics_addr: taken.local_addr().unwrap(),
        lease: Some(lease("controller-a", Duration::from_secs(3))),
        autoscale: false,
    };
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let err = run(executor(&lab).await, options, stop_rx, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Bind { .. }), "{err:?}");
    assert!(err.to_string().contains("listening for /healthz"), "{err}");
    assert_eq!(holder(&lab), None);
    // Nothing of it competes for the Lease: another replica takes it at once.
    let b = controller(
        executor(&lab).await,
        Some(lease("controller-b", Duration::from_secs(3))),
    )
    .await;
    assert!(until(|| async { holder(&lab).as_deref() == Some("controller-b") }).await);
    b.stop.send(true).unwrap();
    b.task.await.unwrap().unwrap();
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_stores_status_write_conflicts_with_the_new_leaders() {
    let lab = lab("conditional").await;
    let deposed = executor(&lab).await;
    let leader = executor(&lab).await;
    let svc = Service::new(leader.clone());
    let name = provision_one(&svc, "fencing-test").await;
    let stale = deposed.store().get(&name).await.unwrap().unwrap();
    let mut current = leader.store().get(&name).await.unwrap().unwrap();
    current.status.vmid = Some(1290);
    leader
        .store()
        .save_status(&name, &current.status)
        .await
        .unwrap();

    let mut late = stale.status.clone();
    late.vmid = Some(1291);
    let err = deposed.store().save_status(&name, &late).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Conflict, "{err}");
    let stored = leader.store().get(&name).await.unwrap().unwrap();
    assert_eq!(stored.status.vmid, Some(1290));
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_proxmox_api_does_not_answer() {
    let lab = lab("readyz").await;
    let c = controller(executor(&lab).await, None).await;
    assert!(until(|| async { get(c.addr, "/readyz").await.0 == 200 }).await);
    assert_eq!(get(c.addr, "/readyz").await.1, "ready (leader)");

    lab.faults.add_rule(FaultRule {
        service: Emulator::Proxmox,
        op: "GET *".into(),
        error_rate: 1.0,
        status: Some(503),
        message: Some("proxy loop".into()),
        latency_ms: 0,
        times: None,
    });
    assert!(until(|| async { get(c.addr, "/readyz").await.0 == 503 }).await);
    let (_, body) = get(c.addr, "/readyz").await;
    assert!(body.contains("Proxmox API last answered"), "{body}");

    lab.faults.set_rules(Vec::new());
    assert!(until(|| async { get(c.addr, "/readyz").await.0 == 200 }).await);
    c.stop.send(true).unwrap();
    c.task.await.unwrap().unwrap();
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_host_status_shows_in_the_controllers_metrics() {
    let lab = lab("host-status").await;
    lab.faults.add_rule(FaultRule {
        service: Emulator::Proxmox,
        op: "GET /nodes/pve-02/status".into(),
        error_rate: 1.0,
        status: Some(200),
        message: Some("not a status".into()),
        latency_ms: 0,
        times: None,
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let options = RunOptions {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        lease: None,
        autoscale: true,
    };
    let exec = executor(&lab).await;
    let task = tokio::spawn(run(exec.clone(), options, stop_rx, Some(bound_tx)));
    let addr = bound_rx.await.unwrap();
    let unreadable = "tidepool_host_status_unreadable{host=\"pve-02\"} 1";
    assert!(until(|| async { get(addr, "/metrics").await.1.contains(unreadable) }).await);
    assert!(
        !get(addr, "/metrics")
            .await
            .1
            .contains("tidepool_host_status_unreadable{host=\"pve-01\"}")
    );
    // The host is taken as offline, loudly; the other host still takes
    // new workers.
    let svc = Service::new(exec.clone());
    let name = provision_one(&svc, "fencing-test").await;
    assert!(
        until(|| async {
            svc.get_worker(&name).await.unwrap().phase == tidepool_core::Phase::Ready
        })
        .await
    );
    assert_eq!(
        svc.get_worker(&name).await.unwrap().host.as_deref(),
        Some("pve-01")
    );
    // Once the host answers properly, the gauge goes.
    lab.faults.set_rules(Vec::new());
    assert!(until(|| async { !get(addr, "/metrics").await.1.contains(unreadable) }).await);
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    lab.shutdown().await;
}
