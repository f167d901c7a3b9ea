//! Crash safety and faults against the lab over real sockets: the process
//! is "killed" right after every lifecycle step (before and after the step
//! is recorded) and restarted with no memory; it must converge on exactly
//! one VM when provisioning and none when removing. Proxmox and Talos
//! faults are retried or end in Failed with the reason, never leaving a VM
//! without its claim.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidepool_controller::executor::{ExecutorError, KillHook, Moment, owner_from_description};
use tidepool_controller::service::Service;
use tidepool_core::{Phase, Step};
use tidepool_lab::RunningLab;
use tidepool_lab_sim::{FaultRule, Service as Emulator};
use tidepool_live::connect::LiveExecutor;

const SCALE: f64 = 500.0;

async fn lab(name: &str) -> RunningLab {
    common::bare_lab(&format!("faults-{name}"), SCALE, 11).await
}

async fn executor(lab: &RunningLab) -> LiveExecutor {
    common::lab_executor(lab).await
}

fn kill_at(step: Step, moment: Moment) -> KillHook {
    let fired = Arc::new(AtomicBool::new(false));
    Arc::new(move |s, m| !(s == step && m == moment && !fired.swap(true, Ordering::SeqCst)))
}

async fn settle(exec: &LiveExecutor, name: &str) -> Result<Phase, ExecutorError> {
    exec.run_until_idle(name, Duration::from_secs(30), Duration::from_millis(20))
        .await
}

fn owned(lab: &RunningLab, claim: &str) -> usize {
    lab.pve
        .vms()
        .iter()
        .filter(|v| {
            v.description
                .as_deref()
                .and_then(|d| owner_from_description(d, v.vmid))
                == Some(claim)
        })
        .count()
}

const PROVISION: [Step; 8] = [
    Step::AllocateVmid,
    Step::Clone,
    Step::Configure,
    Step::Start,
    Step::WaitForAddress,
    Step::DeliverConfig,
    Step::WaitForNode,
    Step::Label,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_after_any_step_converges_on_exactly_one_vm_or_none() {
    let lab = lab("kill").await;
    let mut kill_points = 0;
    for step in PROVISION {
        for moment in [Moment::AfterEffect, Moment::AfterRecord] {
            let svc = Service::new(Arc::new(executor(&lab).await));
            let name = common::provision_one(&svc, "fault-test").await;
            let dying = executor(&lab).await.with_kill_hook(kill_at(step, moment));
            let died = settle(&dying, &name).await;
            assert!(
                matches!(died, Err(ExecutorError::Killed { .. })),
                "{step} {moment:?}: {died:?}"
            );
            kill_points += 1;
            let restarted = executor(&lab).await;
            assert_eq!(
                settle(&restarted, &name).await.unwrap(),
                Phase::Ready,
                "{step} {moment:?}"
            );
            assert_eq!(owned(&lab, &name), 1, "{step} {moment:?}: exactly one VM");
            // Clean up so the hosts keep room for the next round.
            svc.destroy("fault-test", &name, true).await.unwrap();
            assert_eq!(settle(&restarted, &name).await.unwrap(), Phase::Terminated);
            assert_eq!(owned(&lab, &name), 0);
        }
    }
    for (step, moment) in [
        Step::Cordon,
        Step::Drain,
        Step::DeleteNode,
        Step::ShutdownOs,
        Step::DeleteVm,
    ]
    .into_iter()
    .flat_map(|s| [(s, Moment::AfterEffect), (s, Moment::AfterRecord)])
    {
        let exec = executor(&lab).await;
        let svc = Service::new(Arc::new(executor(&lab).await));
        let name = common::provision_one(&svc, "fault-test").await;
        assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Ready);
        let dying = executor(&lab).await.with_kill_hook(kill_at(step, moment));
        if matches!(step, Step::Cordon | Step::Drain) {
            svc.drain("fault-test", &name).await.unwrap();
            let died = settle(&dying, &name).await;
            assert!(
                matches!(died, Err(ExecutorError::Killed { .. })),
                "{step} {moment:?}: {died:?}"
            );
            assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Draining);
            svc.destroy("fault-test", &name, false).await.unwrap();
        } else {
            svc.destroy("fault-test", &name, true).await.unwrap();
            let died = settle(&dying, &name).await;
            assert!(
                matches!(died, Err(ExecutorError::Killed { .. })),
                "{step} {moment:?}: {died:?}"
            );
        }
        kill_points += 1;
        assert_eq!(
            settle(&executor(&lab).await, &name).await.unwrap(),
            Phase::Terminated,
            "{step} {moment:?}"
        );
        assert_eq!(owned(&lab, &name), 0, "{step} {moment:?}: VM left behind");
        assert!(
            lab.kube.get("v1", "Node", "", &name).is_err(),
            "{step} {moment:?}: node left behind"
        );
    }
    assert_eq!(kill_points, 26);
    assert!(lab.pve.vm(100).unwrap().running, "foreign VMs untouched");
    eprintln!("kill points tested: {kill_points}");
    lab.shutdown().await;
}

fn rule(service: Emulator, op: &str, status: Option<u16>, message: &str, times: u64) -> FaultRule {
    FaultRule {
        service,
        op: op.into(),
        error_rate: 1.0,
        status,
        message: Some(message.into()),
        latency_ms: 0,
        times: Some(times),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmox_and_talos_faults_are_retried_or_fail_with_the_reason_without_leaking() {
    let lab = lab("faults").await;
    let exec = Arc::new(executor(&lab).await);
    let svc = Service::new(exec.clone());

    // A 503 on the clone request and two Talos apply failures: retried.
    lab.faults.add_rule(rule(
        Emulator::Proxmox,
        "POST /nodes/*/qemu/9001/clone",
        Some(503),
        "proxy busy",
        1,
    ));
    lab.faults.add_rule(rule(
        Emulator::Talos,
        "ApplyConfiguration:*",
        Some(14),
        "connection reset",
        2,
    ));
    // A slow clone task.
    lab.faults.add_rule(FaultRule {
        latency_ms: 60_000,
        error_rate: 0.0,
        ..rule(Emulator::Proxmox, "task:qmclone:*", None, "slow", 1)
    });
    let name = common::provision_one(&svc, "fault-test").await;
    assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Ready);
    assert_eq!(owned(&lab, &name), 1);
    lab.faults.set_rules(Vec::new());

    // A clone task that fails: the claim fails with the task's message, and
    // no VM is left without a claim.
    lab.faults.add_rule(rule(
        Emulator::Proxmox,
        "task:qmclone:*",
        None,
        "clone failed: out of space on local-lvm",
        1,
    ));
    let doomed = common::provision_one(&svc, "fault-test").await;
    assert_eq!(settle(&exec, &doomed).await.unwrap(), Phase::Failed);
    let w = svc.get_worker(&doomed).await.unwrap();
    let failure = w.failure.unwrap();
    assert!(failure.starts_with("clone:"), "{failure}");
    assert!(failure.contains("out of space on local-lvm"), "{failure}");
    assert_eq!(owned(&lab, &doomed), 0, "the failed clone left no VM");
    svc.destroy("fault-test", &doomed, true).await.unwrap();
    assert_eq!(settle(&exec, &doomed).await.unwrap(), Phase::Terminated);

    // A Talos apply that keeps failing as rejected config: Failed at
    // deliverConfig; removing the claim removes its VM.
    lab.faults.add_rule(FaultRule {
        status: Some(3),
        ..rule(
            Emulator::Talos,
            "ApplyConfiguration:*",
            Some(3),
            "configuration validation failed",
            100,
        )
    });
    let rejected = common::provision_one(&svc, "fault-test").await;
    assert_eq!(settle(&exec, &rejected).await.unwrap(), Phase::Failed);
    let failure = svc.get_worker(&rejected).await.unwrap().failure.unwrap();
    assert!(failure.starts_with("deliverConfig:"), "{failure}");
    assert_eq!(
        owned(&lab, &rejected),
        1,
        "a failed claim keeps its VM until removed"
    );
    svc.destroy("fault-test", &rejected, true).await.unwrap();
    assert_eq!(settle(&exec, &rejected).await.unwrap(), Phase::Terminated);
    assert_eq!(owned(&lab, &rejected), 0);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_destroy_leaves_a_foreign_vm_that_reused_the_vmid_alone() {
    use tidepool_proxmox::types::{CloneRequest, DeleteOptions};
    let lab = lab("reuse").await;
    let exec = Arc::new(executor(&lab).await);
    let svc = Service::new(exec.clone());
    let name = common::provision_one(&svc, "fault-test").await;
    assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Ready);
    let worker = svc.get_worker(&name).await.unwrap();
    let (vmid, host) = (worker.vmid.unwrap(), worker.host.unwrap());
    let template = lab
        .pve
        .vms()
        .into_iter()
        .find(|v| v.template && v.node == host)
        .expect("a template on the worker's host")
        .vmid;
    let pve = exec.hypervisor().client();
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(30);
    // Behind Tidepool's back: our VM is deleted, and someone else's VM
    // takes its VMID on the same host.
    let upid = pve.stop(&host, vmid).await.unwrap();
    pve.wait_task(&upid, deadline()).await.unwrap();
    let options = DeleteOptions {
        purge: true,
        destroy_unreferenced_disks: true,
    };
    let upid = pve.delete_vm(&host, vmid, &options).await.unwrap();
    pve.wait_task(&upid, deadline()).await.unwrap();
    let request = CloneRequest {
        newid: vmid,
        name: Some("someone-elses-vm".into()),
        full: Some(true),
        ..CloneRequest::default()
    };
    pve.clone_and_wait(&host, template, &request, deadline())
        .await
        .unwrap();
    let upid = pve.start(&host, vmid).await.unwrap();
    pve.wait_task(&upid, deadline()).await.unwrap();

    svc.destroy("fault-test", &name, true).await.unwrap();
    assert_eq!(settle(&exec, &name).await.unwrap(), Phase::Terminated);
    let foreign = lab.pve.vm(vmid).expect("the foreign VM must survive");
    assert_eq!(foreign.name.as_deref(), Some("someone-elses-vm"));
    assert!(foreign.running, "and keep running");
    lab.shutdown().await;
}
