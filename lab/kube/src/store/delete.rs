//! Deleting an object: preconditions, finalizers (an object with them is only
//! marked), graceful pod deletion, and the removal itself with its event.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{DeleteOptions, EventType, ObjKey, State, Store};
use crate::error::ApiError;
use crate::meta;
use crate::meta::format_time;
use crate::resources::{ResKey, ResourceDef, def_from_crd};

impl Store {
    pub(super) fn remove_locked(
        &self,
        st: &mut State,
        def: &ResourceDef,
        okey: ObjKey,
        last: Arc<Value>,
    ) {
        let key = def.key();
        if let Some(t) = st.tables.get_mut(&key) {
            t.objects.remove(&okey);
        }
        if key.group == "apiextensions.k8s.io"
            && key.plural == "customresourcedefinitions"
            && let Ok(crd) = def_from_crd(&last)
        {
            st.registry.remove(&crd.key());
            st.tables.remove(&crd.key());
        }
        self.emit(st, &key, EventType::Deleted, last, None);
        if key.group.is_empty() && key.plural == "namespaces" {
            let ns = okey.1;
            let namespaced: Vec<ResourceDef> = st
                .registry
                .all()
                .filter(|d| d.namespaced)
                .cloned()
                .collect();
            for d in namespaced {
                let k = d.key();
                let doomed: Vec<(ObjKey, Arc<Value>)> = st
                    .tables
                    .get(&k)
                    .map(|t| {
                        t.objects
                            .range((ns.clone(), String::new())..)
                            .take_while(|((n, _), _)| *n == ns)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                for (ok, obj) in doomed {
                    let mut gone = (*obj).clone();
                    st.stamp_next_version(&mut gone);
                    if let Some(t) = st.tables.get_mut(&k) {
                        t.objects.remove(&ok);
                    }
                    self.emit(st, &k, EventType::Deleted, Arc::new(gone), None);
                }
            }
        }
    }

    /// Deletes an object. Pods bound to a node get a graceful deletion
    /// (deletionTimestamp in the future; the simulated kubelet removes them);
    /// objects with finalizers are only marked; others disappear at once.
    /// Returns the object as last stored.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` on a failed precondition.
    pub fn delete(
        &self,
        key: &ResKey,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        let (def, okey, old) = st.stored(key, namespace, name)?;
        if let Some(uid) = &opts.uid
            && uid != meta::uid(&old)
        {
            return Err(ApiError::conflict_with(
                &key.group,
                &key.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&old)
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(ApiError::conflict(&key.group, &key.plural, name));
        }
        let is_pod = key.group.is_empty() && key.plural == "pods";
        let grace = if is_pod {
            let bound = old["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let finished = matches!(
                old["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
            let asked = opts
                .grace_period_seconds
                .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0);
            if bound && !finished { asked } else { 0 }
        } else {
            0
        };
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let now = self.clock.now();
        if grace > 0 || has_finalizers {
            let mut marked = (*old).clone();
            let current_grace = old["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if current_grace.is_some_and(|g| g <= grace) {
                return Ok(old);
            }
            let deadline = now + Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            let meta = meta::metadata_mut(&mut marked);
            meta.insert("deletionTimestamp".into(), json!(format_time(deadline)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if grace == 0 && !has_finalizers {
                // Shortened to zero: fall through to removal below.
            } else {
                st.stamp_next_version(&mut marked);
                let marked = Arc::new(marked);
                if let Some(t) = st.tables.get_mut(key) {
                    t.objects.insert(okey, marked.clone());
                }
                self.emit(&mut st, key, EventType::Modified, marked.clone(), Some(old));
                return Ok(marked);
            }
        }
        let mut gone = (*old).clone();
        st.stamp_next_version(&mut gone);
        let gone = Arc::new(gone);
        self.remove_locked(&mut st, &def, okey, gone.clone());
        Ok(gone)
    }
}
