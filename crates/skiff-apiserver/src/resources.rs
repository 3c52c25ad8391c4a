//! The resource API as this member serves it: typed objects with Kubernetes' semantics over the
//! key-value store. Writes need this member to lead (otherwise [`ServeError::NotLeader`], which the
//! serving path turns into forwarding); reads and watches come from this member's replica.
//!
//! Every write is a read-decide-compare-and-swap ([`crate::cas`]) whose decision is a pure strategy
//! ([`crate::strategy`], [`crate::binding`], [`crate::gc`]).

use std::sync::Arc;

use skiff_api::api::{
    ApplyOutcome, Consistency, DeleteOptions, Deleted, Filter, ObjectList, WatchOptions, WatchStream,
};
use skiff_api::defaults::DEFAULT_NAMESPACE;
use skiff_api::meta::Time;
use skiff_api::network::ServiceNetwork;
use skiff_api::{ApiError, Kind, Object};
use skiff_store::{KvStore, Op, ReadConsistency};

use crate::cas::{self, Step};
use crate::error::ServeError;
use crate::keys::{self, decode, decode_for, key_of, kind_prefix, object_key};
use crate::strategy::service::{self as service_claims, Taken, CLUSTER_IP_CLAIMS, NODE_PORT_CLAIMS};
use crate::strategy::{self, Context, Deletion};
use crate::{binding, gc, watch};

/// The resource API of one member, over its store.
#[derive(Clone)]
pub struct Resources {
    store: KvStore,
    /// Where Services get cluster IPs and node ports.
    network: ServiceNetwork,
}

fn consistency(c: Consistency) -> ReadConsistency {
    match c {
        Consistency::Linearizable => ReadConsistency::Linearizable,
        Consistency::Stale => ReadConsistency::Stale,
    }
}

/// The namespace an object of `kind` lives in, when the caller left it empty.
pub fn namespace_of(kind: Kind, namespace: &str) -> String {
    if !kind.namespaced() {
        String::new()
    } else if namespace.is_empty() {
        DEFAULT_NAMESPACE.to_string()
    } else {
        namespace.to_string()
    }
}

impl Resources {
    pub fn new(store: KvStore, network: ServiceNetwork) -> Self {
        Self { store, network }
    }

    /// The addresses every Service holds, from the claim keys in this member's replica.
    async fn taken(&self) -> Result<Taken, ServeError> {
        let mut taken = Taken::default();
        let owner = |kv: &skiff_store::KeyValue| String::from_utf8_lossy(&kv.value).into_owned();
        for kv in self.store.list(CLUSTER_IP_CLAIMS, ReadConsistency::Stale).await?.0 {
            if let Some(Ok(ip)) = kv.key.strip_prefix(CLUSTER_IP_CLAIMS).map(str::parse) {
                taken.cluster_ips.insert(ip, owner(&kv));
            }
        }
        for kv in self.store.list(NODE_PORT_CLAIMS, ReadConsistency::Stale).await?.0 {
            if let Some(Ok(port)) = kv.key.strip_prefix(NODE_PORT_CLAIMS).map(str::parse) {
                taken.node_ports.insert(port, owner(&kv));
            }
        }
        Ok(taken)
    }

    /// For a Service: its cluster IP and node ports filled in (or checked) and the writes that
    /// claim and release them, to go in the same write as the Service. Nothing for other kinds.
    async fn claims(&self, current: Option<&Object>, next: &mut Object) -> Result<Vec<Op>, ServeError> {
        let Object::Service(next) = next else {
            return Ok(Vec::new());
        };
        let current = match current {
            Some(Object::Service(c)) => Some(c),
            _ => None,
        };
        let taken = self.taken().await?;
        let seed = service_claims::seed(&next.metadata.uid);
        let claims = service_claims::allocate(current, next, &taken, &self.network, seed)?;
        let owner = service_claims::owner(next).into_bytes();
        let claim = claims.claim.into_iter().map(|key| Op::Put { key, value: owner.clone(), expect: Some(0) });
        let release = claims.release.into_iter().map(|key| Op::Delete { key, expect: None });
        Ok(claim.chain(release).collect())
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// A namespaced object may only be created in a namespace that exists and is not being deleted.
    fn check_namespace(&self, object: &Object) -> Result<(), ServeError> {
        let ns = &object.meta().namespace;
        if !object.kind().namespaced() || ns == DEFAULT_NAMESPACE {
            return Ok(());
        }
        match self.store.get_local(&object_key(Kind::Namespace, "", ns))? {
            None => Err(ApiError::not_found(Kind::Namespace, "", ns).into()),
            Some(kv) if decode(&kv)?.meta().deletion_timestamp.is_some() => Err(ApiError::conflict(format!(
                "namespace {ns:?} is being deleted: {} cannot be created in it",
                object.describe()
            ))
            .into()),
            Some(_) => Ok(()),
        }
    }

    /// Creates `object` or updates it to match: kubectl apply. With `metadata.resourceVersion` set
    /// the update is conditional.
    pub async fn apply(&self, object: Object, dry_run: bool) -> Result<(Object, ApplyOutcome), ServeError> {
        if object.meta().name.is_empty() && !object.meta().generate_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{}: apply needs metadata.name (generateName would create a new object on every apply); use create",
                object.describe()
            ))
            .into());
        }
        let ctx = Context::now();
        let object = strategy::prepare(object, &ctx)?;
        let pinned = keys::resource_version(&object)?;
        let key = key_of(&object);
        self.store.check_leader()?;
        self.check_namespace(&object)?;
        let what = object.describe();
        let (kind, namespace, name) = (object.kind(), object.meta().namespace.clone(), object.meta().name.clone());
        let ((mut applied, outcome), revision) = cas::update(&self.store, &key, pinned, &what, |kv| {
            let (object, key, namespace, name) = (object.clone(), key.clone(), namespace.clone(), name.clone());
            let ctx = &ctx;
            async move {
                match kv {
                    None if pinned.is_some() => Err(ApiError::not_found(kind, &namespace, &name).into()),
                    None => {
                        let mut next = strategy::for_create(object, ctx);
                        let mut ops = self.claims(None, &mut next).await?;
                        ops.insert(0, cas::put(&key, &next, 0));
                        Ok(write_unless(dry_run, ops, (next, ApplyOutcome::Created)))
                    }
                    Some(kv) => {
                        let current = decode(&kv)?;
                        // Addresses first: an apply that leaves them out keeps the stored ones,
                        // which is no change of the desired state.
                        let mut object = object;
                        let mut ops = self.claims(Some(&current), &mut object).await?;
                        let next = strategy::for_update(&current, object)?;
                        strategy::check_size(&next)?;
                        if next == current {
                            return Ok(Step::Done((current, ApplyOutcome::Unchanged)));
                        }
                        ops.insert(0, cas::put(&key, &next, kv.mod_revision));
                        Ok(write_unless(dry_run, ops, (next, ApplyOutcome::Configured)))
                    }
                }
            }
        })
        .await?;
        if let Some(revision) = revision {
            applied.meta_mut().resource_version = revision.to_string();
        }
        Ok((applied, outcome))
    }

    /// Creates `object`; it must not exist yet.
    pub async fn create(&self, object: Object) -> Result<Object, ServeError> {
        let ctx = Context::now();
        let object = strategy::for_create(strategy::prepare(object, &ctx)?, &ctx);
        self.store.check_leader()?;
        self.check_namespace(&object)?;
        let key = key_of(&object);
        let what = object.describe();
        let (mut created, revision) = cas::update(&self.store, &key, None, &what, |kv| {
            let (mut object, key, what) = (object.clone(), key.clone(), what.clone());
            async move {
                if kv.is_some() {
                    return Err(ApiError::new(skiff_api::Reason::AlreadyExists, format!("{what} already exists"))
                        .about(object.kind(), &object.meta().name)
                        .into());
                }
                let mut ops = self.claims(None, &mut object).await?;
                ops.insert(0, cas::put(&key, &object, 0));
                Ok(Step::Write(ops, object))
            }
        })
        .await?;
        if let Some(revision) = revision {
            created.meta_mut().resource_version = revision.to_string();
        }
        Ok(created)
    }

    /// Reads one object.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str, c: Consistency) -> Result<Object, ServeError> {
        let (kv, _) = self.store.get(&object_key(kind, namespace, name), consistency(c)).await?;
        match kv {
            Some(kv) => Ok(decode(&kv)?),
            None => Err(ApiError::not_found(kind, namespace, name).into()),
        }
    }

    /// Fails with NotFound unless the object is in this member's replica; nothing is decoded (the
    /// leader checks every node's renewal, a thousand a second, against its Node).
    pub fn must_exist_here(&self, kind: Kind, namespace: &str, name: &str) -> Result<(), ServeError> {
        match self.store.get_local(&object_key(kind, namespace, name))? {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found(kind, namespace, name).into()),
        }
    }

    /// Lists the objects of `kind` that `filter` selects, with the resourceVersion of the list.
    pub async fn list(&self, kind: Kind, filter: &Filter, c: Consistency) -> Result<ObjectList, ServeError> {
        let (kvs, revision) = self.store.list(&kind_prefix(kind, filter.namespace.as_deref()), consistency(c)).await?;
        let mut items = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            if let Some(object) = decode_for(kv, filter)? {
                items.push(object);
            }
        }
        Ok(ObjectList { items, resource_version: revision })
    }

    /// Watches `kind` on this member's replica.
    pub fn watch(&self, kind: Kind, options: WatchOptions) -> Result<WatchStream, ServeError> {
        Ok(watch::start(&self.store, kind, options)?)
    }

    /// Deletes an object, gracefully for a pod bound to a node, at once otherwise. Its dependants
    /// (by owner reference, and everything in a deleted namespace) go in the same atomic write
    /// while they fit in one ([`MAX_CASCADE_BYTES`], [`MAX_CASCADE_OPS`]); more go first, in writes
    /// of that size, and the object last: an interrupted deletion leaves the object (and the rest
    /// of its dependants), and deleting it again finishes the job.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ServeError> {
        if kind == Kind::Namespace && name == DEFAULT_NAMESPACE {
            return Err(ApiError::bad_request("namespace \"default\" cannot be deleted").into());
        }
        let key = object_key(kind, namespace, name);
        let what = format!("{kind} {name:?}");
        // Dependants deleted by earlier, bounded writes of this deletion.
        let earlier = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut deleted, revision) = cas::update(&self.store, &key, options.resource_version, &what, |kv| {
            let this = self.clone();
            let options = options.clone();
            let earlier = earlier.clone();
            let (key, namespace, name) = (key.clone(), namespace.to_string(), name.to_string());
            async move {
                let Some(kv) = kv else {
                    return Err(ApiError::not_found(kind, &namespace, &name).into());
                };
                let object = decode(&kv)?;
                if let Some(uid) = &options.uid {
                    if uid != &object.meta().uid {
                        return Err(ApiError::conflict(format!(
                            "{} has uid {}, not {uid}: it was replaced; nothing was deleted",
                            object.describe(),
                            object.meta().uid
                        ))
                        .into());
                    }
                }
                let now = Time(jiff::Timestamp::now());
                let mut ops = Vec::new();
                let (after, removed) = deletion_op(&key, &object, kv.mod_revision, &options, now, &mut ops);
                let candidates = this.dependant_candidates(&object).await?;
                let dependant_options = DeleteOptions {
                    grace_period_seconds: options.grace_period_seconds,
                    force: options.force,
                    ..Default::default()
                };
                let mut cascade = Cascade::default();
                for (dependant, revision) in gc::dependants(&object, &candidates) {
                    let mut dependant_ops = Vec::new();
                    deletion_op(&key_of(dependant), dependant, *revision, &dependant_options, now, &mut dependant_ops);
                    if !dependant_ops.is_empty() {
                        cascade.add(dependant.describe(), keys::encode(dependant).len(), dependant_ops);
                    }
                }
                let mut names = earlier.lock().map(|e| e.clone()).unwrap_or_default();
                if !options.dry_run && !cascade.fits_in_one() {
                    names.extend(cascade.names);
                    if let Ok(mut e) = earlier.lock() {
                        *e = names;
                    }
                    return Ok(Step::Before(cascade.writes));
                }
                names.extend(cascade.names);
                // A bounded write that lost a race is decided again: its names may come twice.
                let mut seen = std::collections::HashSet::new();
                names.retain(|n| seen.insert(n.clone()));
                ops.extend(cascade.writes.into_iter().flatten());
                let answer = Deleted { object: after, removed, dependants: names };
                Ok(if options.dry_run || ops.is_empty() { Step::Done(answer) } else { Step::Write(ops, answer) })
            }
        })
        .await?;
        if let (Some(revision), false) = (revision, deleted.removed) {
            deleted.object.meta_mut().resource_version = revision.to_string();
        }
        Ok(deleted)
    }

    /// The objects that may depend on `owner`, with their revisions: everything namespaced in its
    /// namespace (owners and dependants share one), or in the namespace it is.
    async fn dependant_candidates(&self, owner: &Object) -> Result<Vec<(Object, u64)>, ServeError> {
        let namespace = match owner.kind() {
            Kind::Namespace => owner.meta().name.clone(),
            kind if kind.namespaced() => owner.meta().namespace.clone(),
            _ => return Ok(Vec::new()),
        };
        let mut candidates = Vec::new();
        for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
            // Events are owned by nothing; a namespace takes them along.
            if kind == Kind::Event && owner.kind() != Kind::Namespace {
                continue;
            }
            let (kvs, _) = self.store.list(&kind_prefix(kind, Some(&namespace)), ReadConsistency::Stale).await?;
            for kv in kvs {
                candidates.push((decode(&kv)?, kv.mod_revision));
            }
        }
        Ok(candidates)
    }

    /// Replaces an object's status, leaving everything else as stored. With
    /// `metadata.resourceVersion` set the write is conditional.
    pub async fn update_status(&self, object: Object) -> Result<Object, ServeError> {
        let kind = object.kind();
        if !Object::has_status(kind) {
            return Err(ApiError::bad_request(format!("{kind} has no status")).into());
        }
        let pinned = keys::resource_version(&object)?;
        let namespace = namespace_of(kind, &object.meta().namespace);
        let name = object.meta().name.clone();
        let uid = object.meta().uid.clone();
        self.modify(kind, &namespace, &name, pinned, |current| {
            // A status written for an object that was deleted and created again under the same
            // name belongs to the old one: refused, never copied onto the new one.
            if !uid.is_empty() && uid != current.meta().uid {
                return Err(ApiError::conflict(format!(
                    "{} has uid {}, not {uid}: it was replaced; the status is not written",
                    current.describe(),
                    current.meta().uid
                )));
            }
            current.copy_status_from(&object);
            Ok(())
        })
        .await
    }

    /// Binds a pod to a node: sets `spec.nodeName`, only if it is unset.
    pub async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<Object, ServeError> {
        binding::check_node_name(node)?;
        let now = Time(jiff::Timestamp::now());
        self.modify(Kind::Pod, namespace, name, None, |current| match current {
            Object::Pod(pod) => binding::bind(pod, node, now),
            _ => Ok(()),
        })
        .await
    }

    /// Reads, changes and writes one object with compare-and-swap.
    async fn modify(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        pinned: Option<u64>,
        change: impl Fn(&mut Object) -> Result<(), ApiError>,
    ) -> Result<Object, ServeError> {
        let key = object_key(kind, namespace, name);
        let what = format!("{kind} {name:?}");
        let (mut changed, revision) = cas::update(&self.store, &key, pinned, &what, |kv| {
            let decided = (|| {
                let Some(kv) = kv else {
                    return Err(ApiError::not_found(kind, namespace, name).into());
                };
                let current = decode(&kv)?;
                let mut next = current.clone();
                change(&mut next)?;
                if next == current {
                    return Ok(Step::Done(current));
                }
                strategy::check_size(&next)?;
                Ok(Step::Write(vec![cas::put(&key, &next, kv.mod_revision)], next))
            })();
            async move { decided }
        })
        .await?;
        if let Some(revision) = revision {
            changed.meta_mut().resource_version = revision.to_string();
        }
        Ok(changed)
    }
}

/// `Write(ops, answer)`, or only the answer for a dry run.
fn write_unless<T>(dry_run: bool, ops: Vec<Op>, answer: T) -> Step<T> {
    if dry_run {
        Step::Done(answer)
    } else {
        Step::Write(ops, answer)
    }
}

/// Adds the op that deletes `object` (at `revision`) or marks it terminating; returns the object as
/// it will be and whether it is removed now.
/// The most bytes of objects one deletion write removes or rewrites: a deletion event carries the
/// object's last state, so a write that removes many large objects is as large as they are, in the
/// Raft entry's effect, the watch history and every watcher.
pub const MAX_CASCADE_BYTES: usize = 512 << 10;
/// The most dependants one deletion write takes along.
pub const MAX_CASCADE_OPS: usize = 512;

/// The dependants a deletion takes along, in writes of at most [`MAX_CASCADE_BYTES`] and
/// [`MAX_CASCADE_OPS`] each (one dependant larger than that alone).
#[derive(Default)]
struct Cascade {
    names: Vec<String>,
    writes: Vec<Vec<Op>>,
    /// Bytes and dependants in the last write.
    last: (usize, usize),
}

impl Cascade {
    fn add(&mut self, name: String, bytes: usize, ops: Vec<Op>) {
        let (last_bytes, last_count) = self.last;
        match self.writes.last_mut() {
            Some(write) if last_bytes + bytes <= MAX_CASCADE_BYTES && last_count < MAX_CASCADE_OPS => {
                write.extend(ops);
                self.last = (last_bytes + bytes, last_count + 1);
            }
            _ => {
                self.writes.push(ops);
                self.last = (bytes, 1);
            }
        }
        self.names.push(name);
    }

    fn fits_in_one(&self) -> bool {
        self.writes.len() <= 1
    }
}

fn deletion_op(
    key: &str,
    object: &Object,
    revision: u64,
    options: &DeleteOptions,
    now: Time,
    ops: &mut Vec<Op>,
) -> (Object, bool) {
    match strategy::for_delete(object, options, now) {
        Deletion::Remove => {
            ops.push(Op::Delete { key: key.to_string(), expect: Some(revision) });
            // A Service's cluster IP and node ports are free again in the same write.
            if let Object::Service(service) = object {
                ops.extend(service_claims::held(service).into_iter().map(|key| Op::Delete { key, expect: None }));
            }
            (object.clone(), true)
        }
        Deletion::Graceful(marked) => {
            ops.push(cas::put(key, &marked, revision));
            (marked, false)
        }
        Deletion::AlreadyGraceful(marked) => (marked, false),
    }
}
