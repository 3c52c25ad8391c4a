//! [`KvStore`]: one member's handle on the replicated key-value store. Writes go through Raft;
//! reads and watches are served from the local replica, linearizable reads after a read-index round
//! on the leader.
//!
//! The store does not forward anything itself: when this member is not the leader it says who is
//! ([`StoreError::NotLeader`]) and the API layer forwards the call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};

use crate::leadership::{watch_leadership, Leadership, MemberStatus};
use crate::log_budget::{self, LogAction, LogBudget};
use crate::log_store::LogStore;
use crate::metrics::StoreMetrics;
use crate::network::{Connector, Network};
use crate::proposer::Proposer;
use crate::state_machine::{Shared, StateMachineConfig, StateMachineStore};
use crate::types::{Conflict, KeyValue, Member, Op, WriteResult};
use crate::watch::{self, WatchError, WatchReceiver};
use tokio::sync::{mpsc, oneshot};

use crate::Raft;

/// How a read may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadConsistency {
    /// Confirm leadership with a quorum (read index), wait until applied, then read. Only the
    /// leader can do this.
    #[default]
    Linearizable,
    /// Read this member's replica as it is; it may be behind.
    Stale,
}

/// Settings of one member's store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node_id: u64,
    /// Holds `raft-log/`, `state/` and `snapshot.bin`.
    pub data_dir: PathBuf,
    pub raft: openraft::Config,
    pub state_machine: StateMachineConfig,
    /// sled page cache of the log database, in bytes.
    pub log_cache_bytes: u64,
    /// How long a write may wait for commit before its outcome is reported as unknown.
    pub write_timeout: Duration,
    /// Entries between proposal and apply at once; writes arriving meanwhile share the next entry.
    pub max_in_flight_entries: usize,
    /// When to snapshot and how much log to keep, by bytes (beside openraft's counts).
    pub log_budget: LogBudget,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("this member is not the leader{}", match .leader { Some((id, m)) => format!(" (the leader is member {id}, {m})"), None => " and no leader is known".into() })]
    NotLeader { leader: Option<(u64, Member)> },
    #[error("conflict on {}: expected revision {}, found {}", .0.key, .0.expected, .0.actual)]
    Conflict(Conflict),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("the outcome of the write is unknown ({0}): read the key before retrying")]
    OutcomeUnknown(String),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("storage error: {0}")]
    Storage(String),
}

/// Confirms leadership for batches of readers: everyone waiting when a round starts shares it. A
/// round that misses a quorum only because heartbeats were slow (openraft gives them one heartbeat
/// interval) is tried again a few times before readers see an error.
fn start_read_barriers(
    raft: Raft,
    apply_timeout: Duration,
) -> mpsc::UnboundedSender<oneshot::Sender<Result<(), StoreError>>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<Result<(), StoreError>>>();
    tokio::spawn(async move {
        let mut floor = TermFloor::default();
        while let Some(first) = rx.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = rx.try_recv() {
                waiting.push(more);
            }
            let mut result = confirm_leadership(&raft).await;
            for _ in 0..4 {
                if !matches!(result, Err(StoreError::Unavailable(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                result = confirm_leadership(&raft).await;
            }
            if result.is_ok() {
                result = floor.wait_applied(&raft, apply_timeout).await;
            }
            for w in waiting {
                let _ = w.send(result.clone());
            }
        }
    });
    tx
}

/// The last log index this member held when it was first seen leading in its current term.
///
/// openraft's read index is the larger of the leader's first entry in its term and its committed
/// index. A member that led before a restart leads again at once, in the same term, with the
/// committed index it read back from disk, and that can be older than writes it acknowledged before
/// the crash (openraft issue 1511): a read at that index would miss them. Every entry in a leader's
/// log is committed by it in the end, so a read that also waits for the log it held at the start of
/// its term sees every write acknowledged before, by this leader or an earlier one.
#[derive(Debug, Default)]
struct TermFloor {
    /// `(term, last log index when first seen leading in it)`.
    seen: Option<(u64, u64)>,
}

impl TermFloor {
    /// Waits until this member has applied its floor for the term it leads now.
    async fn wait_applied(&mut self, raft: &Raft, timeout: Duration) -> Result<(), StoreError> {
        let metrics = raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            return Ok(()); // not leading: the read fails or is forwarded elsewhere
        }
        let floor = match self.seen {
            Some((term, index)) if term == metrics.current_term => index,
            _ => {
                let index = metrics.last_log_index.unwrap_or(0);
                self.seen = Some((metrics.current_term, index));
                index
            }
        };
        if metrics.last_applied.map(|l| l.index).unwrap_or(0) >= floor {
            return Ok(());
        }
        raft.wait(Some(timeout))
            .applied_index_at_least(Some(floor), "the leader's log at the start of its term")
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "the leader has not yet applied its log up to index {floor} (restarted?): {e}; retry"
                ))
            })
    }
}

async fn confirm_leadership(raft: &Raft) -> Result<(), StoreError> {
    match raft.ensure_linearizable().await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(StoreError::NotLeader { leader: f.leader_id.zip(f.leader_node) })
        }
        Err(RaftError::APIError(e)) => Err(StoreError::Unavailable(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(StoreError::Unavailable(format!("raft stopped: {e}"))),
    }
}

/// One member's replica of the store and its Raft instance.
#[derive(Clone)]
pub struct KvStore {
    node_id: u64,
    raft: Raft,
    shared: Arc<Shared>,
    proposer: Proposer,
    write_timeout: Duration,
    /// Linearizable reads waiting for the next leadership confirmation (one for many readers).
    barrier: mpsc::UnboundedSender<oneshot::Sender<Result<(), StoreError>>>,
    /// Who leads, kept current from Raft's metrics.
    leadership: tokio::sync::watch::Receiver<Leadership>,
    /// What the store counts for `/metrics`.
    metrics: StoreMetrics,
    /// The task that keeps the log within its budget; it holds both databases, so shutdown ends it
    /// (a database dropped later, by the runtime, may find its directory gone and never finish).
    log_keeper: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

/// Snapshots and purges the log by bytes ([`log_budget`]) as the log grows, on this member. Ends
/// when Raft stops (its metrics close).
fn keep_log_within(raft: Raft, log: LogStore, shared: Arc<Shared>, budget: LogBudget) -> tokio::task::JoinHandle<()> {
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        // A snapshot asked for and the snapshot index then, until a newer one shows (or 30 s).
        let mut snapshot_asked: Option<(Option<u64>, tokio::time::Instant)> = None;
        let mut purge_asked = 0;
        while metrics.changed().await.is_ok() {
            let (snapshot, purged) = {
                let m = metrics.borrow_and_update();
                (m.snapshot.map(|l| l.index), m.purged.map(|l| l.index))
            };
            if let Some((at, when)) = snapshot_asked {
                if snapshot == at && when.elapsed() < Duration::from_secs(30) {
                    continue;
                }
                snapshot_asked = None;
            }
            let action =
                log.with_sizes(|sizes| log_budget::decide(sizes, snapshot, shared.snapshot_bytes(), purged, budget));
            let asked = match action {
                LogAction::Nothing => Ok(()),
                LogAction::Snapshot => {
                    snapshot_asked = Some((snapshot, tokio::time::Instant::now()));
                    raft.trigger().snapshot().await
                }
                LogAction::Purge(upto) if upto > purge_asked => {
                    purge_asked = upto;
                    raft.trigger().purge_log(upto).await
                }
                LogAction::Purge(_) => Ok(()),
            };
            if asked.is_err() {
                return;
            }
            // At most a few decisions a second, however fast entries apply.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

impl KvStore {
    /// Opens the member's data and starts its Raft instance. Nothing is initialized: a new cluster
    /// is created with `raft().initialize(..)`, a new member is added by the leader.
    pub async fn open(config: StoreConfig, connector: Arc<dyn Connector>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StoreError::Storage(format!("cannot create data dir {}: {e}", config.data_dir.display())))?;
        let log = LogStore::open(&config.data_dir.join("raft-log"), config.log_cache_bytes).map_err(|e| {
            StoreError::Storage(format!("cannot open the Raft log in {}: {e}", config.data_dir.display()))
        })?;
        let sm = StateMachineStore::open(&config.data_dir, config.state_machine.clone())
            .map_err(|e| StoreError::Storage(format!("cannot open the state in {}: {e}", config.data_dir.display())))?;
        let shared = sm.shared();
        let raft_config =
            config.raft.validate().map_err(|e| StoreError::Storage(format!("invalid raft settings: {e}")))?;
        let raft = Raft::new(config.node_id, Arc::new(raft_config), Network::new(connector), log.clone(), sm)
            .await
            .map_err(|e| StoreError::Storage(format!("cannot start raft: {e}")))?;
        let log_keeper = keep_log_within(raft.clone(), log, shared.clone(), config.log_budget);
        let metrics = StoreMetrics::default();
        let proposer =
            Proposer::start(raft.clone(), config.max_in_flight_entries, config.write_timeout, metrics.clone());
        let barrier = start_read_barriers(raft.clone(), config.write_timeout);
        let leadership = watch_leadership(&raft);
        Ok(Self {
            node_id: config.node_id,
            raft,
            shared,
            proposer,
            write_timeout: config.write_timeout,
            barrier,
            leadership,
            metrics,
            log_keeper: Arc::new(std::sync::Mutex::new(Some(log_keeper))),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The Raft instance, for membership changes and the Raft RPC service.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Who leads; changes with every new term or leader. Controllers start and stop on it.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// What the store counts (proposals, batch sizes), for `/metrics`.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// This member's own view of itself and of the membership, now.
    pub fn status(&self) -> MemberStatus {
        MemberStatus::of(&self.raft.metrics().borrow())
    }

    /// The last revision applied on this member.
    pub fn applied_revision(&self) -> u64 {
        self.shared.applied_revision()
    }

    /// Commits `ops` atomically. A failed compare-and-swap is [`StoreError::Conflict`] and changes
    /// nothing. Only the leader accepts writes.
    pub async fn write(&self, ops: Vec<Op>) -> Result<WriteResult, StoreError> {
        let pending = self.proposer.submit(ops);
        // The proposer times out the commit itself; this also covers time spent waiting to be proposed.
        match tokio::time::timeout(self.write_timeout * 2, pending).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::OutcomeUnknown("the proposer stopped (member shutting down)".into())),
            Err(_) => Err(StoreError::OutcomeUnknown(format!("not applied within {:?}", self.write_timeout * 2))),
        }
    }

    /// Waits until a read on this member would be linearizable, or says who the leader is.
    ///
    /// Readers share confirmations: a reader waits for the next round that starts after it asked
    /// (openraft sends one heartbeat to every voter per round, so a round per reader would flood
    /// the followers under load).
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), StoreError> {
        if consistency == ReadConsistency::Stale {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.barrier.send(tx).map_err(|_| StoreError::Unavailable("the member is shutting down".into()))?;
        rx.await.map_err(|_| StoreError::Unavailable("the member is shutting down".into()))?
    }

    /// `Err(NotLeader)` when this member knows it is not the leader (without asking anyone): the
    /// caller forwards at once instead of working on a request it cannot serve.
    pub fn check_leader(&self) -> Result<(), StoreError> {
        let leadership = self.leadership.borrow();
        if leadership.is_leader {
            Ok(())
        } else {
            Err(StoreError::NotLeader { leader: leadership.leader.clone() })
        }
    }

    /// Reads one key; returns it with the revision this member had applied.
    pub async fn get(&self, key: &str, consistency: ReadConsistency) -> Result<(Option<KeyValue>, u64), StoreError> {
        self.read_barrier(consistency).await?;
        let revision = self.shared.applied_revision();
        let kv = self.shared.get(key).map_err(|e| StoreError::Storage(e.to_string()))?;
        Ok((kv, revision))
    }

    /// The value `key` had at `revision` on this member's replica, while the watch history holds
    /// that revision (or the key is still at it); `None` when it is not known.
    pub fn value_at(&self, key: &str, revision: u64) -> Result<Option<KeyValue>, StoreError> {
        self.shared.value_at(key, revision).map_err(|e| StoreError::Storage(e.to_string()))
    }

    /// Reads one key from this member's replica as it is (no leader round trip).
    pub fn get_local(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.shared.get(key).map_err(|e| StoreError::Storage(e.to_string()))
    }

    /// Lists the keys under `prefix` as one consistent cut, with the revision it was read at.
    pub async fn list(&self, prefix: &str, consistency: ReadConsistency) -> Result<(Vec<KeyValue>, u64), StoreError> {
        self.read_barrier(consistency).await?;
        let shared = self.shared.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || shared.list(&prefix))
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))?
            .map_err(|e| StoreError::Storage(e.to_string()))
    }

    /// Watches the keys under `prefix` from this member's replica, strictly after `start`.
    pub fn watch(&self, prefix: &str, start: u64, progress_every: Duration) -> Result<WatchReceiver, StoreError> {
        Ok(watch::start(self.shared.clone(), prefix.to_string(), start, progress_every)?)
    }

    /// Stops Raft and the log keeper. The databases close when the last handle is dropped.
    pub async fn shutdown(&self) {
        self.shared.close_watches();
        let keeper = self.log_keeper.lock().ok().and_then(|mut k| k.take());
        if let Some(keeper) = keeper {
            keeper.abort();
            // Cancelled is what an aborted task reports; nothing else can come back.
            let _ = keeper.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
