//! The contract of the object store that the resource API and controllers rely on: revisions,
//! compare-and-swap, atomic batches, list-then-watch without gaps, delete events with the last
//! state, progress events, "too old" errors, history across restarts, slow watchers dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_store::history::HistoryLimits;
use skiff_store::network::TcpConnector;
use skiff_store::state_machine::StateMachineConfig;
use skiff_store::watch::{WatchError, WatchItem, WatchReceiver};
use skiff_store::{ChangeKind, KvStore, Member, Op, ReadConsistency, StoreConfig, StoreError};

const T: Duration = Duration::from_secs(10);

fn config(dir: &std::path::Path, history: u64, watch_buffer: usize) -> StoreConfig {
    StoreConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        raft: openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            ..Default::default()
        },
        state_machine: StateMachineConfig {
            history: HistoryLimits { revisions: history, ..Default::default() },
            watch_buffer,
            cache_bytes: 8 << 20,
        },
        log_cache_bytes: 8 << 20,
        write_timeout: Duration::from_secs(5),
        max_in_flight_entries: 2,
        log_budget: Default::default(),
    }
}

/// A one-member store that is its own leader (no network needed).
async fn single(dir: &std::path::Path, history: u64, watch_buffer: usize) -> KvStore {
    let store =
        KvStore::open(config(dir, history, watch_buffer), Arc::new(TcpConnector::default())).await.expect("open");
    if !store.raft().is_initialized().await.expect("initialized?") {
        let members = BTreeMap::from([(1, Member { name: "node1".into(), addr: "127.0.0.1:1".into() })]);
        store.raft().initialize(members).await.expect("initialize");
    }
    store.raft().wait(Some(T)).current_leader(1, "leader").await.expect("leader");
    store
}

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.as_bytes().to_vec(), expect: None }
}

async fn next(rx: &mut WatchReceiver) -> Result<WatchItem, WatchError> {
    tokio::time::timeout(T, rx.recv()).await.expect("watch item in time").expect("stream open")
}

/// The next event, skipping progress.
async fn next_event(rx: &mut WatchReceiver) -> skiff_store::Change {
    loop {
        match next(rx).await.expect("no error") {
            WatchItem::Change(e) => return e,
            WatchItem::Progress(_) => continue,
        }
    }
}

#[tokio::test]
async fn revision_is_the_log_index_and_compare_and_swap_refuses_stale_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 1000, 64).await;
    let r1 = store.write(vec![put("/kv/a", "1")]).await.expect("put").revision;
    let applied = store.raft().metrics().borrow().last_applied.map(|l| l.index);
    assert_eq!(Some(r1), applied, "revision is the Raft log index");

    // Must-not-exist fails on an existing key.
    let err = store
        .write(vec![Op::Put { key: "/kv/a".into(), value: b"x".to_vec(), expect: Some(0) }])
        .await
        .expect_err("exists");
    assert!(matches!(&err, StoreError::Conflict(c) if c.expected == 0 && c.actual == r1), "{err}");
    // A stale revision fails, the right one succeeds.
    let r2 = store
        .write(vec![Op::Put { key: "/kv/a".into(), value: b"2".to_vec(), expect: Some(r1) }])
        .await
        .expect("cas")
        .revision;
    let err = store
        .write(vec![Op::Put { key: "/kv/a".into(), value: b"3".to_vec(), expect: Some(r1) }])
        .await
        .expect_err("stale");
    assert!(matches!(&err, StoreError::Conflict(c) if c.expected == r1 && c.actual == r2), "{err}");
    let (kv, _) = store.get("/kv/a", ReadConsistency::Linearizable).await.expect("get");
    let kv = kv.expect("present");
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"2"[..], r1, r2));
    store.shutdown().await;
}

#[tokio::test]
async fn a_batch_applies_all_of_its_ops_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 1000, 64).await;
    let r = store
        .write(vec![put("/kv/owner", "o"), put("/kv/dep1", "d"), put("/kv/dep2", "d")])
        .await
        .expect("batch")
        .revision;
    let (kvs, _) = store.list("/kv/", ReadConsistency::Linearizable).await.expect("list");
    assert!(kvs.iter().all(|kv| kv.mod_revision == r), "one revision for the whole batch");

    // The last op's expectation fails: nothing of the batch is applied.
    let err = store
        .write(vec![
            Op::Delete { key: "/kv/owner".into(), expect: None },
            Op::Delete { key: "/kv/dep1".into(), expect: None },
            Op::Put { key: "/kv/dep2".into(), value: b"x".to_vec(), expect: Some(r + 100) },
        ])
        .await
        .expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict(_)));
    let (kvs, _) = store.list("/kv/", ReadConsistency::Linearizable).await.expect("list");
    assert_eq!(kvs.len(), 3, "nothing was deleted");

    // A cascading delete in one entry.
    store
        .write(vec![
            Op::Delete { key: "/kv/owner".into(), expect: Some(r) },
            Op::Delete { key: "/kv/dep1".into(), expect: None },
            Op::Delete { key: "/kv/dep2".into(), expect: None },
        ])
        .await
        .expect("cascade");
    assert!(store.list("/kv/", ReadConsistency::Linearizable).await.expect("list").0.is_empty());
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_sees_every_change_once_in_order_with_no_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 10_000, 4096).await;
    for i in 0..50 {
        store.write(vec![put(&format!("/kv/k{i}"), "0")]).await.expect("put");
    }
    // Writers keep going while we list and start watching.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store.write(vec![put(&format!("/kv/k{}", i % 50), &i.to_string())]).await.expect("put");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (kvs, list_rev) = store.list("/kv/", ReadConsistency::Linearizable).await.expect("list");
    let mut state: BTreeMap<String, u64> = kvs.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect();
    let mut rx = store.watch("/kv/", list_rev, Duration::from_secs(60)).expect("watch");
    writer.await.expect("writer");
    let final_rev = store.applied_revision();
    let mut last = list_rev;
    while last < final_rev {
        let e = next_event(&mut rx).await;
        assert!(e.revision > last, "strictly increasing revisions after the list: {} after {last}", e.revision);
        last = e.revision;
        state.insert(e.kv.key.clone(), e.kv.mod_revision);
    }
    // list + watch reproduces the current state exactly.
    let (now, _) = store.list("/kv/", ReadConsistency::Linearizable).await.expect("list");
    let now: BTreeMap<String, u64> = now.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect();
    assert_eq!(state, now);
    store.shutdown().await;
}

#[tokio::test]
async fn delete_event_carries_the_last_state_and_idle_watch_gets_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 1000, 64).await;
    let start = store.applied_revision();
    let r1 = store.write(vec![put("/kv/x", "last words")]).await.expect("put").revision;
    let r2 = store.write(vec![Op::Delete { key: "/kv/x".into(), expect: None }]).await.expect("del").revision;
    store.write(vec![put("/other/y", "not watched")]).await.expect("put");
    let mut rx = store.watch("/kv/", start, Duration::from_millis(100)).expect("watch");
    let put_event = next_event(&mut rx).await;
    assert_eq!((put_event.kind, put_event.revision), (ChangeKind::Put, r1));
    let del = next_event(&mut rx).await;
    assert_eq!((del.kind, del.revision), (ChangeKind::Delete, r2));
    assert_eq!(del.kv.value, b"last words", "the delete carries the last state");
    assert_eq!(del.kv.mod_revision, r1);
    // Idle now: a progress event reports the current revision (past the unwatched write).
    let current = store.applied_revision();
    let progress = loop {
        match next(&mut rx).await.expect("ok") {
            WatchItem::Progress(p) if p >= current => break p,
            WatchItem::Progress(_) => continue,
            WatchItem::Change(e) => panic!("unexpected event {e:?}"),
        }
    };
    // Resuming from the progress revision misses nothing and repeats nothing.
    let r3 = store.write(vec![put("/kv/z", "after")]).await.expect("put").revision;
    let mut resumed = store.watch("/kv/", progress, Duration::from_secs(60)).expect("resume");
    assert_eq!(next_event(&mut resumed).await.revision, r3);
    store.shutdown().await;
}

#[tokio::test]
async fn watch_from_before_the_retained_history_is_too_old_and_history_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 20, 64).await;
    for i in 0..60 {
        store.write(vec![put(&format!("/kv/k{i}"), "v")]).await.expect("put");
    }
    let applied = store.applied_revision();
    let err = store.watch("/kv/", 5, Duration::from_secs(60)).expect_err("too old");
    assert!(matches!(err, StoreError::Watch(WatchError::TooOld { start: 5, floor }) if floor == applied - 20), "{err}");
    assert!(err.to_string().contains("list again"), "{err}");

    store.shutdown().await;
    drop(store);
    // Restart: the history is on disk; a watch from inside it resumes.
    let store = loop {
        match KvStore::open(config(dir.path(), 20, 64), Arc::new(TcpConnector::default())).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    store.raft().wait(Some(T)).current_leader(1, "leader").await.expect("leader");
    let mut rx = store.watch("/kv/", applied - 3, Duration::from_secs(60)).expect("resume after restart");
    let revs =
        [next_event(&mut rx).await.revision, next_event(&mut rx).await.revision, next_event(&mut rx).await.revision];
    assert_eq!(revs, [applied - 2, applied - 1, applied]);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_but_one_key_changes_once_per_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 100_000, 4096).await;
    let start = store.applied_revision();
    // 64 writers, 20 writes each, 8 hot keys: many writes per entry and many same-key collisions.
    let writers: Vec<_> = (0..64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..20 {
                    let key = format!("/kv/hot{}", (w + i) % 8);
                    revs.push((
                        key.clone(),
                        store.write(vec![put(&key, &format!("{w}-{i}"))]).await.expect("put").revision,
                    ));
                }
                revs
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.expect("writer"));
    }
    let revisions: std::collections::BTreeSet<u64> = all.iter().map(|(_, r)| *r).collect();
    assert!(revisions.len() < all.len(), "writes were grouped: {} writes in {} entries", all.len(), revisions.len());
    let pairs: std::collections::BTreeSet<(String, u64)> = all.iter().cloned().collect();
    assert_eq!(pairs.len(), all.len(), "no key was written twice at one revision");
    // Every write is in the history, in order, once.
    let mut rx = store.watch("/kv/hot", start, Duration::from_secs(60)).expect("watch");
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        let e = next_event(&mut rx).await;
        seen.push((e.kv.key, e.revision));
    }
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(seen.into_iter().collect::<std::collections::BTreeSet<_>>(), pairs);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_is_dropped_and_never_slows_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 10_000, 8).await;
    let mut rx = store.watch("/kv/", store.applied_revision(), Duration::from_secs(60)).expect("watch");
    // Nobody reads: the watcher's queue (256) and the broadcast buffer (8) overflow.
    let started = std::time::Instant::now();
    for i in 0..400 {
        store.write(vec![put(&format!("/kv/k{i}"), "v")]).await.expect("put");
    }
    let elapsed = started.elapsed();
    // Now read: the queued events, then the error that names where to resume.
    let mut delivered = 0u64;
    let err = loop {
        match next(&mut rx).await {
            Ok(WatchItem::Change(_)) => delivered += 1,
            Ok(WatchItem::Progress(_)) => {}
            Err(e) => break e,
        }
    };
    assert!(matches!(err, WatchError::FellBehind { .. }), "{err}");
    assert!(delivered < 400, "the watcher was dropped before the end");
    assert!(elapsed < Duration::from_secs(30), "apply went on: 400 writes in {elapsed:?}");
    store.shutdown().await;
}

/// Issue 12, defect 9 (the proposer's half): its queue was unbounded, and it proposed writes whose
/// callers had given up. Past `MAX_QUEUED_BYTES` a write is refused at once (nothing applied), and a
/// write abandoned before it was proposed is never applied.
#[tokio::test(flavor = "current_thread")]
async fn the_proposers_queue_is_bounded_by_bytes_and_abandoned_writes_are_not_proposed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 1000, 64).await;
    // Writes abandoned at once, first in the queue: polled once (queued), then dropped.
    for i in 0..10 {
        let mut abandoned = Box::pin(store.write(vec![put(&format!("/kv/abandoned/{i}"), "x")]));
        assert!(futures::poll!(abandoned.as_mut()).is_pending(), "queued");
        drop(abandoned);
    }
    // Then 100 MiB submitted together (the proposer task cannot run meanwhile on this one thread).
    let big = vec![b'x'; 1 << 20];
    let mut pending: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            let op = Op::Put { key: format!("/kv/big/{i}"), value: big.clone(), expect: None };
            Box::pin(futures::future::maybe_done(async move { store.write(vec![op]).await }))
        })
        .collect();
    for write in &mut pending {
        let _ = futures::poll!(write.as_mut());
    }
    let mut outcomes = Vec::new();
    for mut write in pending {
        write.as_mut().await;
        outcomes.push(write.as_mut().take_output().expect("an outcome"));
    }
    let refused: Vec<String> = outcomes.iter().filter_map(|o| o.as_ref().err()).map(|e| e.to_string()).collect();
    let applied = outcomes.iter().filter(|o| o.is_ok()).count();
    assert!((60..=64).contains(&applied), "the queue holds 64 MiB of writes: {applied} applied");
    assert!(!refused.is_empty(), "a 100 MiB burst is not all queued");
    assert!(refused.iter().all(|e| e.contains("waiting to be proposed")), "{refused:?}");
    let (abandoned, _) = store.list("/kv/abandoned/", ReadConsistency::Linearizable).await.expect("list");
    assert!(abandoned.is_empty(), "writes abandoned before they were proposed were applied: {}", abandoned.len());
}

/// Issue 12, defect 4 (the resumed watch's half): a watch that resumed loaded the whole retained
/// history at once, whatever its prefix. It reads a page at a time and keeps only its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_watch_reads_only_its_prefix_from_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 100_000, 64).await;
    let start = store.write(vec![put("/kv/mark", "m")]).await.expect("mark").revision;
    let big = "b".repeat(512 << 10);
    for i in 0..30 {
        store.write(vec![put(&format!("/kv/b/{}", i % 3), &big)]).await.expect("big");
        store.write(vec![put(&format!("/kv/a/{i}"), "small")]).await.expect("small");
    }
    let mut rx = store.watch("/kv/a/", start, Duration::from_secs(60)).expect("watch");
    for i in 0..30 {
        let change = next_event(&mut rx).await;
        assert_eq!(change.kv.key, format!("/kv/a/{i}"), "in order, only under the prefix");
    }
    store.shutdown().await;
}

/// Issue 12, "memory stays bounded while a watcher never reads": each watch held up to 256 changes
/// its client had not taken, 256 MiB of 1 MiB values per stalled watcher. It now holds at most
/// `WATCH_BUFFER_BYTES` of them and stops reading until its client takes some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_holds_at_most_its_byte_budget() {
    use skiff_store::watch::WATCH_BUFFER_BYTES;
    const VALUE: usize = 512 << 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = single(dir.path(), 100_000, 64).await;
    let start = store.applied_revision();
    let mut rx = store.watch("/kv/", start, Duration::from_secs(60)).expect("watch");
    let big = "v".repeat(VALUE);
    for i in 0..20 {
        store.write(vec![put(&format!("/kv/{i:02}"), &big)]).await.expect("write");
    }
    let fits = WATCH_BUFFER_BYTES / (VALUE + "/kv/00".len());
    let deadline = tokio::time::Instant::now() + T;
    while rx.queued() < fits {
        assert!(tokio::time::Instant::now() < deadline, "only {} of {fits} changes were queued", rx.queued());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // It stays there while nobody reads (watched for a while, not forever).
    let grew = tokio::time::timeout(Duration::from_millis(500), async {
        while rx.queued() <= fits {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(grew.is_err(), "{} changes queued, more than the {fits} that fit in the budget", rx.queued());
    // Once the client reads, it gets every change, in order.
    for i in 0..20 {
        assert_eq!(next_event(&mut rx).await.kv.key, format!("/kv/{i:02}"));
    }
    store.shutdown().await;
}

/// Issue 12, "memory stays bounded while 1 MiB values are written in a loop": openraft snapshots
/// every 10,000 entries and keeps 1,000 behind, gigabytes of 1 MiB values, and sled holds about
/// as much memory as the log it keeps. The member now snapshots and purges by bytes as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_log_is_snapshotted_and_purged_by_bytes() {
    use skiff_store::log_budget::LogBudget;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path(), 100_000, 64);
    config.log_budget = LogBudget { min_bytes: 4 << 20, keep_bytes: 1 << 20 };
    // History no larger than the live state, so snapshots are about twice the live 4 MiB.
    config.state_machine.history = HistoryLimits { revisions: 100_000, min_bytes: 1 << 20 };
    let store = KvStore::open(config, Arc::new(TcpConnector::default())).await.expect("open");
    let members = BTreeMap::from([(1, Member { name: "node1".into(), addr: "127.0.0.1:1".into() })]);
    store.raft().initialize(members).await.expect("initialize");
    store.raft().wait(Some(T)).current_leader(1, "leader").await.expect("leader");
    let big = "v".repeat(1 << 20);
    let mut last = 0;
    for i in 0..60 {
        last = store.write(vec![put(&format!("/kv/{}", i % 4), &big)]).await.expect("write").revision;
    }
    // 60 MiB written, 4 MiB live: the log left after purges is what triggers the next snapshot
    // (the larger of 4 MiB and the last snapshot, about 8 MiB), the 1 MiB kept behind a snapshot,
    // and an entry or two in flight: at most 12 entries of 1 MiB, not 60.
    let mut metrics = store.raft().metrics();
    let waited = tokio::time::timeout(T, async {
        loop {
            let kept = metrics.borrow_and_update().purged.map(|p| last - p.index);
            if kept.is_some_and(|k| k <= 12) {
                return kept;
            }
            metrics.changed().await.expect("raft running");
        }
    })
    .await;
    let purged = store.raft().metrics().borrow().purged;
    assert!(waited.is_ok(), "the log was not purged by bytes: last entry {last}, purged up to {purged:?}");
    assert!(store.raft().metrics().borrow().snapshot.is_some());
    store.shutdown().await;
}
