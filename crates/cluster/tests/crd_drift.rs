//! The committed CRD YAML must be exactly what the Rust types generate.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;

#[test]
fn the_committed_crd_matches_the_one_generated_from_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/crds/workerclaims.tidepool.dev.yaml");
    let generated = tidepool_cluster::claim::crd_yaml().unwrap();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        panic!(
            "{} is out of date with crates/cluster/src/claim.rs.\n\
             Regenerate it with:\n\n    cargo run -p tidepool-cluster --example gen-crd\n\n\
             and commit the result.",
            path.display()
        );
    }
}

#[test]
fn the_committed_crd_parses_back_into_a_custom_resource_definition() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let yaml = tidepool_cluster::claim::crd_yaml().unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("workerclaims.tidepool.dev")
    );
}
