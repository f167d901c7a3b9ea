//! Reflector-backed caches of cluster objects with an explicit "synced" flag.
//!
//! A [`Cache`] runs a kube-rs watcher in a background task and mirrors its
//! objects in a reflector store. The controller must never plan from a
//! cache that has not finished its first list (it would see an empty or
//! partial cluster and scale up for pods that already have room), so every
//! cache says whether it is synced and can be waited on.
//!
//! A cache may trim each object before storing it ([`Cache::start_with`]);
//! the node and pod caches of [`crate::ClusterClient`] keep only the
//! fields listed in [`crate::trim`].

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
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

/// A live, read-only mirror of one kind of object.
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
#[derive(Clone)]
pub struct Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    synced: watch::Receiver<bool>,
    synced_flag: Arc<AtomicBool>,
    watch_errors: Arc<AtomicU64>,
    changes: watch::Receiver<u64>,
    _task: Arc<TaskGuard>,
}

impl<K> Debug for Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &K::kind(&()))
            .field("synced", &self.is_synced())
            .field("objects", &self.store.len())
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
        Self::start_with(api, config, |_| {})
    }

    /// Like [`Cache::start`], but `trim` is applied to every object the
    /// watch delivers before the store sees it, so the store only ever
    /// holds trimmed objects (deleted ones too: the store finds them by
    /// name and namespace, which a trim must keep).
    pub fn start_with(
        api: Api<K>,
        config: watcher::Config,
        trim: impl FnMut(&mut K) + Send + 'static,
    ) -> Self {
        let (reader, writer) = reflector::store();
        let (tx, rx) = watch::channel(false);
        let (changed_tx, changes) = watch::channel(0_u64);
        let synced_flag = Arc::new(AtomicBool::new(false));
        let watch_errors = Arc::new(AtomicU64::new(0));
        let flag = synced_flag.clone();
        let errors = watch_errors.clone();
        let kind = K::kind(&()).into_owned();
        let stream =
            reflector::reflector(writer, watcher(api, config).default_backoff().modify(trim));
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if !flag.swap(true, Ordering::SeqCst) {
                            tracing::debug!(kind, "cache synced");
                        }
                        let _ = tx.send(true);
                        changed_tx.send_modify(|n| *n += 1);
                    }
                    // Events of the initial list are announced once, with
                    // InitDone; later ones one by one.
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        changed_tx.send_modify(|n| *n += 1);
                    }
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(kind, error = %error, "watch failed; retrying");
                    }
                }
            }
        });
        Self {
            store: reader,
            synced: rx,
            synced_flag,
            watch_errors,
            changes,
            _task: Arc::new(TaskGuard(task)),
        }
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
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

    /// Every cached object (a snapshot).
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// The cached object with this name (and namespace, for namespaced kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut key = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            key = key.within(ns);
        }
        self.store.get(&key)
    }

    /// The cached objects for which `predicate` holds.
    pub fn filter(&self, predicate: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.store
            .state()
            .into_iter()
            .filter(|o| predicate(o))
            .collect()
    }

    /// The names of the cached objects, sorted (handy in logs and tests).
    pub fn names(&self) -> Vec<String>
    where
        K: ResourceExt,
    {
        let mut names: Vec<String> = self.store.state().iter().map(|o| o.name_any()).collect();
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
