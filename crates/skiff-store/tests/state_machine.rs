//! What openraft's storage suite does not check (see shared/notes/openraft-sled.md): more than 256
//! log entries, a snapshot sent in chunks and installed, restart from disk, a snapshot built while
//! apply runs, and the watch history travelling with snapshots.

use std::io::{Cursor, Read};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};
use skiff_store::history::HistoryLimits;
use skiff_store::log_store::LogStore;
use skiff_store::state_machine::{StateMachineConfig, StateMachineStore};
use skiff_store::{Command, Op, TypeConfig};

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn put_entry(index: u64, key: &str, value: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Writes(vec![vec![Op::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            expect: None,
        }]])),
    }
}

fn sm_config(history: u64) -> StateMachineConfig {
    StateMachineConfig {
        history: HistoryLimits { revisions: history, ..Default::default() },
        watch_buffer: 64,
        cache_bytes: 8 << 20,
    }
}

/// A history bounded by bytes (at least 1 MiB, or the live state) rather than by revisions.
fn bytes_bounded_config() -> StateMachineConfig {
    StateMachineConfig { history: HistoryLimits { revisions: 100_000, min_bytes: 1 << 20 }, ..sm_config(0) }
}

/// The whole history after `after`, in one page.
fn history(shared: &skiff_store::state_machine::Shared, after: u64) -> Vec<skiff_store::Change> {
    shared.history_page(after, shared.applied_revision(), "", usize::MAX).expect("history").0
}

/// Reopens a sled database; sled may hold its file lock for a moment after the last handle is dropped.
fn reopen<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reopen: {e}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen failed: {e}"),
        }
    }
}

#[tokio::test]
async fn log_keeps_order_past_256_entries_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = LogStore::open(&dir.path().join("log"), 8 << 20).expect("open");
        let entries: Vec<_> = (1..=600).map(|i| put_entry(i, &format!("k{i}"), "v")).collect();
        for chunk in entries.chunks(100) {
            log.blocking_append(chunk.to_vec()).await.expect("append");
        }
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(600)));
        let got = log.try_get_log_entries(250..260).await.expect("read");
        assert_eq!(got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), (250..260).collect::<Vec<_>>());
        log.purge(log_id(300)).await.expect("purge");
        log.truncate(log_id(501)).await.expect("truncate");
    }
    // Reopen: what was flushed is there, purge and truncate held.
    let mut log = reopen(|| LogStore::open(&dir.path().join("log"), 8 << 20));
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(300)));
    assert_eq!(state.last_log_id, Some(log_id(500)));
    let got = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(got.first().map(|e| e.log_id.index), Some(301));
    assert_eq!(got.len(), 200);
}

#[tokio::test]
async fn state_machine_restarts_from_disk_with_objects_revisions_and_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut sm = StateMachineStore::open(dir.path(), sm_config(1000)).expect("open");
        let entries: Vec<_> = (1..=300).map(|i| put_entry(i, &format!("/kv/k{}", i % 50), &format!("v{i}"))).collect();
        sm.apply(entries).await.expect("apply");
    }
    let mut sm = reopen(|| StateMachineStore::open(dir.path(), sm_config(1000)));
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(300)));
    let shared = sm.shared();
    let kv = shared.get("/kv/k0").expect("get").expect("present");
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"v300"[..], 50, 300));
    assert_eq!(history(&shared, 250).len(), 50);
}

#[tokio::test]
async fn each_change_records_the_previous_revision_and_the_previous_value_can_be_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), sm_config(1000)).expect("open");
    sm.apply(vec![put_entry(1, "/kv/a", "one"), put_entry(2, "/kv/a", "two"), put_entry(3, "/kv/b", "x")])
        .await
        .expect("apply");
    let shared = sm.shared();
    let changes = history(&shared, 0);
    let prev: Vec<(u64, Option<u64>)> = changes.iter().map(|c| (c.revision, c.prev_revision)).collect();
    assert_eq!(prev, [(1, Some(0)), (2, Some(1)), (3, Some(0))]);
    let before = shared.value_at("/kv/a", 1).expect("read").expect("held by the history");
    assert_eq!(before.value, b"one");
    let now = shared.value_at("/kv/a", 2).expect("read").expect("current");
    assert_eq!(now.value, b"two");
    assert_eq!(shared.value_at("/kv/a", 0).expect("read"), None, "0: the key did not exist");
    assert_eq!(shared.value_at("/kv/a", 3).expect("read"), None, "revision 3 did not write it");
}

/// Reads a snapshot the way chunked transfer does and hands over a cursor left at its end.
fn transfer_in_chunks(mut data: Cursor<Vec<u8>>, chunk: usize) -> Box<Cursor<Vec<u8>>> {
    let mut received = Cursor::new(Vec::new());
    let mut buf = vec![0u8; chunk];
    loop {
        let n = data.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut received, &buf[..n]).expect("write");
    }
    Box::new(received)
}

#[tokio::test]
async fn chunked_snapshot_installs_objects_membership_and_watch_history() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let mut a = StateMachineStore::open(a_dir.path(), sm_config(100)).expect("open a");
    let entries: Vec<_> = (1..=400).map(|i| put_entry(i, &format!("/kv/k{i:04}"), &"x".repeat(1000))).collect();
    a.apply(entries).await.expect("apply");
    let snapshot = a.get_snapshot_builder().await.build_snapshot().await.expect("build");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(400)));

    let mut b = StateMachineStore::open(b_dir.path(), sm_config(100)).expect("open b");
    b.apply(vec![put_entry(1, "/kv/stale", "gone after install")]).await.expect("apply");
    let received = transfer_in_chunks(*snapshot.snapshot, 4096);
    b.install_snapshot(&snapshot.meta, received).await.expect("install");

    let shared = b.shared();
    assert_eq!(shared.applied_revision(), 400);
    assert!(shared.get("/kv/stale").expect("get").is_none(), "install replaces the state");
    let (all, revision) = shared.list("/kv/").expect("list");
    assert_eq!((all.len(), revision), (400, 400));
    // The history (last 100 revisions) came with the snapshot: a watch from 300 can resume.
    let kept = history(&shared, 300);
    assert_eq!(kept.first().map(|e| e.revision), Some(301));
    assert_eq!(kept.len(), 100);
    assert_eq!(shared.history_floor(), 300);
    // The installed snapshot is the current one, and it survives a restart of b.
    let current = b.get_current_snapshot().await.expect("current").expect("some");
    assert_eq!(current.meta, snapshot.meta);
    drop(shared);
    drop(b);
    let mut b = reopen(|| StateMachineStore::open(b_dir.path(), sm_config(100)));
    assert_eq!(b.applied_state().await.expect("applied").0, Some(log_id(400)));
    assert_eq!(history(&b.shared(), 399).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_built_while_applying_is_a_consistent_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), sm_config(10_000)).expect("open");
    // Every entry writes the same two keys with its own index: a cut is consistent only if both
    // keys carry the snapshot's last index.
    let pair = |i: u64| Entry::<TypeConfig> {
        log_id: log_id(i),
        payload: EntryPayload::Normal(Command::Writes(vec![vec![
            Op::Put { key: "/kv/a".into(), value: i.to_string().into_bytes(), expect: None },
            Op::Put { key: "/kv/b".into(), value: i.to_string().into_bytes(), expect: None },
        ]])),
    };
    let mut builder = sm.get_snapshot_builder().await;
    let applier = {
        let mut sm = sm.clone();
        tokio::spawn(async move {
            for i in 1..=2000 {
                sm.apply(vec![pair(i)]).await.expect("apply");
            }
        })
    };
    let snaps_dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    while !applier.is_finished() || checked == 0 {
        let snap = builder.build_snapshot().await.expect("build");
        let Some(last) = snap.meta.last_log_id else { continue };
        // Install into a scratch state machine and look inside.
        let scratch_dir = snaps_dir.path().join(format!("s{checked}"));
        let mut scratch = StateMachineStore::open(&scratch_dir, sm_config(10_000)).expect("scratch");
        scratch.install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
        let shared = scratch.shared();
        for key in ["/kv/a", "/kv/b"] {
            let kv = shared.get(key).expect("get").expect("present");
            assert_eq!(kv.value, last.index.to_string().into_bytes(), "{key} in snapshot at {last}");
        }
        checked += 1;
    }
    applier.await.expect("applier");
    assert!(checked >= 1);
}

/// Issue 12, defect 9 (the apply broadcast's half): the broadcast kept its last 4,096 batches with
/// every value in them, read or not (1 MiB values written in a loop held gigabytes). A batch over
/// `MAX_INLINE_BYTES` is announced without its changes; a watcher reads them from the history.
#[tokio::test]
async fn large_batches_are_announced_without_their_values_and_watchers_still_get_them() {
    use skiff_store::state_machine::MAX_INLINE_BYTES;
    use skiff_store::watch::WatchItem;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), sm_config(1000)).expect("open");
    let mut never_read = sm.shared().subscribe();
    let mut watch =
        skiff_store::watch::start(sm.shared(), "/kv/".into(), 0, std::time::Duration::from_secs(60)).expect("watch");
    let big = "x".repeat(1 << 20);
    sm.apply(vec![put_entry(1, "/kv/small", "s")]).await.expect("apply");
    sm.apply(vec![put_entry(2, "/kv/big", &big)]).await.expect("apply");
    let small = never_read.recv().await.expect("the first batch");
    assert_eq!((small.changes.len(), small.reset), (1, false), "a small batch carries its change");
    let large = never_read.recv().await.expect("the second batch");
    assert!(large.changes.is_empty() && large.reset, "a batch over {MAX_INLINE_BYTES} bytes carries no values");
    for (revision, len) in [(1, 1), (2, 1 << 20)] {
        match watch.recv().await {
            Some(Ok(WatchItem::Change(c))) => assert_eq!((c.revision, c.kv.value.len()), (revision, len)),
            other => panic!("change {revision}: {other:?}"),
        }
    }
}

/// Issue 12, defect 4: every history event kept its full value for 100,000 revisions, so 1 MiB
/// values written in a loop made the history (and every snapshot, which carries it) grow without
/// bound while the live state stayed the same. The history now keeps no more bytes than the larger
/// of its minimum and the live state, so a snapshot stays within about twice the live state.
#[tokio::test]
async fn history_and_snapshots_stay_within_a_small_multiple_of_the_live_state() {
    const VALUE: usize = 256 << 10;
    let config = bytes_bounded_config();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), config.clone()).expect("open");
    sm.apply(vec![put_entry(1, "/kv/small", "s")]).await.expect("apply");
    let value = "x".repeat(VALUE);
    // 200 writes of 256 KiB over 8 keys: 50 MiB written, 2 MiB live.
    for i in 2..=201 {
        sm.apply(vec![put_entry(i, &format!("/kv/big/{}", i % 8), &value)]).await.expect("apply");
    }
    let shared = sm.shared();
    let live = shared.live_bytes();
    assert!((8 * VALUE as u64..9 * VALUE as u64).contains(&live), "live state: {live} bytes");
    let (history_bytes, revisions) = shared.history_size();
    let budget = live.max(config.history.min_bytes);
    assert!(history_bytes <= budget, "history holds {history_bytes} bytes over a budget of {budget}");
    assert!(revisions >= 7, "the newest revisions stay: {revisions}");
    // The floor rose with what was dropped: a watch from revision 1 is refused as too old.
    let floor = shared.history_floor();
    assert!(floor > 1 && floor < 201, "floor {floor}");
    assert!(skiff_store::watch::start(shared.clone(), "/kv/".into(), 1, std::time::Duration::from_secs(60)).is_err());
    // Everything after the floor is there, in order.
    let kept = history(&shared, floor);
    assert_eq!(kept.first().map(|c| c.revision), Some(floor + 1));
    assert_eq!(kept.last().map(|c| c.revision), Some(201));

    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let size = snapshot.snapshot.get_ref().len() as u64;
    assert!(size <= 2 * budget + (64 << 10), "snapshot of {size} bytes for {live} live bytes");
    let on_disk = std::fs::metadata(dir.path().join("snapshot.bin")).expect("snapshot file").len();
    assert!(on_disk <= size + 4096, "snapshot file {on_disk} bytes");

    // The floor travels with the snapshot and survives a restart of the member that installs it.
    let other = tempfile::tempdir().expect("tempdir");
    let mut b = StateMachineStore::open(other.path(), config.clone()).expect("open b");
    b.install_snapshot(&snapshot.meta, transfer_in_chunks(*snapshot.snapshot, 1 << 16)).await.expect("install");
    // The same sizes, however each member names its value files: the same history window.
    assert_eq!(b.shared().history_floor(), floor);
    assert_eq!(b.shared().history_size(), shared.history_size());
    assert_eq!(b.shared().live_bytes(), live);
    drop(b);
    let b = reopen(|| StateMachineStore::open(other.path(), config.clone()));
    assert_eq!(b.shared().history_floor(), floor);
    assert_eq!(b.shared().history_size(), shared.history_size());
}

/// A snapshot that does not read whole changes nothing: the member keeps its state and its file.
#[tokio::test]
async fn a_broken_snapshot_is_refused_before_anything_is_replaced() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let mut a = StateMachineStore::open(a_dir.path(), sm_config(100)).expect("open a");
    a.apply((1..=20).map(|i| put_entry(i, &format!("/kv/k{i}"), "v")).collect::<Vec<_>>()).await.expect("apply");
    let snapshot = a.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let mut b = StateMachineStore::open(b_dir.path(), sm_config(100)).expect("open b");
    b.apply(vec![put_entry(1, "/kv/mine", "kept")]).await.expect("apply");
    let mut bytes = snapshot.snapshot.into_inner();
    bytes.truncate(bytes.len() - 3);
    b.install_snapshot(&snapshot.meta, Box::new(Cursor::new(bytes))).await.expect_err("a cut snapshot");
    assert_eq!(b.shared().get("/kv/mine").expect("get").map(|kv| kv.value), Some(b"kept".to_vec()));
    assert!(b.get_current_snapshot().await.expect("read").is_none(), "no file written");
}

fn delete_entry(index: u64, key: &str) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Command::Writes(vec![vec![Op::Delete { key: key.into(), expect: None }]])),
    }
}

/// Bytes of the files under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Issue 12, defect 4 (disk): sled rewrote a leaf holding large values to a new blob file on every
/// change and did not remove the old ones (spacejam/sled#786): 1 MiB values written in a loop grew
/// `state/blobs` by 1.6 MB per MiB written for a live state of 50 MiB, until the disk was full.
/// Large values now live in files of their own, removed once neither an object nor the history
/// refers to them; everything a value is read through (get, list, history, a deletion's event, a
/// snapshot and its install, a restart) still sees it.
#[tokio::test]
async fn large_values_live_in_files_removed_once_nothing_refers_to_them() {
    const VALUE: usize = 512 << 10;
    let config = bytes_bounded_config();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), config.clone()).expect("open");
    let value = |i: u64| format!("{i:08}").repeat(VALUE / 8);
    // 320 writes of 512 KiB over 8 keys: 160 MiB written, 4 MiB live.
    let writes = 320;
    for i in 1..=writes {
        sm.apply(vec![put_entry(i, &format!("/kv/big/{}", i % 8), &value(i))]).await.expect("apply");
    }
    let shared = sm.shared();
    let live = shared.live_bytes();
    let (history_bytes, _) = shared.history_size();
    let on_disk = dir_bytes(&dir.path().join("values"));
    let in_sled = dir_bytes(&dir.path().join("state"));
    eprintln!("{live} live, {history_bytes} history: {on_disk} bytes of value files, {in_sled} of sled");
    // Swept once the files written since the last sweep pass 64 MiB.
    assert!(on_disk <= (64 << 20) + 2 * (live + history_bytes), "value files: {on_disk} bytes");
    assert!(in_sled < 40 << 20, "sled holds records only: {in_sled} bytes");
    assert_eq!(shared.file_bytes(), on_disk, "the member's count of its value files");

    // Reads see the values: get, list, the history and a deletion's event.
    let got = shared.get("/kv/big/0").expect("get").expect("the object");
    assert_eq!(got.value, value(writes).into_bytes());
    assert_eq!(shared.list("/kv/big/").expect("list").0.len(), 8);
    sm.apply(vec![delete_entry(writes + 1, "/kv/big/0")]).await.expect("delete");
    let last = history(&shared, writes - 1);
    assert_eq!(last.len(), 2);
    assert_eq!(last[0].kv.value, value(writes).into_bytes(), "the put's event");
    assert_eq!(last[1].kv.value, value(writes).into_bytes(), "the deletion's event carries the last value");
    let before = shared.value_at("/kv/big/7", writes - 1).expect("value_at").expect("in the history");
    assert_eq!(before.value, value(writes - 1).into_bytes());

    // A snapshot carries the values; the member that installs it keeps them in files of its own and
    // removes those of the state it replaced.
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let other = tempfile::tempdir().expect("tempdir");
    let mut b = StateMachineStore::open(other.path(), config.clone()).expect("open b");
    b.apply(vec![put_entry(1, "/kv/old", &"o".repeat(VALUE))]).await.expect("apply on b");
    b.install_snapshot(&snapshot.meta, transfer_in_chunks(*snapshot.snapshot, 1 << 20)).await.expect("install");
    assert!(b.shared().get("/kv/old").expect("get").is_none());
    assert_eq!(b.shared().get("/kv/big/1").expect("get").expect("object").value, value(writes - 7).into_bytes());
    assert_eq!(history(&b.shared(), writes - 1), last);
    // One file per distinct value: an object shares the file of its put's event, and a deletion's
    // event that of the value it removes.
    let b_files = dir_bytes(&other.path().join("values"));
    let objects = b.shared().list("/kv/big/").expect("list").0;
    let distinct: std::collections::HashSet<Vec<u8>> =
        objects.into_iter().chain(history(&b.shared(), 0).into_iter().map(|c| c.kv)).map(|kv| kv.value).collect();
    assert_eq!(b_files, (distinct.len() * VALUE) as u64, "b's value files: {live} live, {history_bytes} history");

    // A restart reads them back, and removes a file no record names (one a crash left behind
    // the sled batch that would have named it).
    drop((sm, shared));
    let orphan = dir.path().join("values").join(format!("a{:x}-0", writes + 2));
    std::fs::write(&orphan, b"left by a crash").expect("orphan");
    let sm = reopen(|| StateMachineStore::open(dir.path(), config.clone()));
    assert_eq!(sm.shared().get("/kv/big/1").expect("get").expect("object").value, value(writes - 7).into_bytes());
    assert_eq!(history(&sm.shared(), writes - 1), last);
    assert!(!orphan.exists(), "the orphan is swept at start-up");
}

fn write_entry(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command::Writes(vec![ops])) }
}

/// Found in review: files were shared by key and revision alone, so one write that put a key twice
/// (or put, deleted and put it) kept the first value under both, and the acknowledged second value
/// was lost on every member.
#[tokio::test]
async fn one_write_that_puts_a_large_key_twice_keeps_each_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), sm_config(1000)).expect("open");
    let (v1, v2, v3) = (vec![1u8; 40 << 10], vec![2u8; 50 << 10], vec![3u8; 40 << 10]);
    let put = |value: &[u8]| Op::Put { key: "/kv/twice".into(), value: value.to_vec(), expect: None };
    let delete = Op::Delete { key: "/kv/twice".into(), expect: None };
    sm.apply(vec![write_entry(1, vec![put(&v1), put(&v2)])]).await.expect("apply");
    let shared = sm.shared();
    assert_eq!(shared.get("/kv/twice").expect("get").expect("object").value, v2);
    let events: Vec<Vec<u8>> = history(&shared, 0).into_iter().map(|c| c.kv.value).collect();
    assert_eq!(events, [v1.clone(), v2.clone()]);
    sm.apply(vec![write_entry(2, vec![put(&v1), delete, put(&v3)])]).await.expect("apply");
    assert_eq!(shared.get("/kv/twice").expect("get").expect("object").value, v3);
    let events: Vec<Vec<u8>> = history(&shared, 1).into_iter().map(|c| c.kv.value).collect();
    assert_eq!(events, [v1.clone(), v1, v3], "put, the deletion of what it put, put");
}

/// Found in review: only new writes (and sweeps) freed value files, so deleting many large objects
/// left their files on disk until as much again was written.
#[tokio::test]
async fn deleting_large_objects_frees_their_files() {
    const VALUE: usize = 512 << 10;
    let config = bytes_bounded_config();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = StateMachineStore::open(dir.path(), config).expect("open");
    let value = "v".repeat(VALUE);
    // 160 objects of 512 KiB: 80 MiB live, under the first sweep's 64 MiB plus twice the live state.
    let keys = 160;
    for i in 1..=keys {
        sm.apply(vec![put_entry(i, &format!("/kv/{i}"), &value)]).await.expect("apply");
    }
    let values = dir.path().join("values");
    let before = dir_bytes(&values);
    assert!(before >= keys * VALUE as u64, "{before} bytes of value files");
    for i in 1..=keys {
        sm.apply(vec![delete_entry(keys + i, &format!("/kv/{i}"))]).await.expect("delete");
    }
    let after = dir_bytes(&values);
    let shared = sm.shared();
    let (history_bytes, _) = shared.history_size();
    eprintln!("value files: {before} bytes before the deletes, {after} after; history {history_bytes}");
    assert!(after <= (64 << 20) + 2 * history_bytes, "{after} bytes of value files after the deletes");
    assert!(after < before / 2);
}
