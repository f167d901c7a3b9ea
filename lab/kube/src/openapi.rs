//! A minimal OpenAPI v3 surface: the `/openapi/v3` root listing one
//! document per group version, and per-group-version documents whose PATCH
//! operations carry `x-kubernetes-group-version-kind` and the
//! `fieldValidation` parameter. That is what kubectl probes to decide that
//! the server validates fields itself (so it needs no client-side schema).
//! Schemas are not served.

use serde_json::{Value, json};

use crate::resources::Registry;

/// Errors of this module (none: documents are built from the registry).
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group version.
pub fn root(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for def in registry.all() {
        for v in &def.versions {
            let p = gv_path(&def.group, v);
            let url = format!(
                "/openapi/v3/{p}?hash={}",
                crate::meta::stable_hash(&json!(p))
            );
            paths.insert(p, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        {"name": "force", "in": "query", "schema": {"type": "boolean"}},
    ]);
    let mut any = false;
    for def in registry
        .all()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
    {
        any = true;
        let prefix = format!("/{}", gv_path(group, version));
        let path = if def.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", def.plural)
        } else {
            format!("{prefix}/{}/{{name}}", def.plural)
        };
        paths.insert(path, json!({"patch": {
            "operationId": format!("patch{}", def.kind),
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": def.kind},
        }}));
    }
    any.then(|| {
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": paths,
            "components": {"schemas": {}},
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patch_operation_advertises_field_validation() {
        let doc = group_version(&Registry::new(), "apps", "v1").unwrap_or_default();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(
            patch["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation"))
        );
        assert!(root(&Registry::new())["paths"]["api/v1"]["serverRelativeURL"].is_string());
    }
}
