//! Tables for the scheduling simulation (`sched::fits`) and the planner:
//! every predicate, the scale-up choices and limits, the trigger windows
//! and the scale-down rules, each with its reason asserted; property tests
//! for the invariants (limits, host headroom, permanent workers).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use tidepool_core::config::{self, Config, EXAMPLE};
use tidepool_core::conventions::{Taint, TaintEffect};
use tidepool_core::sched::{
    LabelSelector, Misfit, NodeSelectorTerm, NodeSnapshot, Operator, PodSpec, Requests,
    Requirement, Toleration, TolerationOperator, fits,
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
    p.tolerations.push(Toleration {
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

    fn with_block_volumes(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        n.block_volumes = 27;
        n
    }

    fn with_web_pod(cfg: &Config) -> NodeSnapshot {
        let mut n = medium_burst(cfg);
        let mut web = burst(pod("web-0", 100, 1));
        web.labels.insert("app".into(), "web".into());
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
        selector
            .node_selector
            .insert("node-pool".into(), "spot".into());
        let mut selector_ok = burst(pod("selector-ok", 100, 1));
        selector_ok
            .node_selector
            .insert("node-pool".into(), "burst".into());
        let affinity_terms =
            |exprs: Vec<Requirement>| vec![NodeSelectorTerm { expressions: exprs }];
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
        aff_or.affinity = vec![
            NodeSelectorTerm {
                expressions: vec![req("workload-size", Operator::In, &["large"])],
            },
            NodeSelectorTerm {
                expressions: vec![req("node-pool", Operator::In, &["burst"])],
            },
        ];
        let mut aff_and = burst(pod("aff-and", 100, 1));
        aff_and.affinity = affinity_terms(vec![
            req("node-pool", Operator::In, &["burst"]),
            req("workload-size", Operator::In, &["large"]),
        ]);
        let mut tolerate_all = pod("tolerate-all", 100, 1);
        tolerate_all.tolerations.push(Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        });
        let mut tolerate_wrong_effect = pod("wrong-effect", 100, 1);
        tolerate_wrong_effect.tolerations.push(Toleration {
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
        anti.labels.insert("app".into(), "web".into());
        anti.anti_affinity.push(LabelSelector {
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
