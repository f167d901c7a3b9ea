//! The four patch flavours of the Kubernetes API: JSON merge patch (RFC
//! 7386), strategic merge patch (for the list fields kubectl and
//! controllers touch), JSON patch (RFC 6902) and the merge step of
//! server-side apply.

use serde_json::{Map, Value};

/// Errors applying a patch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not what its content type promises.
    #[error("invalid patch document: {0}")]
    Malformed(String),
    /// A JSON patch operation refers to a path that does not exist.
    #[error("jsonpatch {op} operation does not apply: doc is missing path: {path}")]
    MissingPath {
        /// The operation.
        op: String,
        /// The JSON pointer.
        path: String,
    },
    /// A JSON patch `test` operation failed.
    #[error("testing value {path} failed")]
    TestFailed {
        /// The JSON pointer.
        path: String,
    },
}

/// Applies an RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// How a list field merges in a strategic merge patch.
enum ListStrategy {
    /// Elements are objects identified by these keys.
    ByKeys(&'static [&'static str]),
    /// Elements are scalars merged as a set.
    Set,
    /// The list is replaced.
    Replace,
}

fn strategy_for(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => ListStrategy::ByKeys(&["name"]),
        "conditions" | "addresses" => ListStrategy::ByKeys(&["type"]),
        "taints" => ListStrategy::ByKeys(&["key", "effect"]),
        "ports" => ListStrategy::ByKeys(&["containerPort", "port"]),
        "volumeMounts" => ListStrategy::ByKeys(&["mountPath"]),
        "ownerReferences" => ListStrategy::ByKeys(&["uid"]),
        "finalizers" => ListStrategy::Set,
        _ => ListStrategy::Replace,
    }
}

fn same_element(keys: &[&str], a: &Value, b: &Value) -> bool {
    let mut any = false;
    for k in keys {
        match (a.get(*k), b.get(*k)) {
            (Some(x), Some(y)) if x == y => any = true,
            (None, None) => {}
            _ => return false,
        }
    }
    any
}

/// Applies a strategic merge patch. Lists listed in this module merge by
/// their key (containers by name, conditions by type, taints by key and
/// effect, finalizers as a set); `$patch: delete|replace`,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`
/// directives are honoured (the last by ignoring it); other lists are
/// replaced.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch_map.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch_map {
        if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (v, strategy_for(k)) {
            (Value::Array(items), ListStrategy::ByKeys(keys)) => {
                let existing = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                if !existing.is_array() {
                    *existing = Value::Array(vec![]);
                }
                if let Value::Array(list) = existing {
                    merge_keyed_list(list, items, keys);
                }
            }
            (Value::Array(items), ListStrategy::Set) => {
                let existing = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                if let Value::Array(list) = existing {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                } else {
                    *existing = v.clone();
                }
            }
            (Value::Object(_), _) => {
                strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_keyed_list(list: &mut Vec<Value>, items: &[Value], keys: &[&str]) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *list = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return;
    }
    for item in items {
        let pos = list.iter().position(|e| same_element(keys, e, item));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut list[i], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge_patch(&mut fresh, item);
                list.push(fresh);
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn pointer_parent<'a>(
    doc: &'a mut Value,
    path: &str,
    op: &str,
) -> Result<(&'a mut Value, String), PatchError> {
    let missing = || PatchError::MissingPath {
        op: op.to_owned(),
        path: path.to_owned(),
    };
    let (parent, last) = path.rsplit_once('/').ok_or_else(missing)?;
    let parent_value = if parent.is_empty() {
        doc
    } else {
        doc.pointer_mut(parent).ok_or_else(missing)?
    };
    Ok((parent_value, unescape(last)))
}

fn add_at(doc: &mut Value, path: &str, value: Value, op: &str) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let missing = || PatchError::MissingPath {
        op: op.to_owned(),
        path: path.to_owned(),
    };
    let (parent, last) = pointer_parent(doc, path, op)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| missing())?;
            if i > a.len() {
                return Err(missing());
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove_at(doc: &mut Value, path: &str, op: &str) -> Result<Value, PatchError> {
    let missing = || PatchError::MissingPath {
        op: op.to_owned(),
        path: path.to_owned(),
    };
    let (parent, last) = pointer_parent(doc, path, op)?;
    match parent {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Applies an RFC 6902 JSON patch (a list of operations).
///
/// # Errors
/// [`PatchError`] when the document is not a list of operations, a path is
/// missing, or a `test` fails; the target is then left unchanged.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("a JSON patch must be a list".into()))?;
    let mut doc = target.clone();
    for op in ops {
        let name = op["op"].as_str().unwrap_or_default();
        let path = op["path"]
            .as_str()
            .ok_or_else(|| PatchError::Malformed("operation without a path".into()))?;
        let missing = || PatchError::MissingPath {
            op: name.to_owned(),
            path: path.to_owned(),
        };
        match name {
            "add" => add_at(&mut doc, path, op["value"].clone(), name)?,
            "remove" => {
                remove_at(&mut doc, path, name)?;
            }
            "replace" => {
                let slot = doc.pointer_mut(path).ok_or_else(missing)?;
                *slot = op["value"].clone();
            }
            "move" | "copy" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| PatchError::Malformed("operation without from".into()))?;
                let value = if name == "move" {
                    remove_at(&mut doc, from, name)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(missing)?
                };
                add_at(&mut doc, path, value, name)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(PatchError::TestFailed {
                        path: path.to_owned(),
                    });
                }
            }
            other => {
                return Err(PatchError::Malformed(format!("Unexpected kind: {other}")));
            }
        }
    }
    *target = doc;
    Ok(())
}

/// Merges an applied configuration into a live object (server-side apply
/// without field ownership: every field the configuration names wins, as
/// with `force=true`; fields it leaves out are kept).
pub fn apply_merge(live: &mut Value, applied: &Value) {
    let mut applied = applied.clone();
    if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        for server_owned in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            meta.remove(server_owned);
        }
    }
    strategic_merge_patch(live, &applied);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_merges_maps() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1]}});
        merge_patch(
            &mut doc,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [2]}}),
        );
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [2]}})
        );
    }

    #[test]
    fn strategic_merge_merges_taints_by_key_and_effect_and_conditions_by_type() {
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}});
        strategic_merge_patch(
            &mut node,
            &json!({
            "spec": {"taints": [{"key": "a", "effect": "NoExecute"}, {"key": "a", "effect": "NoSchedule", "value": "v"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "a", "effect": "NoSchedule", "value": "v"}, {"key": "a", "effect": "NoExecute"}])
        );
        assert_eq!(node["status"]["conditions"][0]["status"], "False");
        assert_eq!(node["status"]["conditions"][1]["type"], "DiskPressure");
    }

    #[test]
    fn strategic_merge_honours_delete_directives_and_finalizer_sets() {
        let mut obj = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"containers": [{"name": "c", "image": "x"}, {"name": "d"}]}});
        strategic_merge_patch(
            &mut obj,
            &json!({
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"containers": [{"name": "d", "$patch": "delete"}, {"name": "c", "image": "y"}]}}),
        );
        assert_eq!(obj["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(
            obj["spec"]["containers"],
            json!([{"name": "c", "image": "y"}])
        );
    }

    #[test]
    fn json_patch_adds_removes_and_tests_atomically() {
        let mut doc = json!({"metadata": {"finalizers": ["a"], "labels": {"k/x": "1"}}});
        json_patch(
            &mut doc,
            &json!([
            {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
            {"op": "remove", "path": "/metadata/labels/k~1x"},
            {"op": "test", "path": "/metadata/finalizers/0", "value": "a"}]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"finalizers": ["a", "b"], "labels": {}}})
        );
        let before = doc.clone();
        let failed = json_patch(
            &mut doc,
            &json!([
            {"op": "remove", "path": "/metadata/finalizers/0"},
            {"op": "test", "path": "/metadata/finalizers/0", "value": "zzz"}]),
        );
        assert!(failed.is_err());
        assert_eq!(doc, before);
    }
}
