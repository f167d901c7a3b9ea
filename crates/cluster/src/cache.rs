//! Watch-fed caches of cluster objects with an explicit "synced" flag.
//!
//! A [`Cache`] runs a kube-rs watcher in a background task and mirrors its
//! objects in memory. The controller must never plan from a cache that has
//! not finished its first list (it would see an empty or partial cluster
//! and scale up for pods that already have room), so every cache says
//! whether it is synced and can be waited on.
//!
//! A cache may store each object as something other than the API object:
//! [`Cache::start_projected`] maps every object the watch delivers before
//! storing it. The node cache keeps slimmed `Node`s ([`crate::nodes`]); the
//! pod cache keeps [`crate::pods::CachedPod`]s, the planner's own view,
//! which is a fraction of the size of a `Pod`. Both read the API server's
//! JSON through wire types of their own, built from the helpers here
//! (`core_v1_resource!`, annotations without the applied manifest, slim
//! conditions), so what they skip is never allocated.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Implements [`kube::Resource`] for a type that a cache deserializes in
/// place of a core/v1 object (`meta` is the path to its `ObjectMeta`).
macro_rules! core_v1_resource {
    ($ty:ty, kind = $kind:literal, plural = $plural:literal, scope = $scope:ty, meta = $($field:tt).+) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.$($field).+
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.$($field).+
            }
        }
    };
}
pub(crate) use core_v1_resource;

/// Annotations without the applied manifest, which is dropped as it is read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Annotations(pub(crate) std::collections::BTreeMap<String, String>);

impl<'de> serde::Deserialize<'de> for Annotations {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Annotations;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut kept = std::collections::BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == crate::nodes::LAST_APPLIED {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    } else {
                        kept.insert(key, map.next_value()?);
                    }
                }
                Ok(Annotations(kept))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A status condition as the caches read it: the fields Tidepool uses.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireCondition {
    #[serde(rename = "type")]
    pub(crate) type_: String,
    pub(crate) status: String,
    pub(crate) reason: Option<String>,
    pub(crate) last_transition_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Aborts the watcher task when the last handle of a cache is dropped.
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects (names cannot
/// contain `/`).
fn key(namespace: Option<&str>, name: &str) -> Box<str> {
    match namespace {
        Some(ns) => format!("{ns}/{name}").into_boxed_str(),
        None => name.into(),
    }
}

fn key_of<K: Resource>(object: &K) -> Box<str> {
    let meta = object.meta();
    key(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

type Objects<V> = HashMap<Box<str>, Arc<V>>;

/// What applying one watch event did to a [`Mirror`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applied {
    /// Nothing visible yet (a list in progress).
    Nothing,
    /// A complete list replaced the store.
    Listed,
    /// One object changed or went.
    Changed,
}

/// The store and the list in progress: applies watch events so that the
/// store never shows a partial list.
struct Mirror<V> {
    store: Arc<RwLock<Objects<V>>>,
    /// A (re-)list in progress: the store keeps serving the last complete
    /// state until this one is complete.
    listing: Option<Objects<V>>,
}

impl<V> Mirror<V> {
    fn new(store: Arc<RwLock<Objects<V>>>) -> Self {
        Self {
            store,
            listing: None,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects<V>> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply<K: Resource>(
        &mut self,
        event: watcher::Event<K>,
        project: &mut impl FnMut(K) -> V,
    ) -> Applied {
        match event {
            watcher::Event::Init => {
                self.listing = Some(HashMap::new());
                Applied::Nothing
            }
            watcher::Event::InitApply(object) => {
                let key = key_of(&object);
                self.listing
                    .get_or_insert_with(HashMap::new)
                    .insert(key, Arc::new(project(object)));
                Applied::Nothing
            }
            watcher::Event::InitDone => {
                let mut fresh = self.listing.take().unwrap_or_default();
                fresh.shrink_to_fit();
                *self.write() = fresh;
                Applied::Listed
            }
            watcher::Event::Apply(object) => {
                let key = key_of(&object);
                let value = Arc::new(project(object));
                self.write().insert(key, value);
                Applied::Changed
            }
            watcher::Event::Delete(object) => {
                self.write().remove(&key_of(&object));
                Applied::Changed
            }
        }
    }
}

/// A live, read-only mirror of one kind of object, stored as `V`.
///
/// Cloning is cheap; all clones share the store and the watcher, which
/// stops when the last clone is dropped.
///
/// # Guarantees
/// - [`Cache::is_synced`] turns true once the watcher's first complete
///   list has been applied, and stays true afterwards: across reconnects
///   and re-lists the store keeps serving the last complete state until
///   the new list is complete, so it never shows a partial cluster.
/// - Before that, [`Cache::state`] may be empty or partial; callers that
///   plan must check [`Cache::is_synced`] or await
///   [`Cache::wait_until_synced`].
pub struct Cache<V> {
    kind: Arc<str>,
    store: Arc<RwLock<Objects<V>>>,
    synced: watch::Receiver<bool>,
    synced_flag: Arc<AtomicBool>,
    watch_errors: Arc<AtomicU64>,
    changes: watch::Receiver<u64>,
    _task: Arc<TaskGuard>,
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            store: self.store.clone(),
            synced: self.synced.clone(),
            synced_flag: self.synced_flag.clone(),
            watch_errors: self.watch_errors.clone(),
            changes: self.changes.clone(),
            _task: self._task.clone(),
        }
    }
}

impl<V> Debug for Cache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &self.kind)
            .field("synced", &self.is_synced())
            .field("objects", &self.read().len())
            .finish_non_exhaustive()
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching `api` with `config` in a background task (needs a
    /// Tokio runtime), keeping whole objects. Watch errors are retried with
    /// kube-rs's default backoff and counted in [`Cache::watch_errors`].
    pub fn start(api: Api<K>, config: watcher::Config) -> Self {
        Self::start_projected(api, config, |object| object)
    }
}

impl<V: Send + Sync + 'static> Cache<V> {
    /// Like [`Cache::start`], but every object the watch delivers is
    /// turned into a `V` by `project` before the store sees it, so the
    /// store only ever holds projections. Deletions need no projection:
    /// the store finds the object by its namespace and name.
    pub fn start_projected<K>(
        api: Api<K>,
        config: watcher::Config,
        project: impl FnMut(K) -> V + Send + 'static,
    ) -> Self
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        Self::start_streaming(api, config, None, project)
    }

    /// Like [`Cache::start_projected`], with the first list as a
    /// streaming list (`config` should ask for one) and `fallback`
    /// (a paged list) when the API server refuses streaming lists.
    ///
    /// A streaming list is a watch that first sends every object as an
    /// event and then a bookmark marking the end of the initial state
    /// (Kubernetes 1.27 and later with the `WatchList` feature, on by
    /// default from 1.32): the API server serves it from its watch cache,
    /// and the client holds one object at a time instead of a page. An
    /// API server without the feature answers such a watch with a client
    /// error (4xx); the cache then lists in pages from there on.
    pub fn start_streaming<K>(
        api: Api<K>,
        config: watcher::Config,
        fallback: Option<watcher::Config>,
        mut project: impl FnMut(K) -> V + Send + 'static,
    ) -> Self
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let store: Arc<RwLock<Objects<V>>> = Arc::default();
        let (tx, rx) = watch::channel(false);
        let (changed_tx, changes) = watch::channel(0_u64);
        let synced_flag = Arc::new(AtomicBool::new(false));
        let watch_errors = Arc::new(AtomicU64::new(0));
        let kind: Arc<str> = K::kind(&()).into();
        let (flag, errors, writer, task_kind) = (
            synced_flag.clone(),
            watch_errors.clone(),
            store.clone(),
            kind.clone(),
        );
        let mut fallback = fallback;
        let mut stream = watcher(api.clone(), config).default_backoff().boxed();
        let task = tokio::spawn(async move {
            let mut mirror = Mirror::new(writer);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => match mirror.apply(event, &mut project) {
                        Applied::Nothing => {}
                        Applied::Listed => {
                            if !flag.swap(true, Ordering::SeqCst) {
                                tracing::debug!(kind = &*task_kind, "cache synced");
                            }
                            let _ = tx.send(true);
                            changed_tx.send_modify(|n| *n += 1);
                        }
                        Applied::Changed => changed_tx.send_modify(|n| *n += 1),
                    },
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if refused(&error)
                            && let Some(paged) = fallback.take()
                        {
                            tracing::info!(kind = &*task_kind, error = %error, "streaming lists refused; listing in pages");
                            mirror.listing = None;
                            stream = watcher(api.clone(), paged).default_backoff().boxed();
                            continue;
                        }
                        tracing::warn!(kind = &*task_kind, error = %error, "watch failed; retrying");
                    }
                }
            }
        });
        Self {
            kind,
            store,
            synced: rx,
            synced_flag,
            watch_errors,
            changes,
            _task: Arc::new(TaskGuard(task)),
        }
    }
}

/// Whether the API server refused the watch itself (a 4xx other than 410
/// Gone and 429 Too Many Requests), as one without streaming lists does.
fn refused(error: &watcher::Error) -> bool {
    let code = match error {
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code,
        watcher::Error::WatchError(status) => status.code,
        _ => return false,
    };
    (400..500).contains(&code) && code != 410 && code != 429
}

impl<V> Cache<V> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<V>> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the first complete list has been applied (see the type's
    /// guarantees).
    pub fn is_synced(&self) -> bool {
        self.synced_flag.load(Ordering::SeqCst)
    }

    /// Waits until the cache is synced, for at most `timeout`.
    ///
    /// # Errors
    /// `Err(timeout)` when the deadline passes first (or the watcher task
    /// ended, which only happens when the runtime shuts down).
    pub async fn wait_until_synced(&self, timeout: Duration) -> Result<(), Duration> {
        let mut rx = self.synced.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|synced| *synced)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(timeout),
        }
    }

    /// Every cached object (a snapshot; the objects are shared, not copied).
    pub fn state(&self) -> Vec<Arc<V>> {
        self.read().values().cloned().collect()
    }

    /// How many objects the cache holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The cached object with this name (and namespace, for namespaced kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<V>> {
        self.read().get(&key(namespace, name)).cloned()
    }

    /// The cached objects for which `predicate` holds.
    pub fn filter(&self, predicate: impl Fn(&V) -> bool) -> Vec<Arc<V>> {
        self.read()
            .values()
            .filter(|o| predicate(o))
            .cloned()
            .collect()
    }

    /// The names of the cached objects, sorted (handy in logs and tests).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .read()
            .keys()
            .map(|k| k.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        names.sort_unstable();
        names
    }

    /// A receiver whose value changes after every change the store applies
    /// (and once when a list completes), so a loop can sleep until the
    /// cluster moves instead of polling. Many changes may be folded into one
    /// wake-up.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// How many watch errors the background task has seen (each is retried).
    pub fn watch_errors(&self) -> u64 {
        self.watch_errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn object(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn value(c: ConfigMap) -> String {
        c.data.unwrap_or_default().remove("v").unwrap_or_default()
    }

    fn contents(store: &Arc<RwLock<Objects<String>>>) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = store
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_relist_replaces_the_store_only_when_it_is_complete() {
        let store: Arc<RwLock<Objects<String>>> = Arc::default();
        let mut mirror = Mirror::new(store.clone());
        let mut project = value;
        let mut apply = |e| mirror.apply(e, &mut project);
        assert_eq!(apply(watcher::Event::Init), Applied::Nothing);
        apply(watcher::Event::InitApply(object("a", "1")));
        apply(watcher::Event::InitApply(object("b", "1")));
        assert!(
            contents(&store).is_empty(),
            "a partial first list is not shown"
        );
        assert_eq!(apply(watcher::Event::InitDone), Applied::Listed);
        assert_eq!(
            apply(watcher::Event::Apply(object("c", "1"))),
            Applied::Changed
        );
        let before = contents(&store);
        assert_eq!(before.len(), 3);

        // The watch expired and the watcher lists again: b and c are gone
        // and a changed meanwhile. Until the list completes, the store
        // serves the last complete state.
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(object("a", "2")));
        assert_eq!(contents(&store), before);
        apply(watcher::Event::InitDone);
        assert_eq!(contents(&store), [("default/a".to_owned(), "2".to_owned())]);

        apply(watcher::Event::Delete(object("a", "2")));
        assert!(contents(&store).is_empty());
    }

    #[test]
    fn keys_name_namespaced_and_cluster_scoped_objects() {
        assert_eq!(&*key(Some("shop"), "web-1"), "shop/web-1");
        assert_eq!(&*key(None, "worker-1"), "worker-1");
    }
}
