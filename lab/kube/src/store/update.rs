//! Changing an object: replace (PUT) and read-modify-write (the patches),
//! with resourceVersion preconditions, generation bumps on spec changes and
//! no-op updates that keep the version.

use std::sync::Arc;

use serde_json::{Value, json};

use super::create::check_shape;
use super::{EventType, Part, Store, WriteMode};
use crate::error::ApiError;
use crate::meta;
use crate::resources::{ResKey, ResourceDef, def_from_crd};

/// Whether two objects differ outside `metadata` and `status` (what bumps
/// `generation`). Compares in place, without copying.
fn spec_differs(a: &Value, b: &Value) -> bool {
    let skip = |k: &String| k != "metadata" && k != "status";
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => x
            .iter()
            .filter(|(k, _)| skip(k))
            .ne(y.iter().filter(|(k, _)| skip(k))),
        _ => a != b,
    }
}

/// Whether two objects are equal apart from `metadata.resourceVersion` and
/// `metadata.managedFields`.
fn same_but_version(a: &Value, b: &Value) -> bool {
    let (Some(x), Some(y)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let volatile = |k: &String| k != "resourceVersion" && k != "managedFields";
    x.len() == y.len()
        && x.iter().all(|(k, v)| match (k.as_str(), y.get(k)) {
            ("metadata", Some(w)) => match (v.as_object(), w.as_object()) {
                (Some(m), Some(n)) => m
                    .iter()
                    .filter(|(k, _)| volatile(k))
                    .eq(n.iter().filter(|(k, _)| volatile(k))),
                _ => v == w,
            },
            (_, Some(w)) => v == w,
            (_, None) => false,
        })
}

/// The object a change leaves: only `status` from `new` for the status
/// subresource, everything but `status` for the main resource of a kind
/// with one; identity and server-owned metadata always from `old`.
fn merge_change(def: &ResourceDef, part: Part, old: &Value, new: Value) -> Value {
    let mut merged = match part {
        Part::Status => {
            let mut m = old.clone();
            m["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            if m["status"].is_null()
                && let Some(map) = m.as_object_mut()
            {
                map.remove("status");
            }
            m
        }
        Part::Main if def.has_status() => {
            let mut m = new;
            match old.get("status") {
                Some(s) => m["status"] = s.clone(),
                None => {
                    if let Some(map) = m.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            m
        }
        _ => new,
    };
    // Identity and server-owned metadata come from the stored object.
    {
        let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
        let meta = meta::metadata_mut(&mut merged);
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    if merged["apiVersion"].is_null() {
        merged["apiVersion"] = old["apiVersion"].clone();
    }
    if merged["kind"].is_null() {
        merged["kind"] = old["kind"].clone();
    }
    merged
}

impl Store {
    /// Replaces an object (PUT). A `metadata.resourceVersion` in `obj` is a
    /// precondition.
    ///
    /// # Errors
    /// `NotFound`, `Conflict` on a stale resourceVersion.
    pub fn update(
        &self,
        key: &ResKey,
        namespace: &str,
        name: &str,
        obj: Value,
        part: Part,
    ) -> Result<Arc<Value>, ApiError> {
        let precondition = match meta::resource_version(&obj) {
            0 => None,
            rv => Some(rv),
        };
        let how = WriteMode {
            precondition,
            dry_run: false,
        };
        self.modify_inner(key, namespace, name, part, how, |current| {
            *current = obj;
            Ok(())
        })
    }

    /// Reads, changes and writes an object atomically (patches and
    /// controllers). A `metadata.resourceVersion` that `change` sets to a
    /// value other than the stored one is a failed precondition.
    ///
    /// # Errors
    /// `NotFound`, `Conflict`, or whatever `change` returns.
    pub fn modify(
        &self,
        key: &ResKey,
        namespace: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        self.modify_or_preview(key, namespace, name, part, false, change)
    }

    /// Like [`Store::modify`], but with `dry_run` only computes the result
    /// (`?dryRun=All`).
    ///
    /// # Errors
    /// As [`Store::modify`].
    pub fn modify_or_preview(
        &self,
        key: &ResKey,
        namespace: &str,
        name: &str,
        part: Part,
        dry_run: bool,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let how = WriteMode {
            precondition: None,
            dry_run,
        };
        self.modify_inner(key, namespace, name, part, how, |current| {
            let before = meta::resource_version(current);
            change(current)?;
            let after = meta::resource_version(current);
            if after != 0 && after != before {
                return Err(ApiError::conflict("", "", ""));
            }
            Ok(())
        })
        .map_err(|e| {
            if e.reason == "Conflict" && e.message.contains("on  \"\"") {
                ApiError::conflict(&key.group, &key.plural, name)
            } else {
                e
            }
        })
    }

    fn modify_inner(
        &self,
        key: &ResKey,
        namespace: &str,
        name: &str,
        part: Part,
        how: WriteMode,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let WriteMode {
            precondition,
            dry_run,
        } = how;
        let mut st = self.lock();
        let (def, okey, old) = st.stored(key, namespace, name)?;
        if let Some(rv) = precondition
            && rv != meta::resource_version(&old)
        {
            return Err(ApiError::conflict(&key.group, &key.plural, name));
        }
        let mut new = (*old).clone();
        change(&mut new)?;
        check_shape(&def, &new)?;
        let mut merged = merge_change(&def, part, &old, new);
        if let Some(schema) = &def.schema {
            crate::schema::apply(schema, &mut merged, &def.kind, &def.group, name)?;
        }
        if part != Part::Status && spec_differs(&merged, &old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta::metadata_mut(&mut merged).insert("generation".into(), json!(generation));
        }
        if same_but_version(&merged, &old) {
            return Ok(old);
        }
        if dry_run {
            return Ok(Arc::new(merged));
        }
        if def.plural == "customresourcedefinitions" && def.group == "apiextensions.k8s.io" {
            let crd_def = def_from_crd(&merged)
                .map_err(|e| ApiError::invalid(&def.kind, name, "spec", &e.to_string()))?;
            st.registry.insert(crd_def);
        }
        let ready_to_go = meta::is_terminating(&merged)
            && merged["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && merged["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        st.stamp_next_version(&mut merged);
        let merged = Arc::new(merged);
        if ready_to_go {
            self.remove_locked(&mut st, &def, okey, merged.clone());
        } else {
            if let Some(t) = st.tables.get_mut(key) {
                t.objects.insert(okey, merged.clone());
            }
            self.emit(&mut st, key, EventType::Modified, merged.clone(), Some(old));
        }
        Ok(merged)
    }
}
