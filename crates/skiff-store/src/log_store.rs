//! The Raft log and the vote, in their own sled database (`<data_dir>/raft-log`).
//!
//! The log has a database of its own so that its flushes only carry log writes: sled's `flush`
//! covers a whole database, and the state machine's writes need no flush of their own (the log can
//! replay them).
//!
//! Durability rules (see `shared/notes/openraft-sled.md` and docs/architecture.md):
//! - the vote is on stable storage before `save_vote` returns;
//! - an append is reported to openraft only once it is on stable storage, one sync per batch;
//! - log keys are big-endian indexes, so sled's byte order is log order past 255 entries.
//!
//! "On stable storage" is more than sled's flush: on Linux sled ends a flush with
//! `sync_file_range`, which writes the pages but neither flushes the disk's write cache nor the
//! file's size, so a power cut can still lose them. After every flush [`Durability::sync`] also
//! `fdatasync`s sled's data file and `fsync`s every new blob file (sled keeps a page larger than a
//! quarter of a segment, e.g. a log leaf holding several large entries, in a file of its own under
//! `blobs/`, written without any sync) and the `blobs/` directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};

use crate::codec;
use crate::types::TypeConfig;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

type StorageResult<T> = Result<T, StorageError<u64>>;

/// The Raft log of one member. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The log's own database, flushed and synced on every append batch and vote.
    db: sled::Db,
    /// Entries keyed by big-endian log index.
    log: sled::Tree,
    /// Vote, committed log id and last purged log id.
    meta: sled::Tree,
    /// Makes what sled flushed survive a power cut.
    durability: Durability,
    /// The stored size of every entry in the log, by index: how much log there is
    /// ([`crate::log_budget`]).
    sizes: std::sync::Mutex<std::collections::BTreeMap<u64, u64>>,
}

/// The files of a sled database that must be synced after sled's own flush, which on Linux ends
/// in `sync_file_range` only.
struct Durability {
    /// sled's data file (`<dir>/db`), opened here only to `fdatasync` it.
    data: File,
    /// sled's blob directory (`<dir>/blobs`).
    blobs: PathBuf,
    /// Blob files already synced (the names sled gives them are never reused for other content).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Durability {
    /// Opens the data file of the sled database in `dir` and makes its directory entries durable.
    fn open(dir: &Path) -> io::Result<Self> {
        let data = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        Ok(Self { data, blobs: dir.join("blobs"), synced_blobs: Mutex::new(HashSet::new()) })
    }

    /// Syncs every blob file written since the last call (then their directory), then the data
    /// file: what sled has flushed is then on stable storage. Blocking.
    fn sync(&self) -> io::Result<()> {
        let mut synced = self.synced_blobs.lock().map_err(|_| io::Error::other("blob set lock poisoned"))?;
        let mut present = HashSet::new();
        let mut new_blob = false;
        match std::fs::read_dir(&self.blobs) {
            Ok(entries) => {
                for entry in entries {
                    let name = entry?.file_name();
                    if !synced.contains(&name) {
                        match File::open(self.blobs.join(&name)) {
                            Ok(f) => f.sync_data()?,
                            // sled removed it meanwhile (a rewritten page): nothing to keep.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        }
                        new_blob = true;
                    }
                    present.insert(name);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if new_blob {
            sync_dir(&self.blobs)?;
        }
        *synced = present;
        self.data.sync_data()
    }
}

/// `fsync` of a directory: the entries (file names) in it survive a power cut.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &std::path::Path, cache_bytes: u64) -> Result<Self, sled::Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .segment_size(8 << 20)
            .open()?;
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        let durability = Durability::open(path)?;
        let mut sizes = std::collections::BTreeMap::new();
        for item in log.iter() {
            let (key, value) = item?;
            if let Ok(index) = <[u8; 8]>::try_from(key.as_ref()) {
                sizes.insert(u64::from_be_bytes(index), value.len() as u64);
            }
        }
        let sizes = std::sync::Mutex::new(sizes);
        Ok(Self { inner: Arc::new(Inner { db, log, meta, durability, sizes }) })
    }

    /// Runs `f` on the stored size of every entry in the log, by index.
    pub fn with_sizes<R>(&self, f: impl FnOnce(&std::collections::BTreeMap<u64, u64>) -> R) -> R {
        match self.inner.sizes.lock() {
            Ok(sizes) => f(&sizes),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn update_sizes(&self, change: impl FnOnce(&mut std::collections::BTreeMap<u64, u64>)) {
        match self.inner.sizes.lock() {
            Ok(mut sizes) => change(&mut sizes),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, openraft::AnyError> {
        match self.inner.meta.get(key).map_err(|e| openraft::AnyError::new(&e))? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| openraft::AnyError::new(&e)),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), openraft::AnyError> {
        let bytes = codec::encode(value).map_err(|e| openraft::AnyError::new(&e))?;
        self.inner.meta.insert(key, bytes).map_err(|e| openraft::AnyError::new(&e))?;
        Ok(())
    }

    fn last_purged(&self) -> StorageResult<Option<LogId<u64>>> {
        self.read_meta(LAST_PURGED).map_err(|e| StorageIOError::read_logs(e).into())
    }

    /// Flushes the log database and syncs it to stable storage.
    async fn flush(&self) -> Result<(), sled::Error> {
        self.inner.db.flush_async().await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.durability.sync())
            .await
            .map_err(|e| sled::Error::Io(io::Error::other(format!("the sync task failed: {e}"))))??;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.inner.log.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let entry: Entry<TypeConfig> = codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self.inner.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            None => None,
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = codec::decode(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.write_meta(VOTE, vote).map_err(StorageIOError::write_vote)?;
        self.flush().await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.read_meta(VOTE).map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        // Not flushed: a committed id that is lost in a crash is learned again from the leader.
        self.write_meta(COMMITTED, &committed).map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        let committed: Option<Option<LogId<u64>>> = self.read_meta(COMMITTED).map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        let mut sizes = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
            sizes.push((entry.log_id.index, bytes.len() as u64));
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.inner.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        self.update_sizes(|all| all.extend(sizes));
        // One flush for the whole batch; openraft may only count these entries once it returns.
        match self.flush().await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let err = StorageIOError::write_logs(&e);
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(err.into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Removes `log_id.index..`; the next append's flush makes the removal durable with it.
        let mut batch = sled::Batch::default();
        for item in self.inner.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.inner.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        self.update_sizes(|all| drop(all.split_off(&log_id.index)));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.write_meta(LAST_PURGED, &log_id).map_err(StorageIOError::write_logs)?;
        let mut batch = sled::Batch::default();
        for item in self.inner.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.inner.log.apply_batch(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        self.update_sizes(|all| *all = all.split_off(&log_id.index.saturating_add(1)));
        Ok(())
    }
}
