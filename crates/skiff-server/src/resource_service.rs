//! The `Resources` gRPC service: a thin adapter from `proto/skiff.proto` to the member's
//! [`ApiServer`]. Objects travel as their Kubernetes JSON; a follower hands a write to the leader
//! without decoding it (the API server's one forwarding path), and watches are served from this
//! member's replica.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use skiff_api::api::{Consistency, DeleteOptions, Filter, ResourceApi, WatchEvent, WatchOptions};
use skiff_api::fields::FieldSelector;
use skiff_api::selector::Selector;
use skiff_api::{ApiError, Kind, Object};
use skiff_apiserver::call::{self, RawObject};
use skiff_apiserver::resources::namespace_of;
use skiff_apiserver::ApiServer;
use skiff_proto::api::resources_server::Resources;
use skiff_proto::api::{
    apply_response, object_event, ApplyRequest, ApplyResponse, BindRequest, DeleteObjectRequest, DeleteObjectResponse,
    GetObjectRequest, ListObjectsRequest, ListObjectsResponse, ObjectEvent, ObjectRequest, ObjectResponse,
    RenewNodeRequest, RenewNodeResponse, WatchObjectsRequest,
};
use tonic::{Request, Response, Status};

use crate::rpc_error::api_status;

/// Serves `Resources` on one member.
pub struct ResourceService {
    api: Arc<ApiServer>,
    /// Bookmark interval for watches that do not ask for one.
    default_bookmark: Duration,
}

impl ResourceService {
    pub fn new(api: Arc<ApiServer>) -> Self {
        Self { api, default_bookmark: Duration::from_secs(5) }
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

fn filter_of(kind: Kind, namespace: &str, all: bool, labels: &str, fields: &str) -> Result<Filter, Status> {
    let labels = Selector::parse(labels).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let fields = FieldSelector::parse(fields).map_err(Status::invalid_argument)?;
    let namespace = (kind.namespaced() && !all).then(|| namespace_of(kind, namespace));
    Ok(Filter { namespace, labels, fields, metadata_only: false })
}

fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

fn object_response(object: RawObject) -> Response<ObjectResponse> {
    Response::new(ObjectResponse { object: object.0 })
}

fn resource_version(object: &Object) -> u64 {
    object.meta().resource_version.parse().unwrap_or(0)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ObjectEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Resources for ResourceService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let msg = req.into_inner();
        let (object, outcome) = self
            .api
            .call(call::Apply { object: RawObject(msg.object), dry_run: msg.dry_run })
            .await
            .map_err(api_status)?;
        let outcome = match outcome {
            skiff_api::api::ApplyOutcome::Created => apply_response::Outcome::Created,
            skiff_api::api::ApplyOutcome::Configured => apply_response::Outcome::Configured,
            skiff_api::api::ApplyOutcome::Unchanged => apply_response::Outcome::Unchanged,
        };
        Ok(Response::new(ApplyResponse { object: object.0, outcome: outcome as i32 }))
    }

    async fn create(&self, req: Request<ObjectRequest>) -> Result<Response<ObjectResponse>, Status> {
        let object = RawObject(req.into_inner().object);
        self.api.call(call::Create { object }).await.map(object_response).map_err(api_status)
    }

    async fn get(&self, req: Request<GetObjectRequest>) -> Result<Response<ObjectResponse>, Status> {
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
        let call = call::Get {
            kind,
            namespace: namespace_of(kind, &msg.namespace),
            name: msg.name,
            consistency: consistency(msg.stale),
        };
        self.api.call(call).await.map(object_response).map_err(api_status)
    }

    async fn list(&self, req: Request<ListObjectsRequest>) -> Result<Response<ListObjectsResponse>, Status> {
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
        let filter = filter_of(kind, &msg.namespace, msg.all_namespaces, &msg.label_selector, &msg.field_selector)?;
        let list = self.api.call(call::List { kind, filter, consistency: consistency(msg.stale) }).await;
        let list = list.map_err(api_status)?;
        Ok(Response::new(ListObjectsResponse {
            objects: list.items.into_iter().map(|o| o.0).collect(),
            resource_version: list.resource_version,
        }))
    }

    type WatchStream = EventStream;

    async fn watch(&self, req: Request<WatchObjectsRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
        let filter = filter_of(kind, &msg.namespace, msg.all_namespaces, &msg.label_selector, &msg.field_selector)?;
        let bookmark_every = match msg.bookmark_interval_ms {
            0 => self.default_bookmark,
            ms => Duration::from_millis(ms.max(10)),
        };
        let options = WatchOptions { filter, resource_version: msg.resource_version, bookmark_every };
        let events = self.api.watch(kind, options).await.map_err(api_status)?;
        let stream = events.map(|item: Result<WatchEvent, ApiError>| {
            let event = item.map_err(api_status)?;
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
        let msg = req.into_inner();
        let kind = kind_of(&msg.kind)?;
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
        let call = call::Delete { kind, namespace: namespace_of(kind, &msg.namespace), name: msg.name, options };
        let d = self.api.call(call).await.map_err(api_status)?;
        Ok(Response::new(DeleteObjectResponse { object: d.object.0, removed: d.removed, dependants: d.dependants }))
    }

    async fn update_status(&self, req: Request<ObjectRequest>) -> Result<Response<ObjectResponse>, Status> {
        let object = RawObject(req.into_inner().object);
        self.api.call(call::UpdateStatus { object }).await.map(object_response).map_err(api_status)
    }

    async fn bind(&self, req: Request<BindRequest>) -> Result<Response<ObjectResponse>, Status> {
        let msg = req.into_inner();
        let call =
            call::Bind { namespace: namespace_of(Kind::Pod, &msg.namespace), name: msg.name, node: msg.node_name };
        self.api.call(call).await.map(object_response).map_err(api_status)
    }

    async fn renew_node(&self, req: Request<RenewNodeRequest>) -> Result<Response<RenewNodeResponse>, Status> {
        let node = req.into_inner().node;
        self.api.call(call::RenewNode { node }).await.map(|()| Response::new(RenewNodeResponse {})).map_err(api_status)
    }
}
