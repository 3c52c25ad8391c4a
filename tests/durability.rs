//! Durability with real processes: every write acknowledged before `kill -9` of the leader, and
//! then of every member, is there after restart; and, since `kill -9` cannot tell a write in the page
//! cache from one on the disk, `strace` proves that every acknowledged write and vote was synced
//! (`fsync`/`fdatasync`) before it was acknowledged, which is what survives a power cut.

mod common;
#[path = "common/strace.rs"]
mod strace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, list, put};
use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::StatusRequest;

/// A `skiff node` process, killed with SIGKILL when dropped (also when the test fails).
struct Member {
    id: u64,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn skiff node");
        self.child = Some(child);
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A client with the admin credentials member 1 writes at bootstrap (waiting for them).
async fn admin_client(dir: &Path, addrs: &[String]) -> Client {
    let path = dir.join("data1").join("admin.conf");
    let creds = eventually("member 1 to write the admin credentials", Duration::from_secs(30), || async {
        skiff_tls::Credentials::load(&path).ok()
    })
    .await;
    Client::with_connector(addrs, skiff_tls::credentials::connector(&creds).expect("connector")).expect("client")
}

fn write_configs(dir: &Path, n: u64) -> (Vec<Member>, Vec<String>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let members_toml: String = (1..=n)
        .map(|id| format!("  {{ id = {id}, name = \"node{id}\", addr = \"{}\" }},\n", addrs[id as usize - 1]))
        .collect();
    let mut members = Vec::new();
    for id in 1..=n {
        let addr = &addrs[id as usize - 1];
        let config = dir.join(format!("node{id}.toml"));
        let text = format!(
            "id = {id}\nname = \"node{id}\"\nlisten = \"{addr}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ninitial_members = [\n{members_toml}]\n\n[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\nsnapshot_every = 500\n\n[agent]\nruntime = \"none\"\n\n[services]\nproxy = false\n\n[security]\njoin_token = \"{}\"\n",
            dir.join(format!("data{id}")).display(),
            common::TEST_JOIN_SECRET
        );
        std::fs::write(&config, text).expect("write config");
        members.push(Member { id, config, log: dir.join(format!("node{id}.log")), child: None });
    }
    (members, addrs)
}

async fn leader(client: &Client) -> u64 {
    eventually("a leader", Duration::from_secs(30), || async {
        let status = client
            .call(CallKind::Read, |ch| async move { ClusterClient::new(ch).status(StatusRequest {}).await })
            .await
            .ok()?
            .into_inner();
        (status.leader_id != 0).then_some(status.leader_id)
    })
    .await
}

/// What the writers learned: acknowledged keys, and keys whose outcome is unknown.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, String>,
    /// The revision each acknowledged write was given.
    revs: BTreeMap<String, u64>,
    unknown: Vec<String>,
}

/// Four writers that write distinct keys until told to stop.
fn start_writers(
    client: Client,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    round: &str,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|w| {
            let (client, ledger, stop) = (client.clone(), ledger.clone(), stop.clone());
            let round = round.to_string();
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let key = format!("{round}/w{w}/{i:06}");
                    let value = format!("value-{round}-{w}-{i}");
                    match put(&client, &key, &value).await {
                        Ok(revision) => {
                            let mut ledger = ledger.lock().expect("ledger");
                            ledger.revs.insert(key.clone(), revision);
                            ledger.acked.insert(key, value);
                        }
                        Err(ClientError::OutcomeUnknown { .. }) => ledger.lock().expect("ledger").unknown.push(key),
                        Err(_) => {} // refused before applying: nothing to check
                    }
                    i += 1;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_leader_and_of_every_member() {
    common::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, addrs) = write_configs(dir.path(), 3);
    for m in &mut members {
        m.start();
    }
    let mut client = admin_client(dir.path(), &addrs).await;
    client.deadline = Duration::from_secs(20);
    client.round_pause = Duration::from_millis(20);
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // Round 1: write, kill -9 the leader mid-stream, keep writing.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = start_writers(client.clone(), ledger.clone(), stop.clone(), "r1");
    eventually("some acknowledged writes", Duration::from_secs(30), || async {
        (ledger.lock().expect("ledger").acked.len() >= 200).then_some(())
    })
    .await;
    let first_leader = leader(&client).await;
    members.iter_mut().find(|m| m.id == first_leader).expect("leader member").kill();
    let before_kill = ledger.lock().expect("ledger").acked.len();
    eventually("writes to go on after the leader was killed", Duration::from_secs(30), || async {
        (ledger.lock().expect("ledger").acked.len() >= before_kill + 200).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }

    // Kill -9 every member at once, then restart them all.
    for m in &mut members {
        m.kill();
    }
    for m in &mut members {
        m.start();
    }
    leader(&client).await;

    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    let (kvs, _) = eventually("a linearizable list after restart", Duration::from_secs(30), || async {
        list(&client, "r1/", false).await.ok()
    })
    .await;
    let stored: BTreeMap<String, String> = kvs.into_iter().collect();
    let mut missing = Vec::new();
    for (key, value) in &ledger.acked {
        if stored.get(key) != Some(value) {
            missing.push(key.clone());
        }
    }
    let example: Vec<(&String, Option<&u64>)> = missing.iter().take(5).map(|k| (k, ledger.revs.get(k))).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing from a linearizable list after the restart; e.g. (key, acknowledged revision): {example:?}",
        missing.len()
    );
    // Nothing appears that nobody wrote.
    for key in stored.keys() {
        assert!(ledger.acked.contains_key(key) || ledger.unknown.contains(key), "unexpected key {key}");
    }
    assert!(ledger.acked.len() >= 400, "the test wrote enough: {}", ledger.acked.len());
    // Every member has the same data.
    for addr in &addrs {
        let one = admin_client(dir.path(), std::slice::from_ref(addr)).await;
        let kvs = eventually("member caught up", Duration::from_secs(30), || async {
            let (kvs, _) = list(&one, "r1/", true).await.ok()?;
            (kvs.len() == stored.len()).then_some(kvs)
        })
        .await;
        let replica: BTreeMap<String, String> = kvs.into_iter().collect();
        assert!(replica == stored, "member {addr} holds other keys or values than the leader's linearizable list");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_cleanly_and_it_restarts_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, addrs) = write_configs(dir.path(), 1);
    let member = &mut members[0];
    member.start();
    let client = admin_client(dir.path(), &addrs).await;
    let rev = eventually("the single member to accept a write", Duration::from_secs(30), || async {
        put(&client, "kept", "across restarts").await.ok()
    })
    .await;
    assert!(rev > 0);
    let mut child = member.child.take().expect("running");
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    let exited = eventually("the member to exit after SIGTERM", Duration::from_secs(15), || {
        let waited = child.try_wait().expect("try_wait");
        async move { waited }
    })
    .await;
    assert!(exited.success(), "clean exit after SIGTERM: {exited:?}");
    let log = std::fs::read_to_string(&member.log).expect("log");
    assert!(log.contains("stopped"), "{log}");
    member.start();
    let got = eventually("the restarted member to serve", Duration::from_secs(30), || async {
        common::get(&client, "kept", false).await.ok().flatten()
    })
    .await;
    assert_eq!(got, "across restarts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_with_the_token_cli_prints_and_cli_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, addrs) = write_configs(dir.path(), 1);
    members[0].start();
    let client = admin_client(dir.path(), &addrs).await;
    eventually("the first member to accept a write", Duration::from_secs(30), || async {
        put(&client, "before-add", "x").await.ok()
    })
    .await;
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("--members")
            .arg(&addrs[0])
            .arg("--credentials")
            .arg(dir.path().join("data1").join("admin.conf"))
            .args(args)
            .output()
            .expect("run skiff")
    };
    // A second member joins with the token `cluster join-token` prints, as `docker swarm join` does.
    let out = tokio::task::block_in_place(|| cli(&["cluster", "join-token"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("SKIFF-1-"), "{token}");
    let addr2 = format!("127.0.0.1:{}", free_port());
    let config2 = dir.path().join("node2.toml");
    let text = format!(
        "id = 2\nname = \"node2\"\nlisten = \"{addr2}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\njoin = \"{}\"\n\n[agent]\nruntime = \"none\"\n\n[services]\nproxy = false\n\n[security]\njoin_token = \"{token}\"\n",
        dir.path().join("data2").display(),
        addrs[0]
    );
    std::fs::write(&config2, text).expect("config");
    let mut second = Member { id: 2, config: config2, log: dir.path().join("node2.log"), child: None };
    second.start();
    let only2 = admin_client(dir.path(), std::slice::from_ref(&addr2)).await;
    let got = eventually("the learner to have the data", Duration::from_secs(30), || async {
        common::get(&only2, "before-add", true).await.ok().flatten()
    })
    .await;
    assert_eq!(got, "x");
    // The same id again is refused, naming the member that has it.
    let out = tokio::task::block_in_place(|| {
        cli(&["cluster", "add-member", "--id", "2", "--name", "other", "--addr", "127.0.0.1:1"])
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("member id 2 is already in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::task::block_in_place(|| cli(&["cluster", "remove-member", "2"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tokio::task::block_in_place(|| cli(&["cluster", "status", "-o", "json"]));
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!status.contains("node2"), "{status}");
}

/// `strace` attached to every thread of a running process, writing its trace to a file; detached
/// (the process goes on) when finished or dropped.
struct Tracer {
    child: Option<Child>,
    out: PathBuf,
}

impl Tracer {
    /// Attaches to `pid` and returns once strace says it is attached.
    async fn attach(pid: u32, dir: &Path) -> Tracer {
        let out = dir.join(format!("strace-{pid}.txt"));
        let err = dir.join(format!("strace-{pid}.err"));
        let child = Command::new("strace")
            .args(["-f", "-yy", "-ttt", "-T", "-e", strace::TRACED, "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("strace stderr file"))
            .spawn()
            .expect("strace is needed for this test (apt-get install strace; scripts/test.sh installs it)");
        let tracer = Tracer { child: Some(child), out };
        eventually("strace to attach", Duration::from_secs(20), || {
            let said = std::fs::read_to_string(&err).unwrap_or_default();
            assert!(!said.contains("Operation not permitted"), "strace cannot attach: {said}");
            async move { said.contains("attached").then_some(()) }
        })
        .await;
        tracer
    }

    /// Detaches (SIGTERM: strace lets the process go on) and returns the completed calls.
    fn finish(mut self) -> Vec<strace::Call> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
        strace::parse(&std::fs::read_to_string(&self.out).expect("strace output"))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

/// The Raft log store itself, traced in this very process: `save_vote` and `append` return (and an
/// append calls back) only after every file they wrote was synced, once per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_store_syncs_every_vote_and_append_batch_before_it_returns() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use skiff_store::log_store::LogStore;
    use skiff_store::{Command as StoreCommand, Op};

    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = LogStore::open(&dir.path().join("raft-log"), 8 << 20).expect("open the log");
    let entry = |index: u64, bytes: usize| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(StoreCommand::Writes(vec![vec![Op::Put {
            key: format!("k{index}"),
            value: vec![b'v'; bytes],
            expect: None,
        }]])),
    };
    let tracer = Tracer::attach(std::process::id(), dir.path()).await;
    let mut done = Vec::new();
    let mut index = 0;
    for round in 1..=10u64 {
        let from = strace::now();
        log.save_vote(&Vote::new(round, 1)).await.expect("save vote");
        done.push((format!("vote of term {round}"), from, strace::now()));
        // A batch of three entries; every third round one of them is 3 MiB, which sled keeps in a
        // file of its own (a blob) that must be synced too.
        let big = if round % 3 == 0 { 3 << 20 } else { 100 };
        let batch: Vec<_> = (1..=3).map(|i| entry(index + i, if i == 2 { big } else { 100 })).collect();
        index += 3;
        let from = strace::now();
        log.blocking_append(batch).await.expect("append");
        done.push((format!("append of entries {}..={index}", index - 2), from, strace::now()));
    }
    let calls = tracer.finish();
    assert!(
        calls.iter().any(|c| c.is_write() && c.path.contains("raft-log/blobs/")),
        "the large entries made sled write blob files (the case its own flush does not sync)"
    );
    for (what, from, to) in &done {
        let w = strace::window(&calls, "raft-log", *from, *to);
        assert!(w.durable(), "{what}: not every written file was synced before it returned: {w:?}");
        assert_eq!(w.fdatasyncs("raft-log/db"), 1, "{what}: one sync of the log per batch, not per entry: {w:?}");
    }
}

/// A real member, traced from outside: every `kv put` it acknowledges was preceded by a sync of
/// the Raft log after the put's entry was written; concurrent writes share syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_follows_a_sync_of_the_raft_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, addrs) = write_configs(dir.path(), 1);
    members[0].start();
    let client = admin_client(dir.path(), &addrs).await;
    eventually("the member to accept a write", Duration::from_secs(30), || async {
        put(&client, "ready", "yes").await.ok()
    })
    .await;
    let pid = members[0].child.as_ref().expect("running").id();
    let tracer = Tracer::attach(pid, dir.path()).await;

    let mut acked = Vec::new();
    for i in 0..40 {
        let from = strace::now();
        put(&client, &format!("seq/{i:02}"), &format!("value {i}")).await.expect("sequential put");
        acked.push((i, from, strace::now()));
    }
    let burst_from = strace::now();
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { put(&client, &format!("burst/{i:03}"), "x").await })
        })
        .collect();
    for w in writers {
        w.await.expect("writer").expect("concurrent put");
    }
    let burst_to = strace::now();
    let calls = tracer.finish();

    let log = "raft-log";
    for (i, from, to) in &acked {
        let w = strace::window(&calls, log, *from, *to);
        assert!(w.written_then_synced(), "put {i} was acknowledged before its Raft log write was synced: {w:?}");
    }
    let burst = strace::window(&calls, log, burst_from, burst_to);
    assert!(burst.written_then_synced(), "the burst of writes was acknowledged without a sync of the log: {burst:?}");
    let burst_syncs = burst.fdatasyncs("raft-log/db");
    assert!(burst_syncs < 100, "200 concurrent writes share syncs (once per batch): {burst_syncs} syncs");
    eprintln!("200 concurrent writes: {burst_syncs} syncs of the log; 40 sequential writes each synced");
}
