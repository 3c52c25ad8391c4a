//! The `Kv` gRPC service: a thin adapter from `proto/skiff.proto` to the member's [`ApiServer`]
//! (skiff-apiserver's `kv` calls, on their own key prefix of the store).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use skiff_api::api::Consistency;
use skiff_apiserver::call::{KvGet, KvList, KvWrite};
use skiff_apiserver::error::watch_error;
use skiff_apiserver::kv::{user_kv, KvOp};
use skiff_apiserver::ApiServer;
use skiff_proto::api::kv_server::Kv;
use skiff_proto::api::{
    txn_op, watch_event, DeleteRequest, DeleteResponse, GetRequest, GetResponse, KeyValue, ListRequest, ListResponse,
    PutRequest, PutResponse, TxnRequest, TxnResponse, WatchEvent, WatchRequest,
};
use skiff_store::watch::WatchItem;
use skiff_store::ChangeKind;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::rpc_error::api_status;

/// Serves `Kv` on one member.
pub struct KvService {
    api: Arc<ApiServer>,
    /// Progress interval for watches that do not ask for one.
    default_progress: Duration,
}

impl KvService {
    pub fn new(api: Arc<ApiServer>) -> Self {
        Self { api, default_progress: Duration::from_secs(5) }
    }
}

fn wire_kv(kv: skiff_store::KeyValue) -> KeyValue {
    KeyValue { key: kv.key, value: kv.value, create_revision: kv.create_revision, mod_revision: kv.mod_revision }
}

fn put_op(p: PutRequest) -> KvOp {
    KvOp::Put { key: p.key, value: p.value, expected_revision: p.expected_revision }
}

fn delete_op(d: DeleteRequest) -> KvOp {
    KvOp::Delete { key: d.key, expected_revision: d.expected_revision }
}

fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let written = self.api.call(KvWrite::One(put_op(req.into_inner()))).await.map_err(api_status)?;
        Ok(Response::new(PutResponse { revision: written.revision }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let written = self.api.call(KvWrite::One(delete_op(req.into_inner()))).await.map_err(api_status)?;
        Ok(Response::new(DeleteResponse { revision: written.revision, prev: written.prev.map(wire_kv) }))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let mut ops = Vec::new();
        for (i, op) in req.into_inner().ops.into_iter().enumerate() {
            ops.push(match op.op {
                Some(txn_op::Op::Put(p)) => put_op(p),
                Some(txn_op::Op::Delete(d)) => delete_op(d),
                None => return Err(Status::invalid_argument(format!("ops[{i}]: empty op: set put or delete"))),
            });
        }
        let written = self.api.call(KvWrite::Txn(ops)).await.map_err(api_status)?;
        Ok(Response::new(TxnResponse { revision: written.revision }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let msg = req.into_inner();
        let call = KvGet { key: msg.key, consistency: consistency(msg.stale) };
        let (kv, revision) = self.api.call(call).await.map_err(api_status)?;
        Ok(Response::new(GetResponse { kv: Some(wire_kv(kv)), revision }))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let msg = req.into_inner();
        let call = KvList { prefix: msg.prefix, consistency: consistency(msg.stale) };
        let (kvs, revision) = self.api.call(call).await.map_err(api_status)?;
        Ok(Response::new(ListResponse { kvs: kvs.into_iter().map(wire_kv).collect(), revision }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let msg = req.into_inner();
        let every = match msg.progress_interval_ms {
            0 => self.default_progress,
            ms => Duration::from_millis(ms.max(10)),
        };
        let (rx, open) = self.api.kv_watch(&msg.prefix, msg.start_revision, every).map_err(api_status)?;
        let stream = rx.map(move |item| match item {
            Ok(WatchItem::Change(e)) => Ok(WatchEvent {
                kind: match e.kind {
                    ChangeKind::Put => watch_event::Kind::Put as i32,
                    ChangeKind::Delete => watch_event::Kind::Delete as i32,
                },
                revision: e.revision,
                kv: Some(wire_kv(user_kv(e.kv))),
            }),
            Ok(WatchItem::Progress(revision)) => {
                Ok(WatchEvent { kind: watch_event::Kind::Progress as i32, revision, kv: None })
            }
            Err(e) => {
                let _counted = &open;
                Err(api_status(watch_error(e)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
