//! The state machine: objects with their revisions, the watch history and snapshots, in their own
//! sled database (`<data_dir>/state`), plus the current snapshot in `<data_dir>/snapshot.bin`.
//!
//! Apply is deterministic: commands carry every value, compare-and-swap is decided here in log
//! order, and one sled transaction covers all entries of an `apply` call, so a crash leaves either
//! all of them or none (the log replays what is missing). The state machine is not flushed on apply:
//! the flushed log is the source of truth, and a snapshot is written to its own file and fsynced
//! before openraft purges the log behind it.
//!
//! The watch history (`history` tree) is part of the replicated state: it is kept for the last
//! `history_revisions` revisions, independent of when the Raft log is purged, and it travels in
//! snapshots, so it survives a restart and a snapshot install.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::broadcast;

use crate::codec;
use crate::types::{Command, Conflict, EntryResult, Event, EventKind, KeyValue, Member, Op, TypeConfig, WriteResult};

type StorageResult<T> = Result<T, StorageError<u64>>;

const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
/// Present while a snapshot is being installed: if found at open, the install is redone from the
/// snapshot file.
const INSTALLING: &[u8] = b"installing";
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// How an object is stored: its key is the sled key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredValue {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
}

impl StoredValue {
    fn into_kv(self, key: String) -> KeyValue {
        KeyValue { key, value: self.value, create_revision: self.create_revision, mod_revision: self.mod_revision }
    }
}

/// What one `apply` call changed, broadcast to this member's watchers after it is committed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The highest revision (log index) applied so far; every change up to it is in the history.
    pub revision: u64,
    /// The changes, in revision order.
    pub events: Vec<Event>,
    /// The replica was replaced by a snapshot: watchers must catch up from the history again.
    pub reset: bool,
}

/// The content of a snapshot: a consistent cut of the state machine.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
    /// `(key, encoded StoredValue)` for every object.
    data: Vec<(Vec<u8>, Vec<u8>)>,
    /// `(revision, encoded Vec<Event>)` for the retained watch history.
    history: Vec<(u64, Vec<u8>)>,
}

/// The snapshot file: its meta and the encoded payload.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, Member>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct StateMachineConfig {
    /// How many revisions of watch history to keep.
    pub history_revisions: u64,
    /// How many `apply` batches a watcher may fall behind before it is dropped.
    pub watch_buffer: usize,
    /// sled page cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        Self { history_revisions: 100_000, watch_buffer: 4096, cache_bytes: 128 << 20 }
    }
}

/// State shared by the state machine, its snapshot builders, readers and watchers.
pub struct Shared {
    db: sled::Db,
    /// Objects: key -> encoded `StoredValue`.
    data: sled::Tree,
    /// Watch history: big-endian revision -> encoded `Vec<Event>`.
    history: sled::Tree,
    /// Applied log id, membership, install marker.
    meta: sled::Tree,
    dir: PathBuf,
    /// Apply takes it for writing; readers that need a consistent cut (list, snapshot) for reading.
    cut: RwLock<()>,
    /// The last applied revision, readable without the lock.
    applied: AtomicU64,
    events: broadcast::Sender<Arc<Applied>>,
    config: StateMachineConfig,
    snapshot_seq: AtomicU64,
}

/// openraft's view of the state machine. Cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

fn io_err(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

fn decode_value(bytes: &[u8]) -> Result<StoredValue, AnyError> {
    codec::decode(bytes).map_err(io_err)
}

impl StateMachineStore {
    /// Opens (or creates) the state machine in `dir`, finishing an interrupted snapshot install.
    pub fn open(dir: &Path, config: StateMachineConfig) -> StorageResult<Self> {
        let db = sled::Config::new()
            .path(dir.join("state"))
            .cache_capacity(config.cache_bytes)
            .open()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let open = |name: &str| db.open_tree(name).map_err(|e| StorageIOError::read_state_machine(&e));
        let data = open("data")?;
        let history = open("history")?;
        let meta = open("meta")?;
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let shared = Arc::new(Shared {
            db,
            data,
            history,
            meta,
            dir: dir.to_path_buf(),
            cut: RwLock::new(()),
            applied: AtomicU64::new(0),
            events,
            config,
            snapshot_seq: AtomicU64::new(0),
        });
        let sm = Self { shared };
        sm.recover()?;
        Ok(sm)
    }

    /// The shared state, for reads and watches.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Brings the state machine to a consistent state after a crash: redo an interrupted snapshot
    /// install, or install the snapshot file if the state machine's own writes were lost behind it.
    fn recover(&self) -> StorageResult<()> {
        let s = &self.shared;
        let installing = s.meta.get(INSTALLING).map_err(|e| StorageIOError::read_state_machine(&e))?.is_some();
        let applied = s.read_applied()?;
        if let Some(file) = s.read_snapshot_file()? {
            let behind = applied.map(|a| a.index) < file.meta.last_log_id.map(|l| l.index);
            if installing || behind {
                tracing::warn!(installing, ?applied, snapshot = ?file.meta.last_log_id, "restoring state machine from snapshot file");
                let payload: SnapshotPayload =
                    codec::decode(&file.payload).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                s.load_payload(payload)?;
            }
        } else if installing {
            return Err(StorageIOError::read_snapshot(
                None,
                AnyError::error("interrupted snapshot install and no snapshot file"),
            )
            .into());
        }
        let applied = s.read_applied()?;
        s.applied.store(applied.map(|l| l.index).unwrap_or(0), Ordering::SeqCst);
        Ok(())
    }
}

impl Shared {
    /// The last applied revision (Raft log index).
    pub fn applied_revision(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// The oldest start revision a watch may use: changes after it are all in the history.
    pub fn history_floor(&self) -> u64 {
        self.applied_revision().saturating_sub(self.shared_config().history_revisions)
    }

    fn shared_config(&self) -> &StateMachineConfig {
        &self.config
    }

    /// Subscribes to applied changes. Subscribe before reading the history, so nothing falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.events.subscribe()
    }

    /// Reads one object from this replica.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, AnyError> {
        match self.data.get(key.as_bytes()).map_err(io_err)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(decode_value(&bytes)?.into_kv(key.to_string()))),
        }
    }

    /// Lists the objects under `prefix` from this replica, as one consistent cut, with the revision
    /// it was read at.
    pub fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64), AnyError> {
        let _cut = self.cut.read().map_err(|_| AnyError::error("state machine lock poisoned"))?;
        let revision = self.applied_revision();
        let mut out = Vec::new();
        for item in self.data.scan_prefix(prefix.as_bytes()) {
            let (key, bytes) = item.map_err(io_err)?;
            let key = String::from_utf8_lossy(&key).into_owned();
            out.push(decode_value(&bytes)?.into_kv(key));
        }
        Ok((out, revision))
    }

    /// The history entries with a revision strictly greater than `after`, in order.
    pub fn history_after(&self, after: u64) -> Result<Vec<Event>, AnyError> {
        let mut out = Vec::new();
        let start = after.saturating_add(1).to_be_bytes();
        for item in self.history.range(start..) {
            let (_, bytes) = item.map_err(io_err)?;
            let events: Vec<Event> = codec::decode(&bytes).map_err(io_err)?;
            out.extend(events);
        }
        Ok(out)
    }

    fn read_applied(&self) -> StorageResult<Option<LogId<u64>>> {
        match self.meta.get(APPLIED).map_err(|e| StorageIOError::read_state_machine(&e))? {
            None => Ok(None),
            Some(b) => codec::decode(&b).map_err(|e| StorageIOError::read_state_machine(&e).into()),
        }
    }

    fn read_membership(&self) -> StorageResult<StoredMembership<u64, Member>> {
        match self.meta.get(MEMBERSHIP).map_err(|e| StorageIOError::read_state_machine(&e))? {
            None => Ok(StoredMembership::default()),
            Some(b) => codec::decode(&b).map_err(|e| StorageIOError::read_state_machine(&e).into()),
        }
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    fn read_snapshot_file(&self) -> StorageResult<Option<SnapshotFile>> {
        let path = self.snapshot_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        codec::decode(&bytes).map(Some).map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }

    /// Writes the snapshot file atomically (temp file, fsync, rename, fsync of the directory).
    fn write_snapshot_file(&self, file: &SnapshotFile) -> StorageResult<()> {
        let sig = Some(file.meta.signature());
        let bytes = codec::encode(file).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.snapshot_path())?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| StorageIOError::write_snapshot(sig, &e).into())
    }

    /// Takes a consistent cut of the state machine.
    fn cut_payload(&self) -> StorageResult<SnapshotPayload> {
        let _cut = self.cut.read().map_err(|_| StorageIOError::read_state_machine(AnyError::error("lock poisoned")))?;
        let mut data = Vec::new();
        for item in self.data.iter() {
            let (k, v) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
            data.push((k.to_vec(), v.to_vec()));
        }
        let mut history = Vec::new();
        for item in self.history.iter() {
            let (k, v) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
            let rev = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            history.push((rev, v.to_vec()));
        }
        Ok(SnapshotPayload { applied: self.read_applied()?, membership: self.read_membership()?, data, history })
    }

    /// Replaces the whole state machine with `payload`. The install marker makes it restartable.
    fn load_payload(&self, payload: SnapshotPayload) -> StorageResult<()> {
        let werr = |e: &dyn std::error::Error| StorageIOError::write_state_machine(AnyError::error(e.to_string()));
        let _cut =
            self.cut.write().map_err(|_| StorageIOError::write_state_machine(AnyError::error("lock poisoned")))?;
        self.meta.insert(INSTALLING, &[1u8][..]).map_err(|e| werr(&e))?;
        self.db.flush().map_err(|e| werr(&e))?;
        self.data.clear().map_err(|e| werr(&e))?;
        self.history.clear().map_err(|e| werr(&e))?;
        let mut batch = sled::Batch::default();
        for (k, v) in payload.data {
            batch.insert(k, v);
        }
        self.data.apply_batch(batch).map_err(|e| werr(&e))?;
        let mut batch = sled::Batch::default();
        for (rev, v) in payload.history {
            batch.insert(&rev.to_be_bytes(), v);
        }
        self.history.apply_batch(batch).map_err(|e| werr(&e))?;
        let applied = codec::encode(&payload.applied).map_err(|e| werr(&e))?;
        let membership = codec::encode(&payload.membership).map_err(|e| werr(&e))?;
        self.meta.insert(APPLIED, applied).map_err(|e| werr(&e))?;
        self.meta.insert(MEMBERSHIP, membership).map_err(|e| werr(&e))?;
        self.meta.remove(INSTALLING).map_err(|e| werr(&e))?;
        self.db.flush().map_err(|e| werr(&e))?;
        let revision = payload.applied.map(|l| l.index).unwrap_or(0);
        self.applied.store(revision, Ordering::SeqCst);
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(Arc::new(Applied { revision, events: Vec::new(), reset: true }));
        Ok(())
    }

    /// Removes history at or below the floor.
    fn trim_history(&self, applied: u64) -> Result<(), sled::Error> {
        let floor = applied.saturating_sub(self.config.history_revisions);
        let mut batch = sled::Batch::default();
        let mut any = false;
        for item in self.history.range(..=floor.to_be_bytes()) {
            let (k, _) = item?;
            batch.remove(k);
            any = true;
        }
        if any {
            self.history.apply_batch(batch)?;
        }
        Ok(())
    }
}

/// Applies one batch of ops at `revision` inside the transaction.
fn apply_batch(
    data: &TransactionalTree,
    ops: &[Op],
    revision: u64,
    events: &mut Vec<Event>,
) -> Result<WriteResult, ConflictableTransactionError<AnyError>> {
    let read = |key: &str| -> Result<Option<StoredValue>, ConflictableTransactionError<AnyError>> {
        match data.get(key.as_bytes())? {
            None => Ok(None),
            Some(b) => decode_value(&b).map(Some).map_err(ConflictableTransactionError::Abort),
        }
    };
    // Compare-and-swap: every expectation is checked against the state before the batch.
    for op in ops {
        if let Some(expected) = op.expect() {
            let actual = read(op.key())?.map(|v| v.mod_revision).unwrap_or(0);
            if actual != expected {
                let conflict = Conflict { key: op.key().to_string(), expected, actual };
                return Ok(WriteResult { revision, conflict: Some(conflict), prev: Vec::new() });
            }
        }
    }
    let mut prev_all = Vec::with_capacity(ops.len());
    for op in ops {
        let prev = read(op.key())?;
        prev_all.push(prev.clone().map(|p| p.into_kv(op.key().to_string())));
        match op {
            Op::Put { key, value, .. } => {
                let stored = StoredValue {
                    value: value.clone(),
                    create_revision: prev.map(|p| p.create_revision).unwrap_or(revision),
                    mod_revision: revision,
                };
                let bytes = codec::encode(&stored).map_err(|e| ConflictableTransactionError::Abort(io_err(e)))?;
                data.insert(key.as_bytes(), bytes)?;
                events.push(Event { kind: EventKind::Put, revision, kv: stored.into_kv(key.clone()) });
            }
            Op::Delete { key, .. } => {
                if let Some(prev) = prev {
                    data.remove(key.as_bytes())?;
                    events.push(Event { kind: EventKind::Delete, revision, kv: prev.into_kv(key.clone()) });
                }
            }
        }
    }
    Ok(WriteResult { revision, conflict: None, prev: prev_all })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let shared = self.shared.clone();
        // Iterating sled is blocking work: keep it off the async workers.
        let built = tokio::task::spawn_blocking(move || -> StorageResult<(SnapshotMeta<u64, Member>, Vec<u8>)> {
            let payload = shared.cut_payload()?;
            let seq = shared.snapshot_seq.fetch_add(1, Ordering::SeqCst);
            let snapshot_id = match payload.applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
                None => format!("none-{seq}"),
            };
            let meta =
                SnapshotMeta { last_log_id: payload.applied, last_membership: payload.membership.clone(), snapshot_id };
            let bytes =
                codec::encode(&payload).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
            let file = SnapshotFile { meta: meta.clone(), payload: bytes };
            shared.write_snapshot_file(&file)?;
            Ok((meta, file.payload))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))??;
        let (meta, bytes) = built;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, Member>)> {
        Ok((self.shared.read_applied()?, self.shared.read_membership()?))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<EntryResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let s = &self.shared;
        let _cut = s.cut.write().map_err(|_| StorageIOError::apply(last, AnyError::error("lock poisoned")))?;
        let outcome = (&s.data, &s.history, &s.meta).transaction(|(data, history, meta)| {
            let mut results = Vec::with_capacity(entries.len());
            let mut all_events = Vec::new();
            for entry in &entries {
                let revision = entry.log_id.index;
                match &entry.payload {
                    EntryPayload::Blank => results.push(EntryResult::default()),
                    EntryPayload::Normal(Command::Writes(writes)) => {
                        let mut events = Vec::new();
                        let mut entry_result = EntryResult { writes: Vec::with_capacity(writes.len()) };
                        for ops in writes {
                            entry_result.writes.push(apply_batch(data, ops, revision, &mut events)?);
                        }
                        results.push(entry_result);
                        if !events.is_empty() {
                            let bytes =
                                codec::encode(&events).map_err(|e| ConflictableTransactionError::Abort(io_err(e)))?;
                            history.insert(&revision.to_be_bytes(), bytes)?;
                            all_events.extend(events);
                        }
                    }
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                        let bytes =
                            codec::encode(&stored).map_err(|e| ConflictableTransactionError::Abort(io_err(e)))?;
                        meta.insert(MEMBERSHIP, bytes)?;
                        results.push(EntryResult::default());
                    }
                }
            }
            let applied = codec::encode(&Some(last)).map_err(|e| ConflictableTransactionError::Abort(io_err(e)))?;
            meta.insert(APPLIED, applied)?;
            Ok((results, all_events))
        });
        let (results, events) = match outcome {
            Ok(v) => v,
            Err(TransactionError::Abort(e)) => return Err(StorageIOError::apply(last, e).into()),
            Err(TransactionError::Storage(e)) => return Err(StorageIOError::apply(last, &e).into()),
        };
        s.trim_history(last.index).map_err(|e| StorageIOError::apply(last, &e))?;
        s.applied.store(last.index, Ordering::SeqCst);
        // Watchers that fell behind see `Lagged` and are dropped; apply never waits for them.
        let _ = s.events.send(Arc::new(Applied { revision: last.index, events, reset: false }));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        // Take the bytes whatever the cursor's position: chunked transfer leaves it at the end.
        let bytes = snapshot.into_inner();
        let sig = Some(meta.signature());
        let payload: SnapshotPayload =
            codec::decode(&bytes).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let file = SnapshotFile { meta: meta.clone(), payload: bytes };
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || -> StorageResult<()> {
            // The file first: if the install below is interrupted, `recover` redoes it from the file.
            shared.write_snapshot_file(&file)?;
            shared.load_payload(payload)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(sig, &e))??;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let shared = self.shared.clone();
        let file = tokio::task::spawn_blocking(move || shared.read_snapshot_file())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))??;
        Ok(file.map(|f| Snapshot { meta: f.meta, snapshot: Box::new(Cursor::new(f.payload)) }))
    }
}
