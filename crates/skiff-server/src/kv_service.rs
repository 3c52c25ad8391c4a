//! The `Kv` gRPC service: the low-level key-value API on its own key prefix of the object store.
//!
//! Every user key is stored under [`KV_PREFIX`], so `kv` can never read or write the objects of the
//! resource API, which live under other prefixes and pass their own validation.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::kv_server::Kv;
use skiff_proto::api::{
    txn_op, watch_event, DeleteRequest, DeleteResponse, GetRequest, GetResponse, KeyValue, ListRequest, ListResponse,
    PutRequest, PutResponse, TxnRequest, TxnResponse, WatchEvent, WatchRequest,
};
use skiff_store::watch::WatchItem;
use skiff_store::{EventKind, ObjectStore, Op, ReadConsistency, StoreError};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::forward::{forwarded, is_forwarded, Forwarder};
use crate::limits;
use crate::rpc_error::{forwarded_status, store_status, watch_status};

/// The store prefix of every `kv` key.
pub const KV_PREFIX: &str = "/kv/";

/// Serves `Kv` on one member.
pub struct KvService {
    store: ObjectStore,
    forwarder: Arc<Forwarder>,
    /// Progress interval for watches that do not ask for one.
    default_progress: Duration,
}

impl KvService {
    pub fn new(store: ObjectStore, forwarder: Arc<Forwarder>) -> Self {
        Self { store, forwarder, default_progress: Duration::from_secs(5) }
    }
}

/// A client to another member, for forwarding, that accepts responses as large as we send.
fn kv_client(ch: tonic::transport::Channel) -> KvClient<tonic::transport::Channel> {
    KvClient::new(ch)
        .max_decoding_message_size(limits::MAX_RESPONSE_BYTES)
        .max_encoding_message_size(limits::MAX_REQUEST_BYTES)
}

fn store_key(key: &str, field: &str) -> Result<String, Status> {
    limits::check_key(key, field)?;
    Ok(format!("{KV_PREFIX}{key}"))
}

fn user_kv(kv: skiff_store::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key.strip_prefix(KV_PREFIX).unwrap_or(&kv.key).to_string(),
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

/// Turns a put or delete request into a store op, validating it; `field` prefixes error paths.
fn put_op(p: &PutRequest, field: &str) -> Result<Op, Status> {
    let key = store_key(&p.key, &format!("{field}key"))?;
    limits::check_value(&p.key, p.value.len())?;
    Ok(Op::Put { key, value: p.value.clone(), expect: p.expected_revision })
}

fn delete_op(d: &DeleteRequest, field: &str) -> Result<Op, Status> {
    Ok(Op::Delete { key: store_key(&d.key, &format!("{field}key"))?, expect: d.expected_revision })
}

/// Store errors with the `kv` prefix taken off the keys they name.
fn kv_store_status(e: StoreError) -> Status {
    match e {
        StoreError::Conflict(c) => Status::failed_precondition(format!(
            "conflict on key {:?}: expected revision {}, found {}{}",
            c.key.strip_prefix(KV_PREFIX).unwrap_or(&c.key),
            c.expected,
            c.actual,
            if c.actual == 0 { " (it does not exist)" } else { "" }
        )),
        other => store_status(other),
    }
}

fn consistency(stale: bool) -> ReadConsistency {
    if stale {
        ReadConsistency::Stale
    } else {
        ReadConsistency::Linearizable
    }
}

impl KvService {
    fn forward_target(
        &self,
        e: StoreError,
        again: bool,
    ) -> Result<(skiff_store::Member, tonic::transport::Channel), Status> {
        match e {
            StoreError::NotLeader { .. } => self.forwarder.target(e, again),
            other => Err(kv_store_status(other)),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let op = put_op(&msg, "")?;
        match self.store.write(vec![op]).await {
            Ok(r) => Ok(Response::new(PutResponse { revision: r.revision })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                kv_client(ch).put(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let op = delete_op(&msg, "")?;
        match self.store.write(vec![op]).await {
            Ok(mut r) => match r.prev.pop().flatten() {
                Some(prev) => Ok(Response::new(DeleteResponse { revision: r.revision, prev: Some(user_kv(prev)) })),
                None => Err(Status::not_found(format!("key {:?} does not exist", msg.key))),
            },
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                kv_client(ch).delete(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if msg.ops.is_empty() {
            return Err(Status::invalid_argument("ops: a transaction needs at least one op"));
        }
        limits::check_txn(
            msg.ops.len(),
            msg.ops
                .iter()
                .map(|o| match &o.op {
                    Some(txn_op::Op::Put(p)) => p.key.len() + p.value.len(),
                    Some(txn_op::Op::Delete(d)) => d.key.len(),
                    None => 0,
                })
                .sum(),
        )?;
        let mut ops = Vec::with_capacity(msg.ops.len());
        for (i, op) in msg.ops.iter().enumerate() {
            ops.push(match &op.op {
                Some(txn_op::Op::Put(p)) => put_op(p, &format!("ops[{i}].put."))?,
                Some(txn_op::Op::Delete(d)) => delete_op(d, &format!("ops[{i}].delete."))?,
                None => return Err(Status::invalid_argument(format!("ops[{i}]: empty op: set put or delete"))),
            });
        }
        match self.store.write(ops).await {
            Ok(r) => Ok(Response::new(TxnResponse { revision: r.revision })),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                kv_client(ch).txn(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, true))
            }
        }
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let key = store_key(&msg.key, "key")?;
        match self.store.get(&key, consistency(msg.stale)).await {
            Ok((Some(kv), revision)) => Ok(Response::new(GetResponse { kv: Some(user_kv(kv)), revision })),
            Ok((None, _)) => Err(Status::not_found(format!("key {:?} does not exist", msg.key))),
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                kv_client(ch).get(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, false))
            }
        }
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        limits::check_prefix(&msg.prefix)?;
        let prefix = format!("{KV_PREFIX}{}", msg.prefix);
        match self.store.list(&prefix, consistency(msg.stale)).await {
            Ok((kvs, revision)) => {
                Ok(Response::new(ListResponse { kvs: kvs.into_iter().map(user_kv).collect(), revision }))
            }
            Err(e) => {
                let (leader, ch) = self.forward_target(e, again)?;
                kv_client(ch).list(forwarded(msg)).await.map_err(|s| forwarded_status(s, &leader.addr, false))
            }
        }
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let msg = req.into_inner();
        limits::check_prefix(&msg.prefix)?;
        let prefix = format!("{KV_PREFIX}{}", msg.prefix);
        let start = if msg.start_revision == 0 { self.store.applied_revision() } else { msg.start_revision };
        let every = match msg.progress_interval_ms {
            0 => self.default_progress,
            ms => Duration::from_millis(ms.max(10)),
        };
        let rx = self.store.watch(&prefix, start, every).map_err(store_status)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| match item {
            Ok(WatchItem::Event(e)) => Ok(WatchEvent {
                kind: match e.kind {
                    EventKind::Put => watch_event::Kind::Put as i32,
                    EventKind::Delete => watch_event::Kind::Delete as i32,
                },
                revision: e.revision,
                kv: Some(user_kv(e.kv)),
            }),
            Ok(WatchItem::Progress(revision)) => {
                Ok(WatchEvent { kind: watch_event::Kind::Progress as i32, revision, kv: None })
            }
            Err(e) => Err(watch_status(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
