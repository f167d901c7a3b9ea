//! Property tests: generated node metadata is always valid Kubernetes
//! syntax for names the configuration accepts, and the configuration loader
//! never panics, whatever bytes it is given.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;
use tidepool_core::config::{self, EXAMPLE};
use tidepool_core::conventions::{WorkerFacts, node_metadata, worker_name};
use tidepool_core::k8s_names::{validate_label_value, validate_qualified_name};

fn document(pool: &str, size: &str, kind: &str, domain: &str) -> String {
    format!(
        "schemaVersion: v1alpha1
providers:
  pve:
    type: proxmox
    endpoint: https://pve.lan:8006/api2/json
    tokenFrom: {{env: T}}
    hosts: [pve-01]
    vmidRange: {{lower: 1250, upper: 1300}}
join:
  method: talos-api
  workerConfigFrom: {{file: w.yaml}}
labels:
  domain: '{domain}'
sizes:
  '{size}':
    vcpu: 4
    memory: 8Gi
    disk: 100G
    gpu: {{class: tesla-t4, memory: 16Gi, cuda: '12.2', mapping: t4}}
pools:
  - name: '{pool}'
    kind: {kind}
    sizes: ['{size}']
    template: t-{{size}}
    limits: {{maxNodes: 3}}
"
    )
}

/// Mostly names close to valid DNS labels (so most documents are accepted
/// and reach the generator), some arbitrary ones (which must be refused
/// or, if accepted, still generate valid metadata).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9]([a-z0-9-]{0,64}[a-z0-9])?",
        1 => "[a-zA-Z0-9._-]{0,70}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn generated_labels_and_taints_are_valid_for_every_accepted_name(
        pool in name(),
        size in name(),
        domain in prop_oneof![3 => "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}", 1 => "[a-z0-9.-]{1,40}"],
        kind in prop::sample::select(vec!["permanent", "burst", "spot", "gpu"]),
        provisioned in 0i64..4_102_444_800,
        ttl_minutes in 60u64..=10_080,
        taint_size in any::<bool>(),
    ) {
        let Ok(cfg) = config::load(&document(&pool, &size, kind, &domain)) else {
            // Names the configuration refuses never reach the generator.
            return Ok(());
        };
        let p = &cfg.pools[0];
        for size_name in &p.sizes {
            let entry = cfg.size(size_name).unwrap();
            let meta = node_metadata(&cfg.labels, &WorkerFacts {
                claim: &worker_name(&p.name, "a0b1c"),
                pool: &p.name,
                kind: p.kind,
                size: &entry.size,
                provisioned_at: Timestamp::from_second(provisioned).unwrap(),
                ttl: p.ttl.map(|_| Duration::from_secs(ttl_minutes * 60)),
                taint_size,
            });
            for (k, v) in &meta.labels {
                prop_assert!(validate_qualified_name(k, "label key").is_ok(), "label key {k}");
                prop_assert!(validate_label_value(v).is_ok(), "label {k}={v}");
            }
            for k in meta.annotations.keys() {
                prop_assert!(validate_qualified_name(k, "annotation key").is_ok(), "annotation key {k}");
            }
            for t in &meta.taints {
                prop_assert!(validate_qualified_name(&t.key, "taint key").is_ok(), "taint {t}");
                prop_assert!(validate_label_value(&t.value).is_ok(), "taint {t}");
            }
        }
    }

    #[test]
    fn the_loader_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = config::load(&text);
    }

    #[test]
    fn the_loader_never_panics_on_mutations_of_the_example(
        edits in prop::collection::vec((0usize..EXAMPLE.len(), prop::sample::select(vec![
            "", " ", "\n", ":", "-", "[", "]", "{", "}", "'", "\"", "&a", "*a", "!!int", "0", "-1", "1e999", "~", "\t", "#",
        ])), 1..8)
    ) {
        let mut text = EXAMPLE.to_owned();
        for (at, insert) in edits {
            let mut at = at.min(text.len());
            while !text.is_char_boundary(at) { at -= 1; }
            text.insert_str(at, insert);
        }
        if let Err(errs) = config::load(&text) {
            // Every error points inside the document.
            let lines = text.lines().count().max(1) + 1;
            for e in &errs.0 {
                prop_assert!(e.line >= 1 && e.line <= lines, "{e} beyond {lines} lines");
                prop_assert!(!e.message.is_empty());
            }
        }
    }
}
