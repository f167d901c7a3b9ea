//! The HTTP front of the emulator: routing of `/api`, `/apis` and resource
//! paths, query parameters, verbs, content types, fault injection per
//! request and `metav1.Status` error responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidepool_lab_sim::Service;

use crate::error::{ApiError, success_status};
use crate::events;
use crate::meta;
use crate::openapi;
use crate::patch;
use crate::proto;
use crate::resources::{ResKey, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{DeleteOptions, Part, WatchStart};
use crate::table;
use crate::watch::{self, WatchRequest};
use crate::{Shared, controllers};

/// Errors of request handling are [`ApiError`]s; this alias names them here.
pub type HandlerError = ApiError;

/// The axum router serving the whole API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

/// Decodes `%XX` escapes and `+` in a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Whether the request asks for `dryRun=All`.
fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    // Go's strconv.ParseBool, which the real server uses.
    q.get(k)
        .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// A request aimed at a resource.
struct Target {
    def: ResourceDef,
    version: String,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
    legacy_watch: bool,
    /// Where objects of this resource are stored (events.k8s.io Events live
    /// with core Events).
    storage: ResKey,
    /// Converts a stored object to the served form, if they differ.
    outward: Option<fn(&Value) -> Value>,
    /// Converts a served-form body to the stored form, given the stored
    /// object (if any), when they differ.
    inward: Option<fn(Value, &Value) -> Value>,
}

impl Target {
    fn out(&self, obj: &Value) -> Value {
        match self.outward {
            Some(f) => f(obj),
            None => obj.clone(),
        }
    }

    fn to_storage(&self, obj: Value, current: &Value) -> Value {
        match self.inward {
            Some(f) => f(obj, current),
            None => obj,
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/');
    let query = parse_query(uri.query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => return json_response(200, &version_info()),
        ["healthz" | "readyz" | "livez"] => return (StatusCode::OK, "ok").into_response(),
        ["api"] => {
            return json_response(
                200,
                &shared
                    .store
                    .registry()
                    .core_versions(&shared.server_address()),
            );
        }
        ["apis"] => return json_response(200, &shared.store.registry().group_list()),
        ["api", "v1"] => return opt_response(shared.store.registry().resource_list("", "v1")),
        ["apis", group] => return opt_response(shared.store.registry().group(group)),
        ["apis", group, version] => {
            return opt_response(shared.store.registry().resource_list(group, version));
        }
        ["openapi", "v3"] => return json_response(200, &openapi::root(&shared.store.registry())),
        ["openapi", "v3", "api", version] => {
            return opt_response(openapi::group_version(
                &shared.store.registry(),
                "",
                version,
            ));
        }
        ["openapi", "v3", "apis", group, version] => {
            return opt_response(openapi::group_version(
                &shared.store.registry(),
                group,
                version,
            ));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return error_response(&ApiError::no_route()),
    };
    let target = match resolve(&shared, group, version, rest) {
        Some(t) => t,
        None => return error_response(&ApiError::no_route()),
    };
    let verb = verb_of(&method, &target, &query);
    let op = match (verb, target.sub.as_deref()) {
        ("create", Some("eviction")) => format!("evict {}", target.def.plural),
        (v, Some(sub)) => format!("{v} {}/{sub}", target.def.plural),
        (v, None) => format!("{v} {}", target.def.plural),
    };
    let injected = shared.faults.check(Service::Kubernetes, &op);
    if !injected.latency.is_zero() {
        shared.clock.sleep(injected.latency).await;
    }
    if let Some(err) = injected.error {
        return error_response(&ApiError::injected(err.status, err.message));
    }
    tracing::debug!(%op, path, "kube request");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body =
        if content_type.starts_with("application/vnd.kubernetes.protobuf") && !body.is_empty() {
            match protobuf_to_json(&target, &body) {
                Ok(json) => json,
                Err(e) => return error_response(&e),
            }
        } else {
            body
        };
    let table = wants_table(&headers);
    match dispatch(&shared, &method, &target, &query, &headers, body, table).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

/// The `autoscaling/v1` Scale view of a workload.
fn to_scale(obj: &Value) -> Value {
    let selector_text = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_text},
    })
}

/// Applies a Scale's `spec.replicas` to the stored workload.
fn from_scale(scale: Value, current: &Value) -> Value {
    let mut out = current.clone();
    out["spec"]["replicas"] = scale["spec"]["replicas"].clone();
    out
}

/// Converts the protobuf bodies we understand (Eviction, Binding) to JSON.
fn protobuf_to_json(t: &Target, body: &[u8]) -> Result<Bytes, ApiError> {
    let refuse = || ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf");
    let (api_version, kind, raw) = proto::envelope(body).map_err(|_| refuse())?;
    let bad = |e: proto::ProtoError| ApiError::bad_request(e.to_string());
    let value = match t.sub.as_deref() {
        Some("eviction") => proto::eviction(raw).map_err(bad)?,
        Some("binding") => proto::binding(raw).map_err(bad)?,
        Some(_) => return Err(refuse()),
        None => proto::object(&api_version, &kind, raw)
            .map_err(bad)?
            .ok_or_else(refuse)?,
    };
    Ok(Bytes::from(serde_json::to_vec(&value).unwrap_or_default()))
}

fn opt_response(v: Option<Value>) -> Response {
    match v {
        Some(v) => json_response(200, &v),
        None => error_response(&ApiError::no_route()),
    }
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0",
        "gitCommit": "tidepool-lab", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn resolve(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let (legacy_watch, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let lookup = |plural: &str| shared.store.resource(group, version, plural);
    let namespaced = match rest {
        ["namespaces", ns, plural, tail @ ..] => lookup(plural)
            .filter(|d| d.namespaced)
            .map(|d| (d, ns.to_string(), tail)),
        _ => None,
    };
    let (def, namespace, tail) = match namespaced {
        Some(found) => found,
        None => {
            let (plural, tail) = rest.split_first()?;
            let def = lookup(plural)?;
            (def, String::new(), tail)
        }
    };
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    if let Some(s) = &sub
        && !def.subresources.iter().any(|(n, _)| n == s)
    {
        return None;
    }
    type Out = Option<fn(&Value) -> Value>;
    type In = Option<fn(Value, &Value) -> Value>;
    let (storage, outward, inward): (ResKey, Out, In) =
        if def.group == "events.k8s.io" && def.plural == "events" {
            (
                ResKey::new("", "events"),
                Some(events::to_events_v1),
                Some(|e, _| events::to_core(e)),
            )
        } else if sub.as_deref() == Some("scale") {
            (def.key(), Some(to_scale), Some(from_scale))
        } else {
            (def.key(), None, None)
        };
    Some(Target {
        def,
        version: version.to_owned(),
        namespace,
        name,
        sub,
        legacy_watch,
        storage,
        outward,
        inward,
    })
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if t.legacy_watch || truthy(q, "watch") => "watch",
        Method::GET if t.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn parse_yaml_or_json(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

fn selectors(q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(
        q.get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
    table: bool,
) -> Result<Response, ApiError> {
    let key = t.storage.clone();
    let store = &shared.store;
    let name = t.name.as_deref().unwrap_or_default();
    match (method.clone(), verb_of(method, t, q)) {
        (_, "watch") => watch(shared, t, q, table),
        (_, "list") => list(shared, t, q, table).await,
        (_, "get") if t.sub.as_deref() == Some("log") => {
            let pod = store.get(&key, &t.namespace, name)?;
            let text = if pod["status"]["phase"] == "Running" {
                format!(
                    "simulated container output of pod {}/{name} on node {}\n",
                    t.namespace,
                    pod["spec"]["nodeName"].as_str().unwrap_or_default()
                )
            } else {
                return Err(ApiError::bad_request(format!(
                    "container \"{}\" in pod \"{name}\" is waiting to start: ContainerCreating",
                    pod["spec"]["containers"][0]["name"]
                        .as_str()
                        .unwrap_or_default()
                )));
            };
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
        (_, "get") => {
            let obj = store.get(&key, &t.namespace, name)?;
            if table {
                return Ok(json_response(
                    200,
                    &table::render(&t.def, &[obj], store.current_rv(), store.clock().now()),
                ));
            }
            Ok(json_response(200, &t.out(&obj)))
        }
        (_, "create") => match t.sub.as_deref() {
            Some("eviction") => {
                let eviction = parse_body(&body)?;
                controllers::disruption::evict(store, &t.namespace, name, &eviction)?;
                Ok(json_response(201, &success_status(201)))
            }
            Some("binding") => {
                let binding = parse_body(&body)?;
                crate::scheduler::bind(store, &t.namespace, name, &binding)?;
                Ok(json_response(201, &success_status(201)))
            }
            Some(_) => Err(ApiError::method_not_allowed()),
            None => {
                let obj = parse_body(&body)?;
                if dry_run(q) {
                    return Ok(json_response(201, &obj));
                }
                let created = store.create(&key, &t.namespace, t.to_storage(obj, &Value::Null))?;
                Ok(json_response(201, &t.out(&created)))
            }
        },
        (_, "update") => {
            let obj = parse_body(&body)?;
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
                store.modify_or_preview(&key, &t.namespace, name, part, dry_run(q), |o| {
                    if want_rv != 0 && want_rv != meta::resource_version(o) {
                        return Err(ApiError::conflict(&t.def.group, &t.def.plural, name));
                    }
                    *o = t.to_storage(obj, o);
                    Ok(())
                })?
            } else {
                store.update(&key, &t.namespace, name, obj, part)?
            };
            Ok(json_response(200, &t.out(&updated)))
        }
        (_, "patch") => patch_object(shared, t, q, headers, &body),
        (_, "delete") => {
            let opts = delete_options(q, &body);
            let in_body = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|b| b["dryRun"].as_array().map(|a| a.iter().any(|v| v == "All")))
                .unwrap_or(false);
            let deleted = if dry_run(q) || in_body {
                store.get(&key, &t.namespace, name)?
            } else {
                store.delete(&key, &t.namespace, name, &opts)?
            };
            Ok(json_response(200, &t.out(&deleted)))
        }
        (_, "deletecollection") => {
            let (labels, fields) = selectors(q)?;
            let opts = delete_options(q, &body);
            let (items, _) = store.list(&key, &t.namespace);
            for item in items
                .iter()
                .filter(|o| labels.matches_object(o) && fields.matches(o))
            {
                // Objects that vanished meanwhile are fine.
                let _ = store.delete(&key, meta::namespace(item), meta::name(item), &opts);
            }
            Ok(json_response(200, &success_status(200)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> DeleteOptions {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    DeleteOptions {
        grace_period_seconds: q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| body["gracePeriodSeconds"].as_i64()),
        uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
        resource_version: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned),
    }
}

fn patch_object(
    shared: &Shared,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let key = t.storage.clone();
    let name = t.name.as_deref().unwrap_or_default();
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

fn list_kind(def: &ResourceDef) -> String {
    format!("{}List", def.kind)
}

async fn list(
    shared: &Arc<Shared>,
    t: &Target,
    q: &HashMap<String, String>,
    table: bool,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let (items, rv) = shared.store.list(&t.storage, &t.namespace);
    let outward = t.outward;
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let after = q
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|c| decode_continue(c))
        .transpose()?;
    let api_version = t.def.api_version(&t.version);
    let kind = list_kind(&t.def);
    let def = t.def.clone();
    let now = shared.store.clock().now();
    let body = tokio::task::spawn_blocking(move || {
        let mut selected = items.iter().filter(|o| {
            after.as_ref().is_none_or(|(ns, n)| {
                (meta::namespace(o), meta::name(o)) > (ns.as_str(), n.as_str())
            }) && labels.matches_object(o)
                && fields.matches(o)
        });
        let mut page: Vec<&std::sync::Arc<Value>> = Vec::new();
        let mut more = None;
        for o in selected.by_ref() {
            if limit > 0 && page.len() == limit {
                more = Some(o);
                break;
            }
            page.push(o);
        }
        let continue_token = match (more, page.last()) {
            (Some(_), Some(last)) => Some(encode_continue(meta::namespace(last), meta::name(last))),
            _ => None,
        };
        if table {
            let objs: Vec<std::sync::Arc<Value>> = page.into_iter().cloned().collect();
            let mut v = table::render(&def, &objs, rv, now);
            if let Some(c) = continue_token {
                v["metadata"]["continue"] = json!(c);
            }
            return serde_json::to_vec(&v).unwrap_or_default();
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if let Some(c) = continue_token {
            metadata["continue"] = json!(c);
        }
        let mut out = Vec::with_capacity(page.len() * 1024 + 128);
        out.extend_from_slice(b"{\"kind\":");
        out.extend_from_slice(json!(kind).to_string().as_bytes());
        out.extend_from_slice(b",\"apiVersion\":");
        out.extend_from_slice(json!(api_version).to_string().as_bytes());
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.to_string().as_bytes());
        out.extend_from_slice(b",\"items\":[");
        for (i, o) in page.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Serialising a Value into a Vec cannot fail.
            let _ = match outward {
                Some(f) => serde_json::to_writer(&mut out, &f(o)),
                None => serde_json::to_writer(&mut out, o.as_ref()),
            };
        }
        out.extend_from_slice(b"]}");
        out
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .ok_or(())
                .and_then(|h| u8::from_str_radix(h, 16).map_err(|_| ()))
        })
        .collect();
    let text = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (ns, name) = text.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_owned(), name.to_owned()))
}

fn watch(
    shared: &Arc<Shared>,
    t: &Target,
    q: &HashMap<String, String>,
    table: bool,
) -> Result<Response, ApiError> {
    let (labels, mut fields) = selectors(q)?;
    if let Some(name) = &t.name {
        let name_term = FieldSelector::parse(&format!("metadata.name={name}"))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        fields = if q.get("fieldSelector").is_some() {
            FieldSelector::parse(&format!(
                "metadata.name={name},{}",
                q.get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default()
            ))
            .map_err(|e| ApiError::bad_request(e.to_string()))?
        } else {
            name_term
        };
    }
    let send_initial = truthy(q, "sendInitialEvents");
    let start = match q.get("resourceVersion").map(String::as_str) {
        _ if send_initial => WatchStart::Initial,
        None | Some("") | Some("0") => WatchStart::Initial,
        Some(rv) => WatchStart::Since(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let req = WatchRequest {
        key: t.storage.clone(),
        kind: t.def.kind.clone(),
        api_version: t.def.api_version(&t.version),
        namespace: t.namespace.clone(),
        start,
        labels,
        fields,
        bookmarks: truthy(q, "allowWatchBookmarks"),
        bookmark_interval: shared.options.bookmark_interval,
        initial_events_end: send_initial,
        timeout,
        render: if table {
            table::row_renderer(&t.def)
        } else {
            t.outward
        },
    };
    let stream = watch::start(shared.store.clone(), req);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error_response(&ApiError::internal("building the watch response"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_percent_decoded() {
        let q = parse_query(Some(
            "labelSelector=app%20in%20%28a%2Cb%29&fieldSelector=spec.nodeName%3Dn1&watch=1",
        ));
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert_eq!(q["fieldSelector"], "spec.nodeName=n1");
        assert!(truthy(&q, "watch"));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue("default", "pod-1");
        assert_eq!(
            decode_continue(&token).unwrap(),
            ("default".into(), "pod-1".into())
        );
    }
}
