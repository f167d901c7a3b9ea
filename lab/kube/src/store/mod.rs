//! The object store: every object of every resource as generic JSON, one
//! global resourceVersion counter (as etcd has), bounded per-resource event
//! history for watch resumption and a broadcast channel per resource for
//! watch fan-out. Create, update, patch and delete semantics (uid,
//! generation, finalizers, graceful pod deletion) live here.

mod create;
mod delete;
mod update;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tidepool_lab_sim::SimClock;
use tokio::sync::{Notify, broadcast};

use crate::error::ApiError;
use crate::meta;
use crate::resources::{Registry, ResKey, ResourceDef};

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

impl State {
    /// The definition of `key`, the storage key of `name` and the object
    /// stored under it.
    ///
    /// # Errors
    /// `NotFound` for an unserved resource or an absent object.
    fn stored(
        &self,
        key: &ResKey,
        namespace: &str,
        name: &str,
    ) -> Result<(ResourceDef, ObjKey, Arc<Value>), ApiError> {
        let def = Store::def(self, key)?;
        let okey = obj_key(&def, namespace, name);
        let obj = self
            .tables
            .get(key)
            .and_then(|t| t.objects.get(&okey))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, name))?;
        Ok((def, okey, obj))
    }

    /// Takes the next resourceVersion and stamps it on `obj`.
    fn stamp_next_version(&mut self, obj: &mut Value) {
        self.rv += 1;
        meta::metadata_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
    }
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
        self.lock()
            .stored(key, namespace, name)
            .map(|(_, _, obj)| obj)
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
