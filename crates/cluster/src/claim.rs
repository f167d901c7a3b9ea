//! The `WorkerClaim` custom resource: the durable, cluster-scoped record of
//! one worker VM, created before the VM exists and finalised only after it
//! is gone.
//!
//! Its spec and status are [`tidepool_core::claim`]'s own types: their
//! serde attributes give the stored JSON and their field docs (through
//! `schemars`) the CRD schema that `kubectl explain workerclaim` shows. This
//! module adds only what is Kubernetes' own: the resource's kind, printer
//! columns, the finalizer, and reading claims written by older versions.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidepool_core::claim::{Claim, ClaimSpec, ClaimStatus, Intent};

/// The finalizer Tidepool puts on every claim; it is removed only once the
/// claim's node and VM are proven gone.
pub const FINALIZER: &str = "tidepool.dev/worker-cleanup";

/// The API group of Tidepool's custom resources.
pub const GROUP: &str = "tidepool.dev";

/// The CRD's metadata name (`<plural>.<group>`).
pub const CRD_NAME: &str = "workerclaims.tidepool.dev";

/// Annotation that asked for a drain-only intent before `spec.intent`
/// existed; still read on claims that carry it.
pub const LEGACY_INTENT_ANNOTATION: &str = "tidepool.dev/intent";
/// Annotation that made a removal skip the drain requirement before
/// `spec.intent.force` existed; still read.
pub const LEGACY_FORCE_ANNOTATION: &str = "tidepool.dev/force-remove";
/// Annotation that carried the chosen host before `spec.host` existed;
/// still read.
pub const LEGACY_HOST_ANNOTATION: &str = "tidepool.dev/host";

/// What was asked for: one worker of a given size in a given pool, and what
/// should become of it.
///
/// The spec is written when the claim is created; afterwards only
/// `intent` and `ttlSeconds` change. Everything Tidepool learns while
/// acting on it goes to `status`.
// clippy reads the repeated `type_ = ...` of the printer columns as
// duplicated attributes; they are separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tidepool.dev",
    version = "v1alpha1",
    kind = "WorkerClaim",
    plural = "workerclaims",
    singular = "workerclaim",
    shortname = "wc",
    category = "tidepool",
    status = "ClaimStatus",
    derive = "PartialEq",
    doc = "A WorkerClaim is Tidepool's durable record of one worker VM: what was requested, which VM and node fulfil it, and how far its lifecycle has progressed. Tidepool creates the claim before cloning the VM and removes its finalizer only after the node and the VM are gone, so no VM is ever left without a record.",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "VMID", type_ = "integer", json_path = ".status.vmid"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct WorkerClaimSpec {
    /// The claim's spec.
    #[serde(flatten)]
    pub claim: ClaimSpec,
}

impl WorkerClaim {
    /// A new claim resource for `claim`, carrying the cleanup finalizer.
    pub fn for_claim(claim: &Claim) -> Self {
        let mut wc = WorkerClaim::new(
            &claim.name,
            WorkerClaimSpec {
                claim: claim.spec.clone(),
            },
        );
        wc.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        wc
    }

    /// The claim this resource records. A resource being deleted reads as
    /// a removal; claims written by older versions are read through their
    /// annotations (intent, force, host).
    pub fn to_claim(&self) -> Claim {
        let meta = &self.metadata;
        let annotations = meta.annotations.clone().unwrap_or_default();
        let mut spec = self.spec.claim.clone();
        let legacy_force = annotations
            .get(LEGACY_FORCE_ANNOTATION)
            .is_some_and(|v| v == "true");
        if spec.intent == Intent::Keep
            && annotations
                .get(LEGACY_INTENT_ANNOTATION)
                .is_some_and(|v| v == "drain")
        {
            spec.intent = Intent::Drain;
        }
        if meta.deletion_timestamp.is_some() {
            spec.intent = Intent::Remove {
                force: spec.intent.is_forced() || legacy_force,
            };
        }
        if spec.host.is_none() {
            spec.host = annotations.get(LEGACY_HOST_ANNOTATION).cloned();
        }
        Claim {
            name: meta.name.clone().unwrap_or_default(),
            spec,
            status: self.status.clone().unwrap_or_default(),
            finalizer: meta
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|x| x == FINALIZER)),
            generation: meta.generation,
            deleting: meta.deletion_timestamp.is_some(),
        }
    }
}

/// The annotations an older version used for what `spec` now records, set
/// to `null` so a merge patch that writes the spec also clears them.
pub fn legacy_annotations_cleared() -> BTreeMap<&'static str, Option<String>> {
    [
        LEGACY_INTENT_ANNOTATION,
        LEGACY_FORCE_ANNOTATION,
        LEGACY_HOST_ANNOTATION,
    ]
    .into_iter()
    .map(|k| (k, None))
    .collect()
}

/// The CRD as YAML, exactly as committed in
/// `deploy/crds/workerclaims.tidepool.dev.yaml`.
///
/// # Errors
/// [`serde_saphyr::ser::Error`] if serialisation fails (it does not for this type).
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let body = serde_saphyr::to_string(&WorkerClaim::crd())?;
    Ok(format!(
        "# Generated from crates/cluster/src/claim.rs; do not edit by hand.\n\
         # Regenerate with: cargo run -p tidepool-cluster --example gen-crd\n\
         {body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tidepool_core::claim::{Condition, VmIdentity};
    use tidepool_core::{Lifecycle, Step};

    fn claim() -> Claim {
        let t = jiff::Timestamp::from_second(1_767_225_600).unwrap();
        let mut c = Claim::new(
            "burst-abcde",
            ClaimSpec {
                pool: "burst".into(),
                size: "small".into(),
                ttl: Some(Duration::from_secs(3600)),
                requested_by: "alice".into(),
                reason: "a test".into(),
                intent: Intent::Drain,
                host: Some("pve-02".into()),
            },
        );
        c.status.lifecycle = Lifecycle::Failed {
            step: Step::Drain,
            reason: "blocked by PodDisruptionBudget apps/ledger".into(),
        };
        c.status.vmid = Some(1250);
        c.status.vm = Some(VmIdentity {
            vmid: 1250,
            node: "pve-02".into(),
            uuid: "6c2e".into(),
        });
        c.status.ip = Some([127, 0, 1, 5].into());
        c.status.conditions = [(Condition::VmidAllocated, t), (Condition::Cordoned, t)].into();
        c.status.observed_generation = Some(3);
        c.generation = Some(3);
        c
    }

    #[test]
    fn a_claim_round_trips_through_the_resource_and_its_json() {
        let c = claim();
        let mut wc = WorkerClaim::for_claim(&c);
        wc.status = Some(c.status.clone());
        wc.metadata.generation = Some(3);
        let json = serde_json::to_value(&wc).unwrap();
        assert_eq!(json["spec"]["intent"]["action"], "Drain");
        assert_eq!(json["spec"]["host"], "pve-02");
        assert_eq!(json["status"]["phase"], "Failed");
        assert_eq!(json["status"]["failedStep"], "drain");
        assert_eq!(json["status"]["vm"]["uuid"], "6c2e");
        let back: WorkerClaim = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_claim(), c);
    }

    #[test]
    fn claims_written_with_the_old_annotations_and_flat_status_are_still_read() {
        let json = serde_json::json!({
            "apiVersion": "tidepool.dev/v1alpha1",
            "kind": "WorkerClaim",
            "metadata": {
                "name": "burst-old01",
                "finalizers": [FINALIZER],
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "annotations": {
                    LEGACY_FORCE_ANNOTATION: "true",
                    LEGACY_HOST_ANNOTATION: "pve-01"
                }
            },
            "spec": {"pool": "burst", "size": "small", "requestedBy": "bob", "reason": "old"},
            "status": {
                "phase": "Ready", "vmid": 1251, "proxmoxNode": "pve-01", "vmUuid": "9f1d",
                "lastError": null,
                "conditions": [{"type": "NodeReady", "status": "True", "reason": "Done",
                                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }
        });
        let wc: WorkerClaim = serde_json::from_value(json).unwrap();
        let c = wc.to_claim();
        assert_eq!(c.spec.intent, Intent::Remove { force: true });
        assert_eq!(c.spec.host.as_deref(), Some("pve-01"));
        assert_eq!(c.status.lifecycle, Lifecycle::Ready);
        assert_eq!(c.vmid(), Some(1251));
        assert!(c.status.has(Condition::NodeReady));

        let drain_only = serde_json::json!({
            "apiVersion": "tidepool.dev/v1alpha1", "kind": "WorkerClaim",
            "metadata": {"name": "burst-old02", "annotations": {LEGACY_INTENT_ANNOTATION: "drain"}},
            "spec": {"pool": "burst", "size": "small", "requestedBy": "bob", "reason": "old"}
        });
        let wc: WorkerClaim = serde_json::from_value(drain_only).unwrap();
        assert_eq!(wc.to_claim().spec.intent, Intent::Drain);
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_a_status_subresource_and_short_name() {
        use kube::CustomResourceExt;
        let crd = WorkerClaim::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some(CRD_NAME));
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["wc".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Pool", "Size", "Phase", "Node", "VMID", "Expires", "Age"]
        );
    }

    #[test]
    fn the_crd_validates_pool_size_and_force_on_the_server() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(WorkerClaim::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for field in ["pool", "size"] {
            assert_eq!(spec["properties"][field]["minLength"], 1, "{field}");
        }
        let rules = |v: &serde_json::Value| -> Vec<String> {
            v["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["rule"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            rules(spec),
            ["self.pool == oldSelf.pool", "self.size == oldSelf.size"]
        );
        assert_eq!(
            rules(&spec["properties"]["intent"]),
            ["!has(self.force) || !self.force || self.action == 'Remove'"]
        );
    }
}
