//! Tables for the scheduling simulation (`sched::fits`) and the planner:
//! every predicate, the scale-up choices and limits, the trigger windows
//! and the scale-down rules, each with its reason asserted; property tests
//! for the invariants (limits, host headroom, permanent workers).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use tidepool_core::config::{self, Config, EXAMPLE};
use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_core::sched::{
    LabelSelector, Misfit, NodeSelectorTerm, NodeSnapshot, Operator, PodSpec, Requests,
    Requirement, Toleration, TolerationOperator, annotations_block_disruption, fits,
};

const GIB: u64 = 1 << 30;

fn example() -> Config {
    config::load(EXAMPLE).unwrap()
}

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn pod(name: &str, cpu_milli: u64, mem_gib: u64) -> PodSpec {
    PodSpec {
        namespace: "default".into(),
        name: name.into(),
        requests: Requests {
            cpu_milli,
            memory_bytes: mem_gib * GIB,
            ..Requests::default()
        },
        ..PodSpec::default()
    }
}

fn tolerating(mut p: PodSpec, key: &str, value: &str) -> PodSpec {
    Arc::make_mut(&mut p.tolerations).push(Toleration {
        key: key.into(),
        operator: TolerationOperator::Equal,
        value: value.into(),
        effect: Some(TaintEffect::NoSchedule),
    });
    p
}

fn burst(p: PodSpec) -> PodSpec {
    tolerating(p, "workload-type", "burst")
}

fn hypothetical(cfg: &Config, pool: &str, size: &str) -> NodeSnapshot {
    let pool = cfg.pool(pool).unwrap();
    NodeSnapshot::hypothetical(cfg, pool, cfg.size(size).unwrap(), "node-a", t0())
}

fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

mod fits_table {
    use super::*;

    struct Case {
        name: &'static str,
        pod: PodSpec,
        node: fn(&Config) -> NodeSnapshot,
        expect: Result<(), &'static str>,
    }

    fn medium_burst(cfg: &Config) -> NodeSnapshot {
        hypothetical(cfg, "burst", "medium")
    }

    fn small_spot(cfg: &Config) -> NodeSnapshot {
        hypothetical(cfg, "spot", "small")
    }

    fn cordoned(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.unschedulable = true;
        n
    }

    fn not_ready(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.ready = false;
        n
    }

    fn full_of_pods(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.pod_count = n.allocatable.pods;
        n
    }

    fn half_used(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.requested.cpu_milli = 4000;
        n.requested.memory_bytes = 8 * GIB;
        n
    }

    /// Its CSINode reports proxmox-csi with a count of 28.
    fn with_block_volumes(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.block_volumes = 27;
        n.volume_limit = Some(28);
        n
    }

    /// Its CSINode reports proxmox-csi with a count of 16 (the node label
    /// lowered it).
    fn with_a_lowered_attach_limit(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.block_volumes = 15;
        n.volume_limit = Some(16);
        n
    }

    /// No CSINode yet: the provider's fallback of 24.
    fn new_worker_with_volumes(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.block_volumes = 23;
        n
    }

    fn with_web_pod(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        let mut web = burst(pod("web-0", 100, 1));
        Arc::make_mut(&mut web.labels).insert("app".into(), "web".into());
        n.bind(&web, true);
        n
    }

    fn gpu_node(cfg: &Config) -> NodeSnapshot {
        hypothetical(cfg, "gpu", "gpu")
    }

    fn large_burst(cfg: &Config) -> NodeSnapshot {
        hypothetical(cfg, "burst", "large")
    }

    fn cases() -> Vec<Case> {
        let mut selector = burst(pod("selector", 100, 1));
        Arc::make_mut(&mut selector.node_selector).insert("node-pool".into(), "spot".into());
        let mut selector_ok = burst(pod("selector-ok", 100, 1));
        Arc::make_mut(&mut selector_ok.node_selector).insert("node-pool".into(), "burst".into());
        let affinity_terms =
            |exprs: Vec<Requirement>| Arc::new(vec![NodeSelectorTerm { expressions: exprs }]);
        let mut aff_in = burst(pod("aff-in", 100, 1));
        aff_in.affinity = affinity_terms(vec![req("workload-size", Operator::In, &["large"])]);
        let mut aff_notin = burst(pod("aff-notin", 100, 1));
        aff_notin.affinity =
            affinity_terms(vec![req("workload-size", Operator::NotIn, &["small"])]);
        let mut aff_exists = burst(pod("aff-exists", 100, 1));
        aff_exists.affinity =
            affinity_terms(vec![req("gpu.nvidia.com/class", Operator::Exists, &[])]);
        let mut aff_dne = burst(pod("aff-dne", 100, 1));
        aff_dne.affinity = affinity_terms(vec![req(
            "gpu.nvidia.com/class",
            Operator::DoesNotExist,
            &[],
        )]);
        let mut aff_gt = burst(pod("aff-gt", 100, 1));
        aff_gt.affinity = affinity_terms(vec![req("ttl-hours", Operator::Gt, &["8"])]);
        let mut aff_lt = burst(pod("aff-lt", 100, 1));
        aff_lt.affinity = affinity_terms(vec![req("ttl-hours", Operator::Lt, &["8"])]);
        let mut aff_or = burst(pod("aff-or", 100, 1));
        aff_or.affinity = Arc::new(vec![
            NodeSelectorTerm {
                expressions: vec![req("workload-size", Operator::In, &["large"])],
            },
            NodeSelectorTerm {
                expressions: vec![req("node-pool", Operator::In, &["burst"])],
            },
        ]);
        let mut aff_and = burst(pod("aff-and", 100, 1));
        aff_and.affinity = affinity_terms(vec![
            req("node-pool", Operator::In, &["burst"]),
            req("workload-size", Operator::In, &["large"]),
        ]);
        let mut tolerate_all = pod("tolerate-all", 100, 1);
        Arc::make_mut(&mut tolerate_all.tolerations).push(Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        });
        let mut tolerate_wrong_effect = pod("wrong-effect", 100, 1);
        Arc::make_mut(&mut tolerate_wrong_effect.tolerations).push(Toleration {
            key: "workload-type".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: Some(TaintEffect::NoExecute),
        });
        let mut eph = burst(pod("eph", 100, 1));
        eph.requests.ephemeral_bytes = 200 * GIB;
        let mut gpu_pod = tolerating(pod("cuda", 1000, 8), "nvidia.com/gpu", "true");
        gpu_pod.requests.extended.insert("nvidia.com/gpu".into(), 1);
        let mut two_gpus = gpu_pod.clone();
        two_gpus.name = "cuda-2".into();
        two_gpus
            .requests
            .extended
            .insert("nvidia.com/gpu".into(), 2);
        let mut gpu_on_burst = burst(pod("cuda-burst", 1000, 8));
        gpu_on_burst
            .requests
            .extended
            .insert("nvidia.com/gpu".into(), 1);
        let mut pvc = burst(pod("pvc", 100, 1));
        pvc.block_volumes = 2;
        let mut pvc_one = burst(pod("pvc-one", 100, 1));
        pvc_one.block_volumes = 1;
        let mut anti = burst(pod("web-1", 100, 1));
        Arc::make_mut(&mut anti.labels).insert("app".into(), "web".into());
        Arc::make_mut(&mut anti.anti_affinity).push(LabelSelector {
            match_labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            match_expressions: Vec::new(),
        });
        let mut anti_other_ns = anti.clone();
        anti_other_ns.namespace = "other".into();
        let spot_pod = tolerating(pod("spot", 100, 1), "workload-type", "spot");

        vec![
            Case {
                name: "a_small_tolerating_pod_fits_an_empty_burst_node",
                pod: burst(pod("ok", 500, 1)),
                node: medium_burst,
                expect: Ok(()),
            },
            Case {
                name: "a_cordoned_node_takes_nothing",
                pod: burst(pod("p", 100, 1)),
                node: cordoned,
                expect: Err("node is unschedulable (cordoned)"),
            },
            Case {
                name: "a_node_that_is_not_ready_takes_nothing",
                pod: burst(pod("p", 100, 1)),
                node: not_ready,
                expect: Err("node is not Ready"),
            },
            Case {
                name: "a_pod_without_the_burst_toleration_is_kept_off_burst_nodes",
                pod: pod("p", 100, 1),
                node: medium_burst,
                expect: Err("node had untolerated taint workload-type=burst:NoSchedule"),
            },
            Case {
                name: "a_toleration_for_another_effect_does_not_count",
                pod: tolerate_wrong_effect,
                node: medium_burst,
                expect: Err("node had untolerated taint workload-type=burst:NoSchedule"),
            },
            Case {
                name: "an_empty_exists_toleration_tolerates_every_taint",
                pod: tolerate_all,
                node: gpu_node,
                expect: Ok(()),
            },
            Case {
                name: "prefer_no_schedule_is_a_preference_not_a_misfit",
                pod: spot_pod,
                node: small_spot,
                expect: Ok(()),
            },
            Case {
                name: "a_node_selector_for_another_pool_misfits",
                pod: selector,
                node: medium_burst,
                expect: Err("node didn't match the pod's node selector node-pool=spot"),
            },
            Case {
                name: "a_node_selector_for_the_pool_fits",
                pod: selector_ok,
                node: medium_burst,
                expect: Ok(()),
            },
            Case {
                name: "affinity_in_large_misfits_a_medium_node",
                pod: aff_in.clone(),
                node: medium_burst,
                expect: Err("node didn't match the pod's required node affinity"),
            },
            Case {
                name: "affinity_in_large_fits_a_large_node_when_the_taint_is_tolerated",
                pod: tolerating(aff_in, "workload-size", "large"),
                node: large_burst,
                expect: Ok(()),
            },
            Case {
                name: "affinity_not_in_small_fits_a_medium_node",
                pod: aff_notin,
                node: medium_burst,
                expect: Ok(()),
            },
            Case {
                name: "affinity_exists_needs_the_label",
                pod: aff_exists,
                node: medium_burst,
                expect: Err("node didn't match the pod's required node affinity"),
            },
            Case {
                name: "affinity_does_not_exist_holds_without_the_label",
                pod: aff_dne,
                node: medium_burst,
                expect: Ok(()),
            },
            Case {
                name: "affinity_gt_compares_integers",
                pod: aff_gt,
                node: medium_burst,
                expect: Err("node didn't match the pod's required node affinity"),
            },
            Case {
                name: "affinity_lt_compares_integers",
                pod: aff_lt,
                node: medium_burst,
                expect: Ok(()),
            },
            Case {
                name: "affinity_terms_are_ored",
                pod: aff_or,
                node: medium_burst,
                expect: Ok(()),
            },
            Case {
                name: "affinity_expressions_are_anded",
                pod: aff_and,
                node: medium_burst,
                expect: Err("node didn't match the pod's required node affinity"),
            },
            Case {
                name: "a_full_node_refuses_one_more_pod",
                pod: burst(pod("p", 100, 1)),
                node: full_of_pods,
                expect: Err("Too many pods (node holds at most 110)"),
            },
            Case {
                name: "cpu_beyond_the_free_room_misfits",
                pod: burst(pod("p", 4000, 1)),
                node: half_used,
                expect: Err("Insufficient cpu (pod requests 4, 3800m free)"),
            },
            Case {
                name: "memory_beyond_the_free_room_misfits",
                pod: burst(pod("p", 100, 8)),
                node: half_used,
                expect: Err("Insufficient memory (pod requests 8Gi, 7Gi free)"),
            },
            Case {
                name: "ephemeral_storage_beyond_the_disk_misfits",
                pod: eph,
                node: medium_burst,
                expect: Err(
                    "Insufficient ephemeral-storage (pod requests 200Gi, 175781250Ki free)",
                ),
            },
            Case {
                name: "a_gpu_pod_fits_a_gpu_node",
                pod: gpu_pod,
                node: gpu_node,
                expect: Ok(()),
            },
            Case {
                name: "two_gpus_do_not_fit_a_one_gpu_node",
                pod: two_gpus,
                node: gpu_node,
                expect: Err("Insufficient nvidia.com/gpu (pod requests 2, 1 free)"),
            },
            Case {
                name: "a_gpu_pod_misfits_a_node_without_gpus",
                pod: gpu_on_burst,
                node: medium_burst,
                expect: Err("Insufficient nvidia.com/gpu (pod requests 1, 0 free)"),
            },
            Case {
                name: "block_volumes_beyond_a_lowered_csinode_count_misfit",
                pod: pvc.clone(),
                node: with_a_lowered_attach_limit,
                expect: Err(
                    "node would exceed the block-volume attach cap of 16 (15 attached, pod needs 2)",
                ),
            },
            Case {
                name: "a_node_without_a_csinode_entry_has_the_providers_fallback",
                pod: pvc.clone(),
                node: new_worker_with_volumes,
                expect: Err(
                    "node would exceed the block-volume attach cap of 24 (23 attached, pod needs 2)",
                ),
            },
            Case {
                name: "one_volume_fits_the_last_slot_of_the_fallback",
                pod: pvc_one.clone(),
                node: new_worker_with_volumes,
                expect: Ok(()),
            },
            Case {
                name: "block_volumes_beyond_the_attach_cap_misfit",
                pod: pvc,
                node: with_block_volumes,
                expect: Err(
                    "node would exceed the block-volume attach cap of 28 (27 attached, pod needs 2)",
                ),
            },
            Case {
                name: "block_volumes_up_to_the_attach_cap_fit",
                pod: pvc_one,
                node: with_block_volumes,
                expect: Ok(()),
            },
            Case {
                name: "anti_affinity_keeps_two_web_pods_apart",
                pod: anti,
                node: with_web_pod,
                expect: Err(
                    "node didn't satisfy the pod's anti-affinity rules (conflicts with default/web-0)",
                ),
            },
            Case {
                name: "anti_affinity_only_looks_at_the_pods_own_namespace",
                pod: anti_other_ns,
                node: with_web_pod,
                expect: Ok(()),
            },
        ]
    }

    #[test]
    fn every_predicate_of_fits_reports_its_own_reason() {
        let cfg = example();
        let mut failures = Vec::new();
        for case in cases() {
            let node = (case.node)(&cfg);
            let got = fits(&case.pod, &node).map_err(|m: Misfit| m.to_string());
            let want = case.expect.map_err(str::to_owned);
            if got != want {
                failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_hypothetical_node_carries_the_pool_labels_and_taints() {
        let cfg = example();
        let gpu = hypothetical(&cfg, "gpu", "gpu");
        assert_eq!(gpu.labels.get("node-pool").map(String::as_str), Some("gpu"));
        assert_eq!(
            gpu.labels.get("gpu.nvidia.com/present").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            gpu.labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("node-a")
        );
        assert_eq!(
            gpu.taints,
            vec![Taint::new(
                "nvidia.com/gpu",
                "true",
                TaintEffect::NoSchedule
            )]
        );
        let large = hypothetical(&cfg, "burst", "large");
        assert!(large.taints.contains(&Taint::new(
            "workload-size",
            "large",
            TaintEffect::NoSchedule
        )));
        assert_eq!(large.allocatable.cpu_milli, 15_800);
    }
}

mod fixtures {
    use super::*;
    use std::collections::BTreeSet;
    use tidepool_core::config::Pool;
    use tidepool_core::lifecycle::Phase;
    use tidepool_core::planner::{ClaimState, HostSnapshot, PendingPod, PlanInput, PoolState};

    /// The example configuration's templates (parsed once: proptests build
    /// many hosts).
    pub fn example_templates() -> &'static BTreeSet<String> {
        static TEMPLATES: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
        TEMPLATES.get_or_init(|| example().templates())
    }

    pub fn host(name: &str, memory_gib: u64, cores: u32, gpus: u32) -> HostSnapshot {
        HostSnapshot {
            name: name.into(),
            provider: "pve".into(),
            online: true,
            memory_total_mib: memory_gib * 1024,
            memory_used_mib: 0,
            cores,
            vcpus_allocated: 0,
            storage_free_gib: BTreeMap::from([("local-lvm".to_owned(), 10_000)]),
            gpu_free: if gpus > 0 {
                BTreeMap::from([("tesla-t4".to_owned(), gpus)])
            } else {
                BTreeMap::new()
            },
            vms: BTreeMap::new(),
            // Every host holds every template, unless a test says otherwise.
            templates: example_templates().clone(),
        }
    }

    /// The example configuration, two roomy hosts (a GPU on pve-01), nothing running.
    pub fn world() -> PlanInput {
        let mut config = example();
        // t0 is a Friday 08:00 UTC, inside the example's weekday 07:30
        // pre-scaling window; the schedule's own tests turn it back on.
        for pool in &mut config.pools {
            pool.schedule.clear();
        }
        PlanInput {
            config,
            nodes: Vec::new(),
            pending: Vec::new(),
            claims: Vec::new(),
            hosts: vec![host("pve-01", 512, 64, 1), host("pve-02", 256, 64, 0)],
            vmids_in_use: BTreeMap::new(),
            pool_state: BTreeMap::new(),
            now: t0(),
        }
    }

    pub fn pool_mut<'a>(input: &'a mut PlanInput, name: &str) -> &'a mut Pool {
        input
            .config
            .pools
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap()
    }

    pub fn emergency(input: &mut PlanInput, pool: &str) {
        input.pool_state.insert(
            pool.into(),
            PoolState {
                emergency: true,
                ..PoolState::default()
            },
        );
    }

    /// A pod meant for the burst pool: tolerates it and selects it.
    pub fn burst_pod(name: &str, cpu_milli: u64, mem_gib: u64) -> PodSpec {
        let mut p = burst(pod(name, cpu_milli, mem_gib));
        Arc::make_mut(&mut p.node_selector).insert("node-pool".into(), "burst".into());
        p
    }

    pub fn gpu_pod(name: &str) -> PodSpec {
        let mut p = tolerating(pod(name, 2000, 8), "nvidia.com/gpu", "true");
        p.requests.extended.insert("nvidia.com/gpu".into(), 1);
        p
    }

    pub fn waited(pod: PodSpec, secs: i64) -> PendingPod {
        PendingPod {
            pod,
            unschedulable_since: t0() - jiff::SignedDuration::from_secs(secs),
        }
    }

    pub fn pods(n: usize, cpu_milli: u64, mem_gib: u64, secs: i64) -> Vec<PendingPod> {
        (0..n)
            .map(|i| waited(burst_pod(&format!("p{i:03}"), cpu_milli, mem_gib), secs))
            .collect()
    }

    pub fn claim(name: &str, pool: &str, size: &str, phase: Phase) -> ClaimState {
        ClaimState {
            name: name.into(),
            pool: pool.into(),
            size: size.into(),
            phase,
            removing: false,
            host: Some("pve-01".into()),
            expires_at: None,
            idle_since: None,
        }
    }

    /// A Ready worker with its node; `workload` pods besides a DaemonSet pod.
    pub fn worker(input: &mut PlanInput, name: &str, pool: &str, workload: usize) -> usize {
        let cfg = &input.config;
        let p = cfg.pool(pool).unwrap();
        let size = p.sizes[0].clone();
        let mut node =
            NodeSnapshot::hypothetical(cfg, p, cfg.size(&size).unwrap(), name, input.now);
        let mut ds = pod(&format!("{name}-ds"), 100, 0);
        ds.daemon_set = true;
        node.bind(&ds, true);
        for i in 0..workload {
            node.bind(&burst(pod(&format!("{name}-app-{i}"), 100, 0)), true);
        }
        input.nodes.push(node);
        input.claims.push(claim(name, pool, &size, Phase::Ready));
        input.claims.len() - 1
    }

    pub fn all_vmids_taken(input: &mut PlanInput) {
        input
            .vmids_in_use
            .insert("pve".into(), (1250..=1300).collect::<BTreeSet<u32>>());
    }
}

mod scale_up {
    use super::fixtures::*;
    use super::*;
    use tidepool_core::lifecycle::Phase;
    use tidepool_core::planner::{Action, Plan, PlanInput, ReasonCode, plan};

    /// (pool, size, host, count, reason code)
    fn provisions(plan: &Plan) -> Vec<(String, String, String, u32, ReasonCode)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Provision {
                    pool,
                    size,
                    host,
                    count,
                    reason,
                } => Some((
                    pool.clone(),
                    size.clone(),
                    host.clone(),
                    *count,
                    reason.code,
                )),
                Action::Remove { .. } => None,
            })
            .collect()
    }

    fn unhelpable(plan: &Plan) -> Vec<(String, ReasonCode)> {
        plan.unhelpable
            .iter()
            .map(|u| (u.pod.clone(), u.reason.code))
            .collect()
    }

    fn codes_of_unhelpable(plan: &Plan) -> Vec<ReasonCode> {
        let mut codes: Vec<_> = plan.unhelpable.iter().map(|u| u.reason.code).collect();
        codes.dedup();
        codes
    }

    fn p(
        pool: &str,
        size: &str,
        host: &str,
        count: u32,
        code: ReasonCode,
    ) -> (String, String, String, u32, ReasonCode) {
        (pool.into(), size.into(), host.into(), count, code)
    }

    #[test]
    fn workers_without_a_gpu_leave_the_gpu_host_alone_while_another_host_has_room() {
        // pve-01 has the most room but also the spare T4: the burst worker
        // goes to pve-02.
        let mut input = world();
        emergency(&mut input, "burst");
        input.pending = pods(3, 2500, 5, 0);
        assert!(input.hosts[0].memory_total_mib > input.hosts[1].memory_total_mib);
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("burst", "medium", "pve-02", 1, ReasonCode::Emergency)]
        );
        // With the T4 in use, the most room wins again.
        input.hosts[0].gpu_free.insert("tesla-t4".into(), 0);
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("burst", "medium", "pve-01", 1, ReasonCode::Emergency)]
        );
        // And with pve-02 full, the GPU host takes it rather than nobody.
        input.hosts[0].gpu_free.insert("tesla-t4".into(), 1);
        input.hosts[1].memory_used_mib = input.hosts[1].memory_total_mib;
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("burst", "medium", "pve-01", 1, ReasonCode::Emergency)]
        );
    }

    #[test]
    fn a_host_that_cannot_clone_the_template_is_passed_over_and_named() {
        // pve-02 would take the burst worker (no spare GPU), but lacks the
        // medium template: pve-01 gets it.
        let mut input = world();
        emergency(&mut input, "burst");
        input.pending = pods(3, 2500, 5, 0);
        let medium = input.config.pool("burst").unwrap().template_for("medium");
        input.hosts[1].templates.remove(&medium);
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("burst", "medium", "pve-01", 1, ReasonCode::Emergency)]
        );
        // Neither host has it: the pods are told why, and no smaller size
        // is forced on them when that one is missing too.
        input.hosts[0].templates.clear();
        input.hosts[1].templates.clear();
        let plan = plan(&input);
        assert!(provisions(&plan).is_empty());
        let why = unhelpable(&plan);
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why.iter()
                .all(|(_, code)| *code == ReasonCode::HostTemplate)
        );
        assert!(
            plan.unhelpable[0]
                .reason
                .message
                .contains("no template `talos-worker-")
        );
    }

    #[test]
    fn three_pods_that_fill_a_medium_get_one_medium_not_three_smalls() {
        let mut input = world();
        emergency(&mut input, "burst");
        input.pending = pods(3, 2500, 5, 0);
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "medium", "pve-02", 1, ReasonCode::Emergency)]
        );
        assert!(plan.unhelpable.is_empty() && plan.waiting.is_empty());
        let reason = &plan.actions[0].reason().message;
        assert!(
            reason.contains("3 pod(s) packed onto 1 new medium worker(s)"),
            "{reason}"
        );
    }

    #[test]
    fn pods_too_big_for_a_small_go_to_mediums_two_by_two() {
        let mut input = world();
        emergency(&mut input, "burst");
        input.pending = pods(3, 3900, 1, 0);
        let plan = plan(&input);
        // Two fill one medium; the third's medium cannot shrink: 3900m does not fit a small.
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "medium", "pve-02", 2, ReasonCode::Emergency)]
        );
    }

    #[test]
    fn the_least_full_worker_is_shrunk_to_the_cheapest_size_that_holds_it() {
        let mut input = world();
        emergency(&mut input, "burst");
        // Two 3.9-core pods fill a medium; the one-core pod alone needs only a small.
        input.pending = pods(2, 3900, 1, 0);
        input.pending.push(waited(burst_pod("light", 1000, 1), 0));
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![
                p("burst", "medium", "pve-02", 1, ReasonCode::Emergency),
                p("burst", "small", "pve-02", 1, ReasonCode::Emergency),
            ]
        );
    }

    #[test]
    fn pods_tolerating_the_large_taint_get_one_large_instead_of_three_mediums() {
        let mut input = world();
        emergency(&mut input, "burst");
        input.pending = pods(3, 5000, 10, 0)
            .into_iter()
            .map(|mut pp| {
                pp.pod = tolerating(pp.pod, "workload-size", "large");
                pp
            })
            .collect();
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "large", "pve-02", 1, ReasonCode::Emergency)]
        );
    }

    #[test]
    fn cpu_heavy_and_memory_heavy_pods_share_workers_instead_of_filling_one_resource_each() {
        let mut input = world();
        emergency(&mut input, "permanent");
        pool_mut(&mut input, "permanent").scale_up.batch_size = 10;
        // First-fit-decreasing alone: the 3.8-core pods two to a medium,
        // the 7-GiB pods two to another, six mediums. The balanced pass puts
        // one of each kind with two of the other (4.8 cores, 15 GiB): four,
        // the lower bound (60 GiB of memory over 15 GiB per medium).
        input.pending = (0..4)
            .map(|i| waited(pod(&format!("cpu{i}"), 3800, 1), 0))
            .chain((0..8).map(|i| waited(pod(&format!("mem{i}"), 500, 7), 0)))
            .collect();
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("permanent", "medium", "pve-02", 4, ReasonCode::Emergency)]
        );
        assert!(plan.unhelpable.is_empty() && plan.waiting.is_empty());
        let reason = &plan.actions[0].reason().message;
        assert!(
            reason.contains("12 pod(s) packed onto 4 new medium worker(s)"),
            "{reason}"
        );
    }

    #[test]
    fn max_nodes_cuts_the_count_and_names_the_limit() {
        let mut input = world();
        emergency(&mut input, "burst");
        pool_mut(&mut input, "burst").scale_up.batch_size = 50;
        for i in 0..8 {
            input.claims.push(claim(
                &format!("burst-old{i}"),
                "burst",
                "small",
                Phase::Ready,
            ));
        }
        // Eight 3-core pods: two to a medium, so four mediums; room for two.
        input.pending = pods(8, 3000, 1, 0);
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "medium", "pve-02", 2, ReasonCode::Emergency)]
        );
        assert_eq!(codes_of_unhelpable(&plan), vec![ReasonCode::MaxNodes]);
        assert_eq!(plan.unhelpable.len(), 4);
        assert!(
            plan.unhelpable[0]
                .reason
                .message
                .contains("pool would have 11 workers, above its maxNodes of 10"),
            "{}",
            plan.unhelpable[0].reason.message
        );
    }

    #[test]
    fn the_cpu_ceiling_counts_in_flight_claims() {
        let mut input = world();
        emergency(&mut input, "burst");
        for i in 0..7 {
            // 7 mediums = 56 of the 64 cores; the one without a node yet is on its way.
            let phase = if i == 0 {
                Phase::Provisioning
            } else {
                Phase::Ready
            };
            input
                .claims
                .push(claim(&format!("burst-old{i}"), "burst", "medium", phase));
        }
        // A pod the in-flight medium cannot take (it wants 9 cores): needs a large, 16 cores.
        let mut big = burst_pod("big", 9000, 4);
        big = tolerating(big, "workload-size", "large");
        input.pending = vec![waited(big, 0)];
        let plan = plan(&input);
        assert!(provisions(&plan).is_empty());
        assert_eq!(
            unhelpable(&plan),
            vec![("default/big".to_owned(), ReasonCode::CpuCores)]
        );
        assert!(
            plan.unhelpable[0]
                .reason
                .message
                .contains("72 vCPUs, above its cpuCores ceiling of 64")
        );
    }

    #[test]
    fn host_memory_with_reserve_and_overhead_cuts_the_count() {
        let mut input = world();
        emergency(&mut input, "burst");
        // pve-01 can take exactly one medium: 16384 + 512 overhead above the 4096 reserve.
        input.hosts = vec![host("pve-01", 0, 64, 0)];
        input.hosts[0].memory_total_mib = 4096 + 16384 + 512 + 100;
        input.pending = pods(4, 3900, 1, 0);
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "medium", "pve-01", 1, ReasonCode::Emergency)]
        );
        assert_eq!(codes_of_unhelpable(&plan), vec![ReasonCode::HostMemory]);
        let msg = &plan.unhelpable[0].reason.message;
        assert!(
            msg.contains(
                "pve-01: memory (VM needs 16896 MiB with overhead, 100 MiB free above the reserve)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn the_vcpu_overcommit_ratio_bounds_a_host() {
        let mut input = world();
        emergency(&mut input, "burst");
        // 3 cores × 4 = 12 vCPUs, 4 allocated: room for one 8-vCPU medium, not two.
        input.hosts = vec![host("pve-01", 512, 3, 0)];
        input.hosts[0].vcpus_allocated = 4;
        input.pending = pods(4, 3900, 1, 0);
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "medium", "pve-01", 1, ReasonCode::Emergency)]
        );
        assert_eq!(codes_of_unhelpable(&plan), vec![ReasonCode::HostCpu]);
    }

    #[test]
    fn storage_without_room_for_the_disk_refuses_the_vm() {
        let mut input = world();
        emergency(&mut input, "burst");
        for h in &mut input.hosts {
            h.storage_free_gib.insert("local-lvm".into(), 50);
        }
        input.pending = pods(1, 1000, 1, 0);
        let plan = plan(&input);
        assert!(provisions(&plan).is_empty());
        assert_eq!(codes_of_unhelpable(&plan), vec![ReasonCode::HostStorage]);
        let msg = &plan.unhelpable[0].reason.message;
        assert!(
            msg.contains("pve-01: storage local-lvm (VM needs 94 GiB, 50 GiB free)"),
            "{msg}"
        );
    }

    #[test]
    fn new_vms_go_to_the_host_with_the_most_headroom() {
        let mut input = world();
        emergency(&mut input, "burst");
        input.hosts[0].memory_used_mib = 500 * 1024;
        input.pending = pods(1, 1000, 1, 0);
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "small", "pve-02", 1, ReasonCode::Emergency)]
        );
    }

    #[test]
    fn a_gpu_pod_goes_only_to_the_gpu_pool_on_a_host_with_a_free_device() {
        let mut input = world();
        pool_mut(&mut input, "gpu").scale_up.pending_pods = 1;
        input.pending = vec![waited(gpu_pod("train"), 300)];
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("gpu", "gpu", "pve-01", 1, ReasonCode::PendingPods)]
        );
    }

    #[test]
    fn a_gpu_pod_is_unhelpable_when_no_device_is_free() {
        let mut input = world();
        pool_mut(&mut input, "gpu").scale_up.pending_pods = 1;
        input.hosts[0].gpu_free.insert("tesla-t4".into(), 0);
        input.pending = vec![waited(gpu_pod("train"), 300)];
        let plan = plan(&input);
        assert!(provisions(&plan).is_empty());
        assert_eq!(
            unhelpable(&plan),
            vec![("default/train".to_owned(), ReasonCode::HostGpu)]
        );
        assert!(
            plan.unhelpable[0]
                .reason
                .message
                .contains("GPU mapping tesla-t4 (VM needs 1, 0 free)")
        );
    }

    #[test]
    fn a_gpu_pod_without_the_gpu_toleration_fits_no_pool() {
        let mut input = world();
        let mut p = pod("train", 2000, 8);
        p.requests.extended.insert("nvidia.com/gpu".into(), 1);
        input.pending = vec![waited(p, 300)];
        let plan = plan(&input);
        assert_eq!(
            unhelpable(&plan),
            vec![("default/train".to_owned(), ReasonCode::NoPoolFits)]
        );
        let msg = &plan.unhelpable[0].reason.message;
        assert!(
            msg.contains("permanent (medium): Insufficient nvidia.com/gpu"),
            "{msg}"
        );
        assert!(
            msg.contains("gpu (gpu): node had untolerated taint nvidia.com/gpu=true:NoSchedule"),
            "{msg}"
        );
    }

    #[test]
    fn an_exhausted_vmid_range_refuses_new_workers() {
        let mut input = world();
        emergency(&mut input, "burst");
        all_vmids_taken(&mut input);
        input.pending = pods(1, 1000, 1, 0);
        let plan = plan(&input);
        assert_eq!(codes_of_unhelpable(&plan), vec![ReasonCode::VmidRange]);
    }

    #[test]
    fn in_flight_claims_absorb_pending_pods() {
        let mut input = world();
        emergency(&mut input, "burst");
        input
            .claims
            .push(claim("burst-abcde", "burst", "medium", Phase::Provisioning));
        input.pending = pods(2, 3000, 4, 600);
        let plan = plan(&input);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_worker_whose_node_is_ready_but_not_yet_labelled_still_counts_as_on_its_way() {
        // The node turned Ready in the cache, but its labels and taints have
        // not arrived: the pods do not fit it yet, and the claim must not
        // vanish from the capacity on its way, whether it says Joining or
        // already Ready.
        for phase in [Phase::Joining, Phase::Ready] {
            let mut input = world();
            let i = worker(&mut input, "burst-abcde", "burst", 0);
            input.claims[i].phase = phase;
            let node = input.nodes.last_mut().unwrap();
            node.labels = BTreeMap::from([(
                "kubernetes.io/hostname".to_owned(),
                "burst-abcde".to_owned(),
            )]);
            node.taints.clear();
            input.pending = pods(2, 1000, 1, 600);
            let plan = plan(&input);
            assert!(provisions(&plan).is_empty(), "{phase:?}: {plan:?}");
            assert!(plan.unhelpable.is_empty(), "{phase:?}");
        }
        // Once labelled, the node itself is the capacity: a pod too big for
        // it gets a new worker.
        let mut input = world();
        worker(&mut input, "burst-abcde", "burst", 0);
        input.pending = pods(1, 7000, 1, 600);
        assert_eq!(provisions(&plan(&input)).len(), 1);
    }

    #[test]
    fn free_room_on_an_existing_node_absorbs_pending_pods() {
        let mut input = world();
        worker(&mut input, "burst-aaaaa", "burst", 0);
        input.pending = pods(3, 1000, 1, 600);
        let plan = plan(&input);
        assert!(provisions(&plan).is_empty());
        assert!(plan.unhelpable.is_empty() && plan.waiting.is_empty());
    }

    #[test]
    fn batch_size_caps_one_plan_and_the_rest_wait_for_the_next() {
        let mut input = world();
        emergency(&mut input, "burst");
        input.pending = pods(5, 3000, 1, 0);
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "small", "pve-02", 3, ReasonCode::Emergency)]
        );
        assert_eq!(plan.waiting.len(), 2);
        assert_eq!(plan.waiting[0].reason.code, ReasonCode::BatchSize);
    }

    struct Window {
        name: &'static str,
        pods: usize,
        waited_secs: i64,
        emergency: bool,
        expect: Option<ReasonCode>,
    }

    #[test]
    fn the_pending_pods_trigger_fires_only_after_its_window() {
        let table = [
            Window {
                name: "five_pods_waiting_a_minute_do_not_trigger_yet",
                pods: 5,
                waited_secs: 60,
                emergency: false,
                expect: None,
            },
            Window {
                name: "four_pods_waiting_five_minutes_are_too_few",
                pods: 4,
                waited_secs: 300,
                emergency: false,
                expect: None,
            },
            Window {
                name: "a_remainder_below_the_threshold_triggers_after_five_windows",
                pods: 1,
                waited_secs: 600,
                emergency: false,
                expect: Some(ReasonCode::PendingPods),
            },
            Window {
                name: "five_pods_waiting_the_full_window_trigger_now",
                pods: 5,
                waited_secs: 120,
                emergency: false,
                expect: Some(ReasonCode::PendingPods),
            },
            Window {
                name: "an_emergency_skips_the_window",
                pods: 1,
                waited_secs: 0,
                emergency: true,
                expect: Some(ReasonCode::Emergency),
            },
        ];
        for case in table {
            let mut input = world();
            if case.emergency {
                emergency(&mut input, "burst");
            }
            input.pending = pods(case.pods, 500, 1, case.waited_secs);
            let plan = plan(&input);
            let got = plan.actions.first().map(|a| a.reason().code);
            assert_eq!(got, case.expect, "{}", case.name);
            if case.expect.is_none() {
                assert_eq!(plan.waiting.len(), case.pods, "{}", case.name);
                assert!(
                    plan.waiting
                        .iter()
                        .all(|w| w.reason.code == ReasonCode::TriggerWindow && w.pool == "burst"),
                    "{}",
                    case.name
                );
                assert!(plan.unhelpable.is_empty(), "{}", case.name);
            }
        }
    }

    #[test]
    fn pods_spill_from_a_full_permanent_pool_to_burst() {
        let mut input: PlanInput = world();
        for i in 0..6 {
            input.claims.push(claim(
                &format!("perm-{i}"),
                "permanent",
                "medium",
                Phase::Ready,
            ));
        }
        input.pending = (0..5)
            .map(|i| waited(burst(pod(&format!("p{i}"), 1000, 1)), 600))
            .collect();
        let plan = plan(&input);
        // One medium holds all five: less of the host than two smalls.
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "medium", "pve-02", 1, ReasonCode::PendingPods)]
        );
        assert!(plan.unhelpable.is_empty());
    }
}

mod scale_down {
    use super::fixtures::*;
    use super::*;
    use jiff::SignedDuration;
    use tidepool_core::lifecycle::Phase;
    use tidepool_core::planner::{Action, Plan, PlanInput, PoolState, ReasonCode, plan};

    fn ago(mins: i64) -> Timestamp {
        t0() - SignedDuration::from_mins(mins)
    }

    /// (worker, drain, reason code) of every removal.
    fn removals(plan: &Plan) -> Vec<(String, bool, ReasonCode)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove {
                    worker,
                    drain,
                    reason,
                    ..
                } => Some((worker.clone(), *drain, reason.code)),
                Action::Provision { .. } => None,
            })
            .collect()
    }

    fn held(plan: &Plan) -> Vec<(String, ReasonCode)> {
        plan.held
            .iter()
            .map(|h| (h.worker.clone(), h.reason.code))
            .collect()
    }

    fn r(worker: &str, drain: bool, code: ReasonCode) -> (String, bool, ReasonCode) {
        (worker.into(), drain, code)
    }

    fn h(worker: &str, code: ReasonCode) -> (String, ReasonCode) {
        (worker.into(), code)
    }

    fn expired(input: &mut PlanInput, name: &str, pool: &str, workload: usize, mins_ago: i64) {
        let i = worker(input, name, pool, workload);
        input.claims[i].expires_at = Some(ago(mins_ago));
    }

    fn idle(input: &mut PlanInput, name: &str, pool: &str, mins: i64) {
        let i = worker(input, name, pool, 0);
        input.claims[i].idle_since = Some(ago(mins));
    }

    fn annotate(input: &mut PlanInput, node: &str, key: &str, value: &str) {
        let n = input.nodes.iter_mut().find(|n| n.name == node).unwrap();
        let p = n.pods.iter_mut().find(|p| !p.daemon_set).unwrap();
        Arc::make_mut(p).do_not_disrupt =
            annotations_block_disruption(std::iter::once((key, value)));
    }

    #[test]
    fn an_idle_burst_worker_past_its_ttl_is_removed_at_once() {
        let mut input = world();
        expired(&mut input, "burst-aaaaa", "burst", 0, 5);
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![r("burst-aaaaa", false, ReasonCode::TtlExpiredIdle)]
        );
        assert!(
            plan.actions[0]
                .reason()
                .message
                .contains("TTL expired 300s ago")
        );
    }

    #[test]
    fn a_busy_burst_worker_past_its_ttl_is_drained_first() {
        let mut input = world();
        expired(&mut input, "burst-aaaaa", "burst", 2, 5);
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![r("burst-aaaaa", true, ReasonCode::TtlExpiredBusy)]
        );
        assert!(
            plan.actions[0]
                .reason()
                .message
                .contains("2 pod(s) run on it")
        );
    }

    #[test]
    fn a_worker_idle_past_the_idle_timeout_is_removed() {
        let mut input = world();
        idle(&mut input, "burst-aaaaa", "burst", 31);
        idle(&mut input, "burst-bbbbb", "burst", 10);
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![r("burst-aaaaa", false, ReasonCode::IdleTimeout)]
        );
        assert!(plan.held.is_empty());
    }

    #[test]
    fn a_permanent_worker_is_never_chosen_whatever_its_ttl_or_idleness() {
        let mut input = world();
        expired(&mut input, "perm-aaaaa", "permanent", 0, 600);
        let i = input.claims.len() - 1;
        input.claims[i].idle_since = Some(ago(600));
        let plan = plan(&input);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn do_not_disrupt_and_safe_to_evict_false_hold_an_expired_worker() {
        let mut input = world();
        expired(&mut input, "burst-aaaaa", "burst", 1, 5);
        annotate(
            &mut input,
            "burst-aaaaa",
            "karpenter.sh/do-not-disrupt",
            "true",
        );
        expired(&mut input, "burst-bbbbb", "burst", 1, 5);
        annotate(
            &mut input,
            "burst-bbbbb",
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
            "false",
        );
        let plan = plan(&input);
        assert!(removals(&plan).is_empty());
        assert_eq!(
            held(&plan),
            vec![
                h("burst-aaaaa", ReasonCode::DoNotDisrupt),
                h("burst-bbbbb", ReasonCode::DoNotDisrupt)
            ]
        );
        assert!(
            plan.held[0]
                .reason
                .message
                .contains("pod default/burst-aaaaa-app-0 forbids disruption")
        );
    }

    #[test]
    fn at_most_max_fraction_of_a_pool_goes_per_batch_oldest_expiry_first() {
        let mut input = world();
        for i in 0..10 {
            expired(&mut input, &format!("burst-{i:05}"), "burst", 0, 100 - i);
        }
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![
                r("burst-00000", false, ReasonCode::TtlExpiredIdle),
                r("burst-00001", false, ReasonCode::TtlExpiredIdle),
            ]
        );
        assert_eq!(plan.held.len(), 8);
        assert!(
            plan.held
                .iter()
                .all(|h| h.reason.code == ReasonCode::MaxFraction)
        );
    }

    #[test]
    fn max_concurrent_limits_drains_counting_those_already_running() {
        let mut input = world();
        pool_mut(&mut input, "burst").scale_down.max_fraction = 1.0;
        expired(&mut input, "burst-aaaaa", "burst", 1, 50);
        expired(&mut input, "burst-bbbbb", "burst", 1, 40);
        expired(&mut input, "burst-ccccc", "burst", 0, 30);
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![
                r("burst-aaaaa", true, ReasonCode::TtlExpiredBusy),
                r("burst-ccccc", false, ReasonCode::TtlExpiredIdle),
            ]
        );
        assert_eq!(
            held(&plan),
            vec![h("burst-bbbbb", ReasonCode::MaxConcurrent)]
        );

        input
            .claims
            .push(claim("burst-ddddd", "burst", "small", Phase::Draining));
        let plan2 = tidepool_core::planner::plan(&input);
        assert_eq!(
            removals(&plan2),
            vec![r("burst-ccccc", false, ReasonCode::TtlExpiredIdle)]
        );
    }

    #[test]
    fn the_scale_down_interval_holds_the_next_batch() {
        let mut input = world();
        expired(&mut input, "burst-aaaaa", "burst", 0, 5);
        input.pool_state.insert(
            "burst".into(),
            PoolState {
                emergency: false,
                last_scale_down: Some(ago(10)),
                ..PoolState::default()
            },
        );
        let plan = plan(&input);
        assert!(removals(&plan).is_empty());
        assert_eq!(
            held(&plan),
            vec![h("burst-aaaaa", ReasonCode::ScaleDownInterval)]
        );
        assert!(
            plan.held[0]
                .reason
                .message
                .contains("started 600s ago; the interval is 1800s")
        );
    }

    #[test]
    fn a_pool_never_shrinks_below_min_nodes() {
        let mut input = world();
        pool_mut(&mut input, "burst").limits.min_nodes = 1;
        expired(&mut input, "burst-aaaaa", "burst", 0, 5);
        let plan = plan(&input);
        assert_eq!(held(&plan), vec![h("burst-aaaaa", ReasonCode::MinNodes)]);
    }

    #[test]
    fn a_protected_name_is_never_removed() {
        let mut input = world();
        expired(&mut input, "permanent-oops", "burst", 0, 5);
        let plan = plan(&input);
        assert_eq!(
            held(&plan),
            vec![h("permanent-oops", ReasonCode::Protected)]
        );
    }

    #[test]
    fn an_idle_worker_that_pending_pods_would_use_is_kept() {
        let mut input = world();
        idle(&mut input, "burst-aaaaa", "burst", 60);
        input.pending = pods(1, 500, 1, 5);
        let plan = plan(&input);
        assert!(removals(&plan).is_empty());
        assert_eq!(
            held(&plan),
            vec![h("burst-aaaaa", ReasonCode::AbsorbsPendingPods)]
        );
    }
}

mod properties {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use tidepool_core::lifecycle::Phase;
    use tidepool_core::planner::{Action, PlanInput, plan};
    use tidepool_core::pool::PoolUsage;
    use tidepool_core::sched::fits;

    #[derive(Clone, Debug)]
    struct PodShape {
        cpu_milli: u64,
        mem_mib: u64,
        target: u8,
        gpu: bool,
        waited: i64,
    }

    fn pod_shape() -> impl Strategy<Value = PodShape> {
        (
            100u64..17_000,
            64u64..34_000,
            0u8..4,
            prop::bool::weighted(0.1),
            0i64..400,
        )
            .prop_map(|(cpu_milli, mem_mib, target, gpu, waited)| PodShape {
                cpu_milli,
                mem_mib,
                target,
                gpu,
                waited,
            })
    }

    fn to_pod(i: usize, s: &PodShape) -> PodSpec {
        let mut p = pod(&format!("p{i:04}"), s.cpu_milli, 0);
        p.requests.memory_bytes = s.mem_mib << 20;
        p = match s.target {
            0 => p,
            1 => burst(p),
            2 => tolerating(burst(p), "workload-size", "large"),
            _ => tolerating(p, "workload-type", "spot"),
        };
        if s.gpu {
            p = tolerating(p, "nvidia.com/gpu", "true");
            p.requests.extended.insert("nvidia.com/gpu".into(), 1);
        }
        p
    }

    #[derive(Clone, Debug)]
    struct HostShape {
        memory_gib: u64,
        used_gib: u64,
        cores: u32,
        vcpus: u64,
        storage_gib: u64,
        gpus: u32,
    }

    fn host_shape() -> impl Strategy<Value = HostShape> {
        (
            8u64..300,
            0u64..100,
            1u32..32,
            0u64..64,
            0u64..3000,
            0u32..3,
        )
            .prop_map(|(memory_gib, used_gib, cores, vcpus, storage_gib, gpus)| {
                HostShape {
                    memory_gib,
                    used_gib,
                    cores,
                    vcpus,
                    storage_gib,
                    gpus,
                }
            })
    }

    fn build(
        pods: &[PodShape],
        hosts: &[HostShape],
        existing: &[(u8, u8)],
        emergency_all: bool,
    ) -> PlanInput {
        let mut input = world();
        input.hosts = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let mut snap = host(&format!("pve-0{}", i + 1), h.memory_gib, h.cores, h.gpus);
                snap.memory_used_mib = h.used_gib * 1024;
                snap.vcpus_allocated = h.vcpus;
                snap.storage_free_gib
                    .insert("local-lvm".into(), h.storage_gib);
                snap
            })
            .collect();
        input.pending = pods
            .iter()
            .enumerate()
            .map(|(i, s)| waited(to_pod(i, s), s.waited))
            .collect();
        let pools = ["permanent", "burst", "spot", "gpu"];
        for (i, (pool, phase)) in existing.iter().enumerate() {
            let pool = pools[usize::from(*pool) % 4];
            let size = input.config.pool(pool).unwrap().sizes[0].clone();
            let phase =
                [Phase::Requested, Phase::Provisioning, Phase::Ready][usize::from(*phase) % 3];
            let mut c = claim(&format!("{pool}-x{i:04}"), pool, &size, phase);
            c.host = Some("pve-01".into());
            input.claims.push(c);
        }
        if emergency_all {
            for pool in pools {
                emergency(&mut input, pool);
            }
        }
        input
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        #[test]
        fn a_plan_never_exceeds_pool_limits_or_host_headroom(
            pods in prop::collection::vec(pod_shape(), 0..60),
            hosts in prop::collection::vec(host_shape(), 1..3),
            existing in prop::collection::vec((0u8..4, 0u8..3), 0..12),
            emergency_all in any::<bool>(),
        ) {
            let input = build(&pods, &hosts, &existing, emergency_all);
            let cfg = &input.config;
            let plan = plan(&input);
            let pve = &cfg.providers["pve"];
            let mut usage: BTreeMap<String, PoolUsage> = BTreeMap::new();
            for c in input.claims.iter().filter(|c| c.phase.counts_toward_pool()) {
                let u = usage.entry(c.pool.clone()).or_default();
                let size = &cfg.size(&c.size).unwrap().size;
                u.nodes += 1;
                u.cpu_cores += u64::from(size.vcpu);
                u.memory_mib += size.memory_mib;
            }
            // Host use per dimension: [pending claims, this plan's VMs].
            let mut use_of: BTreeMap<(String, usize), [u64; 2]> = BTreeMap::new();
            let mut add_vm = |host: &str, size: &tidepool_core::Size, n: u64, by_plan: usize| {
                let disk = (size.disk_gb as f64 * 1e9 / f64::from(1u32 << 30)).ceil() as u64;
                let dims = [
                    (size.memory_mib + pve.vm_memory_overhead_mib) * n,
                    u64::from(size.vcpu) * n,
                    disk * n,
                    u64::from(size.gpu.as_ref().map_or(0, |g| g.count)) * n,
                ];
                for (d, v) in dims.into_iter().enumerate() {
                    use_of.entry((host.to_owned(), d)).or_default()[by_plan] += v;
                }
            };
            for c in input.claims.iter().filter(|c| matches!(c.phase, Phase::Requested | Phase::Provisioning)) {
                add_vm(c.host.as_deref().unwrap(), &cfg.size(&c.size).unwrap().size, 1, 0);
            }
            let mut total_new = 0u64;
            for a in &plan.actions {
                if let Action::Provision { pool, size, host, count, .. } = a {
                    let p = cfg.pool(pool).unwrap();
                    let s = &cfg.size(size).unwrap().size;
                    let u = usage.entry(pool.clone()).or_default();
                    prop_assert!(p.limits.check_add(*u, s, *count).is_ok(), "pool {pool} over its limits");
                    u.nodes += count;
                    u.cpu_cores += u64::from(s.vcpu) * u64::from(*count);
                    u.memory_mib += s.memory_mib * u64::from(*count);
                    let allowed = if p.hosts.is_empty() { &pve.hosts } else { &p.hosts };
                    prop_assert!(allowed.contains(host), "pool {pool} placed on {host}");
                    add_vm(host, s, u64::from(*count), 1);
                    total_new += u64::from(*count);
                }
            }
            for h in &input.hosts {
                let capacity = [
                    i128::from(h.memory_total_mib) - i128::from(h.memory_used_mib) - i128::from(pve.host_memory_reserve_mib),
                    (f64::from(h.cores) * pve.cpu_overcommit - h.vcpus_allocated as f64).floor() as i128,
                    i128::from(h.storage_free_gib["local-lvm"]),
                    i128::from(h.gpu_free.get("tesla-t4").copied().unwrap_or(0)),
                ];
                for (d, cap) in capacity.into_iter().enumerate() {
                    let [pending, added] = use_of.get(&(h.name.clone(), d)).copied().unwrap_or_default();
                    if added > 0 {
                        prop_assert!(i128::from(pending + added) <= cap, "host {} dimension {d}: {pending} + {added} > {cap}", h.name);
                    }
                }
            }
            let requested = input.claims.iter().filter(|c| c.phase == Phase::Requested).count() as u64;
            prop_assert!(total_new + requested <= 51, "VMID range overrun");
        }

        #[test]
        fn with_room_everywhere_every_pod_that_fits_some_pool_gets_capacity(
            pods in prop::collection::vec(pod_shape(), 1..80),
        ) {
            let mut input = build(&pods, &[], &[], true);
            input.hosts = vec![host("pve-01", 100_000, 10_000, 1000), host("pve-02", 100_000, 10_000, 0)];
            input.config.providers.get_mut("pve").unwrap().vmid_upper = 100_000;
            for pool in &mut input.config.pools {
                pool.limits.max_nodes = 10_000;
                pool.limits.cpu_cores = None;
                pool.limits.memory_mib = None;
                pool.scale_up.batch_size = 10_000;
            }
            let cfg = &input.config;
            let plan = plan(&input);
            for pp in &input.pending {
                let fits_somewhere = cfg.pools.iter().any(|pool| pool.sizes.iter().any(|s| {
                    fits(&pp.pod, &NodeSnapshot::hypothetical(cfg, pool, cfg.size(s).unwrap(), "n", input.now)).is_ok()
                }));
                let key = pp.pod.key();
                let left_out = plan.unhelpable.iter().any(|u| u.pod == key) || plan.waiting.iter().any(|w| w.pod == key);
                prop_assert_eq!(left_out, !fits_somewhere, "pod {} fits somewhere: {}; plan {:?}", key, fits_somewhere, plan.unhelpable);
            }
        }

        #[test]
        fn with_room_everywhere_a_pool_asks_no_fewer_workers_than_its_pods_need_and_none_empty(
            pods in prop::collection::vec(pod_shape(), 1..80),
        ) {
            let mut input = build(&pods, &[], &[], true);
            input.hosts = vec![host("pve-01", 100_000, 10_000, 1000), host("pve-02", 100_000, 10_000, 0)];
            input.config.providers.get_mut("pve").unwrap().vmid_upper = 100_000;
            for pool in &mut input.config.pools {
                pool.limits.max_nodes = 10_000;
                pool.limits.cpu_cores = None;
                pool.limits.memory_mib = None;
                pool.scale_up.batch_size = 10_000;
            }
            let cfg = &input.config;
            let plan = plan(&input);
            for pool in &cfg.pools {
                let empty = |size: &String| {
                    NodeSnapshot::hypothetical(cfg, pool, cfg.size(size).unwrap(), "n", input.now)
                };
                // The pods the planner offers this pool: the first pool with
                // a size that holds them.
                let mine: Vec<&PodSpec> = input
                    .pending
                    .iter()
                    .map(|pp| &pp.pod)
                    .filter(|pod| {
                        cfg.pools
                            .iter()
                            .find(|q| q.sizes.iter().any(|s| {
                                fits(pod, &NodeSnapshot::hypothetical(cfg, q, cfg.size(s).unwrap(), "n", input.now)).is_ok()
                            }))
                            .is_some_and(|q| q.name == pool.name)
                    })
                    .collect();
                let asked: u64 = plan
                    .actions
                    .iter()
                    .map(|a| match a {
                        Action::Provision { pool: p, count, .. } if *p == pool.name => u64::from(*count),
                        _ => 0,
                    })
                    .sum();
                // No worker offers more than the pool's largest allocatable
                // of each resource.
                let most = |f: &dyn Fn(&NodeSnapshot) -> u64| {
                    pool.sizes.iter().map(|s| f(&empty(s))).max().unwrap_or(0).max(1)
                };
                let gpus = |p: &PodSpec| p.requests.extended.get("nvidia.com/gpu").copied().unwrap_or(0);
                let need = [
                    mine.iter().map(|p| p.requests.cpu_milli).sum::<u64>().div_ceil(most(&|n| n.allocatable.cpu_milli)),
                    mine.iter().map(|p| p.requests.memory_bytes).sum::<u64>().div_ceil(most(&|n| n.allocatable.memory_bytes)),
                    (mine.len() as u64).div_ceil(most(&|n| u64::from(n.allocatable.pods))),
                    mine.iter().map(|p| gpus(p)).sum::<u64>().div_ceil(most(&|n| n.allocatable.extended.get("nvidia.com/gpu").copied().unwrap_or(0))),
                ];
                let bound = need.into_iter().max().unwrap();
                prop_assert!(asked >= bound, "pool {}: {} workers for pods needing {}", pool.name, asked, bound);
                prop_assert!(asked <= mine.len() as u64, "pool {}: {} workers for {} pods", pool.name, asked, mine.len());
            }
        }

        #[test]
        fn a_permanent_worker_is_never_removed(
            workers in prop::collection::vec((0u8..4, 0usize..3, 0i64..600, 0i64..600, any::<bool>()), 1..20),
            last in prop::option::of(0i64..120),
        ) {
            let mut input = world();
            let pools = ["permanent", "burst", "spot", "gpu"];
            for (i, (pool, load, expired_mins, idle_mins, dnd)) in workers.iter().enumerate() {
                let pool = pools[usize::from(*pool)];
                let name = format!("{pool}-w{i:04}");
                let c = worker(&mut input, &name, pool, *load);
                input.claims[c].expires_at = Some(t0() - jiff::SignedDuration::from_mins(*expired_mins - 300));
                input.claims[c].idle_since = Some(t0() - jiff::SignedDuration::from_mins(*idle_mins));
                if *dnd && *load > 0 {
                    let n = input.nodes.last_mut().unwrap();
                    Arc::make_mut(&mut n.pods[1]).do_not_disrupt = true;
                }
            }
            if let Some(mins) = last {
                input.pool_state.insert("burst".into(), tidepool_core::planner::PoolState { emergency: false, last_scale_down: Some(t0() - jiff::SignedDuration::from_mins(mins)), ..Default::default() });
            }
            let plan = plan(&input);
            for a in &plan.actions {
                if let Action::Remove { worker, pool, .. } = a {
                    prop_assert_ne!(pool.as_str(), "permanent");
                    prop_assert!(!worker.starts_with("permanent"));
                    let node = input.nodes.iter().find(|n| &n.name == worker).unwrap();
                    prop_assert!(!node.pods.iter().any(|p| p.blocks_disruption()));
                }
            }
        }
    }
}

mod pool_triggers {
    use super::fixtures::*;
    use super::*;
    use jiff::SignedDuration;
    use tidepool_core::config::{Pressure, Scheduled};
    use tidepool_core::cron::Cron;
    use tidepool_core::lifecycle::Phase;
    use tidepool_core::planner::triggers::{PressureKind, pressure, pressure_above};
    use tidepool_core::planner::{Action, Plan, PlanInput, PoolState, ReasonCode, plan};

    /// (pool, size, count, reason code) of every provision.
    fn provisions(plan: &Plan) -> Vec<(String, String, u32, ReasonCode)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Provision {
                    pool,
                    size,
                    count,
                    reason,
                    ..
                } => Some((pool.clone(), size.clone(), *count, reason.code)),
                Action::Remove { .. } => None,
            })
            .collect()
    }

    fn p(
        pool: &str,
        size: &str,
        count: u32,
        code: ReasonCode,
    ) -> (String, String, u32, ReasonCode) {
        (pool.into(), size.into(), count, code)
    }

    fn schedule(input: &mut PlanInput, pool: &str, cron: &str, min: u32, mins: u64) {
        pool_mut(input, pool).schedule = vec![Scheduled {
            cron: Cron::parse(cron).unwrap(),
            min_nodes: min,
            duration: std::time::Duration::from_secs(mins * 60),
        }];
    }

    /// Loads a Ready worker's node to `cpu` and `mem` of its allocatable.
    fn load(input: &mut PlanInput, name: &str, cpu: f64, mem: f64) {
        let n = input.nodes.iter_mut().find(|n| n.name == name).unwrap();
        n.requested.cpu_milli = (n.allocatable.cpu_milli as f64 * cpu) as u64;
        n.requested.memory_bytes = (n.allocatable.memory_bytes as f64 * mem) as u64;
    }

    fn since(input: &mut PlanInput, pool: &str, cpu_mins: Option<i64>, mem_mins: Option<i64>) {
        input.pool_state.insert(
            pool.into(),
            PoolState {
                cpu_pressure_since: cpu_mins.map(|m| t0() - SignedDuration::from_mins(m)),
                memory_pressure_since: mem_mins.map(|m| t0() - SignedDuration::from_mins(m)),
                ..PoolState::default()
            },
        );
    }

    /// What the capacity report (the planner's ledger) says of pve-01.
    fn pve01_capacity(input: &PlanInput) -> tidepool_core::planner::capacity::HostCapacity {
        tidepool_core::planner::capacity::report(input)
            .hosts
            .into_iter()
            .find(|h| h.name == "pve-01")
            .unwrap()
    }

    #[test]
    fn a_provisioning_vm_the_host_already_lists_is_not_counted_twice() {
        let free_on_pve01 = |input: &PlanInput| pve01_capacity(input).memory_free_mib;
        let mut input = world();
        input
            .claims
            .push(claim("burst-fly", "burst", "medium", Phase::Provisioning));
        let medium = input.config.size("medium").unwrap().size.memory_mib;
        let cost =
            i64::try_from(medium + input.config.providers["pve"].vm_memory_overhead_mib).unwrap();
        // Not cloned yet: the host does not count it, the ledger does.
        let before_clone = free_on_pve01(&input);
        // Cloned: the host counts its memory (running or not) and lists it.
        let h = input.hosts.iter_mut().find(|h| h.name == "pve-01").unwrap();
        h.memory_used_mib += medium;
        h.vms.insert("burst-fly".into(), false);
        assert_eq!(
            free_on_pve01(&input),
            before_clone + cost - i64::try_from(medium).unwrap()
        );
        // Running: nothing of it is taken off again either.
        let h = input.hosts.iter_mut().find(|h| h.name == "pve-01").unwrap();
        h.vms.insert("burst-fly".into(), true);
        assert_eq!(
            free_on_pve01(&input),
            before_clone + cost - i64::try_from(medium).unwrap()
        );
    }

    #[test]
    fn a_cloned_gpu_vm_keeps_its_device_promised_until_it_runs() {
        let gpu_free = |input: &PlanInput| {
            pve01_capacity(input)
                .gpu_free
                .get("tesla-t4")
                .copied()
                .unwrap_or(0)
        };
        let mut input = world();
        let gpu_size = input.config.pool("gpu").unwrap().sizes[0].clone();
        input
            .claims
            .push(claim("gpu-fly", "gpu", &gpu_size, Phase::Provisioning));
        let promised = gpu_free(&input);
        // Cloned but stopped: Proxmox counts no device for it, the ledger does.
        let h = input.hosts.iter_mut().find(|h| h.name == "pve-01").unwrap();
        h.vms.insert("gpu-fly".into(), false);
        assert_eq!(gpu_free(&input), promised);
        // Running: the host's own count now holds it (one device fewer).
        let h = input.hosts.iter_mut().find(|h| h.name == "pve-01").unwrap();
        h.vms.insert("gpu-fly".into(), true);
        *h.gpu_free.get_mut("tesla-t4").unwrap() -= 1;
        assert_eq!(gpu_free(&input), promised);
    }

    #[test]
    fn an_active_schedule_provisions_up_to_its_minimum_counting_in_flight_workers() {
        // t0 is Friday 08:00 UTC; the entry fired at 07:30 and lasts 2 h.
        let mut input = world();
        schedule(&mut input, "burst", "30 7 * * 1-5", 3, 120);
        input
            .claims
            .push(claim("burst-fly", "burst", "small", Phase::Provisioning));
        let plan = plan(&input);
        assert_eq!(
            provisions(&plan),
            vec![p("burst", "small", 2, ReasonCode::Scheduled)]
        );
        assert!(plan.actions[0].reason().message.contains("`30 7 * * 1-5`"));
    }

    #[test]
    fn a_schedule_is_inactive_before_it_fires_and_after_its_duration() {
        for (cron, mins) in [("30 8 * * *", 120), ("0 5 * * *", 120), ("0 8 * * 6", 60)] {
            let mut input = world();
            schedule(&mut input, "burst", cron, 3, mins);
            assert!(provisions(&plan(&input)).is_empty(), "{cron}");
        }
        // Its last minute still counts.
        let mut input = world();
        schedule(&mut input, "burst", "0 6 * * *", 1, 120);
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("burst", "small", 1, ReasonCode::Scheduled)]
        );
    }

    #[test]
    fn a_schedule_respects_batch_size_and_limits() {
        let mut input = world();
        schedule(&mut input, "burst", "0 8 * * *", 8, 60);
        let plan1 = plan(&input);
        assert_eq!(
            provisions(&plan1),
            vec![p("burst", "small", 3, ReasonCode::Scheduled)]
        );
        assert_eq!(plan1.deferred.len(), 1);
        assert_eq!(plan1.deferred[0].wanted, ReasonCode::Scheduled);
        assert_eq!(plan1.deferred[0].reason.code, ReasonCode::BatchSize);

        let mut input = world();
        schedule(&mut input, "spot", "0 8 * * *", 6, 60);
        pool_mut(&mut input, "spot").scale_up.batch_size = 10;
        let plan2 = plan(&input);
        assert_eq!(
            provisions(&plan2),
            vec![p("spot", "small", 4, ReasonCode::Scheduled)]
        );
        assert_eq!(plan2.deferred[0].reason.code, ReasonCode::MaxNodes);
    }

    #[test]
    fn an_active_schedule_holds_scale_down_at_its_minimum() {
        let mut input = world();
        schedule(&mut input, "burst", "0 8 * * *", 1, 60);
        let i = worker(&mut input, "burst-aaaaa", "burst", 0);
        input.claims[i].expires_at = Some(t0() - SignedDuration::from_mins(5));
        let plan = plan(&input);
        assert!(plan.actions.is_empty());
        assert_eq!(plan.held.len(), 1);
        assert_eq!(plan.held[0].wanted, ReasonCode::TtlExpiredIdle);
        assert_eq!(plan.held[0].reason.code, ReasonCode::Scheduled);
    }

    #[test]
    fn pressure_is_requests_over_allocatable_of_the_pools_ready_nodes() {
        let mut input = world();
        worker(&mut input, "burst-a", "burst", 0);
        worker(&mut input, "burst-b", "burst", 0);
        worker(&mut input, "spot-a", "spot", 0);
        load(&mut input, "burst-a", 1.0, 0.5);
        load(&mut input, "burst-b", 0.7, 0.5);
        load(&mut input, "spot-a", 0.0, 0.0);
        let burst = input.config.pool("burst").unwrap().clone();
        let cpu = pressure(&input, &burst, PressureKind::Cpu).unwrap();
        assert!((cpu - 0.85).abs() < 1e-3, "{cpu}");
        assert!(pressure_above(&input, &burst, PressureKind::Cpu));
        assert!(!pressure_above(&input, &burst, PressureKind::Memory));
        let gpu = input.config.pool("gpu").unwrap().clone();
        assert_eq!(pressure(&input, &gpu, PressureKind::Cpu), None);
    }

    #[test]
    fn cpu_pressure_held_for_its_window_adds_one_worker() {
        let mut input = world();
        worker(&mut input, "burst-a", "burst", 0);
        load(&mut input, "burst-a", 0.9, 0.1);
        since(&mut input, "burst", Some(6), None);
        let plan1 = plan(&input);
        assert_eq!(
            provisions(&plan1),
            vec![p("burst", "small", 1, ReasonCode::CpuPressure)]
        );
        assert!(plan1.actions[0].reason().message.contains("CPU requests"));

        // Not long enough yet.
        since(&mut input, "burst", Some(4), None);
        assert!(provisions(&plan(&input)).is_empty());

        // Above for long enough, but the figure fell under the threshold.
        load(&mut input, "burst-a", 0.5, 0.1);
        since(&mut input, "burst", Some(6), None);
        assert!(provisions(&plan(&input)).is_empty());
    }

    #[test]
    fn memory_pressure_adds_one_worker_unless_one_is_on_its_way() {
        let mut input = world();
        worker(&mut input, "burst-a", "burst", 0);
        load(&mut input, "burst-a", 0.1, 0.9);
        since(&mut input, "burst", None, Some(10));
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("burst", "small", 1, ReasonCode::MemoryPressure)]
        );
        input
            .claims
            .push(claim("burst-fly", "burst", "small", Phase::Joining));
        let plan2 = plan(&input);
        assert!(provisions(&plan2).is_empty());
        assert_eq!(plan2.deferred[0].wanted, ReasonCode::MemoryPressure);
        assert_eq!(plan2.deferred[0].reason.code, ReasonCode::InFlight);
    }

    #[test]
    fn a_custom_pressure_threshold_is_honoured() {
        let mut input = world();
        pool_mut(&mut input, "spot").scale_up.cpu_pressure = Some(Pressure {
            threshold: 0.5,
            for_duration: std::time::Duration::from_secs(60),
        });
        worker(&mut input, "spot-a", "spot", 0);
        load(&mut input, "spot-a", 0.6, 0.0);
        since(&mut input, "spot", Some(1), None);
        assert_eq!(
            provisions(&plan(&input)),
            vec![p("spot", "small", 1, ReasonCode::CpuPressure)]
        );
    }

    #[test]
    fn a_permanent_pool_above_its_utilization_target_adds_one_worker() {
        let mut input = world();
        for name in ["perm-a", "perm-b", "perm-c"] {
            worker(&mut input, name, "permanent", 0);
            load(&mut input, name, 0.85, 0.3);
        }
        let plan1 = plan(&input);
        assert_eq!(
            provisions(&plan1),
            vec![p("permanent", "medium", 1, ReasonCode::Utilization)]
        );
        assert!(plan1.actions[0].reason().message.contains("85% utilized"));
        for name in ["perm-a", "perm-b", "perm-c"] {
            load(&mut input, name, 0.7, 0.3);
        }
        assert!(provisions(&plan(&input)).is_empty());
    }
}

mod spot_preemption {
    use super::fixtures::*;
    use super::*;
    use tidepool_core::lifecycle::Phase;
    use tidepool_core::planner::{Action, Plan, PlanInput, ReasonCode, plan};

    /// One host, just short of the memory for a permanent medium worker.
    fn full(input: &mut PlanInput) {
        let prov = input.config.providers["pve"].clone();
        let medium = input.config.size("medium").unwrap().size.memory_mib;
        let mut h = host("pve-01", 512, 64, 0);
        h.memory_used_mib =
            512 * 1024 - prov.host_memory_reserve_mib - (medium + prov.vm_memory_overhead_mib) + 1;
        input.hosts = vec![h];
        emergency(input, "permanent");
        let mut p = pod("db-0", 1000, 2);
        Arc::make_mut(&mut p.node_selector).insert("node-pool".into(), "permanent".into());
        input.pending = vec![waited(p, 0)];
    }

    fn removals(plan: &Plan) -> Vec<(String, bool, ReasonCode)> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Remove {
                    worker,
                    drain,
                    reason,
                    ..
                } => (worker.clone(), *drain, reason.code),
                Action::Provision { pool, reason, .. } => {
                    (format!("provision {pool}"), false, reason.code)
                }
            })
            .collect()
    }

    #[test]
    fn the_fewest_spot_workers_are_drained_and_the_permanent_worker_waits() {
        let mut input = world();
        full(&mut input);
        worker(&mut input, "spot-a", "spot", 1);
        worker(&mut input, "spot-b", "spot", 1);
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![("spot-a".to_owned(), true, ReasonCode::SpotPreemption)]
        );
        let msg = &plan.actions[0].reason().message;
        assert!(
            msg.contains("default/db-0") && msg.contains("pve-01"),
            "{msg}"
        );
        assert_eq!(plan.waiting.len(), 1);
        assert_eq!(plan.waiting[0].pod, "default/db-0");
        assert_eq!(plan.waiting[0].pool, "permanent");
        assert_eq!(plan.waiting[0].reason.code, ReasonCode::SpotPreemption);
        assert!(plan.unhelpable.is_empty());
    }

    #[test]
    fn a_spot_worker_already_leaving_is_not_doubled_by_another() {
        let mut input = world();
        full(&mut input);
        input
            .claims
            .push(claim("spot-a", "spot", "small", Phase::Draining));
        worker(&mut input, "spot-b", "spot", 1);
        let plan = plan(&input);
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
        assert_eq!(plan.waiting[0].reason.code, ReasonCode::SpotPreemption);
    }

    #[test]
    fn a_spot_worker_whose_pod_forbids_disruption_is_skipped() {
        let mut input = world();
        full(&mut input);
        worker(&mut input, "spot-a", "spot", 1);
        worker(&mut input, "spot-b", "spot", 1);
        let n = input.nodes.iter_mut().find(|n| n.name == "spot-a").unwrap();
        let p = n.pods.iter_mut().find(|p| !p.daemon_set).unwrap();
        Arc::make_mut(p).do_not_disrupt = true;
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![("spot-b".to_owned(), true, ReasonCode::SpotPreemption)]
        );
    }

    #[test]
    fn without_spot_workers_the_pod_is_unhelpable_for_host_memory() {
        let mut input = world();
        full(&mut input);
        let plan = plan(&input);
        assert!(plan.actions.is_empty());
        assert_eq!(plan.unhelpable.len(), 1);
        assert_eq!(plan.unhelpable[0].reason.code, ReasonCode::HostMemory);
    }

    #[test]
    fn an_expired_spot_worker_is_removed_once_not_twice() {
        let mut input = world();
        full(&mut input);
        let i = worker(&mut input, "spot-a", "spot", 1);
        input.claims[i].expires_at = Some(t0() - jiff::SignedDuration::from_mins(5));
        let plan = plan(&input);
        assert_eq!(
            removals(&plan),
            vec![("spot-a".to_owned(), true, ReasonCode::SpotPreemption)]
        );
    }
}

mod utilization_down {
    use super::fixtures::*;
    use super::*;
    use tidepool_core::planner::{Action, Plan, PlanInput, PoolState, ReasonCode, plan};

    fn load(input: &mut PlanInput, name: &str, frac: f64) {
        let n = input.nodes.iter_mut().find(|n| n.name == name).unwrap();
        n.requested.cpu_milli = (n.allocatable.cpu_milli as f64 * frac) as u64;
        n.requested.memory_bytes = (n.allocatable.memory_bytes as f64 * frac) as u64;
    }

    fn removals(plan: &Plan) -> Vec<(String, bool, ReasonCode)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove {
                    worker,
                    drain,
                    reason,
                    ..
                } => Some((worker.clone(), *drain, reason.code)),
                Action::Provision { .. } => None,
            })
            .collect()
    }

    /// `n` permanent workers, the first at 20 % and the rest at 35 %.
    fn quiet(n: usize, prefix: &str) -> PlanInput {
        let mut input = world();
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            worker(&mut input, &name, "permanent", 1);
            load(&mut input, &name, if i == 0 { 0.2 } else { 0.35 });
        }
        input
    }

    #[test]
    fn below_the_band_the_least_loaded_permanent_worker_is_drained() {
        let plan = plan(&quiet(5, "perm"));
        assert_eq!(
            removals(&plan),
            vec![("perm-0".to_owned(), true, ReasonCode::Utilization)]
        );
        assert!(plan.actions[0].reason().message.contains("below 50%"));
    }

    #[test]
    fn a_permanent_pool_never_shrinks_to_below_min_nodes() {
        assert!(removals(&plan(&quiet(3, "perm"))).is_empty());
    }

    #[test]
    fn no_removal_when_the_rest_would_exceed_the_target() {
        let mut input = quiet(4, "perm");
        for i in 1..4 {
            load(&mut input, &format!("perm-{i}"), 0.49);
        }
        // 3 × 0.49 + 0.2 over 3 nodes ≈ 56 % ≤ 70 %: allowed.
        assert_eq!(removals(&plan(&input)).len(), 1);
        // Four at 45 %: without one, the rest would be at 60 %, above a 55 % target.
        let mut input = quiet(4, "perm");
        pool_mut(&mut input, "permanent").limits.min_nodes = 1;
        for i in 0..4 {
            load(&mut input, &format!("perm-{i}"), 0.45);
        }
        pool_mut(&mut input, "permanent")
            .utilization
            .as_mut()
            .unwrap()
            .target = 0.55;
        assert!(removals(&plan(&input)).is_empty());
    }

    #[test]
    fn protected_names_and_the_interval_hold_a_permanent_worker() {
        let plan1 = plan(&quiet(5, "permanent"));
        assert!(removals(&plan1).is_empty());
        assert_eq!(plan1.held[0].wanted, ReasonCode::Utilization);
        assert_eq!(plan1.held[0].reason.code, ReasonCode::Protected);

        let mut input = quiet(5, "perm");
        input.pool_state.insert(
            "permanent".into(),
            PoolState {
                last_scale_down: Some(t0() - jiff::SignedDuration::from_mins(5)),
                ..PoolState::default()
            },
        );
        let plan2 = plan(&input);
        assert!(removals(&plan2).is_empty());
        assert_eq!(plan2.held[0].reason.code, ReasonCode::ScaleDownInterval);
    }
}
