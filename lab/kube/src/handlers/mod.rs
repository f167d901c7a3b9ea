//! The HTTP front of the emulator: routing of `/api`, `/apis` and resource
//! paths, query parameters, verbs, content types, fault injection per
//! request and `metav1.Status` error responses.

mod query;
mod read;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidepool_lab_sim::Service;

use crate::error::ApiError;
use crate::resources::{ResKey, ResourceDef};
use crate::{Shared, events, openapi, proto};
use query::{parse_query, truthy};
use read::{get, list, watch};
use write::{Write, create, delete, delete_collection, patch_object, update};

/// Errors of request handling are [`ApiError`]s; this alias names them here.
pub type HandlerError = ApiError;

/// The axum router serving the whole API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// The bearer token of the kubeconfig the emulator hands out.
const LAB_TOKEN: &str = "tidepool-lab";

/// A request with no credentials is served (the emulator plays an
/// administrator for everyone); one presenting a bearer token other than
/// the lab's is refused, as the real API server refuses an unknown token.
fn token_accepted(headers: &HeaderMap) -> bool {
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return true;
    };
    match auth.to_str().ok().and_then(|a| a.strip_prefix("Bearer ")) {
        Some(token) => token.trim() == LAB_TOKEN,
        None => true,
    }
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
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
    if !token_accepted(&headers) {
        return error_response(&ApiError::unauthorized());
    }
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
    if method == Method::POST
        && segs
            == [
                "apis",
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
            ]
    {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let who = crate::authz::Identity::of_token(token);
        return match crate::authz::review(&shared.store, &who, &body) {
            Ok(v) => json_response(201, &v),
            Err(e) => error_response(&e),
        };
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
    if let Some(e) = strict_field_error(&method, &target, &query, &body) {
        return error_response(&e);
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

/// With `fieldValidation=Strict` (kubectl's default), a create or update
/// of a custom resource that names fields its schema does not know is
/// refused, as the real server refuses it before any other validation:
/// `WorkerClaim in version "v1alpha1" cannot be handled as a WorkerClaim:
/// strict decoding error: unknown field "spec.bogusField"`.
fn strict_field_error(
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Option<ApiError> {
    if !matches!(*method, Method::POST | Method::PUT)
        || q.get("fieldValidation").map(String::as_str) != Some("Strict")
        || t.sub.is_some()
    {
        return None;
    }
    let schema = t.def.schema.as_ref()?;
    let obj: Value = serde_json::from_slice(body).ok()?;
    let unknown = crate::schema::unknown_fields(schema, &obj);
    if unknown.is_empty() {
        return None;
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    let kind = &t.def.kind;
    Some(ApiError::bad_request(format!(
        "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
        t.version,
        fields.join(", ")
    )))
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

async fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
    table: bool,
) -> Result<Response, ApiError> {
    let w = Write {
        shared,
        t,
        q,
        body: &body,
    };
    match (method.clone(), verb_of(method, t, q)) {
        (_, "watch") => watch(shared, t, q, table),
        (_, "list") => list(shared, t, q, table).await,
        (_, "get") => get(shared, t, table),
        (_, "create") => create(&w),
        (_, "update") => update(&w),
        (_, "patch") => patch_object(&w, headers),
        (_, "delete") => delete(&w),
        (_, "deletecollection") => delete_collection(&w),
        _ => Err(ApiError::method_not_allowed()),
    }
}
