//! The reading verbs over a resource: list (selectors, pagination with
//! continue tokens, tables) and watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::query::{selectors, truthy};
use super::{Target, error_response, json_response};
use crate::error::ApiError;
use crate::resources::ResourceDef;
use crate::selectors::FieldSelector;
use crate::store::WatchStart;
use crate::watch::WatchRequest;
use crate::{Shared, meta, table, watch};

fn list_kind(def: &ResourceDef) -> String {
    format!("{}List", def.kind)
}

pub(super) async fn list(
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

pub(super) fn watch(
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

/// `get`: one object (as a table when asked), or a running pod's log.
pub(super) fn get(shared: &Shared, t: &Target, table: bool) -> Result<Response, ApiError> {
    let store = &shared.store;
    let name = t.name.as_deref().unwrap_or_default();
    let obj = store.get(&t.storage, &t.namespace, name)?;
    if t.sub.as_deref() == Some("log") {
        let pod = obj;
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
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response());
    }
    if table {
        return Ok(json_response(
            200,
            &table::render(&t.def, &[obj], store.current_rv(), store.clock().now()),
        ));
    }
    Ok(json_response(200, &t.out(&obj)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue("default", "pod-1");
        assert_eq!(
            decode_continue(&token).unwrap(),
            ("default".into(), "pod-1".into())
        );
    }
}
