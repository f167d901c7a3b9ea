//! The writing verbs over one object: create (with the eviction and binding
//! subresources), update, patch and delete, and deletecollection.

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::query::{delete_options, dry_run, parse_body, parse_yaml_or_json, selectors};
use super::{Target, json_response};
use crate::controllers;
use crate::error::{ApiError, success_status};
use crate::store::Part;
use crate::{Shared, meta, patch};

/// One writing request: the shared state, its target, query and body.
#[derive(Clone, Copy)]
pub(super) struct Write<'a> {
    pub(super) shared: &'a Shared,
    pub(super) t: &'a Target,
    pub(super) q: &'a HashMap<String, String>,
    pub(super) body: &'a [u8],
}

impl Write<'_> {
    /// The object named in the path, or `""` for a collection.
    fn name(&self) -> &str {
        self.t.name.as_deref().unwrap_or_default()
    }
}

/// `patch` of an object or its status: server-side apply, merge,
/// strategic-merge and JSON patches.
pub(super) fn patch_object(w: &Write<'_>, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Write { shared, t, q, body } = *w;
    let key = t.storage.clone();
    let name = w.name();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let part = match t.sub.as_deref() {
        Some("status") => Part::Status,
        _ => Part::Main,
    };
    if mime == "application/apply-patch+yaml" {
        if q.get("fieldManager").is_none_or(String::is_empty) {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io",
                "",
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
        let applied = parse_yaml_or_json(body)?;
        return match shared.store.get(&key, &t.namespace, name) {
            Err(e) if e.code == 404 && part == Part::Main => {
                let mut obj = applied;
                meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
                let created =
                    shared
                        .store
                        .create(&key, &t.namespace, t.to_storage(obj, &Value::Null))?;
                Ok(json_response(201, &t.out(&created)))
            }
            Err(e) => Err(e),
            Ok(_) => {
                let updated = shared.store.modify_or_preview(
                    &key,
                    &t.namespace,
                    name,
                    part,
                    dry_run(q),
                    |live| {
                        let mut served = t.out(live);
                        patch::apply_merge(&mut served, &applied);
                        *live = t.to_storage(served, live);
                        Ok(())
                    },
                )?;
                Ok(json_response(200, &t.out(&updated)))
            }
        };
    }
    let doc = parse_body(body)?;
    let updated =
        shared
            .store
            .modify_or_preview(&key, &t.namespace, name, part, dry_run(q), |stored| {
                let mut obj = t.out(stored);
                match mime {
                    "application/merge-patch+json" => patch::merge_patch(&mut obj, &doc),
                    "application/strategic-merge-patch+json" => {
                        patch::strategic_merge_patch(&mut obj, &doc);
                    }
                    "application/json-patch+json" => {
                        patch::json_patch(&mut obj, &doc).map_err(|e| {
                            ApiError::invalid(&t.def.kind, name, "patch", &e.to_string())
                        })?
                    }
                    other => return Err(ApiError::unsupported_media_type(other)),
                }
                *stored = t.to_storage(obj, stored);
                Ok(())
            })?;
    Ok(json_response(200, &t.out(&updated)))
}

/// `create`: a new object, or an eviction or binding of a pod.
pub(super) fn create(w: &Write<'_>) -> Result<Response, ApiError> {
    let Write { shared, t, q, body } = *w;
    let (store, name) = (&shared.store, w.name());
    match t.sub.as_deref() {
        Some("eviction") => {
            let eviction = parse_body(body)?;
            controllers::disruption::evict(store, &t.namespace, name, &eviction)?;
            Ok(json_response(201, &success_status(201)))
        }
        Some("binding") => {
            let binding = parse_body(body)?;
            crate::scheduler::bind(store, &t.namespace, name, &binding)?;
            Ok(json_response(201, &success_status(201)))
        }
        Some(_) => Err(ApiError::method_not_allowed()),
        None => {
            let obj = parse_body(body)?;
            if dry_run(q) {
                return Ok(json_response(201, &obj));
            }
            let created =
                store.create(&t.storage, &t.namespace, t.to_storage(obj, &Value::Null))?;
            Ok(json_response(201, &t.out(&created)))
        }
    }
}

/// `update` (PUT) of an object or of its status or finalize subresource.
pub(super) fn update(w: &Write<'_>) -> Result<Response, ApiError> {
    let Write { shared, t, q, body } = *w;
    let (store, key, name) = (&shared.store, &t.storage, w.name());
    let obj = parse_body(body)?;
    if let Some(body_name) = obj["metadata"]["name"].as_str()
        && body_name != name
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let part = match t.sub.as_deref() {
        Some("status") => Part::Status,
        Some("finalize") => Part::Internal,
        _ => Part::Main,
    };
    let updated = if dry_run(q) || t.inward.is_some() {
        let want_rv = meta::resource_version(&obj);
        store.modify_or_preview(key, &t.namespace, name, part, dry_run(q), |o| {
            if want_rv != 0 && want_rv != meta::resource_version(o) {
                return Err(ApiError::conflict(&t.def.group, &t.def.plural, name));
            }
            *o = t.to_storage(obj, o);
            Ok(())
        })?
    } else {
        store.update(key, &t.namespace, name, obj, part)?
    };
    Ok(json_response(200, &t.out(&updated)))
}

/// `delete` of one object (only read back under `dryRun`).
pub(super) fn delete(w: &Write<'_>) -> Result<Response, ApiError> {
    let Write { shared, t, q, body } = *w;
    let (store, name) = (&shared.store, w.name());
    let opts = delete_options(q, body);
    let in_body = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b["dryRun"].as_array().map(|a| a.iter().any(|v| v == "All")))
        .unwrap_or(false);
    let deleted = if dry_run(q) || in_body {
        store.get(&t.storage, &t.namespace, name)?
    } else {
        store.delete(&t.storage, &t.namespace, name, &opts)?
    };
    Ok(json_response(200, &t.out(&deleted)))
}

/// `deletecollection`: every object the selectors match.
pub(super) fn delete_collection(w: &Write<'_>) -> Result<Response, ApiError> {
    let Write { shared, t, q, body } = *w;
    let store = &shared.store;
    let (labels, fields) = selectors(q)?;
    let opts = delete_options(q, body);
    let (items, _) = store.list(&t.storage, &t.namespace);
    for item in items
        .iter()
        .filter(|o| labels.matches_object(o) && fields.matches(o))
    {
        // Objects that vanished meanwhile are fine.
        let _ = store.delete(&t.storage, meta::namespace(item), meta::name(item), &opts);
    }
    Ok(json_response(200, &success_status(200)))
}
