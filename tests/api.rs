//! The client API and the CLI against an in-process cluster: status codes a client can act on, bad
//! input refused without harm, a member that is down skipped, an unknown write outcome reported
//! as such.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{get, put, test_raft, TestCluster};
use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::kv_server::{Kv, KvServer};
use skiff_proto::api::{
    txn_op, DeleteRequest, DeleteResponse, GetRequest, GetResponse, ListRequest, ListResponse, PutRequest, PutResponse,
    TxnOp, TxnRequest, TxnResponse, WatchEvent, WatchRequest,
};
use tonic::{Code, Request, Response, Status};

fn skiff(members: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--members")
        .arg(members)
        .arg("--credentials")
        .arg(common::credentials_for(members))
        .arg("--timeout")
        .arg("5")
        .args(args)
        .output()
        .expect("run skiff")
}

fn skiff_stdin(members: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--members")
        .arg(members)
        .arg("--credentials")
        .arg(common::credentials_for(members))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run skiff");
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

async fn raw_put(client: &Client, req: PutRequest) -> Result<u64, ClientError> {
    client
        .call(CallKind::Write, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await.map(|r| r.into_inner().revision) }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_distinct_codes_and_change_nothing() {
    let cluster = TestCluster::start(3, test_raft()).await;
    let client = cluster.client();
    let r1 = put(&client, "ok", "1").await.expect("put");

    // An object over 1 MiB is refused by the server with RESOURCE_EXHAUSTED, naming key and limit.
    let big = PutRequest { key: "big".into(), value: vec![b'x'; (1 << 20) + 1], expected_revision: None };
    let err = raw_put(&client, big).await.expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("\"big\"") && err.to_string().contains("1 MiB"), "{err}");
    // Exactly 1 MiB is valid.
    let max = PutRequest { key: "max".into(), value: vec![b'x'; 1 << 20], expected_revision: None };
    raw_put(&client, max).await.expect("1 MiB is allowed");

    // An empty key is INVALID_ARGUMENT naming the field.
    let err = raw_put(&client, PutRequest { key: String::new(), value: b"v".to_vec(), expected_revision: None })
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().starts_with("key:"), "{err}");

    // A transaction over the limit, and one with a bad op in the middle: refused whole.
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp {
                op: Some(txn_op::Op::Put(PutRequest {
                    key: format!("t{i}"),
                    value: vec![b'y'; 900 * 1024],
                    expected_revision: None,
                })),
            })
            .collect()
    };
    let txn = |ops: Vec<TxnOp>| {
        let client = client.clone();
        async move {
            client
                .call(CallKind::Write, |ch| {
                    let req = TxnRequest { ops: ops.clone() };
                    async move { KvClient::new(ch).txn(req).await.map(|r| r.into_inner()) }
                })
                .await
        }
    };
    let err = txn(ops(4)).await.expect_err("3.6 MiB transaction");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let mut bad_middle = ops(2);
    bad_middle.insert(
        1,
        TxnOp { op: Some(txn_op::Op::Delete(DeleteRequest { key: String::new(), expected_revision: None })) },
    );
    let err = txn(bad_middle).await.expect_err("bad op");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("ops[1].delete.key"), "{err}");

    // A stale compare-and-swap is FAILED_PRECONDITION.
    let err =
        raw_put(&client, PutRequest { key: "ok".into(), value: b"2".to_vec(), expected_revision: Some(r1 + 1000) })
            .await
            .expect_err("stale");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("conflict on key \"ok\""), "{err}");

    // Nothing stored was harmed.
    assert_eq!(get(&client, "ok", false).await.expect("get"), Some("1".into()));
    assert_eq!(get(&client, "big", false).await.expect("get"), None);
    assert_eq!(get(&client, "t0", false).await.expect("get"), None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_inside_the_history_and_is_out_of_range_before_it() {
    let raft = skiff_server::config::RaftSettings { watch_history_revisions: 10, ..test_raft() };
    let cluster = TestCluster::start(1, raft).await;
    let client = cluster.client();
    let mut last = 0;
    for i in 0..30 {
        last = put(&client, &format!("w{i}"), "v").await.expect("put");
    }
    let watch = |start: u64| {
        let client = client.clone();
        async move {
            client
                .call(CallKind::Read, |ch| async move {
                    KvClient::new(ch)
                        .watch(WatchRequest { prefix: "w".into(), start_revision: start, progress_interval_ms: 50 })
                        .await
                })
                .await
        }
    };
    let err = watch(2).await.expect_err("too old");
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.to_string().contains("list again"), "{err}");
    let mut stream = watch(last - 2).await.expect("inside the history").into_inner();
    let revs: Vec<u64> = [stream.message().await, stream.message().await]
        .into_iter()
        .map(|m| m.expect("stream").expect("event").revision)
        .collect();
    assert_eq!(revs, vec![last - 1, last]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_puts_gets_lists_and_deletes_through_any_member_and_skips_a_dead_one() {
    let mut cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).expect("follower");
    let dead = (1..=3).find(|id| *id != leader && *id != follower).expect("third");
    cluster.stop(dead).await;
    // The first address is down: the CLI moves on.
    let members = format!("{},{}", cluster.addr(dead), cluster.addr(follower));
    let tasks = tokio::task::spawn_blocking(move || {
        let out = skiff(&members, &["kv", "put", "greeting", "hello"]);
        assert!(out.status.success(), "put: {}", text(&out.stderr));
        assert!(text(&out.stdout).starts_with("revision "), "{}", text(&out.stdout));
        let out = skiff(&members, &["kv", "get", "greeting"]);
        assert_eq!(text(&out.stdout), "hello\n");
        let out = skiff(&members, &["kv", "list", "gr"]);
        assert_eq!(text(&out.stdout), "greeting\thello\n");
        let out = skiff(&members, &["kv", "put", "greeting", "x", "--expect-revision", "1"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("conflict on key \"greeting\""), "{}", text(&out.stderr));
        let out = skiff(&members, &["kv", "del", "greeting"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = skiff(&members, &["kv", "get", "greeting"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("does not exist"), "{}", text(&out.stderr));
        // Over the limit: refused before sending, nothing written.
        let big = "x".repeat((1 << 20) + 10);
        let out = skiff_stdin(&members, &["kv", "put", "big", "-"], big.as_bytes());
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("over the limit"), "{}", text(&out.stderr));
        let out = skiff(&members, &["cluster", "status"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status = text(&out.stdout);
        assert!(status.contains("leader") && status.contains("unreachable"), "{status}");

        // The members (and credentials) can also come from the environment or a client config file.
        let creds = common::credentials_for(&members);
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .env("SKIFF_MEMBERS", &members)
            .env("SKIFF_CREDENTIALS", &creds)
            .args(["kv", "put", "from-env", "1"])
            .output()
            .expect("run skiff");
        assert!(out.status.success(), "SKIFF_MEMBERS: {}", text(&out.stderr));
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("client.toml");
        let list: Vec<String> = members.split(',').map(|m| format!("\"{m}\"")).collect();
        std::fs::write(&config, format!("members = [{}]\n", list.join(", "))).expect("write config");
        let with_config = |config: &std::path::Path| {
            Command::new(env!("CARGO_BIN_EXE_skiff"))
                .env_remove("SKIFF_MEMBERS")
                .env("SKIFF_CREDENTIALS", &creds)
                .arg("--client-config")
                .arg(config)
                .args(["kv", "get", "from-env"])
                .output()
                .expect("run skiff")
        };
        let out = with_config(&config);
        assert_eq!(text(&out.stdout), "1\n", "client config: {}", text(&out.stderr));
        std::fs::write(&config, "members = []\n").expect("write config");
        let out = with_config(&config);
        assert!(text(&out.stderr).contains("client.toml: field `members`"), "{}", text(&out.stderr));
        // Without credentials nothing is sent: the CLI says where they come from.
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .env_remove("SKIFF_CREDENTIALS")
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .args(["--members", &members, "kv", "get", "from-env"])
            .output()
            .expect("run skiff");
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("no credentials: pass --credentials"), "{}", text(&out.stderr));
    });
    tasks.await.expect("cli checks");
    cluster.shutdown().await;
}

#[test]
fn node_with_a_bad_config_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "id = 1\nname = \"node1\"\nlisten = \"127.0.0.1:0\"\ninitial_members = [ { id = 1, name = \"node1\" } ]\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_skiff")).args(["node", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("node.toml") && err.contains("missing field `addr`"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["node", "--config", "/nonexistent/skiff.toml"])
        .output()
        .expect("run");
    assert!(text(&out.stderr).contains("/nonexistent/skiff.toml: cannot read"), "{}", text(&out.stderr));
}

/// A member that accepts a write and then dies before answering.
struct DyingKv {
    entered: std::sync::mpsc::Sender<()>,
}

#[tonic::async_trait]
impl Kv for DyingKv {
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let _ = self.entered.send(());
        std::future::pending().await
    }
    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    type WatchStream = futures::stream::Empty<Result<WatchEvent, Status>>;
    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("test"))
    }
}

/// Runs a [`DyingKv`] member on its own runtime, and tears the runtime (and so every connection)
/// down as soon as a write has arrived.
fn dying_member() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    listener.set_nonblocking(true).expect("nonblocking");
    // Removed when the member dies (its credentials are read before the write that kills it).
    let dir = tempfile::Builder::new().prefix("skiff-dying-member-").tempdir().expect("tempdir");
    let tls = common::stand_in_tls(&addr, dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let member = std::thread::spawn(move || {
        let _dir = dir;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let incoming = skiff_tls::transport::incoming(listener, tls);
            let served = tonic::transport::Server::builder()
                .add_service(KvServer::new(DyingKv { entered: tx }))
                .serve_with_incoming(incoming)
                .await;
            eprintln!("dying member stopped: {served:?}");
        });
        let _ = rx.recv();
        rt.shutdown_background();
    });
    (addr, member)
}

#[tokio::test]
async fn a_write_cut_off_mid_call_is_reported_as_unknown_not_retried() {
    let (addr, member) = dying_member();
    let creds = skiff_tls::Credentials::load(&common::credentials_for(&addr)).expect("credentials");
    let connector = skiff_tls::credentials::connector(&creds).expect("connector");
    let client = Client::with_connector(&[addr], connector).expect("client");
    let err = raw_put(&client, PutRequest { key: "k".into(), value: b"v".to_vec(), expected_revision: None })
        .await
        .expect_err("died");
    assert!(matches!(err, ClientError::OutcomeUnknown { .. }), "{err:?}");
    assert!(err.to_string().contains("outcome of the write is unknown"), "{err}");
    member.join().expect("the dying member's thread");
}

#[test]
fn cli_exits_3_when_the_outcome_of_a_write_is_unknown() {
    let (addr, member) = dying_member();
    let out = skiff(&addr, &["kv", "put", "k", "v"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("outcome of the write is unknown"), "{}", text(&out.stderr));
    member.join().expect("the dying member's thread");
}
