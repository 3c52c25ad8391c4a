//! The proposer groups concurrent writes into one Raft entry.
//!
//! openraft 0.9 appends (and flushes) each proposed entry on its own, so one client write per entry
//! means one fsync per write. The proposer keeps at most `max_in_flight` entries between proposal
//! and apply; writes that arrive meanwhile wait and go out together in the next entry, so under load
//! one flush (and one replication round) serves many writes, while a lone write goes out at once.
//!
//! Two writes that touch the same key never share an entry (the later one waits for the next), so
//! a key changes at most once per revision and compare-and-swap on revisions stays exact.
//!
//! Its queue is bounded by bytes ([`MAX_QUEUED_BYTES`]): past it a write is refused at once
//! (UNAVAILABLE, nothing applied) rather than held in memory. A write whose caller gave up (timed
//! out, or went away) before it was proposed is dropped, never proposed: nobody waits for it.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::metrics::StoreMetrics;
use crate::store::StoreError;
use crate::types::{Command, Op, WriteResult};
use crate::Raft;

/// An entry holds at most this many bytes of keys and values (a single larger write still goes
/// out, alone). An entry travels to the followers in one append-entries request, which openraft
/// 0.9 gives one heartbeat (30 ms) to be sent, synced and answered: 1 MiB keeps that within reach
/// of a busy machine, while a burst of writes still shares few entries.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// An entry holds at most this many writes.
pub const MAX_ENTRY_WRITES: usize = 4096;
/// Bytes of keys and values waiting to be proposed, at most (64 entries' worth).
pub const MAX_QUEUED_BYTES: usize = 64 * MAX_ENTRY_BYTES;

type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

/// A write waiting to be proposed.
pub(crate) struct Pending {
    ops: Vec<Op>,
    reply: Reply,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, .. } => key.len() + value.len(),
                Op::Delete { key, .. } => key.len(),
            })
            .sum()
    }
}

/// The handle writers use.
#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    /// Bytes of the writes queued and not yet proposed (or dropped).
    queued: Arc<AtomicUsize>,
}

impl Proposer {
    /// Starts the proposer task for `raft`.
    pub(crate) fn start(raft: Raft, max_in_flight: usize, commit_timeout: Duration, metrics: StoreMetrics) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(raft, rx, queued.clone(), max_in_flight.max(1), commit_timeout, metrics));
        Self { tx, queued }
    }

    /// Queues a write; the receiver gets its result once applied.
    pub(crate) fn submit(&self, ops: Vec<Op>) -> oneshot::Receiver<Result<WriteResult, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let pending = Pending { ops, reply };
        let size = pending.bytes();
        let before = self.queued.fetch_add(size, Ordering::SeqCst);
        // One write alone is always taken (its own size is checked by the API's limits).
        if before > 0 && before + size > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            let _ = pending.reply.send(Err(StoreError::Unavailable(format!(
                "this member has {} MiB of writes waiting to be proposed: retry shortly",
                before >> 20
            ))));
            return rx;
        }
        if let Err(mpsc::error::SendError(p)) = self.tx.send(pending) {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            let _ = p.reply.send(Err(StoreError::Unavailable("the member is shutting down".into())));
        }
        rx
    }
}

async fn run(
    raft: Raft,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    queued: Arc<AtomicUsize>,
    max_in_flight: usize,
    commit_timeout: Duration,
    metrics: StoreMetrics,
) {
    // Takes a write off the queue's count; `None` for one whose caller is gone (dropped here).
    let dequeue = |p: Pending| {
        queued.fetch_sub(p.bytes(), Ordering::SeqCst);
        (!p.reply.is_closed()).then_some(p)
    };
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    // Writes held back from the previous entry because they touched a key already in it.
    let mut held: VecDeque<Pending> = VecDeque::new();
    loop {
        // Wait for room first: writes pile up meanwhile and go out together.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let first = match held.pop_front() {
            Some(p) if p.reply.is_closed() => continue,
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => match dequeue(p) {
                    Some(p) => p,
                    None => continue,
                },
                None => return,
            },
        };
        let mut keys: HashSet<String> = first.ops.iter().map(|op| op.key().to_string()).collect();
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        let mut next_held = VecDeque::new();
        while batch.len() < MAX_ENTRY_WRITES && bytes < MAX_ENTRY_BYTES {
            let p = match held.pop_front() {
                Some(p) if p.reply.is_closed() => continue,
                Some(p) => p,
                None => match rx.try_recv() {
                    Ok(p) => match dequeue(p) {
                        Some(p) => p,
                        None => continue,
                    },
                    Err(_) => break,
                },
            };
            let size = p.bytes();
            if p.ops.iter().any(|op| keys.contains(op.key())) || bytes + size > MAX_ENTRY_BYTES {
                next_held.push_back(p);
                continue;
            }
            keys.extend(p.ops.iter().map(|op| op.key().to_string()));
            bytes += size;
            batch.push(p);
        }
        next_held.extend(held.drain(..));
        held = next_held;

        let (writes, replies): (Vec<Vec<Op>>, Vec<Reply>) = batch.into_iter().map(|p| (p.ops, p.reply)).unzip();
        metrics.proposals.inc();
        metrics.proposed_writes.inc_by(writes.len() as u64);
        metrics.batch_size.observe(writes.len() as f64);
        // Hand the entry to Raft here, in order; only the wait for its result runs concurrently.
        let rx = match raft.client_write_ff(Command::Writes(writes)).await {
            Ok(rx) => rx,
            Err(e) => {
                // Raft has stopped: the entry was never appended.
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(format!("raft stopped: {e}"))));
                }
                continue;
            }
        };
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(commit_timeout, rx).await;
            drop(permit);
            let results = match outcome {
                Ok(Ok(Ok(resp))) => Ok(resp.data.writes),
                Err(_) => Err(StoreError::OutcomeUnknown(format!("not committed within {commit_timeout:?}"))),
                // Raised before the entry was appended, or when it was truncated away: not applied.
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(StoreError::NotLeader { leader: f.leader_id.zip(f.leader_node) })
                }
                Ok(Ok(Err(e))) => Err(StoreError::Unavailable(e.to_string())),
                Ok(Err(_)) => Err(StoreError::OutcomeUnknown("raft stopped before answering".into())),
            };
            match results {
                Ok(results) if results.len() == replies.len() => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(match result.conflict {
                            Some(c) => Err(StoreError::Conflict(c)),
                            None => Ok(result),
                        });
                    }
                }
                Ok(results) => {
                    let e = StoreError::Storage(format!(
                        "apply returned {} results for {} writes",
                        results.len(),
                        replies.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
