//! End-to-end autoscaler scenarios against the lab: TTL expiry with and
//! without workload, spot preemption for permanent capacity, GPU placement,
//! full hosts, and a drain slowed by a PodDisruptionBudget. Each runs the
//! real controller (reconciler and autoscaler) against the emulated
//! Proxmox, Kubernetes and Talos APIs at a high time scale.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Live, Setup, Traces, eventually, start};
use serde_json::{Value, json};
use tidepool_controller::service::ProvisionRequest;

/// Real time any single wait may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(20);

fn deployment(name: &str, replicas: u32, pod_spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}}
    })
}

/// A pod spec for the burst pool: its selector and toleration, and requests.
fn burst_pod(cpu: &str, memory: &str) -> Value {
    json!({
        "nodeSelector": {"node-pool": "burst"},
        "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "burst", "effect": "NoSchedule"}],
        "containers": [{"name": "main", "image": "busybox:1.36", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
    })
}

async fn provision(live: &Live, pool: &str, size: &str, ttl: Option<Duration>) -> String {
    live.service()
        .provision(&ProvisionRequest {
            pool: pool.into(),
            size: Some(size.into()),
            count: 1,
            ttl,
            requested_by: "scenario-test".into(),
            reason: "end-to-end scenario".into(),
        })
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_past_their_ttl_go_at_once_when_idle_and_after_a_drain_when_busy() {
    let live = start(Setup {
        // The idle worker must go for its TTL, not for idleness.
        config: |c| {
            for p in &mut c.pools {
                p.idle_timeout = None;
            }
        },
        ..Setup::new("scenario-ttl")
    })
    .await;
    let hour = Some(Duration::from_secs(3600));
    // A small worker that stays idle, a medium one for a pod too big for
    // the small one (so the pod cannot move onto it when evicted).
    let idle = provision(&live, "burst", "small", hour).await;
    let busy = provision(&live, "burst", "medium", hour).await;
    live.lab
        .kube
        .apply(deployment("report", 1, burst_pod("5", "4Gi")))
        .unwrap();

    let mut traces = Traces::default();
    let mut first_pod = None;
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        first_pod = live
            .running("default", "app=report")
            .into_iter()
            .find(|(_, node)| *node == busy);
        first_pod.is_some()
    })
    .await;
    assert!(
        ok,
        "the report pod runs on {busy}\n{}\npods:\n{}",
        live.dump_claims(),
        live.dump_pods("default")
    );
    let (first_pod, _) = first_pod.unwrap();

    let mut replacement = None;
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        let claims = live.claims();
        let gone = |n: &str| !claims.iter().any(|c| c["metadata"]["name"] == n);
        replacement = live
            .running("default", "app=report")
            .into_iter()
            .find(|(_, node)| *node != busy);
        gone(&idle) && gone(&busy) && replacement.is_some()
    })
    .await;
    assert!(
        ok,
        "both workers removed past their TTL and the pod running elsewhere\n{}\npods:\n{}\ntraces: {:?}",
        live.dump_claims(),
        live.dump_pods("default"),
        traces
    );

    let idle_trace = traces.of(&idle);
    assert!(
        idle_trace.conditions.contains("Cordoned") && idle_trace.conditions.contains("Drained"),
        "an idle worker is removed without waiting to be drained beforehand, but still cordoned and evicted on its way out (spec §8): {idle_trace:?}"
    );
    assert_eq!(
        idle_trace.intent,
        serde_json::json!({"action": "Remove", "force": true}),
        "{idle_trace:?}"
    );
    let busy_trace = traces.of(&busy);
    assert!(
        busy_trace.conditions.contains("Cordoned") && busy_trace.conditions.contains("Drained"),
        "the busy worker is drained first: {busy_trace:?}"
    );
    assert!(
        !live
            .pods("default", "app=report")
            .iter()
            .any(|p| p["metadata"]["name"] == first_pod.as_str()),
        "the pod on the busy worker was evicted"
    );
    let (_, node) = replacement.unwrap();
    assert!(
        !live.nodes().contains(&busy) && !live.nodes().contains(&idle),
        "their nodes are deleted"
    );
    assert!(
        live.claim(&node).is_some(),
        "the pod was recreated on a new worker {node}\n{}",
        live.dump_claims()
    );
    for reason in ["ttl-expired-idle", "ttl-expired-busy"] {
        assert!(
            live.decided(reason).await,
            "a {reason} decision was counted"
        );
    }
    let told = live.scale_down_events(&idle);
    assert!(
        told.iter()
            .any(|m| m.contains("is being removed: TTL expired") && m.contains("remove now")),
        "{idle} is told it goes for its TTL, at once: {told:?}"
    );
    let told = live.scale_down_events(&busy);
    assert!(
        told.iter()
            .any(|m| m.contains("is being drained and removed: TTL expired")
                && m.contains("1 pod(s) run on it, drain first")),
        "{busy} is told it is drained for its TTL: {told:?}"
    );
    eprintln!("TTL scenario done after {:?} real", live.elapsed());
    live.stop().await;
}

/// The home lab with its hosts' memory cut down: `pve01` and `pve02` MiB.
fn tight_home_lab(pve01: u64, pve02: u64) -> tidepool_lab::Scenario {
    let mut s = tidepool_lab::Scenario::default_home_lab().unwrap();
    for host in &mut s.proxmox.hosts {
        host.memory_mib = match host.name.as_str() {
            "pve-01" => pve01,
            _ => pve02,
        };
    }
    s
}

/// A permanent pool of large workers, added to the lab's configuration.
fn with_permanent_pool(yaml: String) -> String {
    yaml.replacen(
        "pools:\n",
        "pools:\n  - name: permanent\n    kind: permanent\n    sizes: [large]\n    template: talos-worker-{size}-v1.8.0\n    limits: {minNodes: 0, maxNodes: 2}\n",
        1,
    )
}

/// How the work on the spot workers comes back after it is evicted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SpotWork {
    /// Bare pods: evicted and gone.
    Pods,
    /// A Deployment: recreated at once, pending, wanting spot workers again.
    Deployment,
}

/// Two spot workers with work on them fill pve-01; a database that only a
/// large permanent worker can host arrives; the spot workers must be
/// drained and destroyed and the permanent worker provisioned in their room.
async fn spot_preemption(name: &'static str, work: SpotWork) {
    // Memory the planner sees committed on pve-01: truenas, the control
    // plane and a permanent node (96 GiB), plus two small spot workers
    // (16 GiB) once they exist; 4 GiB stay reserved for the host. Sized
    // so that a large worker (32 GiB + 512 MiB overhead) fits only once
    // both spot workers are gone; pve-02 has room for no worker at all.
    let pve01 = 98_304 + 16_384 + 4_096 + 20_000;
    let pve02 = 69_632 + 4_096 + 4_000;
    let live = start(Setup {
        scenario: tight_home_lab(pve01, pve02),
        yaml: with_permanent_pool,
        config: |c| {
            for p in c.pools.iter_mut().filter(|p| p.name == "spot") {
                // Spot workers stay until something needs their room.
                p.ttl = None;
                p.idle_timeout = None;
                // And the pool asks for workers again within seconds, well
                // before the workers it loses are gone.
                p.scale_up.pending_pods = 2;
                p.scale_up.pending_for = Duration::from_secs(10);
            }
        },
        ..Setup::new(name)
    })
    .await;

    let spots = [
        provision(&live, "spot", "small", None).await,
        provision(&live, "spot", "small", None).await,
    ];
    // The work arrives once both are Ready, so that it lands on them; the
    // spot pool's own scale-up is not what this scenario is about.
    let ready = eventually(PATIENCE, || {
        spots.iter().all(|s| {
            live.claim(s)
                .is_some_and(|c| c["status"]["phase"] == "Ready")
        })
    })
    .await;
    assert!(ready, "the spot workers are Ready\n{}", live.dump_claims());
    let batch = json!({
        "nodeSelector": {"node-pool": "spot"},
        "tolerations": [{"key": "workload-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}],
        "containers": [{"name": "main", "image": "busybox:1.36", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]
    });
    match work {
        SpotWork::Deployment => {
            live.lab.kube.apply(deployment("batch", 2, batch)).unwrap();
        }
        SpotWork::Pods => {
            for i in 0..2 {
                live.lab
                    .kube
                    .apply(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("batch-{i}"), "namespace": "default", "labels": {"app": "batch"}},
                        "spec": batch.clone()
                    }))
                    .unwrap();
            }
        }
    }
    let ok = eventually(PATIENCE, || {
        let on: Vec<String> = live
            .running("default", "app=batch")
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        spots.iter().all(|s| on.contains(s))
    })
    .await;
    assert!(
        ok,
        "a batch pod runs on each spot worker\n{}\npods:\n{}",
        live.dump_claims(),
        live.dump_pods("default")
    );
    for s in &spots {
        let host = live.claim(s).unwrap()["status"]["vm"]["node"].clone();
        assert_eq!(host, "pve-01", "{s} is on pve-01\n{}", live.dump_claims());
    }

    // A database only a large permanent worker can host.
    live.lab
        .kube
        .apply(deployment(
            "db",
            1,
            json!({
                "nodeSelector": {"node-pool": "permanent"},
                "containers": [{"name": "main", "image": "postgres:17", "resources": {"requests": {"cpu": "12", "memory": "24Gi"}}}]
            }),
        ))
        .unwrap();
    let mut traces = Traces::default();
    let mut db_node = None;
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        db_node = live
            .running("default", "app=db")
            .into_iter()
            .map(|(_, n)| n)
            .next();
        db_node.is_some()
    })
    .await;
    assert!(
        ok,
        "the database runs on a new permanent worker\n{}\npods:\n{}\n{}",
        live.dump_claims(),
        live.dump_pods("default"),
        live.dump_plan().await
    );
    let db_node = db_node.unwrap();
    let permanent = live
        .claim(&db_node)
        .unwrap_or_else(|| panic!("{db_node} is a claimed worker\n{}", live.dump_claims()));
    assert_eq!(permanent["spec"]["pool"], "permanent");
    assert_eq!(permanent["spec"]["size"], "large");
    assert_eq!(permanent["spec"]["requestedBy"], "autoscaler");
    assert_eq!(permanent["status"]["vm"]["node"], "pve-01");

    for s in &spots {
        let t = traces.of(s);
        assert!(
            live.claim(s).is_none() && !live.nodes().contains(s),
            "spot worker {s} is gone\n{}",
            live.dump_claims()
        );
        // The claim's record says so: the executor marks Cordoned and
        // Drained only when those steps succeed, and the lifecycle stops
        // and deletes a VM only after them. (The Draining phase itself may
        // be too brief for the test's sampling to see.)
        assert!(
            t.conditions.contains("Cordoned") && t.conditions.contains("Drained"),
            "spot worker {s} was drained before it was destroyed: {t:?}"
        );
        assert!(
            !live
                .lab
                .pve
                .vms()
                .iter()
                .any(|v| v.name.as_deref() == Some(s.as_str())),
            "the VM of {s} is deleted"
        );
        let told = live.scale_down_events(s);
        assert!(
            told.iter().any(|m| m.contains("is being drained and removed: spot worker preempted on host pve-01 to make room for a permanent large worker of pool permanent")),
            "{s} is told it is preempted: {told:?}"
        );
    }
    assert!(
        live.decided("spot-preemption").await,
        "a spot-preemption decision was counted"
    );
    // No spot worker took the room back.
    assert!(
        live.claims_of("spot").is_empty(),
        "no new spot worker\n{}",
        live.dump_claims()
    );
    eprintln!("{name} done after {:?} real", live.elapsed());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_workers_are_preempted_to_make_room_for_permanent_capacity() {
    spot_preemption("scenario-spot", SpotWork::Pods).await;
}

/// The same, with the spot work recreated by its Deployment as soon as it
/// is evicted: those pods must wait rather than take the room freed for
/// the permanent worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_spot_work_does_not_take_back_the_room_freed_for_permanent_capacity() {
    spot_preemption("scenario-spot-again", SpotWork::Deployment).await;
}

/// The home lab with a second Tesla T4 on pve-02 (and a GPU template and
/// `pve02` MiB of memory there), while the T4 of pve-01 is passed through
/// to a media server.
fn home_lab_with_gpu_on_each_host(pve02: u64) -> tidepool_lab::Scenario {
    let text = tidepool_lab::scenario::HOME_LAB
        .replace(
            "      memoryMib: 131072          # 128 GiB\n",
            &format!("      memoryMib: {pve02}\n"),
        )
        .replace(
            "        - {node: pve-01, path: \"0000:01:00.0\", id: \"10de:1eb8\", iommugroup: 14}\n",
            "        - {node: pve-01, path: \"0000:01:00.0\", id: \"10de:1eb8\", iommugroup: 14}\n        - {node: pve-02, path: \"0000:41:00.0\", id: \"10de:1eb8\", iommugroup: 22}\n",
        )
        .replace(
            "    # Infrastructure that is not Kubernetes.\n",
            "    - {vmid: 9014, node: pve-02, name: talos-worker-gpu-v1.8.0, template: true, cores: 8, memoryMib: 32768, diskGib: 500}\n    # Infrastructure that is not Kubernetes.\n    - {vmid: 102, node: pve-01, name: plex, cores: 4, memoryMib: 8192, diskGib: 32, running: true, tags: [media], extraConfig: {hostpci0: \"mapping=tesla-t4,pcie=1\"}}\n",
        );
    tidepool_lab::Scenario::parse(&text, "gpu-on-each-host").unwrap()
}

fn gpu_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "inference"}},
        "spec": {
            "nodeSelector": {"node-pool": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "vllm/vllm-openai:v0.6.3", "resources": {
                "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                "limits": {"nvidia.com/gpu": "1"}}}]
        }
    })
}

/// A GPU pod gets a GPU worker on pve-02, the host with a free T4, with
/// the mapping on its VM; a second GPU pod is told that no host has a free
/// device. Both hosts keep memory for a second GPU worker (32 GiB + 512
/// MiB), so the GPU is what binds; `pve02` decides which host has more.
async fn gpu_placement(name: &'static str, pve02: u64) {
    let live = start(Setup {
        scenario: home_lab_with_gpu_on_each_host(pve02),
        // Room in the pool for a second GPU worker: only the hosts' devices limit it.
        config: |c| {
            for p in c.pools.iter_mut().filter(|p| p.name == "gpu") {
                p.limits.max_nodes = 2;
            }
        },
        ..Setup::new(name)
    })
    .await;
    let gpu_pool = live.config.pool("gpu").unwrap();
    assert_eq!(gpu_pool.hosts, ["pve-01", "pve-02"], "both hosts have a T4");

    live.lab.kube.apply(gpu_pod("inference-0")).unwrap();
    let mut node = None;
    let ok = eventually(PATIENCE, || {
        node = live
            .running("default", "app=inference")
            .into_iter()
            .map(|(_, n)| n)
            .next();
        node.is_some()
    })
    .await;
    assert!(
        ok,
        "the GPU pod runs\n{}\npods:\n{}\n{}",
        live.dump_claims(),
        live.dump_pods("default"),
        live.dump_plan().await
    );
    let node = node.unwrap();
    let claim = live
        .claim(&node)
        .unwrap_or_else(|| panic!("{node} is a claimed worker\n{}", live.dump_claims()));
    assert_eq!(claim["spec"]["pool"], "gpu");
    assert_eq!(claim["spec"]["size"], "gpu");
    assert_eq!(
        claim["status"]["vm"]["node"],
        "pve-02",
        "the T4 of pve-01 is taken\n{}",
        live.dump_claims()
    );
    let vm = live
        .lab
        .pve
        .vms()
        .into_iter()
        .find(|v| v.name.as_deref() == Some(node.as_str()))
        .expect("the worker's VM");
    assert_eq!(vm.node, "pve-02");
    assert!(
        vm.hostpci
            .iter()
            .any(|(_, v)| v.split(',').any(|p| p == "mapping=tesla-t4")),
        "the VM carries the mapping: {:?}",
        vm.hostpci
    );
    assert_eq!(vm.pci_devices, ["0000:41:00.0"], "and holds pve-02's T4");
    let k8s_node = live.lab.kube.get("v1", "Node", "", &node).unwrap();
    assert_eq!(
        k8s_node["status"]["allocatable"]["nvidia.com/gpu"], "1",
        "{k8s_node}"
    );

    // A second GPU pod: the pool may grow, but no host has a free T4.
    live.lab.kube.apply(gpu_pod("inference-1")).unwrap();
    let mut told = None;
    let ok = eventually(PATIENCE, || {
        told = live
            .events("default")
            .into_iter()
            .find(|(n, r, _)| n == "inference-1" && r == "NotTriggerScaleUp");
        told.is_some()
    })
    .await;
    assert!(
        ok,
        "the second GPU pod is told why it gets no worker\n{}\nevents: {:?}\n{}",
        live.dump_claims(),
        live.events("default"),
        live.dump_plan().await
    );
    let (_, _, message) = told.unwrap();
    for host in ["pve-01", "pve-02"] {
        assert!(
            message.contains(&format!(
                "{host}: GPU mapping tesla-t4 (VM needs 1, 0 free)"
            )),
            "the message names the GPU dimension of {host}: {message}"
        );
    }
    assert_eq!(live.claims_of("gpu").len(), 1, "{}", live.dump_claims());
    eprintln!("{name} done after {:?} real", live.elapsed());
    live.stop().await;
}

/// pve-02 has the free T4 and the most memory: whoever picks the host by
/// memory alone picks it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_pod_gets_a_gpu_worker_on_the_host_with_a_free_device() {
    // 192 GiB: 120 GiB free above pve-02's VMs and reserve, 84 GiB on pve-01.
    gpu_placement("scenario-gpu", 196_608).await;
}

/// pve-01 has more memory left than pve-02 but no free T4: the worker must
/// still go to pve-02, so the planner's choice of host must reach the
/// executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_worker_goes_to_the_free_device_even_where_another_host_has_more_memory() {
    // 68 GiB free above pve-02's VMs and reserve, 84 GiB on pve-01.
    gpu_placement("scenario-gpu-memory", 69_632 + 4_096 + 70_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_workers_go_to_the_host_with_room_and_pods_are_told_when_no_host_has_any() {
    // pve-01 has room for exactly two small workers (8 GiB + 512 MiB
    // overhead each) above its reserve; pve-02 for none.
    let pve01 = 98_304 + 4_096 + 2 * 8_704 + 1_000;
    let pve02 = 69_632 + 4_096 + 4_000;
    let live = start(Setup {
        scenario: tight_home_lab(pve01, pve02),
        // One pod per small worker, so the count of workers is known.
        config: |c| {
            for p in c.pools.iter_mut().filter(|p| p.name == "burst") {
                p.sizes = vec!["small".into()];
            }
        },
        ..Setup::new("scenario-full")
    })
    .await;
    live.lab
        .kube
        .apply(deployment("web", 2, burst_pod("2500m", "5Gi")))
        .unwrap();
    let ok = eventually(PATIENCE, || live.running("default", "app=web").len() == 2).await;
    assert!(
        ok,
        "both web pods run\n{}\npods:\n{}\n{}",
        live.dump_claims(),
        live.dump_pods("default"),
        live.dump_plan().await
    );
    let burst = live.claims_of("burst");
    assert_eq!(burst.len(), 2, "{}", live.dump_claims());
    for c in &burst {
        assert_eq!(
            c["status"]["vm"]["node"],
            "pve-01",
            "pve-02 has no room\n{}",
            live.dump_claims()
        );
    }
    let on_pve01 = live
        .lab
        .pve
        .vms()
        .iter()
        .filter(|v| (1250..=1300).contains(&v.vmid) && v.node == "pve-01")
        .count();
    assert_eq!(on_pve01, 2, "their VMs run on pve-01");

    // A third replica: pve-01 is now as full as pve-02.
    live.lab
        .kube
        .merge_patch(
            "apps/v1",
            "Deployment",
            "default",
            "web",
            &json!({"spec": {"replicas": 3}}),
        )
        .unwrap();
    let mut told = None;
    let ok = eventually(PATIENCE, || {
        told = live
            .events("default")
            .into_iter()
            .find(|(n, r, _)| n.starts_with("web-") && r == "NotTriggerScaleUp");
        told.is_some()
    })
    .await;
    assert!(
        ok,
        "the third web pod is told why it gets no worker\n{}\nevents: {:?}\n{}",
        live.dump_claims(),
        live.events("default"),
        live.dump_plan().await
    );
    let (_, _, message) = told.unwrap();
    for host in ["pve-01", "pve-02"] {
        assert!(
            message.contains(&format!("{host}: memory (VM needs 8704 MiB with overhead")),
            "the message names the memory of {host}: {message}"
        );
    }
    assert_eq!(live.claims_of("burst").len(), 2, "{}", live.dump_claims());
    assert!(
        live.decided("host-memory").await,
        "a host-memory refusal was counted"
    );
    eprintln!("full-host scenario done after {:?} real", live.elapsed());
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_a_disruption_budget_and_the_worker_goes_once_it_allows() {
    let live = start(Setup {
        config: |c| {
            for p in c.pools.iter_mut().filter(|p| p.name == "burst") {
                // The worker goes for its TTL, not for idleness.
                p.idle_timeout = None;
                // Long enough for the test to watch the blocked drain (two
                // simulated hours are seven real seconds at 1000x).
                p.scale_down.drain_timeout = Duration::from_secs(2 * 3600);
            }
        },
        ..Setup::new("scenario-pdb")
    })
    .await;
    let worker = provision(&live, "burst", "small", Some(Duration::from_secs(3600))).await;
    live.lab
        .kube
        .apply(deployment("ledger", 2, burst_pod("1", "1Gi")))
        .unwrap();
    live.lab
        .kube
        .apply(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "ledger", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "ledger"}}}
        }))
        .unwrap();
    let ok = eventually(PATIENCE, || {
        live.running("default", "app=ledger")
            .iter()
            .filter(|(_, n)| *n == worker)
            .count()
            == 2
    })
    .await;
    assert!(
        ok,
        "both ledger pods run on {worker}\n{}\npods:\n{}",
        live.dump_claims(),
        live.dump_pods("default")
    );

    // Its TTL expires: the drain starts and the budget blocks it.
    let mut traces = Traces::default();
    let draining = |live: &Live| {
        live.claim(&worker)
            .is_some_and(|c| c["status"]["phase"] == "Draining")
    };
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        draining(&live)
    })
    .await;
    assert!(ok, "{worker} starts draining\n{}", live.dump_claims());
    let blocked_since = std::time::Instant::now();
    while blocked_since.elapsed() < Duration::from_millis(1500) {
        traces.observe(&live);
        assert!(
            draining(&live),
            "{worker} stays Draining while the budget allows no disruption\n{}",
            live.dump_claims()
        );
        assert_eq!(
            live.running("default", "app=ledger")
                .iter()
                .filter(|(_, n)| *n == worker)
                .count(),
            2,
            "no ledger pod is evicted\npods:\n{}",
            live.dump_pods("default")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pdb = live
        .lab
        .kube
        .get("policy/v1", "PodDisruptionBudget", "default", "ledger")
        .unwrap();
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "{pdb}");

    // The budget now allows one pod at a time to go.
    live.lab
        .kube
        .merge_patch(
            "policy/v1",
            "PodDisruptionBudget",
            "default",
            "ledger",
            &json!({"spec": {"minAvailable": 1}}),
        )
        .unwrap();
    let mut fewest = usize::MAX;
    let ok = eventually(PATIENCE, || {
        traces.observe(&live);
        let running = live.running("default", "app=ledger");
        fewest = fewest.min(running.len());
        live.claim(&worker).is_none()
            && running.len() == 2
            && running.iter().all(|(_, n)| *n != worker)
    })
    .await;
    assert!(
        ok,
        "{worker} is removed once the budget allows it and the ledger runs elsewhere\n{}\npods:\n{}\n{}",
        live.dump_claims(),
        live.dump_pods("default"),
        live.dump_plan().await
    );
    assert!(
        fewest >= 1,
        "the budget kept a ledger pod running throughout"
    );
    let t = traces.of(&worker);
    assert!(
        t.conditions.contains("Drained") && t.phases.iter().any(|p| p == "Terminating"),
        "{worker} was drained, then removed: {t:?}"
    );
    assert!(!live.nodes().contains(&worker), "its node is deleted");
    eprintln!("PDB scenario done after {:?} real", live.elapsed());
    live.stop().await;
}
