//! The resource API over the object store: typed objects with Kubernetes' semantics. Create and
//! update with server-set fields, conditional updates, graceful and cascading deletion, the status
//! and binding calls, lists with selectors and watches from a resourceVersion.
//!
//! Writes run on the leader (a follower gets [`StoreError::NotLeader`] inside
//! [`RegistryError::Store`] and forwards the call). Each decision reads the current object from the
//! leader's own replica and writes with compare-and-swap on its revision, so two writers never
//! silently overwrite each other: a read that missed a just-committed write only costs a retry. No
//! quorum round is needed before a write; a caller's resourceVersion that looks stale is confirmed
//! with one before it is reported as a conflict.

use std::time::Duration;

use skiff_api::defaults::{apply_defaults, DEFAULT_NAMESPACE};
use skiff_api::fields::FieldSelector;
use skiff_api::kinds::pod::PodCondition;
use skiff_api::meta::{Time, CONDITION_TRUE};
use skiff_api::selector::Selector;
use skiff_api::validate::{validate, FieldError};
use skiff_api::{Kind, Object};
use tokio::sync::mpsc;

use crate::watch::{WatchError, WatchItem};
use crate::{EventKind, KeyValue, ObjectStore, Op, ReadConsistency, StoreError};

/// Attempts of a read-modify-write that lost a compare-and-swap race it may retry.
const MAX_ATTEMPTS: usize = 8;

/// The store key of an object: `/pods/default/web`, `/nodes/node1`.
pub fn object_key(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("/{}/{namespace}/{name}", kind.info().plural)
    } else {
        format!("/{}/{name}", kind.info().plural)
    }
}

/// The key prefix of a kind, in one namespace or in all.
pub fn kind_prefix(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("/{}/{ns}/", kind.info().plural),
        _ => format!("/{}/", kind.info().plural),
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("{object} is invalid: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid { object: String, errors: Vec<FieldError> },
    #[error("{kind} {name:?} not found{}", in_namespace(*kind, namespace))]
    NotFound { kind: Kind, namespace: String, name: String },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn in_namespace(kind: Kind, namespace: &str) -> String {
    if kind.namespaced() {
        format!(" in namespace {namespace:?}")
    } else {
        String::new()
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

/// How to delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Seconds the pod's containers get to stop; `None` is the pod's own setting. `Some(0)` removes
    /// the object at once.
    pub grace_period_seconds: Option<i64>,
    /// Skip graceful termination: remove now (with `grace_period_seconds: Some(0)`, as kubectl has it).
    pub force: bool,
    pub dry_run: bool,
    /// Delete only if the object still has this uid.
    pub uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    pub resource_version: Option<u64>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object as it was last stored (or as it is now, when its deletion is graceful).
    pub object: Object,
    /// False when the object is being deleted gracefully: it stays until its node's agent has
    /// stopped its containers.
    pub removed: bool,
    /// Dependants deleted with it (`Pod "web-1"`), in the same atomic write.
    pub dependants: Vec<String>,
}

/// A change to an object, as a watch delivers it.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Added(Object),
    Modified(Object),
    /// The object's last state, with the resourceVersion of its deletion.
    Deleted(Object),
    /// Every change up to this resourceVersion has been delivered.
    Bookmark(u64),
}

impl WatchEvent {
    pub fn object(&self) -> Option<&Object> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            WatchEvent::Bookmark(_) => None,
        }
    }
}

/// Which objects a list or a watch returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: every namespace (and cluster-scoped kinds).
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, object: &Object) -> bool {
        self.labels.matches(&object.meta().labels)
            && (self.fields.is_empty() || self.fields.matches(&object.to_value()))
    }
}

/// The typed resource API of one member.
#[derive(Clone)]
pub struct Registry {
    store: ObjectStore,
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn decode(kv: &KeyValue) -> Result<Object, RegistryError> {
    let mut object = Object::from_trusted_json(&kv.value)
        .map_err(|e| StoreError::Storage(format!("stored object {} cannot be read: {e}", kv.key)))?;
    object.meta_mut().resource_version = kv.mod_revision.to_string();
    Ok(object)
}

/// The stored form: the resourceVersion is the key's revision, so it is not stored inside.
fn encode(object: &Object) -> Vec<u8> {
    let mut stored = object.clone();
    stored.meta_mut().resource_version.clear();
    stored.to_json()
}

fn parse_rv(object: &Object) -> Result<Option<u64>, RegistryError> {
    let rv = &object.meta().resource_version;
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<u64>().map(Some).map_err(|_| {
        RegistryError::BadRequest(format!(
            "{}: metadata.resourceVersion {rv:?} is not a resourceVersion this server issued",
            object.describe()
        ))
    })
}

fn key_of(object: &Object) -> String {
    let m = object.meta();
    object_key(object.kind(), &m.namespace, &m.name)
}

/// A random suffix for `generateName`, from the alphabet Kubernetes uses (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5].iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

impl Registry {
    pub fn new(store: ObjectStore) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &ObjectStore {
        &self.store
    }

    /// Validates, defaults and names a new or changed object; nothing is read or written.
    pub fn prepare(&self, mut object: Object) -> Result<Object, RegistryError> {
        apply_defaults(&mut object);
        let m = object.meta_mut();
        if m.name.is_empty() && !m.generate_name.is_empty() {
            m.name = format!("{}{}", m.generate_name, random_suffix());
        }
        let errors = validate(&object);
        if !errors.is_empty() {
            return Err(RegistryError::Invalid { object: object.describe(), errors });
        }
        Ok(object)
    }

    async fn check_namespace(&self, object: &Object) -> Result<(), RegistryError> {
        let ns = &object.meta().namespace;
        if !object.kind().namespaced() || ns == DEFAULT_NAMESPACE {
            return Ok(());
        }
        match self.store.get_local(&object_key(Kind::Namespace, "", ns))? {
            None => Err(RegistryError::NotFound { kind: Kind::Namespace, namespace: String::new(), name: ns.clone() }),
            Some(kv) if decode(&kv)?.meta().deletion_timestamp.is_some() => Err(RegistryError::Conflict(format!(
                "namespace {ns:?} is being deleted: {} cannot be created in it",
                object.describe()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Creates `object` or updates it to match: kubectl apply. An update keeps the uid, the creation
    /// time, the status and the fields the server set (a pod's binding); `generation` moves when the
    /// spec changes. With `metadata.resourceVersion` set the update is conditional.
    pub async fn apply(&self, object: Object, dry_run: bool) -> Result<(Object, ApplyOutcome), RegistryError> {
        if object.meta().name.is_empty() && !object.meta().generate_name.is_empty() {
            return Err(RegistryError::BadRequest(format!(
                "{}: apply needs metadata.name (generateName would create a new object on every apply); use create",
                object.describe()
            )));
        }
        let object = self.prepare(object)?;
        let expected = parse_rv(&object)?;
        let key = key_of(&object);
        self.store.check_leader()?;
        self.check_namespace(&object).await?;
        for _ in 0..MAX_ATTEMPTS {
            let current = self.current(&key, expected).await?;
            let (next, expect, outcome) = match &current {
                None => {
                    if expected.is_some() {
                        return Err(RegistryError::NotFound {
                            kind: object.kind(),
                            namespace: object.meta().namespace.clone(),
                            name: object.meta().name.clone(),
                        });
                    }
                    (self.for_create(object.clone()), 0, ApplyOutcome::Created)
                }
                Some(kv) => {
                    let current = decode(kv)?;
                    if let Some(rv) = expected {
                        if rv != kv.mod_revision {
                            return Err(stale(&current, rv, kv.mod_revision));
                        }
                    }
                    let next = merge_update(&current, object.clone())?;
                    size_ok(&next)?;
                    if next == current {
                        return Ok((current, ApplyOutcome::Unchanged));
                    }
                    (next, kv.mod_revision, ApplyOutcome::Configured)
                }
            };
            if dry_run {
                return Ok((next, outcome));
            }
            match self.store.write(vec![Op::Put { key: key.clone(), value: encode(&next), expect: Some(expect) }]).await
            {
                Ok(r) if r.conflict.is_none() => {
                    let mut stored = next;
                    stored.meta_mut().resource_version = r.revision.to_string();
                    return Ok((stored, outcome));
                }
                Ok(_) | Err(StoreError::Conflict(_)) => {
                    if let Some(rv) = expected {
                        let actual = self.store.get_local(&key)?.map_or(0, |kv| kv.mod_revision);
                        return Err(stale(&object, rv, actual));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Conflict(format!("{} is changing too fast to apply: try again", object.describe())))
    }

    /// The key as this member (the leader) has applied it. When the caller expects a revision the
    /// replica does not show, a quorum round first makes sure every committed write is applied, so
    /// a conflict is only reported when it is real.
    async fn current(&self, key: &str, expected: Option<u64>) -> Result<Option<KeyValue>, RegistryError> {
        let kv = self.store.get_local(key)?;
        match expected {
            Some(rv) if kv.as_ref().map(|kv| kv.mod_revision) != Some(rv) => {
                self.store.read_barrier(ReadConsistency::Linearizable).await?;
                Ok(self.store.get_local(key)?)
            }
            _ => Ok(kv),
        }
    }

    /// Creates `object`; it must not exist yet.
    pub async fn create(&self, object: Object) -> Result<Object, RegistryError> {
        let object = self.for_create(self.prepare(object)?);
        self.store.check_leader()?;
        self.check_namespace(&object).await?;
        let key = key_of(&object);
        let r = self.store.write(vec![Op::Put { key, value: encode(&object), expect: Some(0) }]).await;
        match r {
            Ok(r) if r.conflict.is_none() => {
                let mut stored = object;
                stored.meta_mut().resource_version = r.revision.to_string();
                Ok(stored)
            }
            Ok(_) | Err(StoreError::Conflict(_)) => {
                Err(RegistryError::AlreadyExists(format!("{} already exists", object.describe())))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn for_create(&self, mut object: Object) -> Object {
        let keeps_status = matches!(object.kind(), Kind::Node | Kind::Namespace);
        let m = object.meta_mut();
        m.uid = uuid::Uuid::new_v4().to_string();
        m.generation = Some(1);
        m.creation_timestamp = Some(now());
        m.resource_version.clear();
        m.deletion_timestamp = None;
        m.deletion_grace_period_seconds = None;
        if !keeps_status {
            let empty = match &object {
                Object::Pod(_) => Object::Pod(Default::default()),
                Object::Deployment(_) => Object::Deployment(Default::default()),
                Object::Service(_) => Object::Service(Default::default()),
                other => other.clone(),
            };
            object.copy_status_from(&empty);
        }
        object
    }

    /// Reads one object.
    pub async fn get(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        consistency: ReadConsistency,
    ) -> Result<Object, RegistryError> {
        let (kv, _) = self.store.get(&object_key(kind, namespace, name), consistency).await?;
        match kv {
            Some(kv) => decode(&kv),
            None => Err(RegistryError::NotFound { kind, namespace: namespace.to_string(), name: name.to_string() }),
        }
    }

    /// Lists the objects of `kind` that `filter` selects, with the resourceVersion of the list (watch
    /// from it to see every later change).
    pub async fn list(
        &self,
        kind: Kind,
        filter: &Filter,
        consistency: ReadConsistency,
    ) -> Result<(Vec<Object>, u64), RegistryError> {
        let (kvs, revision) = self.store.list(&kind_prefix(kind, filter.namespace.as_deref()), consistency).await?;
        let mut objects = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let object = decode(kv)?;
            if filter.matches(&object) {
                objects.push(object);
            }
        }
        Ok((objects, revision))
    }

    /// Watches `kind` on this member's replica, strictly after `resource_version` (0: from now).
    /// Events are filtered by `filter`; bookmarks arrive at least every `progress_every`.
    pub fn watch(
        &self,
        kind: Kind,
        filter: Filter,
        resource_version: u64,
        progress_every: Duration,
    ) -> Result<mpsc::Receiver<Result<WatchEvent, WatchError>>, RegistryError> {
        let start = if resource_version == 0 { self.store.applied_revision() } else { resource_version };
        let mut rx = self.store.watch(&kind_prefix(kind, filter.namespace.as_deref()), start, progress_every)?;
        let (tx, out) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                let event = match item {
                    Ok(WatchItem::Progress(rev)) => Ok(WatchEvent::Bookmark(rev)),
                    Ok(WatchItem::Event(e)) => match decode(&e.kv) {
                        Ok(mut object) => {
                            if !filter.matches(&object) {
                                continue;
                            }
                            match e.kind {
                                EventKind::Delete => {
                                    object.meta_mut().resource_version = e.revision.to_string();
                                    Ok(WatchEvent::Deleted(object))
                                }
                                EventKind::Put if e.kv.create_revision == e.kv.mod_revision => {
                                    Ok(WatchEvent::Added(object))
                                }
                                EventKind::Put => Ok(WatchEvent::Modified(object)),
                            }
                        }
                        Err(err) => Err(WatchError::Internal(err.to_string())),
                    },
                    Err(e) => Err(e),
                };
                let last = event.is_err();
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(out)
    }

    /// Deletes an object, gracefully for a pod bound to a node (it gets `deletionTimestamp` and is
    /// removed once its agent has stopped it), at once otherwise. Its dependants (objects whose
    /// `ownerReferences` name it, and everything in a deleted namespace) go in the same atomic write.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, RegistryError> {
        if kind == Kind::Namespace && name == DEFAULT_NAMESPACE {
            return Err(RegistryError::BadRequest("namespace \"default\" cannot be deleted".into()));
        }
        let key = object_key(kind, namespace, name);
        self.store.check_leader()?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.current(&key, options.resource_version).await? else {
                return Err(RegistryError::NotFound { kind, namespace: namespace.to_string(), name: name.to_string() });
            };
            let object = decode(&kv)?;
            if let Some(uid) = &options.uid {
                if uid != &object.meta().uid {
                    return Err(RegistryError::Conflict(format!(
                        "{} has uid {}, not {uid}: it was replaced; nothing was deleted",
                        object.describe(),
                        object.meta().uid
                    )));
                }
            }
            if let Some(rv) = options.resource_version {
                if rv != kv.mod_revision {
                    return Err(stale(&object, rv, kv.mod_revision));
                }
            }
            let mut ops = Vec::new();
            let (after, removed) = delete_op(&object, kv.mod_revision, options, &mut ops);
            let dependants = self.dependants(&object).await?;
            let mut names = Vec::new();
            for (dep, rev) in &dependants {
                let before = ops.len();
                let dep_options = DeleteOptions {
                    grace_period_seconds: options.grace_period_seconds,
                    force: options.force,
                    ..Default::default()
                };
                delete_op(dep, *rev, &dep_options, &mut ops);
                if ops.len() > before {
                    names.push(dep.describe());
                }
            }
            if options.dry_run || ops.is_empty() {
                return Ok(Deleted { object: after, removed, dependants: names });
            }
            match self.store.write(ops).await {
                Ok(r) if r.conflict.is_none() => {
                    let mut after = after;
                    if !removed {
                        after.meta_mut().resource_version = r.revision.to_string();
                    }
                    return Ok(Deleted { object: after, removed, dependants: names });
                }
                Ok(_) | Err(StoreError::Conflict(_)) => continue, // something changed meanwhile: decide again
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Conflict(format!("{kind} {name:?} is changing too fast to delete: try again")))
    }

    /// Every object that goes with `owner`: its dependants by owner reference, transitively, and
    /// for a namespace everything in it. Each with its current revision.
    async fn dependants(&self, owner: &Object) -> Result<Vec<(Object, u64)>, RegistryError> {
        let mut found: Vec<(Object, u64)> = Vec::new();
        if owner.kind() == Kind::Namespace {
            for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
                let prefix = kind_prefix(kind, Some(&owner.meta().name));
                let (kvs, _) = self.store.list(&prefix, ReadConsistency::Stale).await?;
                for kv in kvs {
                    found.push((decode(&kv)?, kv.mod_revision));
                }
            }
            return Ok(found);
        }
        if !owner.kind().namespaced() {
            return Ok(found);
        }
        // Candidates: every namespaced object in the owner's namespace (owners and dependants share one).
        let mut candidates = Vec::new();
        for kind in Kind::ALL.into_iter().filter(|k| k.namespaced() && *k != Kind::Event) {
            let (kvs, _) =
                self.store.list(&kind_prefix(kind, Some(&owner.meta().namespace)), ReadConsistency::Stale).await?;
            for kv in kvs {
                candidates.push((decode(&kv)?, kv.mod_revision));
            }
        }
        let mut owners = vec![owner.meta().uid.clone()];
        while let Some(uid) = owners.pop() {
            for (object, rev) in &candidates {
                let owned = object.meta().owner_references.iter().any(|r| r.uid == uid);
                if owned && !found.iter().any(|(f, _)| f.meta().uid == object.meta().uid) {
                    owners.push(object.meta().uid.clone());
                    found.push((object.clone(), *rev));
                }
            }
        }
        Ok(found)
    }

    /// Replaces an object's status, leaving everything else as stored. With
    /// `metadata.resourceVersion` set the write is conditional.
    pub async fn update_status(&self, object: Object) -> Result<Object, RegistryError> {
        let kind = object.kind();
        if !Object::has_status(kind) {
            return Err(RegistryError::BadRequest(format!("{kind} has no status")));
        }
        let expected = parse_rv(&object)?;
        let (namespace, name) = {
            let m = object.meta();
            let ns = if kind.namespaced() && m.namespace.is_empty() { DEFAULT_NAMESPACE } else { m.namespace.as_str() };
            (ns.to_string(), m.name.clone())
        };
        self.modify(kind, &namespace, &name, expected, |current| {
            current.copy_status_from(&object);
            Ok(())
        })
        .await
    }

    /// Binds a pod to a node: sets `spec.nodeName`, only if it is unset.
    pub async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<Object, RegistryError> {
        skiff_api::name::check_dns1123_subdomain(node)
            .map_err(|e| RegistryError::BadRequest(format!("node name: {e}")))?;
        self.modify(Kind::Pod, namespace, name, None, |current| {
            let Object::Pod(pod) = current else { return Ok(()) };
            if let Some(bound) = &pod.spec.node_name {
                return Err(RegistryError::Conflict(format!(
                    "pod {name:?} is already bound to node {bound:?}: a pod is bound once"
                )));
            }
            if pod.metadata.deletion_timestamp.is_some() {
                return Err(RegistryError::Conflict(format!("pod {name:?} is being deleted: it cannot be bound")));
            }
            pod.spec.node_name = Some(node.to_string());
            let status = pod.status.get_or_insert_with(Default::default);
            status.conditions.retain(|c| c.type_ != "PodScheduled");
            status.conditions.push(PodCondition {
                type_: "PodScheduled".into(),
                status: CONDITION_TRUE.into(),
                last_transition_time: Some(now()),
                ..Default::default()
            });
            Ok(())
        })
        .await
    }

    /// Reads, changes and writes one object with compare-and-swap, retrying a lost race unless the
    /// caller asked for a specific revision.
    async fn modify(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        expected: Option<u64>,
        change: impl Fn(&mut Object) -> Result<(), RegistryError>,
    ) -> Result<Object, RegistryError> {
        let key = object_key(kind, namespace, name);
        self.store.check_leader()?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(kv) = self.current(&key, expected).await? else {
                return Err(RegistryError::NotFound { kind, namespace: namespace.to_string(), name: name.to_string() });
            };
            let current = decode(&kv)?;
            if let Some(rv) = expected {
                if rv != kv.mod_revision {
                    return Err(stale(&current, rv, kv.mod_revision));
                }
            }
            let mut next = current.clone();
            change(&mut next)?;
            if next == current {
                return Ok(current);
            }
            size_ok(&next)?;
            match self
                .store
                .write(vec![Op::Put { key: key.clone(), value: encode(&next), expect: Some(kv.mod_revision) }])
                .await
            {
                Ok(r) if r.conflict.is_none() => {
                    next.meta_mut().resource_version = r.revision.to_string();
                    return Ok(next);
                }
                Ok(_) | Err(StoreError::Conflict(_)) if expected.is_none() => continue,
                Ok(_) | Err(StoreError::Conflict(_)) => {
                    let actual = self.store.get_local(&key)?.map_or(0, |kv| kv.mod_revision);
                    return Err(stale(&current, kv.mod_revision, actual));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::Conflict(format!("{kind} {name:?} is changing too fast to update: try again")))
    }
}

/// An object the server assembled (the user's spec with the stored status) must still fit.
fn size_ok(object: &Object) -> Result<(), RegistryError> {
    match skiff_api::validate::check_size(object) {
        Some(e) => Err(RegistryError::Invalid { object: object.describe(), errors: vec![e] }),
        None => Ok(()),
    }
}

fn stale(object: &Object, expected: u64, actual: u64) -> RegistryError {
    RegistryError::Conflict(format!(
        "{} was modified: it is at resourceVersion {actual}, the update was based on {expected}; read it again and reapply your change",
        object.describe()
    ))
}

/// The update of `current` to what the user sent: the server-set fields stay.
fn merge_update(current: &Object, mut next: Object) -> Result<Object, RegistryError> {
    if current.meta().deletion_timestamp.is_some() {
        return Err(RegistryError::Conflict(format!("{} is being deleted: it cannot be changed", current.describe())));
    }
    if let (Object::Pod(cur), Object::Pod(new)) = (current, &mut next) {
        match (&cur.spec.node_name, &new.spec.node_name) {
            (Some(bound), None) => new.spec.node_name = Some(bound.clone()),
            (Some(bound), Some(asked)) if bound != asked => {
                return Err(RegistryError::BadRequest(format!(
                    "{}: spec.nodeName is {bound:?} and cannot change once bound (asked {asked:?}); delete and recreate the pod",
                    current.describe()
                )))
            }
            _ => {}
        }
    }
    immutable_fields(current, &next)?;
    let spec_changed = !current.same_desired_state(&next);
    let cur = current.meta();
    let m = next.meta_mut();
    m.uid = cur.uid.clone();
    m.creation_timestamp = cur.creation_timestamp;
    m.resource_version = cur.resource_version.clone();
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    m.generation = Some(cur.generation.unwrap_or(1) + i64::from(spec_changed));
    if m.owner_references.is_empty() {
        m.owner_references = cur.owner_references.clone();
    }
    if m.generate_name.is_empty() {
        m.generate_name = cur.generate_name.clone();
    }
    next.copy_status_from(current);
    Ok(next)
}

/// What Kubernetes does not let an update change: a pod's spec beyond its containers' images (a
/// running pod is replaced, not edited), a deployment's selector (its pods would be orphaned).
fn immutable_fields(current: &Object, next: &Object) -> Result<(), RegistryError> {
    match (current, next) {
        (Object::Pod(cur), Object::Pod(new)) => {
            let without_images = |spec: &skiff_api::kinds::pod::PodSpec| {
                let mut spec = spec.clone();
                // The pull policy's default follows the image's tag, so it may move with the image.
                spec.containers.iter_mut().for_each(|c| {
                    c.image.clear();
                    c.image_pull_policy = None;
                });
                spec.node_name = None;
                spec
            };
            if without_images(&cur.spec) != without_images(&new.spec) {
                return Err(RegistryError::Invalid {
                    object: current.describe(),
                    errors: vec![FieldError {
                        path: skiff_api::path::FieldPath::root().at("spec"),
                        message: "a pod's spec cannot change after it is created, except spec.containers[*].image: delete and recreate the pod (or let a Deployment roll it)".into(),
                    }],
                });
            }
        }
        (Object::Deployment(cur), Object::Deployment(new)) if cur.spec.selector != new.spec.selector => {
            return Err(RegistryError::Invalid {
                object: current.describe(),
                errors: vec![FieldError {
                    path: skiff_api::path::FieldPath::root().at("spec.selector"),
                    message: "field is immutable: delete the deployment and create it with the new selector".into(),
                }],
            });
        }
        _ => {}
    }
    Ok(())
}

/// The op that deletes `object` (at revision `rev`), or marks it for graceful deletion. Returns the
/// object as it will be and whether it is removed now. A pod already terminating within the asked
/// grace period needs no op.
fn delete_op(object: &Object, rev: u64, options: &DeleteOptions, ops: &mut Vec<Op>) -> (Object, bool) {
    let key = key_of(object);
    let graceful = match object {
        Object::Pod(pod) if pod.spec.node_name.is_some() && !options.force => {
            let grace = options
                .grace_period_seconds
                .or(pod.spec.termination_grace_period_seconds)
                .unwrap_or(skiff_api::defaults::DEFAULT_GRACE_PERIOD_SECONDS)
                .max(0);
            (grace > 0).then_some(grace)
        }
        _ => None,
    };
    let Some(grace) = graceful else {
        ops.push(Op::Delete { key, expect: Some(rev) });
        return (object.clone(), true);
    };
    let mut marked = object.clone();
    let deadline = Time::from_unix(now().unix_seconds().saturating_add(grace)).unwrap_or_else(now);
    let m = marked.meta_mut();
    if let (Some(existing), Some(current_grace)) = (m.deletion_timestamp, m.deletion_grace_period_seconds) {
        if existing <= deadline && current_grace <= grace {
            return (marked, false); // already terminating at least as fast
        }
    }
    m.deletion_timestamp = Some(deadline);
    m.deletion_grace_period_seconds = Some(grace);
    ops.push(Op::Put { key, value: encode(&marked), expect: Some(rev) });
    (marked, false)
}
