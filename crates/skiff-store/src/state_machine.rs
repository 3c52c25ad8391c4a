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
//! The watch history is part of the replicated state: it is kept for the last revisions within a
//! byte budget ([`crate::history`]), independent of when the Raft log is purged, and it travels in
//! snapshots, so it survives a restart and a snapshot install. Snapshots are written and read piece
//! by piece ([`crate::snapshot`]): building or installing one holds one copy of it in memory.

use std::collections::HashMap;
use std::io::Cursor;
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
use crate::history::{HistoryLimits, HistoryWindow, Trim};
use crate::snapshot::{self, PayloadReader, PayloadWriter, SnapshotFile};
use crate::types::{
    Change, ChangeKind, ChangeV1, Command, Conflict, EntryResult, KeyValue, Member, Op, TypeConfig, WriteResult,
};
use crate::values::{Body, FileRef, ValueFiles, FILE_THRESHOLD};

type StorageResult<T> = Result<T, StorageError<u64>>;

/// Key prefix of objects.
const DATA: u8 = b'd';
/// Key prefix of the watch history.
const HISTORY: u8 = b'h';
// Bookkeeping keys start with `m`.
const APPLIED: &[u8] = b"mapplied";
const MEMBERSHIP: &[u8] = b"mmembership";
/// Every history revision at or below this one has been dropped (by bytes; the revision limit
/// needs no record).
const HISTORY_FLOOR: &[u8] = b"mhistoryfloor";
const SNAPSHOT_FILE: &str = "snapshot.bin";
/// The directory of values kept in files ([`crate::values`]), beside `state`.
const VALUES_DIR: &str = "values";
/// Value files written since the last sweep that start a new one, however few are kept.
const SWEEP_MIN_BYTES: u64 = 64 << 20;

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

/// The revision a history key names.
fn history_revision(key: &[u8]) -> Option<u64> {
    key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

/// The revisions of a stored object, kept in memory for every key so that apply decides
/// compare-and-swap and `create_revision` without reading sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Revisions {
    create: u64,
    modified: u64,
    /// Bytes the object takes in the tree (key and stored value); 0 while only in a call's overlay.
    bytes: u64,
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

/// [`StoredValue`] as format 1 encodes it, borrowed.
#[derive(Serialize)]
struct StoredValueRef<'a> {
    #[serde(with = "serde_bytes")]
    value: &'a [u8],
    create_revision: u64,
    mod_revision: u64,
}

/// An object whose value is in a file (format 3).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredObject {
    body: Body,
    create_revision: u64,
    mod_revision: u64,
}

/// A change of the history whose value may be in a file (format 3).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredChange {
    kind: ChangeKind,
    revision: u64,
    key: String,
    body: Body,
    create_revision: u64,
    mod_revision: u64,
    prev_revision: Option<u64>,
}

/// Value files being created for records: one file per value. An object and the history events
/// of the same key, revision and value share it (a write can put one key twice: each value gets
/// its own file).
struct NewFiles {
    /// `a` for apply, `s<nonce>-` for a snapshot install (each install names its own files).
    origin: String,
    /// The files of each (key, mod_revision) known so far, with what their value is compared by.
    known: HashMap<(String, u64), Vec<(FileRef, Known)>>,
    /// The next slot of each naming revision.
    slots: HashMap<u64, u32>,
    /// Files to write before the records that refer to them are applied.
    pending: Vec<(String, Arc<[u8]>)>,
    /// Whether new files are known by digest (an install) rather than by their bytes (apply).
    by_digest: bool,
}

/// What the value of a known file is compared by.
enum Known {
    /// The bytes of a file new in an apply batch, which holds them until the file is written
    /// anyway: a put's object and its history event share one file at the cost of one
    /// comparison, not two hashes.
    Bytes(Arc<[u8]>),
    /// Its SHA-256: for a file read for a deletion, and for a file new in an install (an install
    /// knows every large value of the snapshot; their bytes would double its memory).
    Digest([u8; 32]),
}

fn digest(value: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, value).as_ref());
    out
}

impl NewFiles {
    /// Files for an apply batch, named `a<entry index>-<slot>`.
    fn for_apply() -> Self {
        Self::new("a".into(), false)
    }

    /// Files for a snapshot install, named `s<nonce>-<revision>-<slot>`: each install names its
    /// own, so no file of an earlier install (or of a crash part way through this one) is
    /// rewritten in place.
    fn for_install() -> Self {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self::new(format!("s{nonce:x}-"), true)
    }

    fn new(origin: String, by_digest: bool) -> Self {
        Self { origin, known: HashMap::new(), slots: HashMap::new(), pending: Vec::new(), by_digest }
    }

    /// The file of a value: the one known for its key, revision and bytes, or a new one named
    /// after `at`. In apply, `at` is the entry being applied: every entry is applied in one call
    /// and again the same way after a crash, so names never collide and a replay writes the same.
    fn file_for(&mut self, at: u64, key: &str, mod_revision: u64, value: &[u8]) -> FileRef {
        let known = self.known.entry((key.to_string(), mod_revision)).or_default();
        let mut sum = None;
        let same = |known: &Known, sum: &mut Option<[u8; 32]>| match known {
            Known::Bytes(bytes) => **bytes == *value,
            Known::Digest(d) => *sum.get_or_insert_with(|| digest(value)) == *d,
        };
        if let Some((file, _)) = known.iter().find(|(f, k)| f.len == value.len() as u64 && same(k, &mut sum)) {
            return file.clone();
        }
        let slot = self.slots.entry(at).or_insert(0);
        let name = format!("{}{at:x}-{slot:x}", self.origin);
        *slot += 1;
        let file = FileRef { name: name.clone(), len: value.len() as u64 };
        let bytes: Arc<[u8]> = Arc::from(value);
        let by = if self.by_digest {
            Known::Digest(sum.unwrap_or_else(|| digest(value)))
        } else {
            Known::Bytes(bytes.clone())
        };
        self.pending.push((name, bytes));
        known.push((file.clone(), by));
        file
    }

    /// Notes the file of a value read from a record (for a deletion), so that records written now
    /// share it. By digest: a copy of its bytes would be one more than the batch holds.
    fn note(&mut self, key: &str, mod_revision: u64, file: FileRef, value: &[u8]) {
        let known = Known::Digest(digest(value));
        self.known.entry((key.to_string(), mod_revision)).or_default().push((file, known));
    }

    /// Writes the pending files (each synced); returns their bytes.
    fn write(&mut self, files: &ValueFiles) -> Result<u64, AnyError> {
        let mut bytes = 0;
        for (name, value) in self.pending.drain(..) {
            bytes += files.write(&name, &value).map_err(io_err)?.len;
        }
        Ok(bytes)
    }

    /// An object record: format 1, or format 3 with its value in a file named after `at`.
    /// Returns the record and its size as format 1 would store it ([`inline_size`]).
    fn object(&mut self, at: u64, key: &str, v: &StoredValue) -> Result<(Vec<u8>, u64), AnyError> {
        let inline =
            StoredValueRef { value: &v.value, create_revision: v.create_revision, mod_revision: v.mod_revision };
        let size = codec::encoded_len(&inline).map_err(io_err)?;
        if v.value.len() <= FILE_THRESHOLD {
            return Ok((codec::encode(&inline).map_err(io_err)?, size));
        }
        let file = self.file_for(at, key, v.mod_revision, &v.value);
        Ok((encode_object(&[], Some(&file), v.create_revision, v.mod_revision)?, size))
    }

    /// A history record: format 2, or format 3 when some values go to files named after `at`.
    /// Returns the record and its size as format 2 would store it ([`inline_size`]).
    fn history(&mut self, at: u64, events: &[Change]) -> Result<(Vec<u8>, u64), AnyError> {
        let size = codec::encoded_len(events).map_err(io_err)?;
        if events.iter().all(|c| c.kv.value.len() <= FILE_THRESHOLD) {
            return Ok((codec::encode_as(codec::FORMAT_V2, events).map_err(io_err)?, size));
        }
        let mut stored = Vec::with_capacity(events.len());
        for c in events {
            let body = if c.kv.value.len() > FILE_THRESHOLD {
                Body::File(self.file_for(at, &c.kv.key, c.kv.mod_revision, &c.kv.value))
            } else {
                Body::Inline(c.kv.value.clone())
            };
            stored.push(StoredChange {
                kind: c.kind,
                revision: c.revision,
                key: c.kv.key.clone(),
                body,
                create_revision: c.kv.create_revision,
                mod_revision: c.kv.mod_revision,
                prev_revision: c.prev_revision,
            });
        }
        Ok((codec::encode_as(codec::FORMAT_V3, &stored).map_err(io_err)?, size))
    }
}

/// The size of a record (object or history) as formats 1 and 2 store it, values inline, whether
/// its values are in files or not: the live state's and the history's sizes are then the same on
/// every member, whichever names its files how.
fn inline_size(key: &[u8], bytes: &[u8]) -> Result<u64, AnyError> {
    if codec::format_of(bytes).map_err(io_err)? != codec::FORMAT_V3 {
        return Ok(bytes.len() as u64);
    }
    let mut in_files = 0;
    let mut body = |b: Body| match b {
        Body::Inline(v) => v,
        Body::File(f) => {
            in_files += f.len;
            Vec::new()
        }
    };
    let size = match key.first() {
        Some(&DATA) => {
            let o = decode_object(bytes)?;
            let value = body(o.body);
            let inline =
                StoredValueRef { value: &value, create_revision: o.create_revision, mod_revision: o.mod_revision };
            codec::encoded_len(&inline).map_err(io_err)?
        }
        _ => {
            let changes: Vec<Change> = decode_changes(bytes)?
                .into_iter()
                .map(|c| Change {
                    kind: c.kind,
                    revision: c.revision,
                    kv: KeyValue {
                        key: c.key,
                        value: body(c.body),
                        create_revision: c.create_revision,
                        mod_revision: c.mod_revision,
                    },
                    prev_revision: c.prev_revision,
                })
                .collect();
            codec::encoded_len(&changes).map_err(io_err)?
        }
    };
    Ok(size + in_files)
}

/// Refuses a snapshot payload with a record in format 3: snapshots carry values, and a file name
/// from another member means nothing here. Checked before anything is replaced.
fn names_no_value_file(payload: &[u8]) -> Result<(), AnyError> {
    for entry in PayloadReader::new(payload).map_err(io_err)? {
        let (key, value) = entry.map_err(io_err)?;
        let record = matches!(key.first(), Some(&DATA) | Some(&HISTORY));
        if record && codec::format_of(value).map_err(io_err)? == codec::FORMAT_V3 {
            let key = String::from_utf8_lossy(key.get(1..).unwrap_or_default());
            return Err(AnyError::error(format!(
                "the snapshot's record {key:?} names a value file instead of carrying its value"
            )));
        }
    }
    Ok(())
}

/// Reads an object record, without reading a file it refers to.
fn decode_object(bytes: &[u8]) -> Result<StoredObject, AnyError> {
    if codec::format_of(bytes).map_err(io_err)? == codec::FORMAT_V3 {
        return codec::decode(bytes).map_err(io_err);
    }
    let v = decode_value(bytes)?;
    Ok(StoredObject { body: Body::Inline(v.value), create_revision: v.create_revision, mod_revision: v.mod_revision })
}

/// Encodes an object: format 1 with its value inline, format 3 with a file.
fn encode_object(
    value: &[u8],
    file: Option<&FileRef>,
    create_revision: u64,
    mod_revision: u64,
) -> Result<Vec<u8>, AnyError> {
    match file {
        None => codec::encode(&StoredValueRef { value, create_revision, mod_revision }).map_err(io_err),
        Some(f) => {
            let object = StoredObject { body: Body::File(f.clone()), create_revision, mod_revision };
            codec::encode_as(codec::FORMAT_V3, &object).map_err(io_err)
        }
    }
}

/// Reads the changes of one history record, without reading the files they refer to.
fn decode_changes(bytes: &[u8]) -> Result<Vec<StoredChange>, AnyError> {
    if codec::format_of(bytes).map_err(io_err)? == codec::FORMAT_V3 {
        return codec::decode(bytes).map_err(io_err);
    }
    Ok(decode_history(bytes)?
        .into_iter()
        .map(|c| StoredChange {
            kind: c.kind,
            revision: c.revision,
            key: c.kv.key,
            body: Body::Inline(c.kv.value),
            create_revision: c.kv.create_revision,
            mod_revision: c.kv.mod_revision,
            prev_revision: c.prev_revision,
        })
        .collect())
}

/// The names of the files a record (object or history) refers to, and their bytes.
fn files_of(key: &[u8], bytes: &[u8]) -> Result<Vec<FileRef>, AnyError> {
    if codec::format_of(bytes).map_err(io_err)? != codec::FORMAT_V3 {
        return Ok(Vec::new());
    }
    let bodies = match key.first() {
        Some(&DATA) => vec![decode_object(bytes)?.body],
        Some(&HISTORY) => decode_changes(bytes)?.into_iter().map(|c| c.body).collect(),
        _ => Vec::new(),
    };
    Ok(bodies.into_iter().filter_map(|b| if let Body::File(f) = b { Some(f) } else { None }).collect())
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

/// A consistent cut: the applied log id, the membership and the encoded snapshot payload.
type Cut = (Option<LogId<u64>>, StoredMembership<u64, Member>, Vec<u8>);

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct StateMachineConfig {
    /// How much watch history to keep.
    pub history: HistoryLimits,
    /// How many `apply` batches a watcher may fall behind before it is dropped.
    pub watch_buffer: usize,
    /// sled page cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        Self { history: HistoryLimits::default(), watch_buffer: 4096, cache_bytes: 128 << 20 }
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
    /// Bytes of all objects (the sum over `index`), kept with it.
    live_bytes: AtomicU64,
    /// The history's revisions and sizes; written with `index`.
    history: std::sync::Mutex<HistoryWindow>,
    /// Every history revision at or below it may be gone. Raised before apply removes them, so a
    /// reader that checks it after reading knows whether it read everything.
    history_floor: AtomicU64,
    events: broadcast::Sender<Arc<Applied>>,
    /// Set when the member shuts down: every watch ends with `Closed` so that its client moves to
    /// another member (the broadcast alone stays open while any handle of this store lives).
    closing: tokio::sync::watch::Sender<bool>,
    config: StateMachineConfig,
    snapshot_seq: AtomicU64,
    /// Size of the snapshot file's payload, once known.
    snapshot_bytes: AtomicU64,
    /// Held while the snapshot file is written: a snapshot being built and one being installed
    /// write it one at a time. Holds the last log id of the file on disk, once known.
    snapshot_file: std::sync::Mutex<Option<Option<LogId<u64>>>>,
    /// Values too large for sled's tree.
    files: ValueFiles,
    /// Bytes of value files written since the last sweep, and kept by it.
    files_written: AtomicU64,
    files_kept: AtomicU64,
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
        let files = ValueFiles::open(&dir.join(VALUES_DIR)).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let shared = Arc::new(Shared {
            db,
            tree,
            dir: dir.to_path_buf(),
            cut: RwLock::new(()),
            applied: AtomicU64::new(0),
            index: std::sync::Mutex::new(HashMap::new()),
            live_bytes: AtomicU64::new(0),
            history: std::sync::Mutex::new(HistoryWindow::default()),
            history_floor: AtomicU64::new(0),
            events,
            closing: tokio::sync::watch::Sender::new(false),
            config,
            snapshot_seq: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(std::fs::metadata(dir.join(SNAPSHOT_FILE)).map(|m| m.len()).unwrap_or(0)),
            snapshot_file: std::sync::Mutex::new(None),
            files,
            files_written: AtomicU64::new(0),
            files_kept: AtomicU64::new(0),
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
                s.load_payload(&file.payload)?;
            }
        }
        let applied = s.read_applied()?;
        s.applied.store(applied.map(|l| l.index).unwrap_or(0), Ordering::SeqCst);
        s.rebuild_index()?;
        s.rebuild_history()?;
        // Files of writes a crash lost, or of a state a snapshot replaced.
        if let Err(e) = s.sweep_files() {
            tracing::warn!(error = %e, "could not remove unused value files at start-up");
        }
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
        self.history_floor.load(Ordering::SeqCst)
    }

    /// Bytes the watch history holds, and how many revisions.
    pub fn history_size(&self) -> (u64, usize) {
        match self.history.lock() {
            Ok(h) => (h.bytes(), h.len()),
            Err(_) => (0, 0),
        }
    }

    /// Size of the current snapshot, in bytes (0 before the first).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::SeqCst)
    }

    /// Bytes of all objects (keys and stored values).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::SeqCst)
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
        let dkey = data_key(key);
        let Some(bytes) = self.tree.get(&dkey).map_err(io_err)? else {
            return Ok(None);
        };
        let mut bytes = bytes;
        // A sweep removes a file only once no record names it: if the file went between reading
        // the record and the file, the object was rewritten meanwhile; read the record again.
        for _ in 0..8 {
            let object = decode_object(&bytes)?;
            if let Some(value) = self.value(object.body)? {
                let (create_revision, mod_revision) = (object.create_revision, object.mod_revision);
                return Ok(Some(KeyValue { key: key.to_string(), value, create_revision, mod_revision }));
            }
            match self.tree.get(&dkey).map_err(io_err)? {
                Some(again) => bytes = again,
                None => return Ok(None),
            }
        }
        Err(AnyError::error(format!("the value file of {key} was replaced 8 times while it was read")))
    }

    /// An object record with its value, read from its file if it has one. For callers that hold
    /// `cut` (no sweep runs): a file its record names is there.
    fn object(&self, bytes: &[u8]) -> Result<StoredValue, AnyError> {
        let object = decode_object(bytes)?;
        let Some(value) = self.value(object.body)? else {
            return Err(AnyError::error("a value file named by a record is missing"));
        };
        Ok(StoredValue { value, create_revision: object.create_revision, mod_revision: object.mod_revision })
    }

    /// A value, read from its file if it has one; `None` if the file is gone (a sweep removed it
    /// after the record naming it was read: the record is gone too).
    fn value(&self, body: Body) -> Result<Option<Vec<u8>>, AnyError> {
        match body {
            Body::Inline(value) => Ok(Some(value)),
            Body::File(file) => match self.files.read(&file) {
                Ok(value) => Ok(Some(value)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(e)),
            },
        }
    }

    /// The changes of one history record under `prefix`, with their values; `None` if a file of
    /// theirs is gone (the record was dropped from the history and swept after it was read).
    fn changes(&self, bytes: &[u8], prefix: &str) -> Result<Option<Vec<Change>>, AnyError> {
        if codec::format_of(bytes).map_err(io_err)? != codec::FORMAT_V3 {
            let mut changes = decode_history(bytes)?;
            changes.retain(|c| c.kv.key.starts_with(prefix));
            return Ok(Some(changes));
        }
        let mut out = Vec::new();
        for c in decode_changes(bytes)? {
            if !c.key.starts_with(prefix) {
                continue;
            }
            let Some(value) = self.value(c.body)? else {
                return Ok(None);
            };
            let kv = KeyValue { key: c.key, value, create_revision: c.create_revision, mod_revision: c.mod_revision };
            out.push(Change { kind: c.kind, revision: c.revision, kv, prev_revision: c.prev_revision });
        }
        Ok(Some(out))
    }

    /// Removes the value files no record refers to. sled is flushed first, so that no state a
    /// crash could fall back to refers to them either. The caller holds `cut` (apply and install,
    /// which write records, cannot run).
    fn sweep_files(&self) -> Result<(), AnyError> {
        self.db.flush().map_err(io_err)?;
        let mut keep = std::collections::HashSet::new();
        for prefix in [DATA, HISTORY] {
            for item in self.tree.scan_prefix([prefix]) {
                let (k, v) = item.map_err(io_err)?;
                keep.extend(files_of(&k, &v)?.into_iter().map(|f| f.name));
            }
        }
        let kept = self.files.sweep(&keep).map_err(io_err)?;
        self.files_kept.store(kept, Ordering::SeqCst);
        self.files_written.store(0, Ordering::SeqCst);
        Ok(())
    }

    /// Counts `written` bytes of new value files and sweeps once the files (as of the last sweep,
    /// plus those written since) pass [`SWEEP_MIN_BYTES`] plus twice what the records can name:
    /// `referenced`, the live state and the history, each counted with its values, is at least
    /// what the files the records name hold. So writes in a loop sweep about once per
    /// `SWEEP_MIN_BYTES` plus live and history written (each scan paid for by the writes before
    /// it), and deletes sweep as soon as what they let go counts. A sweep that fails is logged and
    /// tried again at the next apply: the batch is committed already.
    fn count_files_written(&self, written: u64, referenced: u64) {
        self.files_written.fetch_add(written, Ordering::SeqCst);
        if self.file_bytes() <= SWEEP_MIN_BYTES + 2 * referenced {
            return;
        }
        if let Err(e) = self.sweep_files() {
            tracing::warn!(error = %e, dir = %self.dir.join(VALUES_DIR).display(), "could not remove unused value files");
        }
    }

    /// Bytes of the value files, as of the last sweep plus those written since.
    pub fn file_bytes(&self) -> u64 {
        self.files_kept.load(Ordering::SeqCst) + self.files_written.load(Ordering::SeqCst)
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
            out.push(self.object(&bytes)?.into_kv(key));
        }
        Ok((out, revision))
    }

    /// One page of history: the changes under `prefix` with a revision in `(after, upto]`, in
    /// order, read until they hold `max_bytes` of keys and values (whole revisions, at least one),
    /// with the last revision read. Everything in `(after, last]` has been read; check
    /// [`Shared::history_floor`] afterwards to know none of it had been dropped.
    pub fn history_page(
        &self,
        after: u64,
        upto: u64,
        prefix: &str,
        max_bytes: usize,
    ) -> Result<(Vec<Change>, u64), AnyError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        if after >= upto {
            return Ok((out, upto));
        }
        let range = history_key(after + 1)..=history_key(upto);
        for item in self.tree.range(range) {
            let (key, value) = item.map_err(io_err)?;
            let revision = history_revision(&key).unwrap_or(upto);
            let Some(changes) = self.changes(&value, prefix)? else {
                // Dropped from the history (and its files swept) since it was read: the floor is
                // at or above it now, so the caller's check of the floor tells the watch.
                return Ok((out, revision.saturating_sub(1).max(after)));
            };
            for change in changes {
                bytes += change.kv.key.len() + change.kv.value.len();
                out.push(change);
            }
            if bytes >= max_bytes && revision < upto {
                return Ok((out, revision));
            }
        }
        Ok((out, upto))
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
        // No changes: the revision left the history while it was read.
        let changes = self.changes(&bytes, key)?.unwrap_or_default();
        Ok(changes.into_iter().find(|c| c.kv.key == key && c.kind == ChangeKind::Put).map(|c| c.kv))
    }

    /// Rebuilds the revision index (and the live state's size) from the objects in sled.
    fn rebuild_index(&self) -> StorageResult<()> {
        let mut index = RevisionIndex::new();
        let mut live = 0;
        for item in self.tree.scan_prefix([DATA]) {
            let (k, v) = item.map_err(|e| StorageIOError::read_state_machine(&e))?;
            let bytes = k.len() as u64 + inline_size(&k, &v).map_err(StorageIOError::read_state_machine)?;
            let v = decode_object(&v).map_err(StorageIOError::read_state_machine)?;
            index.insert(k.to_vec(), Revisions { create: v.create_revision, modified: v.mod_revision, bytes });
            live += bytes;
        }
        let mut current = self
            .index
            .lock()
            .map_err(|_| StorageIOError::read_state_machine(AnyError::error("index lock poisoned")))?;
        *current = index;
        self.live_bytes.store(live, Ordering::SeqCst);
        Ok(())
    }

    /// Rebuilds the history window (revisions, sizes, floor) from sled.
    fn rebuild_history(&self) -> StorageResult<()> {
        let rerr = |e: &dyn std::error::Error| StorageIOError::read_state_machine(AnyError::error(e.to_string()));
        let floor = match self.tree.get(HISTORY_FLOOR).map_err(|e| rerr(&e))? {
            None => 0,
            Some(b) => codec::decode(&b).map_err(|e| rerr(&e))?,
        };
        let mut sizes = Vec::new();
        for item in self.tree.scan_prefix([HISTORY]) {
            let (k, v) = item.map_err(|e| rerr(&e))?;
            let Some(revision) = history_revision(&k) else {
                continue;
            };
            let size = inline_size(&k, &v).map_err(StorageIOError::read_state_machine)?;
            sizes.push((revision, k.len() as u64 + size));
        }
        let window = HistoryWindow::new(sizes, floor);
        let by_revision = self.applied_revision().saturating_sub(self.config.history.revisions);
        self.history_floor.store(window.floor().max(by_revision), Ordering::SeqCst);
        *self
            .history
            .lock()
            .map_err(|_| StorageIOError::read_state_machine(AnyError::error("history lock poisoned")))? = window;
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

    /// The snapshot file's meta and payload, if there is one.
    fn read_snapshot_file(&self) -> StorageResult<Option<SnapshotFile>> {
        snapshot::read_file(&self.snapshot_path()).map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }

    /// Writes the snapshot file atomically (temp file, fsync, rename, fsync of the directory), one
    /// writer at a time, and never over a newer one: a snapshot built from a cut taken before an
    /// install finished is older than the installed one and is not written.
    fn write_snapshot_file(&self, meta: &SnapshotMeta<u64, Member>, payload: &[u8]) -> StorageResult<()> {
        let sig = Some(meta.signature());
        let mut on_disk = self
            .snapshot_file
            .lock()
            .map_err(|_| StorageIOError::write_snapshot(sig.clone(), AnyError::error("lock poisoned")))?;
        let current = match *on_disk {
            Some(last) => last,
            None => self.read_snapshot_file()?.and_then(|file| file.meta.last_log_id),
        };
        if current > meta.last_log_id {
            tracing::info!(snapshot = %meta.snapshot_id, ?current, "not written: the snapshot on disk is newer");
            *on_disk = Some(current);
            return Ok(());
        }
        let tmp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            snapshot::write_file(&tmp, meta, payload)?;
            std::fs::rename(&tmp, self.snapshot_path())?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        *on_disk = Some(meta.last_log_id);
        self.snapshot_bytes.store(payload.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    /// Takes a consistent cut of the state machine, encoded as a snapshot payload: the applied
    /// log id, the membership, and every object and history entry (with the history's floor).
    fn cut_payload(&self) -> StorageResult<Cut> {
        let rerr = |e: &dyn std::error::Error| StorageIOError::read_state_machine(AnyError::error(e.to_string()));
        let _cut = self.cut.read().map_err(|_| StorageIOError::read_state_machine(AnyError::error("lock poisoned")))?;
        let (applied, membership) = (self.read_applied()?, self.read_membership()?);
        let mut payload = PayloadWriter::new(&applied, &membership).map_err(|e| rerr(&e))?;
        for prefix in [DATA, HISTORY] {
            for item in self.tree.scan_prefix([prefix]) {
                let (k, v) = item.map_err(|e| rerr(&e))?;
                if codec::format_of(&v).map_err(|e| rerr(&e))? == codec::FORMAT_V3 {
                    // A snapshot carries values, never the names of this member's files.
                    let inline = self.inline_record(&k, &v).map_err(StorageIOError::read_state_machine)?;
                    payload.push(&k, &inline);
                } else {
                    payload.push(&k, &v);
                }
            }
        }
        if let Some(floor) = self.tree.get(HISTORY_FLOOR).map_err(|e| rerr(&e))? {
            payload.push(HISTORY_FLOOR, &floor);
        }
        Ok((applied, membership, payload.finish()))
    }

    /// A record that refers to files, with the values in their place (formats 1 and 2).
    fn inline_record(&self, key: &[u8], bytes: &[u8]) -> Result<Vec<u8>, AnyError> {
        if key.first() == Some(&DATA) {
            let v = self.object(bytes)?;
            return encode_object(&v.value, None, v.create_revision, v.mod_revision);
        }
        // The caller holds `cut`: no sweep runs, every file a record names is there.
        let Some(changes) = self.changes(bytes, "")? else {
            return Err(AnyError::error("a value file named by a history record is missing"));
        };
        codec::encode_as(codec::FORMAT_V2, &changes).map_err(io_err)
    }

    /// A snapshot record as this member keeps it: `None` to keep it as it is, or the record with
    /// its large values moved to files.
    fn load_record(new_files: &mut NewFiles, key: &[u8], bytes: &[u8]) -> Result<Option<Vec<u8>>, AnyError> {
        if codec::format_of(bytes).map_err(io_err)? == codec::FORMAT_V3 {
            return Err(AnyError::error("a snapshot record names a value file: snapshots carry values"));
        }
        match key.first() {
            Some(&DATA) => {
                let v = decode_value(bytes)?;
                if v.value.len() <= FILE_THRESHOLD {
                    return Ok(None);
                }
                Ok(Some(new_files.object(v.mod_revision, &String::from_utf8_lossy(&key[1..]), &v)?.0))
            }
            Some(&HISTORY) => {
                let events = decode_history(bytes)?;
                if events.iter().all(|c| c.kv.value.len() <= FILE_THRESHOLD) {
                    return Ok(None);
                }
                Ok(Some(new_files.history(history_revision(key).unwrap_or(0), &events)?.0))
            }
            _ => Ok(None),
        }
    }

    /// Replaces the whole state machine with the snapshot `payload`. The entries go to sled in
    /// batches of a few MiB (one batch would copy the whole snapshot again), the applied log id
    /// last: a crash part way leaves the applied log id behind the snapshot file's, and `recover`
    /// installs the file again.
    fn load_payload(&self, payload: &[u8]) -> StorageResult<()> {
        const BATCH_BYTES: usize = 4 << 20;
        let werr = |e: &dyn std::error::Error| StorageIOError::write_state_machine(AnyError::error(e.to_string()));
        snapshot::validate(payload).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let reader = PayloadReader::new(payload).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let (applied, membership) = (reader.applied, reader.membership.clone());
        let _cut =
            self.cut.write().map_err(|_| StorageIOError::write_state_machine(AnyError::error("lock poisoned")))?;
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            batch.remove(key.map_err(|e| werr(&e))?);
        }
        self.tree.apply_batch(batch).map_err(|e| werr(&e))?;
        let mut batch = sled::Batch::default();
        let mut batched = 0;
        let mut new_files = NewFiles::for_install();
        for entry in reader {
            let (k, v) = entry.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
            if matches!(k.first(), Some(&DATA) | Some(&HISTORY)) || k == HISTORY_FLOOR {
                // Large values go to files here as they do on apply.
                let record = Self::load_record(&mut new_files, k, v).map_err(StorageIOError::write_state_machine)?;
                new_files.write(&self.files).map_err(StorageIOError::write_state_machine)?;
                batched += k.len() + record.as_ref().map_or(v.len(), |r| r.len());
                batch.insert(k, record.unwrap_or_else(|| v.to_vec()));
            }
            if batched >= BATCH_BYTES {
                self.tree.apply_batch(std::mem::take(&mut batch)).map_err(|e| werr(&e))?;
                batched = 0;
            }
        }
        self.files.sync_dir().map_err(|e| werr(&e))?;
        batch.insert(MEMBERSHIP, codec::encode(&membership).map_err(|e| werr(&e))?);
        batch.insert(APPLIED, codec::encode(&applied).map_err(|e| werr(&e))?);
        self.tree.apply_batch(batch).map_err(|e| werr(&e))?;
        let revision = applied.map(|l| l.index).unwrap_or(0);
        self.applied.store(revision, Ordering::SeqCst);
        self.rebuild_index()?;
        self.rebuild_history()?;
        // Flushes sled, then removes the files of the state replaced.
        if let Err(e) = self.sweep_files() {
            tracing::warn!(error = %e, "could not remove the value files of the state a snapshot replaced");
        }
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
    /// Value files the call's records refer to, new or read.
    files: &'a ValueFiles,
    new_files: NewFiles,
}

impl ApplyBatch<'_> {
    /// The revisions of an object, if it exists: from this call's writes, else from the index.
    fn revisions(&self, key: &[u8]) -> Option<Revisions> {
        match self.overlay.get(key) {
            Some(v) => v.as_ref().map(|v| Revisions { create: v.create_revision, modified: v.mod_revision, bytes: 0 }),
            None => self.index.get(key).copied(),
        }
    }

    /// The whole stored object (only deletes need it: their event carries the last state).
    fn read(&mut self, key: &[u8]) -> Result<Option<StoredValue>, AnyError> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(v.clone());
        }
        let Some(bytes) = self.tree.get(key).map_err(io_err)? else {
            return Ok(None);
        };
        let object = decode_object(&bytes)?;
        let value = match object.body {
            Body::Inline(value) => value,
            Body::File(file) => {
                let value = self.files.read(&file).map_err(io_err)?;
                // The deletion's history event refers to the same file.
                self.new_files.note(&String::from_utf8_lossy(&key[1..]), object.mod_revision, file, &value);
                value
            }
        };
        Ok(Some(StoredValue { value, create_revision: object.create_revision, mod_revision: object.mod_revision }))
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

    /// Records the events of one revision in the history; returns the bytes it takes.
    fn record(&mut self, revision: u64, events: &[Change]) -> Result<Option<(u64, u64)>, AnyError> {
        if events.is_empty() {
            return Ok(None);
        }
        let key = history_key(revision);
        let (value, size) = self.new_files.history(revision, events)?;
        let bytes = key.len() as u64 + size;
        self.batch.insert(&key, value);
        Ok(Some((revision, bytes)))
    }

    /// Puts the objects into the batch; returns the batch, how the revision index changes and the
    /// value files to write before the batch is applied.
    fn finish(mut self) -> Result<(sled::Batch, IndexChanges, NewFiles), AnyError> {
        let mut changes = Vec::with_capacity(self.overlay.len());
        for (key, value) in self.overlay {
            match value {
                Some(v) => {
                    let at = v.mod_revision;
                    let (stored, size) = self.new_files.object(at, &String::from_utf8_lossy(&key[1..]), &v)?;
                    let bytes = key.len() as u64 + size;
                    self.batch.insert(key.as_slice(), stored);
                    changes.push((key, Some(Revisions { create: v.create_revision, modified: v.mod_revision, bytes })));
                }
                None => {
                    self.batch.remove(key.as_slice());
                    changes.push((key, None));
                }
            }
        }
        Ok((self.batch, changes, self.new_files))
    }
}

/// The live state's size once `changes` replace what `index` holds for their keys.
fn live_bytes_after(live: u64, index: &RevisionIndex, changes: &IndexChanges) -> u64 {
    changes.iter().fold(live, |live, (key, new)| {
        let old = index.get(key).map(|r| r.bytes).unwrap_or(0);
        live.saturating_sub(old) + new.map(|r| r.bytes).unwrap_or(0)
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let shared = self.shared.clone();
        // Iterating sled is blocking work: keep it off the async workers.
        let built = tokio::task::spawn_blocking(move || -> StorageResult<(SnapshotMeta<u64, Member>, Vec<u8>)> {
            let (applied, membership, payload) = shared.cut_payload()?;
            let seq = shared.snapshot_seq.fetch_add(1, Ordering::SeqCst);
            let snapshot_id = match applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, seq),
                None => format!("none-{seq}"),
            };
            let meta = SnapshotMeta { last_log_id: applied, last_membership: membership, snapshot_id };
            shared.write_snapshot_file(&meta, &payload)?;
            Ok((meta, payload))
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
        let mut batch = ApplyBatch {
            tree: &s.tree,
            index: &index,
            overlay: HashMap::new(),
            batch: sled::Batch::default(),
            files: &s.files,
            new_files: NewFiles::for_apply(),
        };
        let mut results = Vec::with_capacity(entries.len());
        let mut all_events = Vec::new();
        let mut recorded = Vec::new();
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
                    recorded.extend(batch.record(revision, &events).map_err(fail)?);
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
        let (mut sled_batch, changes, mut new_files) = batch.finish().map_err(fail)?;
        // The files first, synced: sled never refers to a file a crash lost.
        let written = new_files.write(&s.files).map_err(fail)?;
        drop(new_files);
        if written > 0 {
            s.files.sync_dir().map_err(|e| fail(io_err(e)))?;
        }
        let live = live_bytes_after(s.live_bytes.load(Ordering::SeqCst), &index, &changes);
        let mut history = s.history.lock().map_err(|_| fail(AnyError::error("history lock poisoned")))?;
        let trim: Trim = history.plan(&recorded, last.index, live, s.config.history);
        for &revision in &trim.removed {
            sled_batch.remove(&history_key(revision));
        }
        if trim.floor > history.floor() {
            sled_batch.insert(HISTORY_FLOOR, codec::encode(&trim.floor).map_err(|e| fail(io_err(e)))?);
        }
        // Raised before the history goes, so that a reader never misses a dropped revision.
        s.history_floor.fetch_max(trim.floor, Ordering::SeqCst);
        s.tree.apply_batch(sled_batch).map_err(|e| fail(io_err(e)))?;
        history.commit(&recorded, &trim);
        let referenced = live + history.bytes();
        drop(history);
        for (key, revisions) in changes {
            match revisions {
                Some(r) => index.insert(key, r),
                None => index.remove(&key),
            };
        }
        s.live_bytes.store(live, Ordering::SeqCst);
        drop(index);
        s.applied.store(last.index, Ordering::SeqCst);
        s.count_files_written(written, referenced);
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
        let payload = snapshot.into_inner();
        let sig = Some(meta.signature());
        let shared = self.shared.clone();
        let meta_owned = meta.clone();
        tokio::task::spawn_blocking(move || -> StorageResult<()> {
            // Whole and readable before anything is replaced: a broken snapshot changes nothing.
            snapshot::validate(&payload)
                .map_err(|e| StorageIOError::read_snapshot(Some(meta_owned.signature()), &e))?;
            names_no_value_file(&payload)
                .map_err(|e| StorageIOError::read_snapshot(Some(meta_owned.signature()), &e))?;
            // The file first: if the install below is interrupted, `recover` redoes it from the file.
            shared.write_snapshot_file(&meta_owned, &payload)?;
            shared.load_payload(&payload)
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

    /// Found in review: deleting a large value stored inline (by a Skiff before value files) named
    /// the deletion's file after the value's revision, so two values of one old entry, deleted in
    /// two apply calls, were written to the same file and the first deletion's event read the
    /// second's value. Files are named after the entry being applied.
    #[tokio::test]
    async fn deleting_large_values_stored_inline_by_an_older_skiff_keeps_each_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = StateMachineStore::open(dir.path(), StateMachineConfig::default()).expect("open");
        let at = |index: u64| LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        // As an older Skiff stored them: one entry (revision 1) wrote two large values inline.
        let (x, y) = (vec![7u8; 40 << 10], vec![8u8; 40 << 10]);
        for (key, value) in [("/kv/x", &x), ("/kv/y", &y)] {
            let record = encode_object(value, None, 1, 1).expect("encode");
            sm.shared.tree.insert(data_key(key), record).expect("insert");
        }
        sm.shared.tree.insert(APPLIED, codec::encode(&Some(at(1))).expect("encode")).expect("insert");
        sm.shared.applied.store(1, Ordering::SeqCst);
        sm.shared.rebuild_index().expect("index");
        let delete = |index: u64, key: &str| Entry {
            log_id: at(index),
            payload: EntryPayload::Normal(Command::Writes(vec![vec![Op::Delete { key: key.into(), expect: None }]])),
        };
        sm.apply(vec![delete(2, "/kv/x")]).await.expect("delete x");
        sm.apply(vec![delete(3, "/kv/y")]).await.expect("delete y");
        let (events, _) = sm.shared.history_page(1, 3, "", usize::MAX).expect("history");
        let values: Vec<&Vec<u8>> = events.iter().map(|c| &c.kv.value).collect();
        assert_eq!(values, [&x, &y]);
    }

    /// A snapshot naming value files (another member's) is refused before anything is replaced.
    #[tokio::test]
    async fn a_snapshot_that_names_value_files_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = StateMachineStore::open(dir.path(), StateMachineConfig::default()).expect("open");
        let at = LogId::new(openraft::CommittedLeaderId::new(1, 1), 1);
        let put = Op::Put { key: "/kv/kept".into(), value: b"v".to_vec(), expect: None };
        let entry = Entry { log_id: at, payload: EntryPayload::Normal(Command::Writes(vec![vec![put]])) };
        sm.apply(vec![entry]).await.expect("apply");
        let forged_at = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
        let mut payload = PayloadWriter::new(&forged_at, &StoredMembership::default()).expect("writer");
        let file = FileRef { name: "a9-0".into(), len: 1 << 20 };
        payload.push(&data_key("/kv/forged"), &encode_object(&[], Some(&file), 9, 9).expect("encode"));
        let meta = SnapshotMeta {
            last_log_id: forged_at,
            last_membership: StoredMembership::default(),
            snapshot_id: "f".into(),
        };
        let err = sm.install_snapshot(&meta, Box::new(Cursor::new(payload.finish()))).await.expect_err("refused");
        assert!(err.to_string().contains("/kv/forged"), "{err}");
        assert!(sm.shared.get("/kv/kept").expect("get").is_some(), "the state is kept");
        assert!(sm.shared.read_snapshot_file().expect("read").is_none(), "no snapshot file written");
    }

    /// Issue 12, defect 7: a snapshot being built and one being installed wrote the same temporary
    /// file, so an older snapshot could replace a newer one (or the two could mix into a file that
    /// keeps the member from starting). Writes are one at a time, and an older one never lands.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = StateMachineStore::open(dir.path(), StateMachineConfig::default()).expect("open");
        let meta = |index: u64| SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        };
        sm.shared.write_snapshot_file(&meta(10), &[10]).expect("the newer one");
        sm.shared.write_snapshot_file(&meta(5), &[5]).expect("the older one is skipped, not an error");
        let on_disk = sm.shared.read_snapshot_file().expect("read").expect("a file");
        assert_eq!(on_disk.meta.snapshot_id, "s10");
        // Writers on several threads at once leave one whole file, the newest.
        std::thread::scope(|scope| {
            for index in [20u64, 15, 30, 25] {
                let sm = &sm;
                scope.spawn(move || sm.shared.write_snapshot_file(&meta(index), &[index as u8]).expect("write"));
            }
        });
        let on_disk = sm.shared.read_snapshot_file().expect("a whole file").expect("a file");
        assert_eq!(on_disk.meta.snapshot_id, "s30");
        assert_eq!(on_disk.payload, [30]);
    }
}
