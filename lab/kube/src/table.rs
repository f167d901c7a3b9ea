//! Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for when
//! it prints objects without `-o` (NAME/STATUS/AGE columns and friends).

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::meta;
use crate::resources::ResourceDef;

/// Errors of table rendering (rendering never fails; kept for the module convention).
#[derive(Debug, thiserror::Error)]
pub enum TableError {}

/// A short human age, as kubectl prints it (`45s`, `3m12s`, `5h`, `2d`).
pub fn human_age(created: Option<SystemTime>, now: SystemTime) -> String {
    let Some(created) = created else {
        return "<unknown>".into();
    };
    let s = now
        .duration_since(created)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..10_800 => format!("{}m", s / 60),
        10_800..28_800 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        28_800..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" },
           "description": name, "priority": priority})
}

fn columns(def: &ResourceDef) -> Vec<Value> {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "nodes") => vec![
            column("Name", "string", 0),
            column("Status", "string", 0),
            column("Roles", "string", 0),
            column("Age", "string", 0),
            column("Version", "string", 0),
        ],
        ("", "pods") => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Status", "string", 0),
            column("Restarts", "string", 0),
            column("Age", "string", 0),
            column("IP", "string", 1),
            column("Node", "string", 1),
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            column("Last Seen", "string", 0),
            column("Type", "string", 0),
            column("Reason", "string", 0),
            column("Object", "string", 0),
            column("Message", "string", 0),
        ],
        _ => vec![column("Name", "string", 0), column("Age", "string", 0)],
    }
}

fn cells(def: &ResourceDef, obj: &Value, now: SystemTime) -> Vec<Value> {
    let age = human_age(
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(meta::parse_time),
        now,
    );
    let name = meta::name(obj);
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "nodes") => {
            let mut status = if meta::condition_true(obj, "Ready") {
                "Ready"
            } else {
                "NotReady"
            }
            .to_owned();
            if obj["spec"]["unschedulable"].as_bool() == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = obj["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            let roles = if roles.is_empty() {
                "<none>".to_owned()
            } else {
                roles.join(",")
            };
            let version = obj["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or_default();
            vec![
                json!(name),
                json!(status),
                json!(roles),
                json!(age),
                json!(version),
            ]
        }
        ("", "pods") => {
            let statuses = obj["status"]["containerStatuses"].as_array();
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let status = if meta::is_terminating(obj) {
                "Terminating"
            } else {
                obj["status"]["phase"].as_str().unwrap_or("Pending")
            };
            let ip = obj["status"]["podIP"].as_str().unwrap_or("<none>");
            let node = obj["spec"]["nodeName"].as_str().unwrap_or("<none>");
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(status),
                json!("0"),
                json!(age),
                json!(ip),
                json!(node),
            ]
        }
        ("", "events") | ("events.k8s.io", "events") => {
            let seen = ["lastTimestamp", "eventTime", "deprecatedLastTimestamp"]
                .iter()
                .find_map(|k| obj[*k].as_str())
                .and_then(meta::parse_time);
            let regarding = if obj["involvedObject"].is_object() {
                &obj["involvedObject"]
            } else {
                &obj["regarding"]
            };
            let object = format!(
                "{}/{}",
                regarding["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase(),
                regarding["name"].as_str().unwrap_or_default()
            );
            let message = obj["message"]
                .as_str()
                .or_else(|| obj["note"].as_str())
                .unwrap_or_default();
            vec![
                json!(human_age(seen, now)),
                obj["type"].clone(),
                obj["reason"].clone(),
                json!(object),
                json!(message),
            ]
        }
        _ => vec![json!(name), json!(age)],
    }
}

fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// A Table of `objects`.
pub fn render(def: &ResourceDef, objects: &[Arc<Value>], rv: u64, now: SystemTime) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| json!({"cells": cells(def, o, now), "object": partial(o)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns(def),
        "rows": rows,
    })
}

fn row_for(plural_group: (&str, &str), obj: &Value) -> Value {
    let def = ResourceDef {
        group: plural_group.0.into(),
        versions: vec![],
        plural: plural_group.1.into(),
        singular: String::new(),
        kind: String::new(),
        namespaced: true,
        short_names: vec![],
        subresources: vec![],
        categories: vec![],
        schema: None,
    };
    let mut t = render(
        &def,
        &[Arc::new(obj.clone())],
        meta::resource_version(obj),
        SystemTime::now(),
    );
    t["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
    t
}

fn node_row(obj: &Value) -> Value {
    row_for(("", "nodes"), obj)
}

fn pod_row(obj: &Value) -> Value {
    row_for(("", "pods"), obj)
}

fn event_row(obj: &Value) -> Value {
    row_for(("", "events"), obj)
}

fn generic_row(obj: &Value) -> Value {
    row_for(("", ""), obj)
}

/// The renderer a Table watch uses for objects of `def`.
pub fn row_renderer(def: &ResourceDef) -> Option<fn(&Value) -> Value> {
    Some(match (def.group.as_str(), def.plural.as_str()) {
        ("", "nodes") => node_row,
        ("", "pods") => pod_row,
        ("", "events") | ("events.k8s.io", "events") => event_row,
        _ => generic_row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ages_read_like_kubectl_prints_them() {
        let now = SystemTime::now();
        assert_eq!(human_age(Some(now - Duration::from_secs(45)), now), "45s");
        assert_eq!(
            human_age(Some(now - Duration::from_secs(200)), now),
            "3m20s"
        );
        assert_eq!(
            human_age(Some(now - Duration::from_secs(3 * 86_400)), now),
            "3d"
        );
    }
}
