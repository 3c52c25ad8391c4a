//! The `Resources` gRPC service: the resource API (`proto/skiff.proto`) over the registry. Objects
//! travel as their Kubernetes JSON. Writes and linearizable reads that reach a follower are
//! forwarded to the leader; watches and stale reads are served from this member's replica.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use skiff_api::fields::FieldSelector;
use skiff_api::selector::Selector;
use skiff_api::{Kind, Object};
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::resources_server::Resources;
use skiff_proto::api::{
    apply_response, object_event, ApplyRequest, ApplyResponse, BindRequest, DeleteObjectRequest, DeleteObjectResponse,
    GetObjectRequest, ListObjectsRequest, ListObjectsResponse, ObjectEvent, ObjectRequest, ObjectResponse,
    WatchObjectsRequest,
};
use skiff_store::registry::{ApplyOutcome, DeleteOptions, Filter, Registry, RegistryError, WatchEvent};
use skiff_store::{ReadConsistency, StoreError};
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::forward::{forwarded, is_forwarded, Forwarder};
use crate::limits;
use crate::rpc_error::{forwarded_status, store_status, watch_status};

/// Serves `Resources` on one member.
pub struct ResourceService {
    registry: Registry,
    forwarder: Arc<Forwarder>,
    /// Bookmark interval for watches that do not ask for one.
    default_bookmark: Duration,
}

impl ResourceService {
    pub fn new(registry: Registry, forwarder: Arc<Forwarder>) -> Self {
        Self { registry, forwarder, default_bookmark: Duration::from_secs(5) }
    }

    /// For a write that reached a member which knows it is not the leader: where to send it at once
    /// (the leader validates it; this member does no work on it).
    fn forward_early(&self, again: bool) -> Option<(skiff_store::Member, Channel)> {
        match self.registry.store().check_leader() {
            Err(e @ StoreError::NotLeader { leader: Some(_) }) if !again => self.forwarder.target(e, again).ok(),
            _ => None,
        }
    }

    /// Where to forward a call that failed with `e`, or the status to answer with.
    fn forward_target(&self, e: RegistryError, again: bool) -> Result<(skiff_store::Member, Channel), Status> {
        match e {
            RegistryError::Store(e @ StoreError::NotLeader { .. }) => self.forwarder.target(e, again),
            other => Err(registry_status(other)),
        }
    }
}

fn client(ch: Channel) -> ResourcesClient<Channel> {
    ResourcesClient::new(ch)
        .max_decoding_message_size(limits::MAX_RESPONSE_BYTES)
        .max_encoding_message_size(limits::MAX_REQUEST_BYTES)
}

/// The status for a registry error, with the message the user acts on.
pub fn registry_status(e: RegistryError) -> Status {
    match e {
        RegistryError::Invalid { .. } | RegistryError::BadRequest(_) => Status::invalid_argument(e.to_string()),
        RegistryError::NotFound { .. } => Status::not_found(e.to_string()),
        RegistryError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        RegistryError::Conflict(_) => Status::failed_precondition(e.to_string()),
        RegistryError::Store(e) => store_status(e),
    }
}

fn kind_of(name: &str) -> Result<Kind, Status> {
    Kind::lookup(name).ok_or_else(|| {
        Status::invalid_argument(format!(
            "the server does not have a resource type {name:?}: use one of {}",
            Kind::list_names()
        ))
    })
}

fn object_of(bytes: &[u8]) -> Result<Object, Status> {
    Object::from_json(bytes).map_err(|e| Status::invalid_argument(format!("object: {e}")))
}

fn namespace_of(kind: Kind, namespace: &str) -> String {
    if !kind.namespaced() {
        String::new()
    } else if namespace.is_empty() {
        skiff_api::defaults::DEFAULT_NAMESPACE.to_string()
    } else {
        namespace.to_string()
    }
}

fn filter_of(kind: Kind, namespace: &str, all: bool, labels: &str, fields: &str) -> Result<Filter, Status> {
    let labels = Selector::parse(labels).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let fields = FieldSelector::parse(fields).map_err(Status::invalid_argument)?;
    let namespace = (kind.namespaced() && !all).then(|| namespace_of(kind, namespace));
    Ok(Filter { namespace, labels, fields })
}

fn consistency(stale: bool) -> ReadConsistency {
    if stale {
        ReadConsistency::Stale
    } else {
        ReadConsistency::Linearizable
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ObjectEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Resources for ResourceService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if let Some((leader, ch)) = self.forward_early(again) {
            let is_write = !msg.dry_run;
            return client(ch).apply(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, is_write));
        }
        let object = object_of(&msg.object)?;
        let is_write = !msg.dry_run;
        match self.registry.apply(object, msg.dry_run).await {
            Ok((object, outcome)) => Ok(Response::new(ApplyResponse {
                object: object.to_json(),
                outcome: match outcome {
                    ApplyOutcome::Created => apply_response::Outcome::Created,
                    ApplyOutcome::Configured => apply_response::Outcome::Configured,
                    ApplyOutcome::Unchanged => apply_response::Outcome::Unchanged,
                } as i32,
            })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).apply(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, is_write))
            }
        }
    }

    async fn create(&self, req: Request<ObjectRequest>) -> Result<Response<ObjectResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if let Some((leader, ch)) = self.forward_early(again) {
            return client(ch).create(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true));
        }
        let object = object_of(&msg.object)?;
        match self.registry.create(object).await {
            Ok(object) => Ok(Response::new(ObjectResponse { object: object.to_json() })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).create(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }

    async fn get(&self, req: Request<GetObjectRequest>) -> Result<Response<ObjectResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
        let namespace = namespace_of(kind, &msg.namespace);
        match self.registry.get(kind, &namespace, &msg.name, consistency(msg.stale)).await {
            Ok(object) => Ok(Response::new(ObjectResponse { object: object.to_json() })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).get(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, false))
            }
        }
    }

    async fn list(&self, req: Request<ListObjectsRequest>) -> Result<Response<ListObjectsResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
        let filter = filter_of(kind, &msg.namespace, msg.all_namespaces, &msg.label_selector, &msg.field_selector)?;
        match self.registry.list(kind, &filter, consistency(msg.stale)).await {
            Ok((objects, resource_version)) => Ok(Response::new(ListObjectsResponse {
                objects: objects.iter().map(Object::to_json).collect(),
                resource_version,
            })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).list(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, false))
            }
        }
    }

    type WatchStream = EventStream;

    async fn watch(&self, req: Request<WatchObjectsRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
        let filter = filter_of(kind, &msg.namespace, msg.all_namespaces, &msg.label_selector, &msg.field_selector)?;
        let every = match msg.bookmark_interval_ms {
            0 => self.default_bookmark,
            ms => Duration::from_millis(ms.max(10)),
        };
        let rx = self.registry.watch(kind, filter, msg.resource_version, every).map_err(registry_status)?;
        let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |item| {
            let event = item.map_err(watch_status)?;
            let (kind, object, rv) = match &event {
                WatchEvent::Bookmark(rv) => (object_event::Type::Bookmark, Vec::new(), *rv),
                WatchEvent::Added(o) => (object_event::Type::Added, o.to_json(), resource_version(o)),
                WatchEvent::Modified(o) => (object_event::Type::Modified, o.to_json(), resource_version(o)),
                WatchEvent::Deleted(o) => (object_event::Type::Deleted, o.to_json(), resource_version(o)),
            };
            Ok(ObjectEvent { r#type: kind as i32, object, resource_version: rv })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn delete(&self, req: Request<DeleteObjectRequest>) -> Result<Response<DeleteObjectResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if let Some((leader, ch)) = self.forward_early(again) {
            return client(ch).delete(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true));
        }
        let kind = kind_of(&msg.kind)?;
        let namespace = namespace_of(kind, &msg.namespace);
        if let Some(g) = msg.grace_period_seconds {
            if g < 0 {
                return Err(Status::invalid_argument(format!("grace_period_seconds: {g} must be >= 0")));
            }
        }
        let options = DeleteOptions {
            grace_period_seconds: if msg.force { Some(0) } else { msg.grace_period_seconds },
            force: msg.force,
            dry_run: msg.dry_run,
            uid: (!msg.uid.is_empty()).then(|| msg.uid.clone()),
            resource_version: (msg.resource_version != 0).then_some(msg.resource_version),
        };
        match self.registry.delete(kind, &namespace, &msg.name, &options).await {
            Ok(d) => Ok(Response::new(DeleteObjectResponse {
                object: d.object.to_json(),
                removed: d.removed,
                dependants: d.dependants,
            })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).delete(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }

    async fn update_status(&self, req: Request<ObjectRequest>) -> Result<Response<ObjectResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if let Some((leader, ch)) = self.forward_early(again) {
            return client(ch).update_status(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true));
        }
        let object = object_of(&msg.object)?;
        match self.registry.update_status(object).await {
            Ok(object) => Ok(Response::new(ObjectResponse { object: object.to_json() })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).update_status(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }

    async fn bind(&self, req: Request<BindRequest>) -> Result<Response<ObjectResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if let Some((leader, ch)) = self.forward_early(again) {
            return client(ch).bind(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true));
        }
        let namespace = namespace_of(Kind::Pod, &msg.namespace);
        match self.registry.bind(&namespace, &msg.name, &msg.node_name).await {
            Ok(object) => Ok(Response::new(ObjectResponse { object: object.to_json() })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                client(ch).bind(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }
}

fn resource_version(object: &Object) -> u64 {
    object.meta().resource_version.parse().unwrap_or(0)
}
