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
//! which is a fraction of the size of a `Pod`.

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
        let stream = watcher(api, config).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // A (re-)list in progress: the store keeps serving the last
            // complete state until this one is complete.
            let mut listing: Option<Objects<V>> = None;
            let write = || writer.write().unwrap_or_else(PoisonError::into_inner);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
                    Ok(watcher::Event::InitApply(object)) => {
                        let key = key_of(&object);
                        listing
                            .get_or_insert_with(HashMap::new)
                            .insert(key, Arc::new(project(object)));
                    }
                    Ok(watcher::Event::InitDone) => {
                        let mut fresh = listing.take().unwrap_or_default();
                        fresh.shrink_to_fit();
                        *write() = fresh;
                        if !flag.swap(true, Ordering::SeqCst) {
                            tracing::debug!(kind = &*task_kind, "cache synced");
                        }
                        let _ = tx.send(true);
                        changed_tx.send_modify(|n| *n += 1);
                    }
                    Ok(watcher::Event::Apply(object)) => {
                        let key = key_of(&object);
                        let value = Arc::new(project(object));
                        write().insert(key, value);
                        changed_tx.send_modify(|n| *n += 1);
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        write().remove(&key_of(&object));
                        changed_tx.send_modify(|n| *n += 1);
                    }
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
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
