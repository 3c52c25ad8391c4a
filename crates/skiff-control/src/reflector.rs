//! A reflector: the objects of one kind (that a filter selects) kept in a local cache by one writer
//! task, read by many cheap readers. It lists, then watches from the list's resourceVersion; when
//! the watch ends it watches again from the last resourceVersion it saw, and when that is too old
//! it lists again. A re-list replaces the cache and tells subscribers only what changed, so across
//! a re-list no change is lost and none is told twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use skiff_api::api::{Consistency, Filter, ResourceApi, WatchEvent, WatchOptions};
use skiff_api::{ApiError, Kind, Object, Reason};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A change to the cache, as a subscriber sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The object is new or changed.
    Applied(Arc<Object>),
    /// The object is gone (or no longer selected): its last state.
    Deleted(Arc<Object>),
}

type Key = (String, String);

fn key_of(object: &Object) -> Key {
    (object.meta().namespace.clone(), object.meta().name.clone())
}

#[derive(Default)]
struct Cache {
    /// Shared with readers: a snapshot of the cache copies pointers, not objects.
    objects: BTreeMap<Key, Arc<Object>>,
    /// The resourceVersion the cache is current to.
    resource_version: u64,
    /// A first list has completed.
    synced: bool,
}

struct Shared {
    cache: RwLock<Cache>,
    /// Counts changes (and syncs): readers wait for it to move.
    version: watch::Sender<u64>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    /// How many lists the writer made (tests check that it re-lists).
    lists: Mutex<u64>,
}

/// The reading side of a reflector. Cheap to clone. The writer task stops when the last reader is
/// dropped or [`Reflector::stop`] is called.
#[derive(Clone)]
pub struct Reflector {
    shared: Arc<Shared>,
    task: Arc<JoinHandle<()>>,
}

impl Drop for Reflector {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// A reflector that does not keep it running: [`WeakReflector::upgrade`] gives the reflector
/// while someone else still holds it.
#[derive(Clone)]
pub struct WeakReflector {
    shared: std::sync::Weak<Shared>,
    task: std::sync::Weak<JoinHandle<()>>,
}

impl WeakReflector {
    pub fn upgrade(&self) -> Option<Reflector> {
        Some(Reflector { shared: self.shared.upgrade()?, task: self.task.upgrade()? })
    }
}

/// The reflectors the controllers of one member share: controllers that watch the same kind with
/// the same filter in the same term read one cache, so the leader decodes and keeps each object
/// once rather than once per controller. A new term starts fresh reflectors (a new leader depends
/// on nothing an earlier term kept); a reflector stops when the last controller holding it does.
#[derive(Clone, Default)]
pub struct Reflectors {
    started: Arc<Mutex<BTreeMap<ReflectorId, WeakReflector>>>,
}

/// A shared reflector's term, kind and filter (as JSON).
type ReflectorId = (u64, Kind, String);

impl Reflectors {
    /// The reflector of `kind` objects `filter` selects for `term`, started if none runs.
    pub fn get(&self, api: &Arc<dyn ResourceApi>, term: u64, kind: Kind, filter: Filter) -> Reflector {
        let id = serde_json::to_string(&filter).unwrap_or_default();
        let mut started = self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget what stopped (earlier terms, controllers gone).
        started.retain(|_, weak| weak.shared.strong_count() > 0);
        if let Some(running) = started.get(&(term, kind, id.clone())).and_then(WeakReflector::upgrade) {
            return running;
        }
        let reflector = Reflector::start(api.clone(), kind, filter);
        started.insert((term, kind, id), reflector.downgrade());
        reflector
    }
}

impl Reflector {
    pub fn downgrade(&self) -> WeakReflector {
        WeakReflector { shared: Arc::downgrade(&self.shared), task: Arc::downgrade(&self.task) }
    }

    /// Starts reflecting `kind` objects that `filter` selects.
    pub fn start(api: Arc<dyn ResourceApi>, kind: Kind, filter: Filter) -> Self {
        let shared = Arc::new(Shared {
            cache: RwLock::new(Cache::default()),
            version: watch::channel(0).0,
            subscribers: Mutex::new(Vec::new()),
            lists: Mutex::new(0),
        });
        let task = tokio::spawn(run(api, kind, filter, shared.clone()));
        Reflector { shared, task: Arc::new(task) }
    }

    /// Stops the writer: the cache stays as it is.
    pub fn stop(&self) {
        self.task.abort();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.shared.cache.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<Object>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Object>> {
        self.read().objects.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// The resourceVersion the cache is current to.
    pub fn resource_version(&self) -> u64 {
        self.read().resource_version
    }

    pub fn is_synced(&self) -> bool {
        self.read().synced
    }

    /// Moves whenever the cache changes: wait on it with `changed()`.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    /// Waits until a first list has filled the cache.
    pub async fn synced(&self) {
        let mut version = self.changes();
        while !self.is_synced() {
            if version.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every change from now on, starting with every cached object as `Applied`.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = self.read();
        for object in cache.objects.values() {
            let _ = tx.send(Change::Applied(object.clone()));
        }
        if let Ok(mut subs) = self.shared.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    /// How many times the reflector has listed.
    pub fn lists(&self) -> u64 {
        self.shared.lists.lock().map(|n| *n).unwrap_or(0)
    }
}

impl Shared {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, changes: Vec<Change>) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.retain(|tx| changes.iter().all(|c| tx.send(c.clone()).is_ok()));
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Replaces the cache with a list; returns what changed.
    fn replace(&self, items: Vec<Object>, resource_version: u64) -> Vec<Change> {
        let mut cache = self.write();
        let mut fresh: BTreeMap<Key, Arc<Object>> = items.into_iter().map(|o| (key_of(&o), Arc::new(o))).collect();
        let mut changes = Vec::new();
        for (key, old) in std::mem::take(&mut cache.objects) {
            match fresh.get(&key) {
                Some(new) if *new == old => {}
                Some(new) => changes.push(Change::Applied(new.clone())),
                None => changes.push(Change::Deleted(old)),
            }
            if let Some(new) = fresh.remove(&key) {
                cache.objects.insert(key, new);
            }
        }
        for (key, new) in fresh {
            changes.push(Change::Applied(new.clone()));
            cache.objects.insert(key, new);
        }
        cache.resource_version = resource_version;
        cache.synced = true;
        changes
    }

    /// Applies one watch event; returns the change, if any.
    fn apply(&self, event: WatchEvent) -> Option<Change> {
        let mut cache = self.write();
        let rv = |o: &Object| o.meta().resource_version.parse::<u64>().unwrap_or(0);
        match event {
            WatchEvent::Bookmark(rv) => {
                cache.resource_version = cache.resource_version.max(rv);
                None
            }
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                cache.resource_version = cache.resource_version.max(rv(&o));
                let o = Arc::new(o);
                cache.objects.insert(key_of(&o), o.clone());
                Some(Change::Applied(o))
            }
            WatchEvent::Deleted(o) => {
                cache.resource_version = cache.resource_version.max(rv(&o));
                cache.objects.remove(&key_of(&o)).map(|_| Change::Deleted(Arc::new(o)))
            }
        }
    }
}

/// The pause before trying again after a failed list or watch.
const RETRY: Duration = Duration::from_millis(500);

async fn run(api: Arc<dyn ResourceApi>, kind: Kind, filter: Filter, shared: Arc<Shared>) {
    // Watch from here without listing; `None`: list first.
    let mut resume: Option<u64> = None;
    loop {
        let from = match resume {
            Some(rv) => rv,
            None => match api.list(kind, &filter, Consistency::Linearizable).await {
                Ok(list) => {
                    if let Ok(mut n) = shared.lists.lock() {
                        *n += 1;
                    }
                    let changes = shared.replace(list.items, list.resource_version);
                    shared.publish(changes);
                    list.resource_version
                }
                Err(e) => {
                    tracing::debug!(%kind, error = %e, "reflector: listing; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        let options =
            WatchOptions { filter: filter.clone(), resource_version: from, bookmark_every: Duration::from_secs(5) };
        let mut events = match api.watch(kind, options).await {
            Ok(events) => events,
            Err(e) => {
                resume = next_start(&e, from);
                tracing::debug!(%kind, error = %e, "reflector: watching; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        resume = Some(from);
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    if let Some(change) = shared.apply(event) {
                        shared.publish(vec![change]);
                    }
                    resume = Some(shared.write().resource_version);
                }
                Err(e) => {
                    resume = next_start(&e, shared.write().resource_version);
                    tracing::debug!(%kind, error = %e, "reflector: the watch ended");
                    break;
                }
            }
        }
    }
}

/// Where to go on after a watch failed: list again when the history is too old for it.
fn next_start(e: &ApiError, last: u64) -> Option<u64> {
    if e.is(Reason::Expired) {
        None
    } else {
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::api::DeleteOptions;
    use skiff_api::kinds::ConfigMap;
    use skiff_api::memory::MemoryApi;

    fn config_map(name: &str, v: &str) -> Object {
        let mut c = ConfigMap::default();
        c.metadata.name = name.into();
        c.data.insert("v".into(), v.into());
        Object::ConfigMap(c)
    }

    fn describe(change: &Change) -> String {
        match change {
            Change::Applied(o) => format!("applied {}", o.meta().name),
            Change::Deleted(o) => format!("deleted {}", o.meta().name),
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Change>) -> String {
        let change = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open");
        describe(&change)
    }

    #[tokio::test]
    async fn lists_then_follows_the_watch() {
        let api = MemoryApi::new();
        api.apply(config_map("a", "1"), false).await.expect("apply");
        let reflector = Reflector::start(Arc::new(api.clone()), Kind::ConfigMap, Filter::default());
        reflector.synced().await;
        let mut changes = reflector.subscribe();
        assert_eq!(next(&mut changes).await, "applied a");
        api.apply(config_map("b", "1"), false).await.expect("apply");
        assert_eq!(next(&mut changes).await, "applied b");
        api.delete(Kind::ConfigMap, "default", "a", &DeleteOptions::default()).await.expect("delete");
        assert_eq!(next(&mut changes).await, "deleted a");
        assert_eq!(reflector.list().len(), 1);
        assert_eq!(reflector.resource_version(), api.revision());
        assert_eq!(reflector.lists(), 1);
    }

    #[tokio::test]
    async fn a_too_old_watch_lists_again_and_tells_only_what_changed_meanwhile() {
        let api = MemoryApi::new();
        for name in ["a", "b", "c"] {
            api.apply(config_map(name, "1"), false).await.expect("apply");
        }
        let reflector = Reflector::start(Arc::new(api.clone()), Kind::ConfigMap, Filter::default());
        reflector.synced().await;
        let mut changes = reflector.subscribe();
        for _ in 0..3 {
            next(&mut changes).await;
        }
        // While the history is gone (the open watch ends with "too old"), a changes, b goes, d comes.
        api.fail_next_watches(vec![ApiError::new(Reason::Expired, "too old")]);
        api.compact();
        api.apply(config_map("a", "2"), false).await.expect("apply");
        api.delete(Kind::ConfigMap, "default", "b", &DeleteOptions::default()).await.expect("delete");
        api.apply(config_map("d", "1"), false).await.expect("apply");
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next(&mut changes).await);
        }
        seen.sort();
        assert_eq!(seen, ["applied a", "applied d", "deleted b"], "each change once; c, unchanged, not repeated");
        assert!(reflector.lists() >= 2, "listed again");
        let names: Vec<String> = reflector.list().iter().map(|o| o.meta().name.clone()).collect();
        assert_eq!(names, ["a", "c", "d"]);
        // Nothing more arrives: no change was told twice.
        let extra = tokio::time::timeout(Duration::from_millis(300), changes.recv()).await;
        assert!(extra.is_err(), "no repeated change: {:?}", extra.ok().flatten().map(|c| describe(&c)));
    }
}
