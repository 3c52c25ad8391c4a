//! In-process test clusters: several members on 127.0.0.1 ports in one test process, each with its
//! own data directory, that can be stopped and restarted from their sled data.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::{GetRequest, ListRequest, PutRequest};
use skiff_proto::limits::MAX_RESPONSE_BYTES;
use skiff_proto::transport::{Connector, Redirect};
use skiff_server::agent_api::PodRuntime;
use skiff_server::config::{InitialMember, NodeConfig, RaftSettings, ServiceSettings};
use skiff_server::Node;

/// Raft timings for tests: slower than production so that parallel tests on two cores do not
/// trigger elections by accident.
pub fn test_raft() -> RaftSettings {
    RaftSettings {
        heartbeat_ms: 100,
        election_timeout_min_ms: 600,
        election_timeout_max_ms: 1200,
        ..RaftSettings::default()
    }
}

#[allow(unused_imports)]
pub use skiff_testkit::{consistently, eventually};

/// Logs to the test's output, filtered by `RUST_LOG` (default: warnings).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Binds 127.0.0.1:port with SO_REUSEADDR, so a restarted member gets its old port back.
pub fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind");
    socket.listen(1024).expect("listen")
}

/// The config of member `id` listening on `listener`.
fn member_config(
    id: u64,
    listener: &tokio::net::TcpListener,
    data_dir: std::path::PathBuf,
    initial_members: Vec<InitialMember>,
    join: Option<String>,
    raft: RaftSettings,
) -> NodeConfig {
    member_config_with(id, listener, data_dir, initial_members, join, raft, skiff_server::config::AgentSettings::none())
}

fn member_config_with(
    id: u64,
    listener: &tokio::net::TcpListener,
    data_dir: std::path::PathBuf,
    initial_members: Vec<InitialMember>,
    join: Option<String>,
    raft: RaftSettings,
    agent: skiff_server::config::AgentSettings,
) -> NodeConfig {
    let addr = listener.local_addr().expect("addr").to_string();
    let config = NodeConfig {
        id,
        name: format!("node{id}"),
        listen: addr.clone(),
        advertise: Some(addr),
        http_listen: "127.0.0.1:0".into(),
        data_dir,
        initial_members,
        join,
        raft,
        agent,
        controllers: true,
        lifecycle: Default::default(),
        services: ServiceSettings { proxy: false, ..Default::default() },
        security: test_security(),
    };
    config.validate("test").expect("valid config");
    config
}

/// Which admin credentials belong to a member address: the CLI tests pass them with the address,
/// as a kubeconfig context pairs a server with its credentials.
static CREDENTIALS: std::sync::Mutex<BTreeMap<String, std::path::PathBuf>> = std::sync::Mutex::new(BTreeMap::new());

fn remember_credentials(addrs: impl IntoIterator<Item = String>, path: std::path::PathBuf) {
    let mut known = CREDENTIALS.lock().expect("credentials registry");
    for addr in addrs {
        known.insert(addr, path.clone());
    }
}

/// The admin credentials file of the cluster the first of `members` (comma-separated) belongs to;
/// for an address no test cluster has, a path that does not exist (the CLI says so if it needs it).
pub fn credentials_for(members: &str) -> std::path::PathBuf {
    let first = members.split(',').next().unwrap_or_default().trim();
    let known = CREDENTIALS.lock().expect("credentials registry").get(first).cloned();
    known.unwrap_or_else(|| std::path::PathBuf::from(format!("/nonexistent/credentials-of-{first}")))
}

/// A stand-in member's TLS (a CA of its own, a member certificate) and admin credentials for it,
/// written to `dir/admin.conf` and remembered for `addr`.
pub fn stand_in_tls(addr: &str, dir: &std::path::Path) -> std::sync::Arc<skiff_tls::rustls::ServerConfig> {
    let ca = skiff_tls::ClusterCa::generate("stand-in").expect("CA");
    let (key_pem, csr) = skiff_tls::ca::new_key_and_csr().expect("CSR");
    let cert_pem = ca.sign(&csr, &skiff_tls::Subject::Member(1), Duration::from_secs(3600)).expect("sign");
    let identity = skiff_tls::Identity { ca_pem: ca.cert_pem.clone(), cert_pem, key_pem };
    let admin = skiff_tls::Subject::Client { name: "admin".into(), role: skiff_tls::Role::Admin };
    let creds =
        skiff_tls::credentials::issue(&ca, &admin, Duration::from_secs(3600), vec![addr.into()]).expect("creds");
    let path = dir.join("admin.conf");
    creds.save(&path).expect("save credentials");
    remember_credentials([addr.to_string()], path);
    skiff_tls::transport::server_config(skiff_tls::IdentityStore::new(identity).expect("identity")).expect("TLS")
}

/// The bootstrap secret every test cluster's members share (and later members join with).
pub const TEST_JOIN_SECRET: &str = "0123456789abcdef0123456789abcdef";

pub fn test_security() -> skiff_server::config::SecuritySettings {
    skiff_server::config::SecuritySettings { join_token: Some(TEST_JOIN_SECRET.into()), ..Default::default() }
}

/// A TCP proxy on 127.0.0.1 in front of one member: the other members reach it through the proxy,
/// and [`Proxy::cut`] closes every connection and refuses new ones, a network cut of everything
/// sent to that member (what it sends still goes out); [`Proxy::heal`] lets connections in again.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        Self::serve(listener, target)
    }

    /// The same, from synchronous code running on the runtime.
    fn start_here(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        Ok(Self::serve(tokio::net::TcpListener::from_std(listener)?, target))
    }

    fn serve(listener: tokio::net::TcpListener, target: SocketAddr) -> Proxy {
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue; // dropped: the connection is closed at once
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { addr, cut, task }
    }

    /// Cuts the member off: open connections close, new ones are refused.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

/// What one member sends: every address it connects to goes through a [`Proxy`] of its own, so
/// that [`CutConnector::cut`] cuts everything this member sends (Raft, forwarded calls, its
/// agent's renewals) and nothing the others send each other.
#[derive(Default)]
pub struct CutConnector {
    proxies: std::sync::Mutex<BTreeMap<String, Proxy>>,
    cut: std::sync::atomic::AtomicBool,
}

impl CutConnector {
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.proxies.lock().expect("proxies").values().for_each(Proxy::cut);
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        self.proxies.lock().expect("proxies").values().for_each(Proxy::heal);
    }
}

impl Redirect for CutConnector {
    fn redirect(&self, addr: &str) -> String {
        let mut proxies = self.proxies.lock().expect("proxies");
        let via = match proxies.get(addr) {
            Some(p) => p.addr,
            None => {
                let target: SocketAddr = addr.parse().expect("members of test clusters have IP addresses");
                let proxy = Proxy::start_here(target).expect("start an outbound proxy");
                if self.cut.load(std::sync::atomic::Ordering::SeqCst) {
                    proxy.cut();
                }
                let via = proxy.addr;
                proxies.insert(addr.to_string(), proxy);
                via
            }
        };
        via.to_string()
    }
}

/// A member's links to the others: what it receives (its own proxy, its advertised address) and
/// what it sends (its connector).
pub struct Links {
    pub inbound: Proxy,
    pub outbound: Arc<CutConnector>,
}

impl Links {
    /// Cuts what the member receives only.
    pub fn cut_inbound(&self) {
        self.inbound.cut();
    }

    /// A partition: the member neither receives nor sends anything.
    pub fn cut(&self) {
        self.inbound.cut();
        self.outbound.cut();
    }

    pub fn heal(&self) {
        self.inbound.heal();
        self.outbound.heal();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub configs: BTreeMap<u64, NodeConfig>,
    pub nodes: BTreeMap<u64, Node>,
    /// Where each member runs its pods (kept across restarts: an in-memory runtime keeps its
    /// containers, as an engine would).
    pub pods: BTreeMap<u64, Option<PodRuntime>>,
}

impl TestCluster {
    /// Starts `n` members that bootstrap a new cluster together.
    pub async fn start(n: u64, raft: RaftSettings) -> Self {
        Self::start_with_agent(n, raft, skiff_server::config::AgentSettings::none()).await
    }

    /// Starts `n` members whose agents run with `agent` (e.g. on Docker, with test labels).
    pub async fn start_with_agent(n: u64, raft: RaftSettings, agent: skiff_server::config::AgentSettings) -> Self {
        Self::start_with(n, raft, agent, &|_| {}).await
    }

    /// Starts `n` members that store and serve but run no controllers (tests of the API alone).
    pub async fn start_without_controllers(n: u64, raft: RaftSettings) -> Self {
        Self::start_with(n, raft, skiff_server::config::AgentSettings::none(), &|c| c.controllers = false).await
    }

    /// Starts `n` members with `services` (e.g. a proxy on a loopback service range).
    pub async fn start_with_services(n: u64, raft: RaftSettings, services: ServiceSettings) -> Self {
        let agent = skiff_server::config::AgentSettings::none();
        Self::start_with(n, raft, agent, &|c| c.services = services.clone()).await
    }

    /// Starts `n` members with `agent`, each config changed by `configure`.
    pub async fn start_with(
        n: u64,
        raft: RaftSettings,
        agent: skiff_server::config::AgentSettings,
        configure: &dyn Fn(&mut NodeConfig),
    ) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, bind("127.0.0.1:0".parse().expect("addr")));
        }
        let members: Vec<InitialMember> = listeners
            .iter()
            .map(|(id, l)| InitialMember {
                id: *id,
                name: format!("node{id}"),
                addr: l.local_addr().expect("addr").to_string(),
            })
            .collect();
        let mut cluster = TestCluster { dir, configs: BTreeMap::new(), nodes: BTreeMap::new(), pods: BTreeMap::new() };
        let admin = skiff_server::security::admin_credentials_path(&cluster.dir.path().join("node1"));
        remember_credentials(members.iter().map(|m| m.addr.clone()), admin);
        for (id, listener) in listeners {
            let data_dir = cluster.dir.path().join(format!("node{id}"));
            let mut config =
                member_config_with(id, &listener, data_dir, members.clone(), None, raft.clone(), agent.clone());
            configure(&mut config);
            cluster.configs.insert(id, config.clone());
            let pods = PodRuntime::from_settings(&config.agent);
            cluster.pods.insert(id, pods.clone());
            let node = Node::start(config, listener, None, pods).await.expect("start member");
            cluster.nodes.insert(id, node);
        }
        cluster
    }

    /// Starts `n` members that reach each other through a [`Proxy`] each (their advertised address)
    /// and send through a [`CutConnector`] each, so that tests can cut them apart ([`Links`]);
    /// clients from [`TestCluster::direct_client`] talk to a member without its proxy.
    pub async fn start_behind_proxies(
        n: u64,
        raft: RaftSettings,
        agent: skiff_server::config::AgentSettings,
    ) -> (Self, BTreeMap<u64, Links>) {
        init_tracing();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        let mut links = BTreeMap::new();
        for id in 1..=n {
            let listener = bind("127.0.0.1:0".parse().expect("addr"));
            proxies.insert(id, Proxy::start(listener.local_addr().expect("addr")).await);
            listeners.insert(id, listener);
        }
        let members: Vec<InitialMember> = proxies
            .iter()
            .map(|(id, p)| InitialMember { id: *id, name: format!("node{id}"), addr: p.addr.to_string() })
            .collect();
        let mut cluster = TestCluster { dir, configs: BTreeMap::new(), nodes: BTreeMap::new(), pods: BTreeMap::new() };
        let admin = skiff_server::security::admin_credentials_path(&cluster.dir.path().join("node1"));
        let listens = listeners.values().map(|l| l.local_addr().expect("addr").to_string());
        remember_credentials(members.iter().map(|m| m.addr.clone()).chain(listens), admin);
        for (id, listener) in listeners {
            let data_dir = cluster.dir.path().join(format!("node{id}"));
            let config = NodeConfig {
                id,
                name: format!("node{id}"),
                listen: listener.local_addr().expect("addr").to_string(),
                advertise: Some(proxies[&id].addr.to_string()),
                http_listen: "127.0.0.1:0".into(),
                data_dir,
                initial_members: members.clone(),
                join: None,
                raft: raft.clone(),
                agent: agent.clone(),
                controllers: true,
                lifecycle: Default::default(),
                services: ServiceSettings { proxy: false, ..Default::default() },
                security: test_security(),
            };
            config.validate("test").expect("valid config");
            cluster.configs.insert(id, config.clone());
            let pods = PodRuntime::from_settings(&config.agent);
            cluster.pods.insert(id, pods.clone());
            let outbound = Arc::new(CutConnector::default());
            let redirect: Arc<dyn Redirect> = outbound.clone();
            let node = Node::start(config, listener, Some(redirect), pods).await.expect("start member");
            cluster.nodes.insert(id, node);
            let inbound = proxies.remove(&id).expect("the member's proxy");
            links.insert(id, Links { inbound, outbound });
        }
        (cluster, links)
    }

    /// A client of member `id` at its own listener (past its proxy, if it has one).
    pub fn direct_client(&self, id: u64) -> Client {
        Client::with_connector(std::slice::from_ref(&self.configs[&id].listen), self.admin()).expect("client")
    }

    /// Starts a new member that joins through `via`.
    pub async fn join(&mut self, id: u64, via: u64, raft: RaftSettings) -> Result<(), skiff_server::node::NodeError> {
        self.join_with_token(id, via, raft, Some(TEST_JOIN_SECRET.into())).await
    }

    /// Starts a new member that joins through `via` with `token` (the join token or secret).
    pub async fn join_with_token(
        &mut self,
        id: u64,
        via: u64,
        raft: RaftSettings,
        token: Option<String>,
    ) -> Result<(), skiff_server::node::NodeError> {
        let listener = bind("127.0.0.1:0".parse().expect("addr"));
        let data_dir = self.dir.path().join(format!("node{id}-{}", self.configs.len()));
        let mut config = member_config(id, &listener, data_dir, Vec::new(), Some(self.addr(via)), raft);
        config.security.join_token = token;
        let first = self.configs.keys().next().expect("a member");
        remember_credentials(
            [config.advertise_addr().to_string()],
            skiff_server::security::admin_credentials_path(&self.configs[first].data_dir),
        );
        let node = Node::start(config.clone(), listener, None, None).await?;
        self.configs.insert(id, config);
        self.pods.insert(id, None);
        self.nodes.insert(id, node);
        Ok(())
    }

    pub fn addr(&self, id: u64) -> String {
        self.configs[&id].advertise_addr().to_string()
    }

    /// Stops a member (its data stays).
    pub async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// Starts a stopped member again from its data directory, on its old port.
    pub async fn restart(&mut self, id: u64) {
        let config = self.configs[&id].clone();
        let addr: SocketAddr = config.listen.parse().expect("addr");
        // sled releases its lock when the last handle of the old instance is gone; retry until then.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listener = bind(addr);
            let pods = self.pods.get(&id).cloned().flatten();
            match Node::start(config.clone(), listener, None, pods).await {
                Ok(node) => {
                    self.nodes.insert(id, node);
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "restart not possible yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot restart member {id}: {e}"),
            }
        }
    }

    /// A client that knows every member (running or not).
    pub fn client(&self) -> Client {
        let addrs: Vec<String> = self.configs.keys().map(|id| self.addr(*id)).collect();
        Client::with_connector(&addrs, self.admin()).expect("client")
    }

    /// A client that talks to one member only.
    pub fn client_of(&self, id: u64) -> Client {
        Client::with_connector(&[self.addr(id)], self.admin()).expect("client")
    }

    /// The admin credentials the bootstrapping member wrote.
    pub fn admin_credentials(&self) -> skiff_tls::Credentials {
        let first = self.configs.keys().next().expect("a member");
        let path = skiff_server::security::admin_credentials_path(&self.configs[first].data_dir);
        skiff_tls::Credentials::load(&path).expect("the admin credentials")
    }

    /// Channels that present the admin credentials.
    pub fn admin(&self) -> Arc<dyn Connector> {
        skiff_tls::credentials::connector(&self.admin_credentials()).expect("admin connector")
    }

    /// Channels that present member `id`'s own certificate.
    pub fn member_connector(&self, id: u64) -> Arc<dyn Connector> {
        let dir = self.configs[&id].data_dir.join("tls");
        let identity = skiff_tls::Identity::load_dir(&dir).expect("read").expect("a member certificate");
        Arc::new(skiff_tls::TlsConnector::new(skiff_tls::IdentityStore::new(identity).expect("identity")))
    }

    /// Channels that trust the cluster but present no certificate.
    pub fn anonymous(&self) -> Arc<dyn Connector> {
        Arc::new(skiff_tls::TlsConnector::anonymous(&self.admin_credentials().ca).expect("anonymous connector"))
    }

    /// The leader every running voter agrees on.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        eventually("an agreed leader", timeout, || async {
            let leaders: Vec<Option<u64>> =
                self.nodes.values().map(|n| n.store().raft().metrics().borrow().current_leader).collect();
            let first = leaders.first().copied().flatten()?;
            let running_leader = self.nodes.contains_key(&first);
            (running_leader && leaders.iter().all(|l| *l == Some(first))).then_some(first)
        })
        .await
    }

    /// Waits until every running member has applied at least `index`.
    pub async fn all_applied(&self, index: u64, timeout: Duration) {
        eventually(&format!("every member to apply index {index}"), timeout, || async {
            self.nodes.values().all(|n| n.store().applied_revision() >= index).then_some(())
        })
        .await
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

pub async fn put(client: &Client, key: &str, value: &str) -> Result<u64, ClientError> {
    let req = PutRequest { key: key.into(), value: value.as_bytes().to_vec(), expected_revision: None };
    client
        .call(CallKind::Write, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await.map(|r| r.into_inner().revision) }
        })
        .await
}

pub async fn get(client: &Client, key: &str, stale: bool) -> Result<Option<String>, ClientError> {
    let req = GetRequest { key: key.into(), stale };
    let res = client
        .call(CallKind::Read, |ch| {
            let req = req.clone();
            async move {
                KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES).get(req).await.map(|r| r.into_inner())
            }
        })
        .await;
    match res {
        Ok(r) => Ok(r.kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())),
        Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `(key, value)` pairs under `prefix`, and the revision of the list.
pub async fn list(client: &Client, prefix: &str, stale: bool) -> Result<(Vec<(String, String)>, u64), ClientError> {
    let req = ListRequest { prefix: prefix.into(), stale };
    let r = client
        .call(CallKind::Read, |ch| {
            let req = req.clone();
            async move {
                KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES).list(req).await.map(|r| r.into_inner())
            }
        })
        .await?;
    let kvs = r.kvs.into_iter().map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned())).collect();
    Ok((kvs, r.revision))
}

/// Removes every container labelled `skiff.test.run=<run>` when dropped (also when a test fails).
pub struct DockerCleanup(pub String);

impl DockerCleanup {
    /// A label value unique to this test run.
    pub fn new_run() -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Self(format!("{}-{nanos}", std::process::id()))
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=skiff.test.run={}", self.0)])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> =
                String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
    }
}

/// The agent settings of a Docker test: the local engine, every container labelled `skiff.test` and
/// with the test run (so [`DockerCleanup`] finds it), a 1 s node heartbeat.
pub fn docker_agent(run: &str) -> skiff_server::config::AgentSettings {
    skiff_server::config::AgentSettings {
        runtime: skiff_server::config::RuntimeKind::Docker,
        container_labels: BTreeMap::from([
            ("skiff.test".to_string(), "1".to_string()),
            ("skiff.test.run".to_string(), run.to_string()),
        ]),
        heartbeat_ms: 1000,
        ..skiff_server::config::AgentSettings::default()
    }
}

/// Runs the `skiff` CLI against `members` with their cluster's admin credentials (a 10 s call
/// timeout).
pub async fn skiff(members: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--members", members, "--timeout", "10"])
        .arg("--credentials")
        .arg(credentials_for(members))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run skiff")
}

/// Runs the `skiff` CLI and returns what it printed; fails the test if it fails.
pub async fn skiff_ok(members: &str, args: &[&str]) -> String {
    let out = skiff(members, args).await;
    assert!(
        out.status.success(),
        "skiff {args:?} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
