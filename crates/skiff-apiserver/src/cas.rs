//! Read, decide, compare-and-swap: the one way the API server changes stored objects.
//!
//! The leader reads the key from its own replica, a pure decision says what to write, and the write
//! expects the revisions it read, so two writers never silently overwrite each other. A write that
//! lost a race is decided again on fresh data, unless the caller pinned a resourceVersion: then the
//! loss is the caller's conflict. No quorum round is needed before a write (its commit is one); a
//! decision to write nothing is confirmed with one, and so is a pinned resourceVersion that the
//! replica does not show before it is called stale.

use std::future::Future;

use skiff_api::{ApiError, Object};
use skiff_store::{KeyValue, KvStore, Op, ReadConsistency, StoreError};

use crate::error::ServeError;

/// Attempts of a read-decide-write that lost a compare-and-swap race it may retry.
const MAX_ATTEMPTS: usize = 8;

/// What a decision wants done.
pub enum Step<T> {
    /// Nothing to write: this is the answer.
    Done(T),
    /// Write `ops` (they expect the revisions read); `T` is the answer once they are committed.
    Write(Vec<Op>, T),
    /// Write each of these first, in order (they do not touch the key), then decide again on
    /// fresh data: how a change too large for one write goes out in bounded writes.
    Before(Vec<Vec<Op>>),
}

/// The key as the leader has applied it. When the caller pinned a revision the replica does not
/// show, a quorum round first makes sure every committed write is applied, so a conflict is only
/// reported when it is real.
pub async fn current(store: &KvStore, key: &str, pinned: Option<u64>) -> Result<Option<KeyValue>, ServeError> {
    let kv = store.get_local(key)?;
    match pinned {
        Some(rv) if kv.as_ref().map(|kv| kv.mod_revision) != Some(rv) => {
            store.read_barrier(ReadConsistency::Linearizable).await?;
            Ok(store.get_local(key)?)
        }
        _ => Ok(kv),
    }
}

/// Reads `key`, lets `decide` choose (it may read more, e.g. an owner's dependants), writes with compare-and-swap, and retries a lost race with
/// fresh data unless `pinned` (the caller's resourceVersion) is set. Returns the answer and the
/// revision of the write, if there was one. `what` names the object in errors.
pub async fn update<T, F, Fut>(
    store: &KvStore,
    key: &str,
    pinned: Option<u64>,
    what: &str,
    mut decide: F,
) -> Result<(T, Option<u64>), ServeError>
where
    F: FnMut(Option<KeyValue>) -> Fut,
    Fut: Future<Output = Result<Step<T>, ServeError>>,
{
    store.check_leader()?;
    let mut attempts = 0;
    while attempts < MAX_ATTEMPTS {
        attempts += 1;
        let kv = current(store, key, pinned).await?;
        if let (Some(rv), Some(kv)) = (pinned, &kv) {
            if rv != kv.mod_revision {
                return Err(stale_at(what, rv, kv.mod_revision).into());
            }
        }
        let read_at = kv.as_ref().map(|kv| kv.mod_revision);
        match decide(kv).await? {
            // Nothing to write, so nothing proves this member still leads: its replica may be a
            // deposed leader's, behind the cluster. A quorum round confirms it leads and has
            // applied every committed write; if the key moved meanwhile, decide again.
            Step::Done(answer) => {
                store.read_barrier(ReadConsistency::Linearizable).await?;
                if store.get_local(key)?.map(|kv| kv.mod_revision) == read_at {
                    return Ok((answer, None));
                }
            }
            Step::Write(ops, answer) => match store.write(ops).await {
                Ok(r) if r.conflict.is_none() => return Ok((answer, Some(r.revision))),
                Ok(_) | Err(StoreError::Conflict(_)) if pinned.is_none() => continue,
                Ok(_) | Err(StoreError::Conflict(_)) => {
                    let actual = store.get_local(key)?.map_or(0, |kv| kv.mod_revision);
                    return Err(stale_at(what, pinned.unwrap_or(0), actual).into());
                }
                Err(e) => return Err(e.into()),
            },
            Step::Before(writes) => {
                let mut progressed = false;
                for ops in writes {
                    match store.write(ops).await {
                        Ok(r) if r.conflict.is_none() => progressed = true,
                        // Something changed meanwhile: decide again.
                        Ok(_) | Err(StoreError::Conflict(_)) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                // Each round that writes something makes progress, so it is not an attempt.
                if progressed {
                    attempts -= 1;
                }
            }
        }
    }
    Err(ApiError::conflict(format!("{what} is changing too fast to change: try again")).into())
}

fn stale_at(what: &str, expected: u64, actual: u64) -> ApiError {
    ApiError::conflict(format!(
        "{what} was modified: it is at resourceVersion {actual}, the update was based on {expected}; read it again and reapply your change"
    ))
}

/// The op that stores `object` at `key`, expecting `revision` (0: must not exist).
pub fn put(key: &str, object: &Object, revision: u64) -> Op {
    Op::Put { key: key.to_string(), value: crate::keys::encode(object), expect: Some(revision) }
}
