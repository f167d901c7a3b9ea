//! Structural schemas of custom resources, applied on every write as the
//! real API server does: unknown fields are pruned (unless
//! `x-kubernetes-preserve-unknown-fields`), `default`s are filled in, null
//! values of non-nullable fields are dropped, and `type`, `required` and
//! `enum` are validated, with the real error wording.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Errors of this module are API errors (422 Invalid).
pub type SchemaError = ApiError;

/// One validation failure: field path and the message after it.
type Cause = (String, String);

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

fn walk(schema: &Value, v: &mut Value, path: &str, root: bool, causes: &mut Vec<Cause>) {
    if schema["x-kubernetes-int-or-string"] == true {
        return;
    }
    if let Some(ty) = schema["type"].as_str()
        && !type_matches(ty, v)
    {
        causes.push((
            path.to_owned(),
            format!(
                "Invalid value: \"{}\": {path} in body must be of type {ty}: \"{}\"",
                json_type(v),
                json_type(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        causes.push((
            path.to_owned(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(map) => walk_object(schema, map, path, root, causes),
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    false,
                    causes,
                );
            }
        }
        _ => {}
    }
}

fn walk_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    root: bool,
    causes: &mut Vec<Cause>,
) {
    let props = schema["properties"].as_object();
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    let child = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    if let Some(props) = props {
        for (k, sub) in props {
            if !map.contains_key(k)
                && let Some(d) = sub.get("default")
            {
                map.insert(k.clone(), d.clone());
            }
        }
        map.retain(|k, v| {
            let known = props.get(k);
            if v.is_null() && known.is_some_and(|s| s["nullable"] != true) {
                return false;
            }
            known.is_some()
                || preserve
                || (root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
        });
        for (k, v) in map.iter_mut() {
            if root && k == "metadata" {
                continue;
            }
            if let Some(sub) = props.get(k) {
                walk(sub, v, &child(k), false, causes);
            }
        }
    } else if schema["additionalProperties"].is_object() {
        for (k, v) in map.iter_mut() {
            walk(&schema["additionalProperties"], v, &child(k), false, causes);
        }
    } else if !preserve
        && !root
        && schema["type"] == "object"
        && schema["additionalProperties"] != true
    {
        map.clear();
    }
    if let Some(required) = schema["required"].as_array() {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                causes.push((child(r), "Required value".to_owned()));
            }
        }
    }
}

/// The paths of the fields of `obj` its schema does not know (what pruning
/// would drop), as the real server names them in a strict decoding error:
/// `spec.bogusField`, `spec.items[0].typo`.
pub fn unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut found = Vec::new();
    unknown_in(schema, obj, "", true, &mut found);
    found
}

fn unknown_in(schema: &Value, v: &Value, path: &str, root: bool, found: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true
        || schema["x-kubernetes-int-or-string"] == true
    {
        return;
    }
    let child = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            for (k, sub) in map {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                match props.and_then(|p| p.get(k)) {
                    Some(known) => unknown_in(known, sub, &child(k), false, found),
                    None if schema["additionalProperties"].is_object() => {
                        unknown_in(
                            &schema["additionalProperties"],
                            sub,
                            &child(k),
                            false,
                            found,
                        );
                    }
                    None if schema["additionalProperties"] == true => {}
                    None => found.push(child(k)),
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                unknown_in(
                    &schema["items"],
                    item,
                    &format!("{path}[{i}]"),
                    false,
                    found,
                );
            }
        }
        _ => {}
    }
}

/// Prunes, defaults and validates a custom resource against its schema.
///
/// # Errors
/// `422 Invalid` naming every failing field, worded as the real server:
/// `WorkerClaim.tidepool.dev "x" is invalid: spec.pool: Required value`.
pub fn apply(
    schema: &Value,
    obj: &mut Value,
    kind: &str,
    group: &str,
    name: &str,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    walk(schema, obj, "", true, &mut causes);
    if causes.is_empty() {
        return Ok(());
    }
    let qualified = format!("{kind}.{group}");
    let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    let message = if text.len() == 1 {
        format!("{qualified} \"{name}\" is invalid: {}", text.join(""))
    } else {
        format!("{qualified} \"{name}\" is invalid: [{}]", text.join(", "))
    };
    let mut err = ApiError::invalid(&qualified, name, "", "");
    err.message = message;
    err.details = Some(json!({
        "name": name, "group": group, "kind": kind,
        "causes": causes.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect::<Vec<_>>(),
    }));
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["pool"], "properties": {
                "pool": {"type": "string"},
                "size": {"type": "string", "enum": ["small", "large"], "default": "small"},
                "count": {"type": "integer"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
            "status": {"type": "object", "nullable": true, "properties": {"phase": {"type": "string"}}}}})
    }

    #[test]
    fn unknown_fields_are_named_by_their_path() {
        let obj = json!({"apiVersion": "tidepool.dev/v1", "kind": "WorkerClaim", "metadata": {"name": "c"},
            "spec": {"pool": "burst", "typo": 1, "extra": {"anything": true}}, "bogus": 2});
        assert_eq!(
            unknown_fields(&claim_schema(), &obj),
            ["bogus", "spec.typo"]
        );
    }

    #[test]
    fn unknown_fields_are_pruned_and_defaults_filled_in() {
        let mut obj = json!({"apiVersion": "tidepool.dev/v1", "kind": "WorkerClaim", "metadata": {"name": "c"},
            "spec": {"pool": "burst", "typo": 1, "extra": {"anything": true}}, "bogus": 2});
        apply(
            &claim_schema(),
            &mut obj,
            "WorkerClaim",
            "tidepool.dev",
            "c",
        )
        .unwrap();
        assert_eq!(
            obj["spec"],
            json!({"pool": "burst", "size": "small", "extra": {"anything": true}})
        );
        assert!(obj.get("bogus").is_none());
        assert_eq!(obj["metadata"]["name"], "c");
    }

    #[test]
    fn missing_required_fields_wrong_types_and_bad_enums_are_invalid() {
        let mut obj = json!({"metadata": {"name": "c"}, "spec": {"size": "huge", "count": "3"}});
        let err = apply(
            &claim_schema(),
            &mut obj,
            "WorkerClaim",
            "tidepool.dev",
            "c",
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .starts_with("WorkerClaim.tidepool.dev \"c\" is invalid: ["),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("spec.pool: Required value"),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("spec.size: Unsupported value: \"huge\""),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("spec.count in body must be of type integer"),
            "{}",
            err.message
        );
    }
}
