//! The object store: every object of every resource as generic JSON, one
//! global resourceVersion counter (as etcd has), bounded per-resource event
//! history for watch resumption and a broadcast channel per resource for
//! watch fan-out. Create, update, patch and delete semantics (uid,
//! generation, finalizers, graceful pod deletion) live here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tidepool_lab_sim::SimClock;
use tokio::sync::{Notify, broadcast};

use crate::error::ApiError;
use crate::meta::{self, format_time};
use crate::resources::{Registry, ResKey, ResourceDef, def_from_crd};

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The object appeared.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventType,
    /// The resourceVersion of the change.
    pub rv: u64,
    /// The object after the change (the last state, for a deletion).
    pub object: Arc<Value>,
    /// The selectable parts of the object before the change, for
    /// modifications (see [`selectable_skeleton`]).
    pub previous: Option<Arc<Value>>,
    /// When the change happened (simulated time).
    pub at: SystemTime,
    /// The event's wire form, serialised once for all watchers that see it
    /// unchanged.
    pub wire: std::sync::OnceLock<bytes::Bytes>,
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// Synthetic ADDED events for every current object, then changes.
    Initial,
    /// Changes after this resourceVersion.
    Since(u64),
}

/// Which part of an object an update may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: `status` is kept from the stored object when the
    /// resource has a status subresource.
    Main,
    /// The `status` subresource: only `status` changes.
    Status,
    /// Controllers inside the emulator: everything but identity may change.
    Internal,
}

/// Options of a delete.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`; pods default to their termination grace period.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Events kept per resource for watch resumption.
    pub history_limit: usize,
    /// Simulated age after which events leave the history (etcd compaction).
    pub history_window: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            history_window: Duration::from_secs(300),
        }
    }
}

type ObjKey = (String, String);

/// How a read-modify-write commits.
#[derive(Clone, Copy, Debug)]
struct WriteMode {
    /// The resourceVersion the stored object must have.
    precondition: Option<u64>,
    /// Compute the result without storing it.
    dry_run: bool,
}

/// What a watch starts from: events to replay, a receiver for later ones,
/// and the resourceVersion at subscription time.
pub type Subscription = (
    Vec<Arc<WatchEvent>>,
    broadcast::Receiver<Arc<WatchEvent>>,
    u64,
);

struct Table {
    objects: BTreeMap<ObjKey, Arc<Value>>,
    history: VecDeque<Arc<WatchEvent>>,
    resumable_from: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

impl Table {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            resumable_from: 0,
            // A watcher that falls further behind resumes from the history
            // (or gets 410 Gone if its position left it meanwhile).
            tx: broadcast::channel(16_384).0,
        }
    }
}

/// The mutable state behind the store's lock.
struct State {
    rv: u64,
    registry: Registry,
    tables: HashMap<ResKey, Table>,
}

/// The object store shared by the HTTP handlers and the controllers.
pub struct Store {
    state: Mutex<State>,
    clock: SimClock,
    config: StoreConfig,
    changed: Notify,
    evictions: Mutex<()>,
}

fn obj_key(def: &ResourceDef, namespace: &str, name: &str) -> ObjKey {
    if def.namespaced {
        (namespace.to_owned(), name.to_owned())
    } else {
        (String::new(), name.to_owned())
    }
}

/// Everything of an object except metadata and status (what bumps generation).
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

impl Store {
    /// An empty store with the default namespaces.
    pub fn new(clock: SimClock, config: StoreConfig) -> Self {
        let store = Self {
            state: Mutex::new(State {
                rv: 1,
                registry: Registry::new(),
                tables: HashMap::new(),
            }),
            clock,
            config,
            changed: Notify::new(),
            evictions: Mutex::new(()),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            // Creating a namespace in an empty store cannot conflict.
            let _ = store.create(
                &ResKey::new("", "namespaces"),
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            );
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serialises evictions, so two concurrent ones cannot both spend the
    /// last disruption a budget allows.
    pub fn eviction_guard(&self) -> MutexGuard<'_, ()> {
        self.evictions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clock of the store.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Waits until some object changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A copy of the registry (for discovery).
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// The resource served at group/version/plural.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.lock().registry.lookup(group, version, plural).cloned()
    }

    /// The resource for `apiVersion` + `kind`.
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Option<ResourceDef> {
        self.lock().registry.by_kind(api_version, kind).cloned()
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    fn emit(
        &self,
        st: &mut State,
        key: &ResKey,
        kind: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let rv = st.rv;
        let now = self.clock.now();
        let table = st.tables.entry(key.clone()).or_insert_with(Table::new);
        let event = Arc::new(WatchEvent {
            kind,
            rv,
            object,
            previous: previous.map(|p| Arc::new(selectable_skeleton(&p))),
            at: now,
            wire: std::sync::OnceLock::new(),
        });
        table.history.push_back(event.clone());
        while let Some(front) = table.history.front() {
            let too_many = table.history.len() > self.config.history_limit;
            let too_old = now
                .duration_since(front.at)
                .is_ok_and(|age| age > self.config.history_window);
            if !(too_many || too_old) {
                break;
            }
            table.resumable_from = front.rv;
            table.history.pop_front();
        }
        // Nobody listening is fine.
        let _ = table.tx.send(event);
        self.changed.notify_one();
    }

    fn def(st: &State, key: &ResKey) -> Result<ResourceDef, ApiError> {
        st.registry.get(key).cloned().ok_or_else(ApiError::no_route)
    }

    /// Reads one object.
    ///
    /// # Errors
    /// `NotFound` when absent.
    pub fn get(&self, key: &ResKey, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let st = self.lock();
        let def = Self::def(&st, key)?;
        st.tables
            .get(key)
            .and_then(|t| t.objects.get(&obj_key(&def, namespace, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, name))
    }

    /// All objects of a resource (in one namespace when `namespace` is
    /// non-empty), ordered by namespace and name, with the list's
    /// resourceVersion.
    pub fn list(&self, key: &ResKey, namespace: &str) -> (Vec<Arc<Value>>, u64) {
        let st = self.lock();
        let items = match st.tables.get(key) {
            None => Vec::new(),
            Some(t) if namespace.is_empty() => t.objects.values().cloned().collect(),
            Some(t) => t
                .objects
                .range((namespace.to_owned(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, v)| v.clone())
                .collect(),
        };
        (items, st.rv)
    }

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
        let meta = meta::metadata_mut(&mut obj);
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
            meta::metadata_mut(&mut obj).insert("generation".into(), json!(1));
        }
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
        st.rv += 1;
        meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(st.rv.to_string()));
        let obj = Arc::new(obj);
        st.tables
            .entry(key.clone())
            .or_insert_with(Table::new)
            .objects
            .insert(okey, obj.clone());
        self.emit(&mut st, key, EventType::Added, obj.clone(), None);
        Ok(obj)
    }

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
        let def = Self::def(&st, key)?;
        let okey = obj_key(&def, namespace, name);
        let old = st
            .tables
            .get(key)
            .and_then(|t| t.objects.get(&okey))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, name))?;
        if let Some(rv) = precondition
            && rv != meta::resource_version(&old)
        {
            return Err(ApiError::conflict(&key.group, &key.plural, name));
        }
        let mut new = (*old).clone();
        change(&mut new)?;
        check_shape(&def, &new)?;
        let mut merged = match part {
            Part::Status => {
                let mut m = (*old).clone();
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
        st.rv += 1;
        let ready_to_go = meta::is_terminating(&merged)
            && merged["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty)
            && merged["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        meta::metadata_mut(&mut merged).insert("resourceVersion".into(), json!(st.rv.to_string()));
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

    fn remove_locked(&self, st: &mut State, def: &ResourceDef, okey: ObjKey, last: Arc<Value>) {
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
                    st.rv += 1;
                    let mut gone = (*obj).clone();
                    meta::metadata_mut(&mut gone)
                        .insert("resourceVersion".into(), json!(st.rv.to_string()));
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
        let def = Self::def(&st, key)?;
        let okey = obj_key(&def, namespace, name);
        let old = st
            .tables
            .get(key)
            .and_then(|t| t.objects.get(&okey))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, name))?;
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
                st.rv += 1;
                meta::metadata_mut(&mut marked)
                    .insert("resourceVersion".into(), json!(st.rv.to_string()));
                let marked = Arc::new(marked);
                if let Some(t) = st.tables.get_mut(key) {
                    t.objects.insert(okey, marked.clone());
                }
                self.emit(&mut st, key, EventType::Modified, marked.clone(), Some(old));
                return Ok(marked);
            }
        }
        st.rv += 1;
        let mut gone = (*old).clone();
        meta::metadata_mut(&mut gone).insert("resourceVersion".into(), json!(st.rv.to_string()));
        let gone = Arc::new(gone);
        self.remove_locked(&mut st, &def, okey, gone.clone());
        Ok(gone)
    }

    /// Subscribes to changes of a resource.
    ///
    /// Returns the events to replay first (synthetic ADDED events, or the
    /// history after the given version), a receiver for later changes, and
    /// the current resourceVersion.
    ///
    /// # Errors
    /// `Expired` (410) when the version is older than the retained history.
    pub fn watch(&self, key: &ResKey, start: WatchStart) -> Result<Subscription, ApiError> {
        let mut st = self.lock();
        let rv = st.rv;
        let table = st.tables.entry(key.clone()).or_insert_with(Table::new);
        let rx = table.tx.subscribe();
        let backlog = match start {
            WatchStart::Initial => table
                .objects
                .values()
                .map(|o| {
                    Arc::new(WatchEvent {
                        kind: EventType::Added,
                        rv: meta::resource_version(o),
                        object: o.clone(),
                        previous: None,
                        at: SystemTime::UNIX_EPOCH,
                        wire: std::sync::OnceLock::new(),
                    })
                })
                .collect(),
            WatchStart::Since(from) => {
                if from > rv {
                    return Err(ApiError::too_large_resource_version(from, rv));
                }
                if from < table.resumable_from {
                    return Err(ApiError::expired(from, table.resumable_from + 1));
                }
                let first = table.history.partition_point(|e| e.rv <= from);
                table.history.iter().skip(first).cloned().collect()
            }
        };
        Ok((backlog, rx, rv))
    }

    /// Every CRD-defined and built-in resource key with objects.
    pub fn keys(&self) -> Vec<ResKey> {
        self.lock().tables.keys().cloned().collect()
    }
}

/// Rejects bodies whose well-known parts have the wrong JSON type, as the
/// real server's decoder does (`metadata`, `spec`, `status` objects;
/// labels and annotations maps of strings).
fn check_shape(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
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

/// The parts of an object that label and field selectors look at: name,
/// namespace, labels, top-level scalars (`type`, `reason`), the scalar
/// fields of `spec` and `status` (`spec.nodeName`, `status.phase`, ...) and
/// the event's `involvedObject`/`regarding`. Kept instead of the whole
/// previous object in watch events, to bound memory.
pub fn selectable_skeleton(obj: &Value) -> Value {
    let scalars = |v: &Value| -> Value {
        Value::Object(
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, x)| !x.is_object() && !x.is_array())
                        .map(|(k, x)| (k.clone(), x.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        )
    };
    let mut out = scalars(obj);
    out["metadata"] = json!({
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"]["namespace"],
        "labels": obj["metadata"]["labels"],
    });
    for part in ["spec", "status"] {
        if obj[part].is_object() {
            out[part] = scalars(&obj[part]);
        }
    }
    for reference in ["involvedObject", "regarding"] {
        if obj[reference].is_object() {
            out[reference] = obj[reference].clone();
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(SimClock::new(100.0), StoreConfig::default())
    }

    fn pods() -> ResKey {
        ResKey::new("", "pods")
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn create_assigns_identity_and_refuses_duplicates() {
        let s = store();
        let p = s.create(&pods(), "default", pod("a")).unwrap();
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["metadata"]["generation"], 1);
        assert_eq!(p["status"]["phase"], "Pending");
        assert!(meta::resource_version(&p) > 0);
        let again = s.create(&pods(), "default", pod("a")).unwrap_err();
        assert_eq!(again.code, 409);
        assert_eq!(again.reason, "AlreadyExists");
    }

    #[test]
    fn an_update_with_a_stale_resource_version_conflicts() {
        let s = store();
        let p = s.create(&pods(), "default", pod("a")).unwrap();
        let mut changed = (*p).clone();
        changed["metadata"]["labels"] = json!({"x": "1"});
        s.update(&pods(), "default", "a", changed.clone(), Part::Main)
            .unwrap();
        let err = s
            .update(&pods(), "default", "a", changed, Part::Main)
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "Conflict");
    }

    #[test]
    fn an_object_with_finalizers_is_only_marked_until_the_last_one_goes() {
        let s = store();
        let ns = ResKey::new("", "configmaps");
        s.create(
            &ns,
            "default",
            json!({"metadata": {"name": "c", "finalizers": ["x"]}}),
        )
        .unwrap();
        let marked = s
            .delete(&ns, "default", "c", &DeleteOptions::default())
            .unwrap();
        assert!(meta::is_terminating(&marked));
        s.modify(&ns, "default", "c", Part::Main, |o| {
            o["metadata"]["finalizers"] = json!([]);
            Ok(())
        })
        .unwrap();
        assert_eq!(s.get(&ns, "default", "c").unwrap_err().code, 404);
    }

    #[test]
    fn a_watch_from_a_version_older_than_the_history_is_gone() {
        let s = Store::new(
            SimClock::new(1.0),
            StoreConfig {
                history_limit: 2,
                ..StoreConfig::default()
            },
        );
        let first = s.create(&pods(), "default", pod("a")).unwrap();
        for n in ["b", "c", "d"] {
            s.create(&pods(), "default", pod(n)).unwrap();
        }
        let err = s
            .watch(&pods(), WatchStart::Since(meta::resource_version(&first)))
            .err()
            .unwrap();
        assert_eq!(err.code, 410);
        let (backlog, _, _) = s
            .watch(&pods(), WatchStart::Since(s.current_rv() - 1))
            .unwrap();
        assert_eq!(backlog.len(), 1);
    }

    #[test]
    fn bodies_with_mistyped_parts_are_bad_requests() {
        let s = store();
        let err = s
            .create(
                &pods(),
                "default",
                json!({"metadata": {"name": "x"}, "spec": []}),
            )
            .unwrap_err();
        assert_eq!(err.code, 400);
        let err = s
            .create(&pods(), "default", json!({"metadata": {"name": "x", "labels": {"a": 1}}, "spec": {"containers": [{"name": "c"}]}}))
            .unwrap_err();
        assert_eq!(err.code, 400);
        let p = s.create(&pods(), "default", pod("ok")).unwrap();
        let err = s
            .modify(&pods(), "default", "ok", Part::Main, |o| {
                o["spec"] = json!("nope");
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(s.get(&pods(), "default", "ok").unwrap(), p);
    }

    #[test]
    fn a_no_op_update_keeps_the_resource_version() {
        let s = store();
        let p = s.create(&pods(), "default", pod("a")).unwrap();
        let same = s
            .update(&pods(), "default", "a", (*p).clone(), Part::Main)
            .unwrap();
        assert_eq!(
            same["metadata"]["resourceVersion"],
            p["metadata"]["resourceVersion"]
        );
    }
}
