//! Creating an object: the shape check of a body, identity (uid, name from
//! `generateName`, resourceVersion), and the server-side defaults a real API
//! server fills in, CRDs established.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{EventType, Store, Table, obj_key};
use crate::error::ApiError;
use crate::meta;
use crate::meta::format_time;
use crate::resources::{ResKey, ResourceDef, def_from_crd};

impl Store {
    /// Creates an object.
    ///
    /// # Errors
    /// `AlreadyExists`, `Invalid` (no name), `NotFound` (namespace missing),
    /// `BadRequest` (namespace of body and path differ).
    pub fn create(
        &self,
        key: &ResKey,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        let def = Self::def(&st, key)?;
        check_shape(&def, &obj)?;
        let now = format_time(self.clock.now());
        let version = def.versions.first().cloned().unwrap_or_default();
        if obj["apiVersion"].as_str().is_none() {
            obj["apiVersion"] = json!(def.api_version(&version));
        }
        if obj["kind"].as_str().is_none() {
            obj["kind"] = json!(def.kind);
        }
        set_identity(&def, namespace, &mut obj, &now)?;
        let ns = meta::namespace(&obj).to_owned();
        let name = meta::name(&obj).to_owned();
        if def.namespaced {
            let ns_exists = st
                .tables
                .get(&ResKey::new("", "namespaces"))
                .is_some_and(|t| t.objects.contains_key(&(String::new(), ns.clone())));
            if !ns_exists {
                return Err(ApiError::not_found("", "namespaces", &ns));
            }
        }
        let okey = obj_key(&def, &ns, &name);
        if st
            .tables
            .get(key)
            .is_some_and(|t| t.objects.contains_key(&okey))
        {
            return Err(ApiError::already_exists(&key.group, &key.plural, &name));
        }
        if def.group.is_empty()
            && def.plural == "pods"
            && obj["spec"]["containers"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            return Err(ApiError::invalid(
                "Pod",
                &name,
                "spec.containers",
                "Required value",
            ));
        }
        if let Some(schema) = &def.schema {
            crate::schema::apply(schema, &mut obj, &def.kind, &def.group, &name)?;
        }
        apply_create_defaults(&def, &mut obj, &now);
        if def.plural == "customresourcedefinitions" && def.group == "apiextensions.k8s.io" {
            let crd_def = def_from_crd(&obj)
                .map_err(|e| ApiError::invalid(&def.kind, &name, "spec", &e.to_string()))?;
            establish_crd(&mut obj, &now);
            st.registry.insert(crd_def);
        }
        st.stamp_next_version(&mut obj);
        let obj = Arc::new(obj);
        st.tables
            .entry(key.clone())
            .or_insert_with(Table::new)
            .objects
            .insert(okey, obj.clone());
        self.emit(&mut st, key, EventType::Added, obj.clone(), None);
        Ok(obj)
    }
}

/// The identity of a new object: its namespace (from the path, `default`
/// when neither path nor body names one; none for cluster-scoped
/// resources), its name (or one made from `generateName`), a fresh uid and
/// creation time, and generation 1 for objects with a spec.
///
/// # Errors
/// `BadRequest` when body and path name different namespaces; `Invalid`
/// without name or generateName.
fn set_identity(
    def: &ResourceDef,
    namespace: &str,
    obj: &mut Value,
    now: &str,
) -> Result<(), ApiError> {
    let meta = meta::metadata_mut(obj);
    if def.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !namespace.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            Some(_) => {}
            None => {
                let ns = if namespace.is_empty() {
                    "default"
                } else {
                    namespace
                };
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => {
                let name = format!("{prefix}{}", meta::random_suffix(5));
                meta.insert("name".into(), json!(name));
            }
            _ => {
                return Err(ApiError::invalid(
                    &def.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
        }
    }
    meta.insert("uid".into(), json!(meta::new_uid()));
    meta.insert("creationTimestamp".into(), json!(now));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    meta.remove("managedFields");
    if obj.get("spec").is_some() || def.plural == "customresourcedefinitions" {
        meta::metadata_mut(obj).insert("generation".into(), json!(1));
    }
    Ok(())
}

/// Rejects bodies whose well-known parts have the wrong JSON type, as the
/// real server's decoder does (`metadata`, `spec`, `status` objects;
/// labels and annotations maps of strings).
pub(super) fn check_shape(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let wrong = |field: &str, want: &str| {
        Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {field} of {} into a {want}",
            def.kind
        )))
    };
    if !obj.is_object() {
        return wrong("the body", "JSON object");
    }
    for part in ["metadata", "spec", "status"] {
        if !(obj[part].is_object() || obj[part].is_null()) {
            return wrong(part, "JSON object");
        }
    }
    for map in ["labels", "annotations"] {
        let v = &obj["metadata"][map];
        if !(v.is_null()
            || v.as_object()
                .is_some_and(|m| m.values().all(Value::is_string)))
        {
            return wrong(&format!("metadata.{map}"), "map of strings");
        }
    }
    if def.group.is_empty() && def.plural == "pods" {
        let ok = obj["spec"]["containers"]
            .as_array()
            .is_none_or(|cs| cs.iter().all(|c| c.is_object() && c["name"].is_string()));
        if !ok {
            return wrong("spec.containers", "list of named containers");
        }
    }
    if matches!(
        def.plural.as_str(),
        "deployments" | "replicasets" | "daemonsets" | "statefulsets"
    ) && !(obj["spec"]["template"].is_null()
        || obj["spec"]["template"].is_object()
            && (obj["spec"]["template"]["metadata"].is_null()
                || obj["spec"]["template"]["metadata"].is_object()))
    {
        return wrong("spec.template", "pod template object");
    }
    Ok(())
}

/// Server-side defaults a real API server fills in on create.
fn apply_create_defaults(def: &ResourceDef, obj: &mut Value, now: &str) {
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => {
            let spec = &mut obj["spec"];
            if spec["schedulerName"].is_null() {
                spec["schedulerName"] = json!("default-scheduler");
            }
            if spec["terminationGracePeriodSeconds"].is_null() {
                spec["terminationGracePeriodSeconds"] = json!(30);
            }
            if spec["restartPolicy"].is_null() {
                spec["restartPolicy"] = json!("Always");
            }
            if spec["dnsPolicy"].is_null() {
                spec["dnsPolicy"] = json!("ClusterFirst");
            }
            if obj["status"]["phase"].is_null() {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            // The DefaultTolerationSeconds admission plugin.
            let mut tolerations = obj["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let taint = json!({"key": key, "effect": "NoExecute"});
                if !tolerations
                    .iter()
                    .any(|t| crate::scheduler::tolerates(t, &taint))
                {
                    tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
            obj["spec"]["tolerations"] = json!(tolerations);
        }
        ("", "namespaces") => {
            let name = meta::name(obj).to_owned();
            let meta = meta::metadata_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if labels.is_object() {
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        ("events.k8s.io", "events") if obj["eventTime"].is_null() => {
            obj["eventTime"] = json!(now);
        }
        _ => {}
    }
}

/// Marks a CRD as accepted and established, as the apiextensions controller does.
fn establish_crd(crd: &mut Value, now: &str) {
    let names = crd["spec"]["names"].clone();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": crd["spec"]["versions"].as_array().map(|vs| vs.iter()
            .filter(|v| v["storage"].as_bool().unwrap_or(false))
            .map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
             "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now,
             "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
    });
}
