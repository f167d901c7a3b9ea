//! The Kubernetes checks of `tidepool doctor`: the API answers, the
//! WorkerClaim CRD is installed and serves the version this binary speaks,
//! and RBAC lets the caller do every verb Tidepool uses (one
//! SelfSubjectAccessReview each, the rules of `deploy/rbac.yaml`).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;

use super::{Check, Report, anyhow_chain};

/// The CRD's name.
const CRD: &str = "workerclaims.tidepool.dev";
/// The version of the WorkerClaim API this binary reads and writes.
pub const CRD_VERSION: &str = "v1alpha1";

/// `(group, resource, subresource, verbs, namespaced)`: what Tidepool does
/// with the Kubernetes API (`deploy/rbac.yaml`).
const USES: &[(&str, &str, &str, &[&str], bool)] = &[
    (
        "",
        "nodes",
        "",
        &["get", "list", "watch", "patch", "update", "delete"],
        false,
    ),
    ("", "pods", "", &["get", "list", "watch"], false),
    ("", "pods", "eviction", &["create"], false),
    (
        "policy",
        "poddisruptionbudgets",
        "",
        &["get", "list", "watch"],
        false,
    ),
    (
        "",
        "persistentvolumes",
        "",
        &["get", "list", "watch"],
        false,
    ),
    (
        "",
        "persistentvolumeclaims",
        "",
        &["get", "list", "watch"],
        false,
    ),
    (
        "storage.k8s.io",
        "csinodes",
        "",
        &["get", "list", "watch"],
        false,
    ),
    (
        "storage.k8s.io",
        "storageclasses",
        "",
        &["get", "list", "watch"],
        false,
    ),
    (
        "storage.k8s.io",
        "volumeattachments",
        "",
        &["get", "list", "watch"],
        false,
    ),
    (
        "tidepool.dev",
        "workerclaims",
        "",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        false,
    ),
    (
        "tidepool.dev",
        "workerclaims",
        "status",
        &["get", "update", "patch"],
        false,
    ),
    ("", "events", "", &["create", "patch", "list"], false),
    (
        "events.k8s.io",
        "events",
        "",
        &["create", "patch", "list"],
        false,
    ),
    (
        "coordination.k8s.io",
        "leases",
        "",
        &["get", "create", "update"],
        true,
    ),
    ("", "configmaps", "", &["get", "create", "update"], true),
];

/// Runs the Kubernetes checks.
pub async fn check(client: &kube::Client, namespace: &str, report: &mut Report) {
    match client.apiserver_version().await {
        Ok(v) => report.checks.push(Check::pass(
            "kubernetes api",
            format!("Kubernetes {}.{} ({})", v.major, v.minor, v.git_version),
        )),
        Err(e) => {
            report.checks.push(Check::fail(
                "kubernetes api",
                anyhow_chain(&e),
                "point --kubeconfig (or KUBECONFIG) at the cluster, or run in the cluster with a service account",
            ));
            return;
        }
    }
    report.checks.push(crd(client).await);
    report.checks.push(rbac(client, namespace).await);
}

async fn crd(client: &kube::Client) -> Check {
    let id = "kubernetes crd";
    let install =
        "kubectl apply -f deploy/crds/workerclaims.tidepool.dev.yaml (or kubectl apply -k deploy/)";
    match Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(CRD)
        .await
    {
        Ok(Some(crd)) => {
            let served: Vec<&str> = crd
                .spec
                .versions
                .iter()
                .filter(|v| v.served)
                .map(|v| v.name.as_str())
                .collect();
            if served.contains(&CRD_VERSION) {
                Check::pass(id, format!("{CRD} serves {CRD_VERSION}"))
            } else {
                Check::fail(
                    id,
                    format!(
                        "{CRD} serves {} but this tidepool speaks {CRD_VERSION}",
                        served.join(", ")
                    ),
                    format!("install the CRD of this release: {install}"),
                )
            }
        }
        Ok(None) => Check::fail(
            id,
            format!("the CustomResourceDefinition {CRD} is not installed"),
            install,
        ),
        Err(e) => Check::fail(
            id,
            format!("reading CRD {CRD}: {}", anyhow_chain(&e)),
            "the caller needs get on customresourcedefinitions (or check the API)",
        ),
    }
}

async fn rbac(client: &kube::Client, namespace: &str) -> Check {
    let id = "kubernetes rbac";
    let api = Api::<SelfSubjectAccessReview>::all(client.clone());
    let mut denied = Vec::new();
    for (group, resource, sub, verbs, namespaced) in USES {
        for verb in *verbs {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some((*group).to_owned()),
                        resource: Some((*resource).to_owned()),
                        subresource: (!sub.is_empty()).then(|| (*sub).to_owned()),
                        verb: Some((*verb).to_owned()),
                        namespace: namespaced.then(|| namespace.to_owned()),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            match api.create(&PostParams::default(), &review).await {
                Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
                Ok(_) => {
                    let what = if sub.is_empty() {
                        (*resource).to_owned()
                    } else {
                        format!("{resource}/{sub}")
                    };
                    let group = if group.is_empty() { "core" } else { group };
                    let scope = if *namespaced {
                        format!(" in {namespace}")
                    } else {
                        String::new()
                    };
                    denied.push(format!("{verb} {what} ({group}){scope}"));
                }
                Err(e) => {
                    return Check::fail(
                        id,
                        format!("SelfSubjectAccessReview: {}", anyhow_chain(&e)),
                        "the API must accept SelfSubjectAccessReviews (authorization.k8s.io/v1)",
                    );
                }
            }
        }
    }
    if denied.is_empty() {
        Check::pass(id, "RBAC allows every verb Tidepool uses")
    } else {
        Check::fail(
            id,
            format!("RBAC denies: {}", denied.join(", ")),
            "apply deploy/rbac.yaml (kubectl apply -k deploy/) and run Tidepool as its ServiceAccount, or grant these verbs to the identity the kubeconfig uses",
        )
    }
}
