//! The `ResourceApi` contract: what the agent, the controllers, the gRPC services and (later) the
//! Kubernetes REST front door ask of the cluster, as plain types. A member implements it in-process
//! (skiff-apiserver: served here when this member leads, forwarded to the leader otherwise); tests
//! implement it in memory. Nothing here does IO.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::fields::FieldSelector;
use crate::selector::Selector;
use crate::{Kind, Object};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// Confirmed by the leader with a quorum: sees every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// This member's replica as it is: fast, and possibly behind.
    Stale,
}

/// Which objects a list or a watch returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// `None`: every namespace (and cluster-scoped kinds).
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: FieldSelector,
    /// Objects carry their metadata only, as Kubernetes' `PartialObjectMetadata`: for readers
    /// that need nothing else (the garbage collector), far cheaper to decode and to keep.
    #[serde(default)]
    pub metadata_only: bool,
}

impl Filter {
    /// Everything in `namespace`.
    pub fn namespace(namespace: &str) -> Self {
        Filter { namespace: Some(namespace.to_string()), ..Default::default() }
    }

    pub fn matches(&self, object: &Object) -> bool {
        self.labels.matches(&object.meta().labels)
            && (self.fields.is_empty() || self.fields.matches(&object.to_value()))
    }

    /// `object` as a reader with this filter sees it (its metadata only, if so asked).
    pub fn shape(&self, object: Object) -> Object {
        if self.metadata_only {
            Object::from_metadata(object.kind(), object.meta().clone())
        } else {
            object
        }
    }
}

/// Objects with the resourceVersion they were read at: watch from it to see every later change.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectList {
    pub items: Vec<Object>,
    pub resource_version: u64,
}

/// Where a watch starts and how often it proves it is alive.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchOptions {
    pub filter: Filter,
    /// Changes strictly after this resourceVersion; 0: from now.
    pub resource_version: u64,
    /// A bookmark arrives at least this often when nothing changes.
    pub bookmark_every: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { filter: Filter::default(), resource_version: 0, bookmark_every: Duration::from_secs(5) }
    }
}

/// A change to an object, as a watch delivers it.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Added(Object),
    Modified(Object),
    /// The object is gone, or no longer matches the watch's selector: its last state, with the
    /// resourceVersion of the change.
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

/// A watch: events in order until the stream ends or yields an error (then list again, or watch
/// again from the last resourceVersion seen).
pub type WatchStream = BoxStream<'static, Result<WatchEvent, ApiError>>;

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
}

/// How to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// The object as it was last stored (or as it is now, when its deletion is graceful).
    pub object: Object,
    /// False when the object is being deleted gracefully: it stays until its node's agent has
    /// stopped its containers.
    pub removed: bool,
    /// Dependants deleted with it (`Pod "web-1"`), in the same atomic write.
    pub dependants: Vec<String>,
}

/// Why a call failed: Kubernetes' `Status` reasons, each with one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// The request itself is wrong (a bad selector, a missing name).
    BadRequest,
    /// The object fails validation; `causes` name the fields.
    Invalid,
    NotFound,
    AlreadyExists,
    /// The object changed meanwhile, or its state forbids the change (being deleted, already bound).
    Conflict,
    /// The request is over a size limit (a key, a value, a transaction).
    TooLarge,
    /// A watch asked for history that is no longer kept: list again.
    Expired,
    /// A watcher fell too far behind and was dropped: watch again.
    TooSlow,
    /// Nothing was done (no leader, the member is stopping, the leader is unreachable): retry.
    Unavailable,
    /// A write may or may not have been applied (the leader went away mid-call): read before retrying.
    OutcomeUnknown,
    /// Something broke inside the member (its storage).
    Internal,
}

/// A field that made an object invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// `spec.containers[0].image`.
    pub field: String,
    pub message: String,
}

/// A failed call: why, the message a user acts on, and what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    /// Complete: names the object and, for `Invalid`, every field.
    pub message: String,
    /// The kind and name of the object the call was about, when there is one.
    pub kind: Option<String>,
    pub name: Option<String>,
    pub causes: Vec<Cause>,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError { reason, message: message.into(), kind: None, name: None, causes: Vec::new() }
    }

    /// The same error, about `kind` `name`.
    pub fn about(mut self, kind: Kind, name: &str) -> Self {
        self.kind = Some(kind.name().to_string());
        self.name = Some(name.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Reason::Conflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Reason::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::Internal, message)
    }

    /// `Kind "name" not found`, as Kubernetes words it.
    pub fn not_found(kind: Kind, namespace: &str, name: &str) -> Self {
        let place = if kind.namespaced() { format!(" in namespace {namespace:?}") } else { String::new() };
        Self::new(Reason::NotFound, format!("{kind} {name:?} not found{place}")).about(kind, name)
    }

    /// The object failed validation: one cause per field.
    pub fn invalid(object: &Object, errors: &[crate::validate::FieldError]) -> Self {
        let message = format!(
            "{} is invalid: {}",
            object.describe(),
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
        );
        let mut e = Self::new(Reason::Invalid, message).about(object.kind(), &object.meta().name);
        e.causes = errors.iter().map(|f| Cause { field: f.path.to_string(), message: f.message.clone() }).collect();
        e
    }

    pub fn is(&self, reason: Reason) -> bool {
        self.reason == reason
    }
}

/// The cluster as the agent, the controllers and the API's front doors see it. Reads and watches
/// may be served by the member itself; writes reach the leader. Every error names what to do.
#[async_trait::async_trait]
pub trait ResourceApi: Send + Sync {
    async fn get(&self, kind: Kind, namespace: &str, name: &str, consistency: Consistency) -> Result<Object, ApiError>;

    async fn list(&self, kind: Kind, filter: &Filter, consistency: Consistency) -> Result<ObjectList, ApiError>;

    /// Watches `kind` on this member's replica.
    async fn watch(&self, kind: Kind, options: WatchOptions) -> Result<WatchStream, ApiError>;

    /// Creates `object` or updates it to match (kubectl apply); conditional when it carries a
    /// resourceVersion.
    async fn apply(&self, object: Object, dry_run: bool) -> Result<(Object, ApplyOutcome), ApiError>;

    /// Creates `object`; it must not exist.
    async fn create(&self, object: Object) -> Result<Object, ApiError>;

    /// Replaces the object's status and nothing else; conditional when it carries a
    /// resourceVersion.
    async fn update_status(&self, object: Object) -> Result<Object, ApiError>;

    /// Binds a pod to a node, once.
    async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<Object, ApiError>;

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError>;

    /// Tells the leader that `node`'s agent is alive. Renewals are held in the leader's memory,
    /// not written (see [`Renewals`]): the node lifecycle controller reads them.
    async fn renew_node(&self, node: &str) -> Result<(), ApiError> {
        Err(ApiError::unavailable(format!("node {node}: this API does not carry node renewals")))
    }

    /// How long ago each node last renewed with this member. Only a leader hears renewals, and a
    /// member that led before may remember old ones: the reader bounds them by its own term.
    fn renewals(&self) -> BTreeMap<String, Duration> {
        BTreeMap::new()
    }
}

/// The nodes' renewals a leader has heard: each node's last, in memory. A renewal costs the leader
/// a map update and no write to the log, whatever the number of nodes (docs/architecture.md,
/// "Node liveness"). A new leader starts empty and gives every node a full grace period.
#[derive(Debug, Clone, Default)]
pub struct Renewals {
    last: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Renewals {
    pub fn renew(&self, node: &str) {
        if let Ok(mut last) = self.last.lock() {
            match last.get_mut(node) {
                Some(at) => *at = Instant::now(),
                None => {
                    last.insert(node.to_string(), Instant::now());
                }
            }
        }
    }

    /// Forgets a node (it was deleted).
    pub fn forget(&self, node: &str) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(node);
        }
    }

    /// How long ago each node renewed.
    pub fn ages(&self) -> BTreeMap<String, Duration> {
        let now = Instant::now();
        self.last
            .lock()
            .map(|last| last.iter().map(|(node, at)| (node.clone(), now.saturating_duration_since(*at))).collect())
            .unwrap_or_default()
    }
}
