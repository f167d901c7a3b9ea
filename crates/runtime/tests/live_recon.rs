//! Reconciling against the lab when the world does not go as planned:
//! a step Proxmox keeps refusing backs off instead of looping (issue 11
//! hole 7); a claim deleted with `kubectl delete` still meets the safety
//! rules (hole 3); VMs and claims are reconciled both ways: an orphan VM
//! is removed after its grace period, a worker whose VM vanished fails
//! with `VmGone` and goes (hole 9).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, eventually, start};
use serde_json::Value;
use tidepool_controller::service::ProvisionRequest;

/// A client of the lab's Proxmox API as an operator would use it.
struct Pve {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl Pve {
    fn of(live: &Live) -> Self {
        let env = std::fs::read_to_string(&live.lab.files.proxmox_env).unwrap();
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        let ca = std::fs::read(get("PROXMOX_CA_FILE")).unwrap();
        Self {
            http: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
                .build()
                .unwrap(),
            base: get("PROXMOX_ENDPOINT"),
            auth: format!("PVEAPIToken={}", get("PROXMOX_TOKEN")),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", &self.auth);
        if !form.is_empty() {
            request = request.form(form);
        }
        let resp = request.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// Sets VM options, as `qm set` does.
    async fn set(&self, node: &str, vmid: u64, form: &[(&str, &str)]) {
        let path = format!("/nodes/{node}/qemu/{vmid}/config");
        self.call(reqwest::Method::PUT, &path, form).await;
    }

    /// Stops and deletes a VM behind Tidepool's back, as `qm stop` and
    /// `qm destroy` do, waiting for each task.
    async fn destroy(&self, live: &Live, node: &str, vmid: u64) {
        let stop = format!("/nodes/{node}/qemu/{vmid}/status/stop");
        self.call(reqwest::Method::POST, &stop, &[]).await;
        let id = u32::try_from(vmid).unwrap();
        assert!(
            eventually(Duration::from_secs(30), || live
                .lab
                .pve
                .vm(id)
                .is_some_and(|v| !v.running && v.lock.is_none()))
            .await
        );
        let path = format!("/nodes/{node}/qemu/{vmid}?purge=1");
        self.call(reqwest::Method::DELETE, &path, &[]).await;
        assert!(eventually(Duration::from_secs(30), || live.lab.pve.vm(id).is_none()).await);
    }
}

async fn ready_burst_worker(live: &Live) -> (String, String, u64) {
    ready_worker(live, "burst").await
}

async fn ready_worker(live: &Live, pool: &str) -> (String, String, u64) {
    let name = live
        .service()
        .provision(&ProvisionRequest {
            pool: pool.into(),
            size: Some("small".into()),
            count: 1,
            ttl: None,
            requested_by: "recon-test".into(),
            reason: "reconcile".into(),
        })
        .await
        .unwrap()
        .remove(0);
    assert!(
        eventually(Duration::from_secs(60), || live
            .claim(&name)
            .is_some_and(|c| c["status"]["phase"] == "Ready"))
        .await,
        "{}",
        live.dump_claims()
    );
    let c = live.claim(&name).unwrap();
    let node = c["status"]["vm"]["node"].as_str().unwrap().to_owned();
    let vmid = c["status"]["vm"]["vmid"].as_u64().unwrap();
    (name, node, vmid)
}

/// The Warning Events recorded on claim `name` whose message mentions `what`.
fn claim_warnings(live: &Live, name: &str, what: &str) -> Vec<Value> {
    live.lab
        .kube
        .list("v1", "Event", "", "")
        .unwrap()
        .into_iter()
        .filter(|e| {
            e["involvedObject"]["kind"] == "WorkerClaim"
                && e["involvedObject"]["name"] == name
                && e["type"] == "Warning"
                && e["message"].as_str().is_some_and(|m| m.contains(what))
        })
        .collect()
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_delete_refused_by_protection_backs_off_and_writes_its_claim_once() {
    let live = start(Setup::new("recon-protect")).await;
    let (name, node, vmid) = ready_burst_worker(&live).await;
    let pve = Pve::of(&live);
    pve.set(&node, vmid, &[("protection", "1")]).await;

    live.service()
        .destroy("recon-test", &name, true)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || live
            .claim(&name)
            .is_some_and(|c| c["status"]["failedStep"] == "deleteVm"))
        .await,
        "{}",
        live.dump_claims()
    );
    let recorded = live.claim(&name).unwrap();
    assert!(
        recorded["status"]["failureReason"]
            .as_str()
            .unwrap()
            .contains("protection mode enabled"),
        "{recorded}"
    );

    // A stretch of the lab's time (half an hour at 1000x) while Proxmox
    // keeps refusing: the claim is not written again and the delete is
    // tried only as often as the backoff lets it.
    let tries_before = metric(
        &live.metrics().await,
        "tidepool_step_failures_total{step=\"deleteVm\",category=\"permanent\"}",
    );
    let lab_start = live.lab.clock.now();
    while live.lab.clock.now() < lab_start + Duration::from_secs(1800) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = live.metrics().await;
    let tries = metric(
        &metrics,
        "tidepool_step_failures_total{step=\"deleteVm\",category=\"permanent\"}",
    ) - tries_before;
    assert_eq!(
        live.claim(&name).unwrap()["metadata"]["resourceVersion"],
        recorded["metadata"]["resourceVersion"],
        "the claim was written while nothing changed"
    );
    assert!(
        (1.0..=12.0).contains(&tries),
        "{tries} delete tries in half an hour of lab time\n{metrics}"
    );
    assert!(
        metric(&metrics, "tidepool_claims_in_backoff") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        claim_warnings(&live, &name, "step deleteVm").len(),
        1,
        "one Event per change of reason"
    );

    // Protection lifted: the worker goes on its next try.
    pve.set(&node, vmid, &[("protection", "0")]).await;
    assert!(
        eventually(Duration::from_secs(90), || live.claim(&name).is_none()).await,
        "{}",
        live.dump_claims()
    );
    assert!(live.lab.pve.vm(u32::try_from(vmid).unwrap()).is_none());
    live.stop().await;
}

/// The lab's configuration with a permanent pool `fixed` added.
fn with_permanent_pool(yaml: String) -> String {
    yaml.replacen(
        "pools:\n",
        "pools:\n  - name: fixed\n    kind: permanent\n    sizes: [small]\n    template: talos-worker-{size}-v1.8.0\n    limits: {maxNodes: 2}\n",
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_of_a_permanent_workers_claim_is_refused_and_keeps_it() {
    let live = start(Setup {
        yaml: with_permanent_pool,
        ..Setup::new("recon-permanent")
    })
    .await;
    let (name, _node, vmid) = ready_worker(&live, "fixed").await;
    live.lab
        .kube
        .delete(common::CLAIMS, "WorkerClaim", "", &name)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || live.claim(&name).is_some_and(
            |c| {
                c["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["type"] == "Refused")
            }
        ))
        .await,
        "{}",
        live.dump_claims()
    );
    let claim = live.claim(&name).unwrap();
    assert!(claim["metadata"]["deletionTimestamp"].is_string());
    assert!(
        claim["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("permanent worker"),
        "{claim}"
    );
    assert_eq!(claim["status"]["phase"], "Ready");
    // A stretch of lab time later the worker is still whole: VM running,
    // node schedulable, record kept by its finalizer, one Event.
    let lab_start = live.lab.clock.now();
    while live.lab.clock.now() < lab_start + Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vm = live.lab.pve.vm(u32::try_from(vmid).unwrap()).unwrap();
    assert!(vm.running);
    let node = live.lab.kube.get("v1", "Node", "", &name).unwrap();
    assert_ne!(node["spec"]["unschedulable"], true, "{node}");
    let kept = live.claim(&name).unwrap();
    assert_eq!(
        kept["metadata"]["resourceVersion"],
        claim["metadata"]["resourceVersion"]
    );
    assert_eq!(claim_warnings(&live, &name, "permanent worker").len(), 1);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_left_by_a_claim_deleted_without_its_finalizer_is_removed_as_an_orphan() {
    let live = start(Setup::new("recon-orphan")).await;
    let (name, _node, vmid) = ready_burst_worker(&live).await;
    let id = u32::try_from(vmid).unwrap();
    // The finalizer taken off by hand, then the claim deleted: the record
    // is gone at once, its VM still runs.
    live.lab
        .kube
        .merge_patch(
            common::CLAIMS,
            "WorkerClaim",
            "",
            &name,
            &serde_json::json!({"metadata": {"finalizers": null}}),
        )
        .unwrap();
    live.lab
        .kube
        .delete(common::CLAIMS, "WorkerClaim", "", &name)
        .unwrap();
    assert!(live.claim(&name).is_none());
    assert!(live.lab.pve.vm(id).is_some_and(|v| v.running));

    // Reported (Event and metric) while its grace period runs...
    let mut reported = false;
    for _ in 0..1500 {
        if metric(&live.metrics().await, "tidepool_orphan_vms") >= 1.0 {
            reported = true;
            break;
        }
        if live.lab.pve.vm(id).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reported, "the orphan was never counted");
    // ... then stopped and deleted.
    assert!(
        eventually(Duration::from_secs(60), || live.lab.pve.vm(id).is_none()).await,
        "the orphan VM was not removed"
    );
    assert_eq!(claim_warnings(&live, &name, "an orphan").len(), 1);
    let mut cleared = false;
    for _ in 0..500 {
        if metric(&live.metrics().await, "tidepool_orphan_vms") == 0.0 {
            cleared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cleared, "the orphan gauge went back to 0");
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_vm_was_deleted_out_of_band_fails_with_vm_gone_and_goes() {
    let live = start(Setup::new("recon-gone")).await;
    let (name, node, vmid) = ready_burst_worker(&live).await;
    let pve = Pve::of(&live);
    pve.destroy(&live, &node, vmid).await;

    let mut failed = None;
    for _ in 0..3000 {
        match live.claim(&name) {
            Some(c) if c["status"]["phase"] == "Failed" => {
                failed = Some(c);
                break;
            }
            Some(_) => {}
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(c) = &failed {
        assert!(
            c["status"]["failureReason"]
                .as_str()
                .unwrap()
                .starts_with("VmGone: VM "),
            "{c}"
        );
    }
    // A burst worker is replaced: its dead node and its record go.
    assert!(
        eventually(Duration::from_secs(60), || live.claim(&name).is_none()).await,
        "{}",
        live.dump_claims()
    );
    assert!(!live.nodes().contains(&name));
    assert_eq!(claim_warnings(&live, &name, "VmGone").len(), 1);
    live.stop().await;
}
