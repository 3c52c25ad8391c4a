//! [`MemoryApi`]: the cluster as an in-memory [`ResourceApi`], the one test double of it that
//! controllers, reflectors and the agent are tested against. Objects get uids, resourceVersions and
//! generations; lists and watches filter like the real API (a watch sees an object leave its
//! selector as DELETED); deletion is immediate. A test can make the next watches fail, or forget
//! the history so that old resourceVersions are too old.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::StreamExt;

use crate::api::{
    ApiError, ApplyOutcome, Consistency, DeleteOptions, Deleted, Filter, ObjectList, Reason, ResourceApi, WatchEvent,
    WatchOptions, WatchStream,
};
use crate::meta::Time;
use crate::{Kind, Object};

type Key = (Kind, String, String);

/// One change, as the history keeps it: the object before and after (`None`: absent).
#[derive(Clone)]
struct Change {
    revision: u64,
    before: Option<Object>,
    after: Option<Object>,
}

/// A live watch: what it selects and where its events go.
struct Watcher {
    kind: Kind,
    filter: Filter,
    tx: mpsc::UnboundedSender<Result<WatchEvent, ApiError>>,
}

#[derive(Default)]
struct State {
    revision: u64,
    next_uid: u64,
    objects: BTreeMap<Key, Object>,
    history: Vec<Change>,
    /// Revisions at or below this are no longer in the history.
    compacted: u64,
    watchers: Vec<Watcher>,
    /// Errors the next watch calls return, in order.
    failing_watches: Vec<ApiError>,
    /// Every write call, in order, as `verb kind namespace/name` (for tests of who wrote what).
    writes: Vec<String>,
}

/// See the module docs. Cheap to clone: clones share the cluster.
#[derive(Clone, Default)]
pub struct MemoryApi {
    state: Arc<Mutex<State>>,
    renewals: crate::api::Renewals,
}

fn key_of(object: &Object) -> Key {
    let m = object.meta();
    let namespace = if object.kind().namespaced() { namespace_or_default(&m.namespace) } else { String::new() };
    (object.kind(), namespace, m.name.clone())
}

fn namespace_or_default(namespace: &str) -> String {
    if namespace.is_empty() {
        crate::defaults::DEFAULT_NAMESPACE.to_string()
    } else {
        namespace.to_string()
    }
}

fn key(kind: Kind, namespace: &str, name: &str) -> Key {
    let namespace = if kind.namespaced() { namespace_or_default(namespace) } else { String::new() };
    (kind, namespace, name.to_string())
}

fn in_scope(filter: &Filter, object: &Object) -> bool {
    match &filter.namespace {
        Some(ns) if object.kind().namespaced() => object.meta().namespace == *ns,
        _ => true,
    }
}

/// The event a watch with `filter` sees for a change, as the real API decides it.
fn event_for(filter: &Filter, change: &Change) -> Option<WatchEvent> {
    let selected = |o: &Option<Object>| {
        o.as_ref().filter(|o| in_scope(filter, o) && filter.matches(o)).map(|o| filter.shape(o.clone()))
    };
    match (selected(&change.before), selected(&change.after), &change.after) {
        (Some(_), Some(now), _) => Some(WatchEvent::Modified(now)),
        (None, Some(now), _) => Some(WatchEvent::Added(now)),
        (Some(_), None, Some(now)) => Some(WatchEvent::Deleted(now.clone())),
        (Some(mut last), None, None) => {
            last.meta_mut().resource_version = change.revision.to_string();
            Some(WatchEvent::Deleted(last))
        }
        (None, None, _) => None,
    }
}

impl MemoryApi {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, ApiError> {
        self.state.lock().map_err(|_| ApiError::internal("memory api lock poisoned"))
    }

    /// The next watch calls fail with these errors, in order (then watches work again).
    pub fn fail_next_watches(&self, errors: Vec<ApiError>) {
        if let Ok(mut s) = self.lock() {
            s.failing_watches.extend(errors);
        }
    }

    /// Forgets the history: a watch from any resourceVersion before now is too old, and every open
    /// watch ends with that error (as when a member drops a watcher that fell behind).
    pub fn compact(&self) {
        if let Ok(mut s) = self.lock() {
            s.compacted = s.revision;
            s.history.clear();
            for w in s.watchers.drain(..) {
                let _ = w.tx.unbounded_send(Err(ApiError::new(Reason::Expired, "history compacted: list again")));
            }
        }
    }

    /// Every write so far, as `verb Kind namespace/name`.
    pub fn writes(&self) -> Vec<String> {
        self.lock().map(|s| s.writes.clone()).unwrap_or_default()
    }

    /// The current resourceVersion.
    pub fn revision(&self) -> u64 {
        self.lock().map(|s| s.revision).unwrap_or(0)
    }

    /// Stores `after` (or removes the key) as one change, and tells the watchers.
    fn commit(state: &mut State, key: Key, after: Option<Object>) -> u64 {
        state.revision += 1;
        let revision = state.revision;
        let after = after.map(|mut o| {
            o.meta_mut().resource_version = revision.to_string();
            o
        });
        let before = match &after {
            Some(o) => state.objects.insert(key, o.clone()),
            None => state.objects.remove(&key),
        };
        let change = Change { revision, before, after };
        state.watchers.retain(|w| {
            let kind = change.after.as_ref().or(change.before.as_ref()).map(Object::kind);
            if kind != Some(w.kind) {
                return !w.tx.is_closed();
            }
            match event_for(&w.filter, &change) {
                Some(event) => w.tx.unbounded_send(Ok(event)).is_ok(),
                None => !w.tx.is_closed(),
            }
        });
        state.history.push(change);
        revision
    }

    fn record(state: &mut State, verb: &str, object: &Object) {
        let m = object.meta();
        state.writes.push(format!("{verb} {} {}/{}", object.kind(), m.namespace, m.name));
    }

    fn write(&self, verb: &str, object: Object, create_only: bool) -> Result<(Object, ApplyOutcome), ApiError> {
        let mut object = object;
        crate::defaults::apply_defaults(&mut object);
        let mut s = self.lock()?;
        let key = key_of(&object);
        let outcome = match s.objects.get(&key).cloned() {
            Some(current) => {
                if create_only {
                    return Err(ApiError::new(Reason::AlreadyExists, format!("{} already exists", object.describe())));
                }
                let sent = &object.meta().resource_version;
                if !sent.is_empty() && *sent != current.meta().resource_version {
                    return Err(ApiError::conflict(format!("{} was modified", object.describe())));
                }
                let changed = !current.same_desired_state(&object);
                let cur = current.meta();
                let m = object.meta_mut();
                m.uid = cur.uid.clone();
                m.creation_timestamp = cur.creation_timestamp;
                m.generation = Some(cur.generation.unwrap_or(1) + i64::from(changed));
                object.copy_status_from(&current);
                let mut unchanged = object.clone();
                unchanged.meta_mut().resource_version = current.meta().resource_version.clone();
                if unchanged == current {
                    return Ok((current, ApplyOutcome::Unchanged));
                }
                ApplyOutcome::Configured
            }
            None => {
                s.next_uid += 1;
                let uid = format!("uid-{}", s.next_uid);
                let m = object.meta_mut();
                m.uid = uid;
                m.generation = Some(1);
                m.creation_timestamp = Some(Time(jiff::Timestamp::now()));
                ApplyOutcome::Created
            }
        };
        Self::record(&mut s, verb, &object);
        let revision = Self::commit(&mut s, key, Some(object.clone()));
        object.meta_mut().resource_version = revision.to_string();
        Ok((object, outcome))
    }

    fn modify(
        &self,
        verb: &str,
        key: Key,
        change: impl FnOnce(&mut Object) -> Result<(), ApiError>,
    ) -> Result<Object, ApiError> {
        let mut s = self.lock()?;
        let Some(mut object) = s.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(key.0, &key.1, &key.2));
        };
        change(&mut object)?;
        Self::record(&mut s, verb, &object);
        let revision = Self::commit(&mut s, key, Some(object.clone()));
        object.meta_mut().resource_version = revision.to_string();
        Ok(object)
    }
}

#[async_trait]
impl ResourceApi for MemoryApi {
    async fn get(&self, kind: Kind, namespace: &str, name: &str, _: Consistency) -> Result<Object, ApiError> {
        let s = self.lock()?;
        s.objects.get(&key(kind, namespace, name)).cloned().ok_or_else(|| ApiError::not_found(kind, namespace, name))
    }

    async fn list(&self, kind: Kind, filter: &Filter, _: Consistency) -> Result<ObjectList, ApiError> {
        let s = self.lock()?;
        let items = s
            .objects
            .iter()
            .filter(|((k, _, _), o)| *k == kind && in_scope(filter, o) && filter.matches(o))
            .map(|(_, o)| filter.shape(o.clone()))
            .collect();
        Ok(ObjectList { items, resource_version: s.revision })
    }

    async fn watch(&self, kind: Kind, options: WatchOptions) -> Result<WatchStream, ApiError> {
        let mut s = self.lock()?;
        if !s.failing_watches.is_empty() {
            return Err(s.failing_watches.remove(0));
        }
        let from = if options.resource_version == 0 { s.revision } else { options.resource_version };
        if from < s.compacted {
            return Err(ApiError::new(
                Reason::Expired,
                format!("resourceVersion {from} is older than the retained history: list again"),
            ));
        }
        let (tx, rx) = mpsc::unbounded();
        for change in s.history.iter().filter(|c| c.revision > from) {
            let kind_of = change.after.as_ref().or(change.before.as_ref()).map(Object::kind);
            if kind_of == Some(kind) {
                if let Some(event) = event_for(&options.filter, change) {
                    let _ = tx.unbounded_send(Ok(event));
                }
            }
        }
        s.watchers.push(Watcher { kind, filter: options.filter, tx });
        Ok(rx.boxed())
    }

    async fn apply(&self, object: Object, dry_run: bool) -> Result<(Object, ApplyOutcome), ApiError> {
        if dry_run {
            return Ok((object, ApplyOutcome::Unchanged));
        }
        self.write("apply", object, false)
    }

    async fn create(&self, object: Object) -> Result<Object, ApiError> {
        self.write("create", object, true).map(|(o, _)| o)
    }

    async fn update_status(&self, object: Object) -> Result<Object, ApiError> {
        let key = key_of(&object);
        self.modify("update-status", key, |current| {
            current.copy_status_from(&object);
            Ok(())
        })
    }

    async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<Object, ApiError> {
        self.modify("bind", key(Kind::Pod, namespace, name), |current| match current {
            Object::Pod(p) if p.spec.node_name.is_some() => {
                Err(ApiError::conflict(format!("pod {name:?} is already bound: a pod is bound once")))
            }
            Object::Pod(p) => {
                p.spec.node_name = Some(node.to_string());
                Ok(())
            }
            _ => Ok(()),
        })
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let mut s = self.lock()?;
        let key = key(kind, namespace, name);
        let Some(object) = s.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(kind, namespace, name));
        };
        if let Some(uid) = &options.uid {
            if *uid != object.meta().uid {
                return Err(ApiError::conflict(format!("{} has another uid: it was replaced", object.describe())));
            }
        }
        if let Some(rv) = options.resource_version {
            if rv.to_string() != object.meta().resource_version {
                return Err(ApiError::conflict(format!("{} was modified", object.describe())));
            }
        }
        if !options.dry_run {
            Self::record(&mut s, "delete", &object);
            Self::commit(&mut s, key, None);
        }
        Ok(Deleted { object, removed: true, dependants: Vec::new() })
    }

    async fn renew_node(&self, node: &str) -> Result<(), ApiError> {
        self.renewals.renew(node);
        Ok(())
    }

    fn renewals(&self) -> BTreeMap<String, std::time::Duration> {
        self.renewals.ages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::ConfigMap;

    fn config_map(name: &str, app: &str) -> Object {
        let mut c = ConfigMap::default();
        c.metadata.name = name.into();
        c.metadata.labels.insert("app".into(), app.into());
        Object::ConfigMap(c)
    }

    #[test]
    fn objects_get_uids_and_revisions_and_watches_see_selector_changes() {
        futures::executor::block_on(async {
            let api = MemoryApi::new();
            let (a, outcome) = api.apply(config_map("a", "web"), false).await.expect("apply");
            assert_eq!((a.meta().uid.as_str(), a.meta().resource_version.as_str()), ("uid-1", "1"));
            assert_eq!(outcome, ApplyOutcome::Created);
            let filter =
                Filter { labels: crate::selector::Selector::parse("app=web").expect("selector"), ..Default::default() };
            let mut watch = api
                .watch(
                    Kind::ConfigMap,
                    WatchOptions { filter: filter.clone(), resource_version: 0, ..Default::default() },
                )
                .await
                .expect("watch");
            api.apply(config_map("a", "other"), false).await.expect("relabel");
            let Some(Ok(WatchEvent::Deleted(o))) = watch.next().await else { panic!("a DELETED") };
            assert_eq!(o.meta().labels["app"], "other");
            let listed = api.list(Kind::ConfigMap, &filter, Consistency::Stale).await.expect("list");
            assert!(listed.items.is_empty());
            assert_eq!(api.writes(), ["apply ConfigMap default/a", "apply ConfigMap default/a"]);
            api.compact();
            let old = api.watch(Kind::ConfigMap, WatchOptions { resource_version: 1, ..Default::default() }).await;
            assert!(matches!(old, Err(e) if e.is(Reason::Expired)));
        });
    }
}
