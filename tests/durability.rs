//! Durability with real processes: every write acknowledged before `kill -9` of the leader, and
//! then of every member, is there after restart.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, list, put};
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::StatusRequest;
use skiff_server::client::{CallKind, Client, ClientError};

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
            "id = {id}\nname = \"node{id}\"\nlisten = \"{addr}\"\ndata_dir = \"{}\"\ninitial_members = [\n{members_toml}]\n\n[raft]\nheartbeat_ms = 100\nelection_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\nsnapshot_every = 500\n\n[agent]\nruntime = \"none\"\n",
            dir.join(format!("data{id}")).display()
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
                        Ok(_) => {
                            ledger.lock().expect("ledger").acked.insert(key, value);
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
    let mut client = Client::new(&addrs).expect("client");
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
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Nothing appears that nobody wrote.
    for key in stored.keys() {
        assert!(ledger.acked.contains_key(key) || ledger.unknown.contains(key), "unexpected key {key}");
    }
    assert!(ledger.acked.len() >= 400, "the test wrote enough: {}", ledger.acked.len());
    // Every member has the same data.
    for addr in &addrs {
        let one = Client::new(std::slice::from_ref(addr)).expect("client");
        let (kvs, _) = eventually("member caught up", Duration::from_secs(30), || async {
            let (kvs, _) = list(&one, "r1/", true).await.ok()?;
            (kvs.len() == stored.len()).then_some((kvs, ()))
        })
        .await;
        assert_eq!(kvs.len(), stored.len(), "member {addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_member_cleanly_and_it_restarts_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, addrs) = write_configs(dir.path(), 1);
    let member = &mut members[0];
    member.start();
    let client = Client::new(&addrs).expect("client");
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
async fn cli_adds_a_waiting_member_as_a_learner_and_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut members, addrs) = write_configs(dir.path(), 1);
    members[0].start();
    let client = Client::new(&addrs).expect("client");
    eventually("the first member to accept a write", Duration::from_secs(30), || async {
        put(&client, "before-add", "x").await.ok()
    })
    .await;
    // A second member with neither initial_members nor join: it waits to be added.
    let addr2 = format!("127.0.0.1:{}", free_port());
    let config2 = dir.path().join("node2.toml");
    let text = format!(
        "id = 2\nname = \"node2\"\nlisten = \"{addr2}\"\ndata_dir = \"{}\"\n\n[agent]\nruntime = \"none\"\n",
        dir.path().join("data2").display()
    );
    std::fs::write(&config2, text).expect("config");
    let mut second = Member { id: 2, config: config2, log: dir.path().join("node2.log"), child: None };
    second.start();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("--members")
            .arg(&addrs[0])
            .args(args)
            .output()
            .expect("run skiff")
    };
    let out = tokio::task::block_in_place(|| {
        cli(&["cluster", "add-member", "--id", "2", "--name", "node2", "--addr", &addr2])
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Two members: one voter, one learner with a full replica.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("voters [1], learners [2]"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let only2 = Client::new(std::slice::from_ref(&addr2)).expect("client");
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
