//! The low-level key-value API (`skiff kv`), on its own key prefix of the store: every user key is
//! stored under [`KV_PREFIX`], so `kv` can never read or write the objects of the resource API,
//! which live under other prefixes and pass their own validation.

use serde::{Deserialize, Serialize};
use skiff_api::api::Consistency;
use skiff_api::limits;
use skiff_api::{ApiError, Reason};
use skiff_store::{KeyValue, KvStore, Op, ReadConsistency, StoreError};

use crate::error::{store_error, ServeError};

/// The store prefix of every `kv` key.
pub const KV_PREFIX: &str = "/kv/";

/// One change of a transaction, as the user names it (no prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Compare-and-swap: the key's current revision (0: it must not exist).
        expected_revision: Option<u64>,
    },
    Delete {
        key: String,
        expected_revision: Option<u64>,
    },
}

fn store_key(key: &str, field: &str) -> Result<String, ApiError> {
    limits::check_key(key, field)?;
    Ok(format!("{KV_PREFIX}{key}"))
}

/// A stored pair as the user sees it: the prefix taken off the key.
pub fn user_kv(mut kv: KeyValue) -> KeyValue {
    if let Some(key) = kv.key.strip_prefix(KV_PREFIX) {
        kv.key = key.to_string();
    }
    kv
}

/// The store op for `op`, validated; `field` prefixes error paths (`ops[2].put.`).
fn store_op(op: &KvOp, field: &str) -> Result<Op, ApiError> {
    Ok(match op {
        KvOp::Put { key, value, expected_revision } => {
            let stored = store_key(key, &format!("{field}key"))?;
            limits::check_value(key, value.len())?;
            Op::Put { key: stored, value: value.clone(), expect: *expected_revision }
        }
        KvOp::Delete { key, expected_revision } => {
            Op::Delete { key: store_key(key, &format!("{field}key"))?, expect: *expected_revision }
        }
    })
}

/// Store failures with the `kv` prefix taken off the keys they name.
fn kv_error(e: StoreError) -> ServeError {
    match e {
        StoreError::Conflict(c) => ServeError::Api(ApiError::conflict(format!(
            "conflict on key {:?}: expected revision {}, found {}{}",
            c.key.strip_prefix(KV_PREFIX).unwrap_or(&c.key),
            c.expected,
            c.actual,
            if c.actual == 0 { " (it does not exist)" } else { "" }
        ))),
        other => other.into(),
    }
}

fn read(c: Consistency) -> ReadConsistency {
    match c {
        Consistency::Linearizable => ReadConsistency::Linearizable,
        Consistency::Stale => ReadConsistency::Stale,
    }
}

/// Writes one op; returns the write's revision and the key's state before it.
async fn write_one(store: &KvStore, op: &KvOp) -> Result<(u64, Option<KeyValue>), ServeError> {
    let mut r = store.write(vec![store_op(op, "")?]).await.map_err(kv_error)?;
    Ok((r.revision, r.prev.pop().flatten().map(user_kv)))
}

pub async fn put(
    store: &KvStore,
    key: String,
    value: Vec<u8>,
    expected_revision: Option<u64>,
) -> Result<u64, ServeError> {
    Ok(write_one(store, &KvOp::Put { key, value, expected_revision }).await?.0)
}

/// Deletes a key; returns the revision and its last state. A missing key is `NotFound`.
pub async fn delete(
    store: &KvStore,
    key: String,
    expected_revision: Option<u64>,
) -> Result<(u64, KeyValue), ServeError> {
    let op = KvOp::Delete { key: key.clone(), expected_revision };
    match write_one(store, &op).await? {
        (revision, Some(prev)) => Ok((revision, prev)),
        (_, None) => Err(ApiError::new(Reason::NotFound, format!("key {key:?} does not exist")).into()),
    }
}

/// Commits every op or none, in one revision.
pub async fn txn(store: &KvStore, ops: &[KvOp]) -> Result<u64, ServeError> {
    if ops.is_empty() {
        return Err(ApiError::bad_request("ops: a transaction needs at least one op").into());
    }
    let bytes = ops
        .iter()
        .map(|o| match o {
            KvOp::Put { key, value, .. } => key.len() + value.len(),
            KvOp::Delete { key, .. } => key.len(),
        })
        .sum();
    limits::check_txn(ops.len(), bytes)?;
    let mut store_ops = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let field = match op {
            KvOp::Put { .. } => format!("ops[{i}].put."),
            KvOp::Delete { .. } => format!("ops[{i}].delete."),
        };
        store_ops.push(store_op(op, &field)?);
    }
    Ok(store.write(store_ops).await.map_err(kv_error)?.revision)
}

/// One key with the revision it was read at.
pub async fn get(store: &KvStore, key: &str, consistency: Consistency) -> Result<(KeyValue, u64), ServeError> {
    let (kv, revision) = store.get(&store_key(key, "key")?, read(consistency)).await?;
    match kv {
        Some(kv) => Ok((user_kv(kv), revision)),
        None => Err(ApiError::new(Reason::NotFound, format!("key {key:?} does not exist")).into()),
    }
}

/// The keys under `prefix`, as one consistent cut, with the revision it was read at.
pub async fn list(store: &KvStore, prefix: &str, consistency: Consistency) -> Result<(Vec<KeyValue>, u64), ServeError> {
    limits::check_prefix(prefix)?;
    let (kvs, revision) = store.list(&format!("{KV_PREFIX}{prefix}"), read(consistency)).await?;
    Ok((kvs.into_iter().map(user_kv).collect(), revision))
}

/// Watches the keys under `prefix` on this member's replica, strictly after `start` (0: from now).
pub fn watch(
    store: &KvStore,
    prefix: &str,
    start: u64,
    progress_every: std::time::Duration,
) -> Result<skiff_store::watch::WatchReceiver, ApiError> {
    limits::check_prefix(prefix)?;
    let start = if start == 0 { store.applied_revision() } else { start };
    store.watch(&format!("{KV_PREFIX}{prefix}"), start, progress_every).map_err(store_error)
}
