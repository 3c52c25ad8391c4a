//! The state machine: objects with their revisions, the watch history and snapshots, in their own
//! sled database (`<data_dir>/state`), plus the current snapshot in `<data_dir>/snapshot.bin`.
//!
//! Everything lives in one sled tree, under three key prefixes: `d` + key for objects, `h` +
//! revision for the watch history (all events of one revision in one value), `m` + name for the
//! applied log id and membership. One `apply` call becomes one `sled::Batch` on that tree, which
//! sled applies atomically: a crash leaves all of the call's entries or none (the log replays what
//! is missing). Reads inside a call see its earlier writes through an in-memory overlay.
//!
//! sled operations are what apply costs (a profile of a loaded three-member cluster put over half
//! of a follower's CPU in sled), so apply does as few as it can: the revisions of every object are
//! kept in an in-memory index (compare-and-swap and `create_revision` need no sled read; only a
//! delete reads the value it removes), and the history is one insert per Raft entry.
//!
//! Apply is deterministic: commands carry every value and compare-and-swap is decided here, in log
//! order. The state machine is not flushed on apply: the flushed log is the source of truth, and a
//! snapshot is written to its own file and fsynced before openraft purges the log behind it.
//!
//! The watch history is part of the replicated state: it is kept for the last `history_revisions`
//! revisions, independent of when the Raft log is purged, and it travels in snapshots, so it
//! survives a restart and a snapshot install.

use std::collections::HashMap;
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
use tokio::sync::broadcast;

use crate::codec;
use crate::types::{
    Change, ChangeKind, ChangeV1, Command, Conflict, EntryResult, KeyValue, Member, Op, TypeConfig, WriteResult,
};

type StorageResult<T> = Result<T, StorageError<u64>>;

/// Key prefix of objects.
const DATA: u8 = b'd';
/// Key prefix of the watch history.
const HISTORY: u8 = b'h';
// Bookkeeping keys start with `m`.
const APPLIED: &[u8] = b"mapplied";
const MEMBERSHIP: &[u8] = b"mmembership";
const SNAPSHOT_FILE: &str = "snapshot.bin";

fn data_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key.as_bytes());
    k
}

/// History keys sort by revision; one key holds all events of its revision, so the history costs
/// one sled insert per Raft entry, not one per write.
fn history_key(revision: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = HISTORY;
    k[1..].copy_from_slice(&revision.to_be_bytes());
    k
}

/// The revisions of a stored object, kept in memory for every key so that apply decides
/// compare-and-swap and `create_revision` without reading sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revisions {
    create: u64,
    modified: u64,
}

/// The in-memory revision index: data key -> revisions.
type RevisionIndex = HashMap<Vec<u8>, Revisions>;

/// How one `apply` call changes the revision index: new revisions, or `None` for a removed key.
type IndexChanges = Vec<(Vec<u8>, Option<Revisions>)>;

/// How an object is stored: its key is the tree key after the `d` prefix.
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
    pub changes: Vec<Change>,
    /// Watchers read the changes from the history instead: the replica was replaced by a snapshot,
    /// or the batch was too large to carry ([`MAX_INLINE_BYTES`]).
    pub reset: bool,
}

/// The most bytes of keys and values one broadcast batch carries. The broadcast keeps its last
/// `watch_buffer` batches whether anyone reads them or not, so a larger batch is announced without
/// its changes and watchers read them from the history (on disk, through sled's cache): memory
/// stays within `watch_buffer` x 16 KiB (64 MiB by default) however large the values written.
pub const MAX_INLINE_BYTES: usize = 16 << 10;

/// The content of a snapshot: a consistent cut of the state machine.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, Member>,
    /// Every object and history key with its stored value, as in the tree.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
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
    /// Objects, history and bookkeeping, under their key prefixes.
    tree: sled::Tree,
    dir: PathBuf,
    /// Apply takes it for writing; readers that need a consistent cut (list, snapshot) for reading.
    cut: RwLock<()>,
    /// The last applied revision, readable without the lock.
    applied: AtomicU64,
    /// Revisions of every object; written only by apply and snapshot install (under `cut`).
    index: std::sync::Mutex<RevisionIndex>,
    events: broadcast::Sender<Arc<Applied>>,
    /// Set when the member shuts down: every watch ends with `Closed` so that its client moves to
    /// another member (the broadcast alone stays open while any handle of this store lives).
    closing: tokio::sync::watch::Sender<bool>,
    config: StateMachineConfig,
    snapshot_seq: AtomicU64,
    /// Held while the snapshot file is written: a snapshot being built and one being installed
    /// write it one at a time. Holds the last log id of the file on disk, once known.
    snapshot_file: std::sync::Mutex<Option<Option<LogId<u64>>>>,
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

/// The changes of one revision of the history, written in any format this Skiff knows.
fn decode_history(bytes: &[u8]) -> Result<Vec<Change>, AnyError> {
    if codec::format_of(bytes).map_err(io_err)? == codec::FORMAT_V1 {
        let old: Vec<ChangeV1> = codec::decode(bytes).map_err(io_err)?;
        return Ok(old.into_iter().map(Change::from).collect());
    }
    codec::decode(bytes).map_err(io_err)
}

impl StateMachineStore {
    /// Opens (or creates) the state machine in `dir`, restoring it from the snapshot file if its own
    /// writes were lost behind it.
    pub fn open(dir: &Path, config: StateMachineConfig) -> StorageResult<Self> {
        let db = sled::Config::new()
            .path(dir.join("state"))
            .cache_capacity(config.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .segment_size(8 << 20)
            .open()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let tree = db.open_tree("state").map_err(|e| StorageIOError::read_state_machine(&e))?;
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let shared = Arc::new(Shared {
            db,
            tree,
            dir: dir.to_path_buf(),
            cut: RwLock::new(()),
            applied: AtomicU64::new(0),
            index: std::sync::Mutex::new(HashMap::new()),
            events,
            closing: tokio::sync::watch::Sender::new(false),
            config,
            snapshot_seq: AtomicU64::new(0),
            snapshot_file: std::sync::Mutex::new(None),
        });
        let sm = Self { shared };
        sm.recover()?;
        Ok(sm)
    }

    /// The shared state, for reads and watches.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Brings the state machine to a consistent state after a crash: if its own (unflushed) writes
    /// were lost behind the snapshot that let openraft purge the log, install that snapshot again.
    fn recover(&self) -> StorageResult<()> {
        let s = &self.shared;
        let applied = s.read_applied()?;
        if let Some(file) = s.read_snapshot_file()? {
            if applied.map(|a| a.index) < file.meta.last_log_id.map(|l| l.index) {
                tracing::warn!(?applied, snapshot = ?file.meta.last_log_id, "restoring state machine from snapshot file");
                let payload: SnapshotPayload =
                    codec::decode(&file.payload).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                s.load_payload(payload)?;
            }
        }
        let applied = s.read_applied()?;
        s.applied.store(applied.map(|l| l.index).unwrap_or(0), Ordering::SeqCst);
        s.rebuild_index()?;
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
        self.applied_revision().saturating_sub(self.config.history_revisions)
    }

    /// Subscribes to applied changes. Subscribe before reading the history, so nothing falls between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Applied>> {
        self.events.subscribe()
    }

    /// Resolves once the member is shutting down (see [`Shared::close_watches`]).
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every watch of this replica with `Closed`.
    pub fn close_watches(&self) {
        self.closing.send_replace(true);
    }

    /// Reads one object from this replica.
    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, AnyError> {
        match self.tree.get(data_key(key)).map_err(io_err)? {
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
        for item in self.tree.scan_prefix(data_key(prefix)) {
            let (key, bytes) = item.map_err(io_err)?;
            let key = String::from_utf8_lossy(&key[1..]).into_owned();
            out.push(decode_value(&bytes)?.into_kv(key));
        }
        Ok((out, revision))
    }

    /// The history events with a revision strictly greater than `after`, in order.
    pub fn history_after(&self, after: u64) -> Result<Vec<Change>, AnyError> {
        let mut out = Vec::new();
        let start = history_key(after.saturating_add(1));
        for item in self.tree.range(start.as_slice()..[HISTORY + 1].as_slice()) {
            let (_, bytes) = item.map_err(io_err)?;
            out.extend(decode_history(&bytes)?);
        }
        Ok(out)
    }

    /// The value `key` had at `revision`, when the history still holds that revision (or the key is
    /// still at it): `Ok(None)` when it is not known. The value of a deletion is the key's last state.
    pub fn value_at(&self, key: &str, revision: u64) -> Result<Option<KeyValue>, AnyError> {
        if revision == 0 {
            return Ok(None);
        }
        if let Some(current) = self.get(key)? {
            if current.mod_revision == revision {
                return Ok(Some(current));
            }
        }
        let Some(bytes) = self.tree.get(history_key(revision)).map_err(io_err)? else {
            return Ok(None);
        };
        Ok(decode_history(&bytes)?.into_iter().find(|c| c.kv.key == key && c.kind == ChangeKind::Put).map(|c| c.kv))
    }

    /// Rebuilds the revision index from the objects in sled.
    fn rebuild_index(&self) -> StorageResult<()> {
        let mut index = RevisionIndex::new();
        for item in self.tree.scan_prefix([DATA]) {
            let (k, v) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
            let v = decode_value(&v).map_err(StorageIOError::read_state_machine)?;
            index.insert(k.to_vec(), Revisions { create: v.create_revision, modified: v.mod_revision });
        }
        let mut current = self
            .index
            .lock()
            .map_err(|_| StorageIOError::read_state_machine(AnyError::error("index lock poisoned")))?;
        *current = index;
        Ok(())
    }

    fn read_applied(&self) -> StorageResult<Option<LogId<u64>>> {
        match self.tree.get(APPLIED).map_err(|e| StorageIOError::read_state_machine(&e))? {
            None => Ok(None),
            Some(b) => codec::decode(&b).map_err(|e| StorageIOError::read_state_machine(&e).into()),
        }
    }

    fn read_membership(&self) -> StorageResult<StoredMembership<u64, Member>> {
        match self.tree.get(MEMBERSHIP).map_err(|e| StorageIOError::read_state_machine(&e))? {
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

    /// Writes the snapshot file atomically (temp file, fsync, rename, fsync of the directory), one
    /// writer at a time, and never over a newer one: a snapshot built from a cut taken before an
    /// install finished is older than the installed one and is not written.
    fn write_snapshot_file(&self, file: &SnapshotFile) -> StorageResult<()> {
        let sig = Some(file.meta.signature());
        let mut on_disk = self
            .snapshot_file
            .lock()
            .map_err(|_| StorageIOError::write_snapshot(sig.clone(), AnyError::error("lock poisoned")))?;
        let current = match *on_disk {
            Some(last) => last,
            None => self.read_snapshot_file()?.and_then(|f| f.meta.last_log_id),
        };
        if current > file.meta.last_log_id {
            tracing::info!(snapshot = %file.meta.snapshot_id, ?current, "not written: the snapshot on disk is newer");
            *on_disk = Some(current);
            return Ok(());
        }
        let bytes = codec::encode(file).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.snapshot_path())?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        *on_disk = Some(file.meta.last_log_id);
        Ok(())
    }

    /// Takes a consistent cut of the state machine.
    fn cut_payload(&self) -> StorageResult<SnapshotPayload> {
        let _cut = self.cut.read().map_err(|_| StorageIOError::read_state_machine(AnyError::error("lock poisoned")))?;
        let mut entries = Vec::new();
        for prefix in [DATA, HISTORY] {
            for item in self.tree.scan_prefix([prefix]) {
                let (k, v) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
                entries.push((k.to_vec(), v.to_vec()));
            }
        }
        Ok(SnapshotPayload { applied: self.read_applied()?, membership: self.read_membership()?, entries })
    }

    /// Replaces the whole state machine with `payload`, in one atomic batch.
    fn load_payload(&self, payload: SnapshotPayload) -> StorageResult<()> {
        let werr = |e: &dyn std::error::Error| StorageIOError::write_state_machine(AnyError::error(e.to_string()));
        let _cut =
            self.cut.write().map_err(|_| StorageIOError::write_state_machine(AnyError::error("lock poisoned")))?;
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            batch.remove(key.map_err(|e| werr(&e))?);
        }
        for (k, v) in payload.entries {
            if matches!(k.first(), Some(&DATA) | Some(&HISTORY)) {
                batch.insert(k, v);
            }
        }
        batch.insert(APPLIED, codec::encode(&payload.applied).map_err(|e| werr(&e))?);
        batch.insert(MEMBERSHIP, codec::encode(&payload.membership).map_err(|e| werr(&e))?);
        self.tree.apply_batch(batch).map_err(|e| werr(&e))?;
        self.db.flush().map_err(|e| werr(&e))?;
        self.rebuild_index()?;
        let revision = payload.applied.map(|l| l.index).unwrap_or(0);
        self.applied.store(revision, Ordering::SeqCst);
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(Arc::new(Applied { revision, changes: Vec::new(), reset: true }));
        Ok(())
    }
}

/// The writes of one `apply` call: reads see earlier writes of the call, and everything goes to
/// sled in one atomic batch at the end.
struct ApplyBatch<'a> {
    tree: &'a sled::Tree,
    /// Revisions of the objects as of the start of the call.
    index: &'a RevisionIndex,
    /// Objects written or deleted (`None`) so far in this call, by data key.
    overlay: HashMap<Vec<u8>, Option<StoredValue>>,
    batch: sled::Batch,
}

impl ApplyBatch<'_> {
    /// The revisions of an object, if it exists: from this call's writes, else from the index.
    fn revisions(&self, key: &[u8]) -> Option<Revisions> {
        match self.overlay.get(key) {
            Some(v) => v.as_ref().map(|v| Revisions { create: v.create_revision, modified: v.mod_revision }),
            None => self.index.get(key).copied(),
        }
    }

    /// The whole stored object (only deletes need it: their event carries the last state).
    fn read(&self, key: &[u8]) -> Result<Option<StoredValue>, AnyError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        match self.tree.get(key).map_err(io_err)? {
            None => Ok(None),
            Some(b) => decode_value(&b).map(Some),
        }
    }

    /// Applies one write (its ops all, or none if an expectation fails) at `revision`.
    fn write(&mut self, ops: &[Op], revision: u64, events: &mut Vec<Change>) -> Result<WriteResult, AnyError> {
        // Compare-and-swap: every expectation is checked against the state before the write.
        for op in ops {
            if let Some(expected) = op.expect() {
                let actual = self.revisions(&data_key(op.key())).map(|r| r.modified).unwrap_or(0);
                if actual != expected {
                    let conflict = Conflict { key: op.key().to_string(), expected, actual };
                    return Ok(WriteResult { revision, conflict: Some(conflict), prev: Vec::new() });
                }
            }
        }
        let mut prev_of_deletes = Vec::with_capacity(ops.len());
        for op in ops {
            let dkey = data_key(op.key());
            match op {
                Op::Put { key, value, .. } => {
                    prev_of_deletes.push(None);
                    let before = self.revisions(&dkey);
                    let stored = StoredValue {
                        value: value.clone(),
                        create_revision: before.map(|r| r.create).unwrap_or(revision),
                        mod_revision: revision,
                    };
                    events.push(Change {
                        kind: ChangeKind::Put,
                        revision,
                        kv: stored.clone().into_kv(key.clone()),
                        prev_revision: Some(before.map(|r| r.modified).unwrap_or(0)),
                    });
                    self.overlay.insert(dkey, Some(stored));
                }
                Op::Delete { key, .. } => {
                    let prev_kv = match self.revisions(&dkey) {
                        Some(_) => self.read(&dkey)?.map(|p| p.into_kv(key.clone())),
                        None => None,
                    };
                    if let Some(kv) = &prev_kv {
                        let prev_revision = Some(kv.mod_revision);
                        events.push(Change { kind: ChangeKind::Delete, revision, kv: kv.clone(), prev_revision });
                        self.overlay.insert(dkey, None);
                    }
                    prev_of_deletes.push(prev_kv);
                }
            }
        }
        Ok(WriteResult { revision, conflict: None, prev: prev_of_deletes })
    }

    /// Records the events of one revision in the history.
    fn record(&mut self, revision: u64, events: &[Change]) -> Result<(), AnyError> {
        if !events.is_empty() {
            self.batch.insert(&history_key(revision), codec::encode_as(codec::FORMAT_V2, events).map_err(io_err)?);
        }
        Ok(())
    }

    /// Drops the history at or below `floor`.
    fn trim_history(&mut self, floor: u64) -> Result<(), AnyError> {
        for key in self.tree.range([HISTORY].as_slice()..history_key(floor.saturating_add(1)).as_slice()).keys() {
            self.batch.remove(key.map_err(io_err)?);
        }
        Ok(())
    }

    /// Commits everything atomically, then returns how the revision index changes.
    fn commit(mut self) -> Result<IndexChanges, AnyError> {
        let mut changes = Vec::with_capacity(self.overlay.len());
        for (key, value) in self.overlay {
            match value {
                Some(v) => {
                    self.batch.insert(key.as_slice(), codec::encode(&v).map_err(io_err)?);
                    changes.push((key, Some(Revisions { create: v.create_revision, modified: v.mod_revision })));
                }
                None => {
                    self.batch.remove(key.as_slice());
                    changes.push((key, None));
                }
            }
        }
        self.tree.apply_batch(self.batch).map_err(io_err)?;
        Ok(changes)
    }
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
        let fail = |e: AnyError| -> StorageError<u64> { StorageIOError::apply(last, e).into() };
        let _cut = s.cut.write().map_err(|_| fail(AnyError::error("lock poisoned")))?;
        let mut index = s.index.lock().map_err(|_| fail(AnyError::error("index lock poisoned")))?;
        let mut batch =
            ApplyBatch { tree: &s.tree, index: &index, overlay: HashMap::new(), batch: sled::Batch::default() };
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
                        entry_result.writes.push(batch.write(ops, revision, &mut events).map_err(fail)?);
                    }
                    batch.record(revision, &events).map_err(fail)?;
                    all_events.extend(events);
                    results.push(entry_result);
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    batch.batch.insert(MEMBERSHIP, codec::encode(&stored).map_err(|e| fail(io_err(e)))?);
                    results.push(EntryResult::default());
                }
            }
        }
        batch.batch.insert(APPLIED, codec::encode(&Some(last)).map_err(|e| fail(io_err(e)))?);
        batch.trim_history(last.index.saturating_sub(s.config.history_revisions)).map_err(fail)?;
        for (key, revisions) in batch.commit().map_err(fail)? {
            match revisions {
                Some(r) => index.insert(key, r),
                None => index.remove(&key),
            };
        }
        drop(index);
        s.applied.store(last.index, Ordering::SeqCst);
        // Watchers that fell behind see `Lagged` and are dropped; apply never waits for them.
        let bytes: usize = all_events.iter().map(|c| c.kv.key.len() + c.kv.value.len()).sum();
        let applied = if bytes > MAX_INLINE_BYTES {
            Applied { revision: last.index, changes: Vec::new(), reset: true }
        } else {
            Applied { revision: last.index, changes: all_events, reset: false }
        };
        let _ = s.events.send(Arc::new(applied));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_written_before_previous_revisions_were_recorded_is_still_read() {
        let kv = |rev: u64, create: u64| KeyValue {
            key: "/kv/a".into(),
            value: b"v".to_vec(),
            create_revision: create,
            mod_revision: rev,
        };
        let old = vec![
            ChangeV1 { kind: ChangeKind::Put, revision: 5, kv: kv(5, 5) },
            ChangeV1 { kind: ChangeKind::Put, revision: 5, kv: kv(5, 2) },
            ChangeV1 { kind: ChangeKind::Delete, revision: 5, kv: kv(4, 2) },
        ];
        let bytes = codec::encode_as(codec::FORMAT_V1, &old).expect("encode");
        let changes = decode_history(&bytes).expect("decode");
        let prev: Vec<Option<u64>> = changes.iter().map(|c| c.prev_revision).collect();
        assert_eq!(prev, [Some(0), None, Some(4)], "created: 0; updated: unknown; deleted: its last revision");
        let new = codec::encode_as(codec::FORMAT_V2, &changes).expect("encode");
        assert_eq!(decode_history(&new).expect("decode"), changes);
    }

    /// Issue 12, defect 7: a snapshot being built and one being installed wrote the same temporary
    /// file, so an older snapshot could replace a newer one (or the two could mix into a file that
    /// keeps the member from starting). Writes are one at a time, and an older one never lands.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = StateMachineStore::open(dir.path(), StateMachineConfig::default()).expect("open");
        let file = |index: u64| SnapshotFile {
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
                last_membership: StoredMembership::default(),
                snapshot_id: format!("s{index}"),
            },
            payload: vec![index as u8],
        };
        sm.shared.write_snapshot_file(&file(10)).expect("the newer one");
        sm.shared.write_snapshot_file(&file(5)).expect("the older one is skipped, not an error");
        let on_disk = sm.shared.read_snapshot_file().expect("read").expect("a file");
        assert_eq!(on_disk.meta.snapshot_id, "s10");
        // Writers on several threads at once leave one whole file, the newest.
        std::thread::scope(|scope| {
            for index in [20u64, 15, 30, 25] {
                let sm = &sm;
                scope.spawn(move || sm.shared.write_snapshot_file(&file(index)).expect("write"));
            }
        });
        let on_disk = sm.shared.read_snapshot_file().expect("a whole file").expect("a file");
        assert_eq!(on_disk.meta.snapshot_id, "s30");
        assert_eq!(on_disk.payload, [30]);
    }
}
