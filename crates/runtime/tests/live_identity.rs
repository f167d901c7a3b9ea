//! One VM per claim and identity, against the lab over real sockets: a
//! process that dies while Proxmox clones leaves one VM for its claim; a
//! claim named like a permanent node never touches that node; an
//! operator's full clone of a worker survives the worker's removal; a VM
//! found at the reserved VMID after a lost clone answer is not taken for
//! the clone; and a start that lost to one still in flight is success.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::CLAIMS;
use serde_json::{Value, json};
use tidepool_controller::claim::VmIdentity;
use tidepool_controller::executor::ExecutorError;
use tidepool_controller::ports::{ClaimStore, CloneSpec, Hypervisor, ProviderErrorKind};
use tidepool_controller::service::Service;
use tidepool_core::Phase;
use tidepool_lab::RunningLab;
use tidepool_lab_sim::{FaultRule, Service as Emulator};
use tidepool_live::connect::LiveExecutor;
use tidepool_proxmox::types::CloneRequest;

async fn lab(name: &str, time_scale: f64) -> RunningLab {
    common::bare_lab(&format!("identity-{name}"), time_scale, 17).await
}

async fn executor(lab: &RunningLab) -> LiveExecutor {
    common::lab_executor(lab).await
}

async fn settle(exec: &LiveExecutor, name: &str) -> Result<Phase, ExecutorError> {
    exec.run_until_idle(name, Duration::from_secs(60), Duration::from_millis(20))
        .await
}

/// The VMs whose description names `claim` in a `tidepool-claim:` line,
/// whatever VMID line they carry (copies included).
fn naming(lab: &RunningLab, claim: &str) -> Vec<u32> {
    lab.pve
        .vms()
        .iter()
        .filter(|v| {
            v.description.as_deref().is_some_and(|d| {
                d.lines()
                    .any(|l| l.trim().strip_prefix("tidepool-claim:").map(str::trim) == Some(claim))
            })
        })
        .map(|v| v.vmid)
        .collect()
}

/// Clones a template of `pve-01` into `vmid` named `name` behind
/// Tidepool's back, as an operator would; returns the template's VMID.
async fn clone_by_hand(lab: &RunningLab, exec: &LiveExecutor, vmid: u32, name: &str) -> u32 {
    let template = lab
        .pve
        .vms()
        .into_iter()
        .find(|v| v.template && v.node == "pve-01")
        .expect("a template on pve-01")
        .vmid;
    let req = CloneRequest {
        newid: vmid,
        name: Some(name.into()),
        full: Some(true),
        ..CloneRequest::default()
    };
    exec.hypervisor()
        .client()
        .clone_and_wait("pve-01", template, &req, deadline())
        .await
        .unwrap();
    template
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_proxmox_clones_leaves_exactly_one_vm_for_its_claim() {
    let lab = lab("midclone", 100.0).await;
    let svc = Service::new(Arc::new(executor(&lab).await));
    // The clone copies for five (simulated) minutes.
    lab.faults.add_rule(FaultRule {
        service: Emulator::Proxmox,
        op: "task:qmclone:*".into(),
        error_rate: 0.0,
        status: None,
        message: None,
        latency_ms: 300_000,
        times: None,
    });
    let name = common::provision_one(&svc, "identity-test").await;
    let dying = Arc::new(executor(&lab).await);
    let task = {
        let (dying, name) = (dying.clone(), name.clone());
        tokio::spawn(async move { settle(&dying, &name).await })
    };
    // Wait until the clone is under way: the reserved VMID holds a VM
    // locked `clone`.
    let vmid = loop {
        let claim = dying.store().get(&name).await.unwrap().unwrap();
        if let Some(vmid) = claim.status.vmid
            && lab
                .pve
                .vm(vmid)
                .is_some_and(|v| v.lock.as_deref() == Some("clone"))
        {
            break vmid;
        }
        assert!(!task.is_finished(), "the step ended before the clone began");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The process dies mid-clone, without any hook.
    task.abort();
    let _ = task.await;
    assert!(lab.pve.vm(vmid).unwrap().lock.is_some(), "still cloning");

    let restarted = executor(&lab).await;
    assert_eq!(settle(&restarted, &name).await.unwrap(), Phase::Ready);
    assert_eq!(
        naming(&lab, &name),
        [vmid],
        "exactly one VM carries the claim"
    );
    lab.shutdown().await;
}

/// What a node looks like to the test: labels, annotations and spec.
fn node_state(lab: &RunningLab, name: &str) -> Value {
    let node = lab.kube.get("v1", "Node", "", name).unwrap();
    json!({
        "labels": node["metadata"]["labels"],
        "annotations": node["metadata"]["annotations"],
        "spec": node["spec"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_named_like_a_permanent_node_never_labels_taints_cordons_or_deletes_it() {
    let lab = lab("node3", 500.0).await;
    let exec = executor(&lab).await;
    let before = node_state(&lab, "k8s-node3");
    // Applied with kubectl, straight to the store.
    lab.kube
        .apply(json!({
            "apiVersion": CLAIMS,
            "kind": "WorkerClaim",
            "metadata": {"name": "k8s-node3"},
            "spec": {"pool": "burst", "size": "small", "requestedBy": "kubectl", "reason": "a name clash"},
        }))
        .unwrap();
    assert_eq!(settle(&exec, "k8s-node3").await.unwrap(), Phase::Failed);
    let claim = exec.store().get("k8s-node3").await.unwrap().unwrap();
    let failure = claim.status.lifecycle.to_string();
    assert!(
        failure.contains("node k8s-node3 is not this worker's"),
        "{failure}"
    );
    assert_eq!(
        node_state(&lab, "k8s-node3"),
        before,
        "never labelled or tainted"
    );

    // Deleting the claim removes its own VM and leaves the node alone.
    lab.kube
        .delete(CLAIMS, "WorkerClaim", "", "k8s-node3")
        .unwrap();
    assert_eq!(settle(&exec, "k8s-node3").await.unwrap(), Phase::Terminated);
    assert_eq!(
        node_state(&lab, "k8s-node3"),
        before,
        "never cordoned or deleted"
    );
    assert!(
        naming(&lab, "k8s-node3").is_empty(),
        "the claim's VM is gone"
    );
    assert!(lab.pve.vm(203).unwrap().running, "the permanent VM runs on");
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_full_clone_of_a_worker_survives_the_workers_removal() {
    let lab = lab("copy", 500.0).await;
    let exec = Arc::new(executor(&lab).await);
    let svc = Service::new(exec.clone());
    let name = common::provision_one(&svc, "identity-test").await;
    assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Ready);
    let worker = svc.get_worker(&name).await.unwrap();
    let (vmid, host) = (worker.vmid.unwrap(), worker.host.unwrap());
    // The operator copies the worker: Proxmox copies description and tags.
    let copy = CloneRequest {
        newid: 777,
        name: Some("worker-copy".into()),
        full: Some(true),
        ..CloneRequest::default()
    };
    exec.hypervisor()
        .client()
        .clone_and_wait(&host, vmid, &copy, deadline())
        .await
        .unwrap();
    let marked = naming(&lab, &name);
    assert!(
        marked.len() == 2 && marked.contains(&777) && marked.contains(&vmid),
        "the copy carries the marker lines: {marked:?}"
    );

    svc.destroy("identity-test", &name, true).await.unwrap();
    assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Terminated);
    assert!(lab.pve.vm(vmid).is_none(), "the worker's VM is gone");
    let kept = lab.pve.vm(777).expect("the operator's copy survives");
    assert_eq!(kept.name.as_deref(), Some("worker-copy"));
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_found_at_the_vmid_after_a_lost_clone_answer_is_neither_adopted_nor_marked() {
    let lab = lab("lost", 500.0).await;
    let exec = executor(&lab).await;
    // During the transient error, someone else's clone took the VMID.
    let template = clone_by_hand(&lab, &exec, 1299, "someone-elses-vm").await;
    lab.faults.add_rule(FaultRule {
        service: Emulator::Proxmox,
        op: format!("POST /nodes/*/qemu/{template}/clone"),
        error_rate: 1.0,
        status: Some(503),
        message: Some("proxy busy".into()),
        latency_ms: 0,
        times: Some(1),
    });
    let spec = CloneSpec {
        claim: "burst-l0st1".into(),
        pool: "burst".into(),
        template: template.to_string(),
        host: "pve-01".into(),
        vmid: 1299,
    };
    let err = exec.hypervisor().clone_vm(&spec).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Conflict, "{err}");
    let vm = lab.pve.vm(1299).unwrap();
    assert_eq!(vm.name.as_deref(), Some("someone-elses-vm"));
    assert_eq!(vm.description, None, "no marker written onto it");
    assert!(
        exec.hypervisor()
            .owned_by("burst-l0st1")
            .await
            .unwrap()
            .is_empty(),
        "nor is it reported as the claim's"
    );
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_finds_another_start_in_flight_succeeds() {
    let lab = lab("start", 50.0).await;
    let exec = executor(&lab).await;
    clone_by_hand(&lab, &exec, 1298, "burst-st4rt").await;
    let pve = exec.hypervisor().client();
    let facts = exec.hypervisor().vm(1298).await.unwrap().unwrap();
    let vm: VmIdentity = facts.identity;
    // A start still in flight from a process that died: slow, but within
    // the VM's lock wait.
    lab.faults.add_rule(FaultRule {
        service: Emulator::Proxmox,
        op: "task:qmstart:1298".into(),
        error_rate: 0.0,
        status: None,
        message: None,
        latency_ms: 5_000,
        times: None,
    });
    let _earlier = pve.start("pve-01", 1298).await.unwrap();
    assert!(
        !lab.pve.vm(1298).unwrap().running,
        "the earlier start is in flight"
    );
    exec.hypervisor().start(&vm).await.unwrap();
    assert!(lab.pve.vm(1298).unwrap().running);
    lab.shutdown().await;
}
