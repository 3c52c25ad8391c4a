//! The resource API as the CLI calls it: each call goes through the member list (moving on when a
//! member is down) and objects come back decoded.

use std::future::Future;

use anyhow::Context;
use skiff_api::{Kind, Object};
use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{
    ApplyRequest, ApplyResponse, DeleteObjectRequest, DeleteObjectResponse, GetObjectRequest, ListObjectsRequest,
    ObjectEvent, WatchObjectsRequest,
};
use skiff_proto::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use tonic::transport::Channel;
use tonic::Streaming;

/// Calls one `Resources` RPC through the member list.
pub async fn call<Req, Resp, F, Fut>(client: &Client, kind: CallKind, req: Req, rpc: F) -> Result<Resp, ClientError>
where
    Req: Clone,
    F: Fn(ResourcesClient<Channel>, Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    client
        .call(kind, |ch| {
            let api = ResourcesClient::new(ch)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .max_encoding_message_size(MAX_REQUEST_BYTES);
            rpc(api, req.clone())
        })
        .await
        .map(|r| r.into_inner())
}

pub fn decode(bytes: &[u8]) -> anyhow::Result<Object> {
    Object::from_json(bytes).map_err(anyhow::Error::msg).context("the server sent an object this client cannot read")
}

pub async fn apply(client: &Client, object: &Object, dry_run: bool) -> Result<ApplyResponse, ClientError> {
    let kind = if dry_run { CallKind::Read } else { CallKind::Write };
    let req = ApplyRequest { object: object.to_json(), dry_run };
    call(client, kind, req, |mut api, req| async move { api.apply(req).await }).await
}

pub async fn get(client: &Client, kind: Kind, namespace: &str, name: &str, stale: bool) -> anyhow::Result<Object> {
    let req = GetObjectRequest { kind: kind.name().into(), namespace: namespace.into(), name: name.into(), stale };
    let resp = call(client, CallKind::Read, req, |mut api, req| async move { api.get(req).await }).await?;
    decode(&resp.object)
}

/// Objects and the resourceVersion of the list.
pub async fn list(client: &Client, req: ListObjectsRequest) -> anyhow::Result<(Vec<Object>, u64)> {
    let resp = call(client, CallKind::Read, req, |mut api, req| async move { api.list(req).await }).await?;
    let objects = resp.objects.iter().map(|o| decode(o)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok((objects, resp.resource_version))
}

pub async fn watch(client: &Client, req: WatchObjectsRequest) -> Result<Streaming<ObjectEvent>, ClientError> {
    call(client, CallKind::Read, req, |mut api, req| async move { api.watch(req).await }).await
}

pub async fn delete(client: &Client, req: DeleteObjectRequest) -> Result<DeleteObjectResponse, ClientError> {
    let kind = if req.dry_run { CallKind::Read } else { CallKind::Write };
    call(client, kind, req, |mut api, req| async move { api.delete(req).await }).await
}

/// `pod/web`, `deployment.apps/web`: how kubectl names an object in messages and `-o name`.
pub fn resource_name(object: &Object) -> String {
    format!("{}/{}", qualified_singular(object.kind()), object.meta().name)
}

pub fn qualified_singular(kind: Kind) -> String {
    let info = kind.info();
    match info.api_version.split_once('/') {
        Some((group, _)) => format!("{}.{group}", info.singular),
        None => info.singular.to_string(),
    }
}
