//! One cluster member: the store, the gRPC listener (Raft and client API on one port), bootstrap or
//! join, and clean shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skiff_api::api::ResourceApi;
use skiff_api::defaults::DEFAULT_NAMESPACE;
use skiff_api::{Kind, Object, Reason};
use skiff_apiserver::ApiServer;
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::cluster_server::ClusterServer;
use skiff_proto::api::containers_server::ContainersServer;
use skiff_proto::api::kv_server::KvServer;
use skiff_proto::api::resources_server::ResourcesServer;
use skiff_proto::api::security_server::SecurityServer;
use skiff_proto::api::AddMemberRequest;
use skiff_proto::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use skiff_proto::member::members_server::MembersServer;
use skiff_proto::transport::Redirect;
use skiff_store::history::HistoryLimits;
use skiff_store::network::Connector;
use skiff_store::raft_service::RaftService;
use skiff_store::state_machine::StateMachineConfig;
use skiff_store::{KvStore, Member, Op, StoreConfig, StoreError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

use crate::agent_api::PodRuntime;
use crate::cluster_service::ClusterService;
use crate::config::NodeConfig;
use crate::container_service::ContainerService;
use crate::forward::{Channels, GrpcForward, MemberService};
use crate::kv_service::KvService;
use crate::resource_service::ResourceService;
use skiff_client::{CallKind, Client, ClientError};

/// Where the cluster id lives in the store. The first leader writes it once; every member has it.
pub const CLUSTER_ID_KEY: &str = "/skiff/cluster-id";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot bootstrap the cluster: {0}")]
    Bootstrap(String),
    #[error("cannot join the cluster through {addr}: {message}")]
    Join { addr: String, message: String },
    #[error("cannot serve on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error("the config cannot be used: {0}")]
    Config(String),
}

/// A running member.
pub struct Node {
    store: KvStore,
    api: Arc<ApiServer>,
    addr: SocketAddr,
    /// Where `/metrics` is served, when it is.
    http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    /// The service proxy, when this member runs one.
    proxy: Option<skiff_net::ServiceProxy>,
    /// Cluster DNS for this member's pods, when it runs pods and a proxy.
    dns: Option<skiff_net::dns::DnsServer>,
}

impl Node {
    /// Starts a member on `listener`, its pods on `pods` (none: it runs no pods; see
    /// [`PodRuntime::from_settings`]). Returns once it serves and has bootstrapped or joined.
    pub async fn start(
        config: NodeConfig,
        listener: TcpListener,
        redirect: Option<Arc<dyn Redirect>>,
        pods: Option<PodRuntime>,
    ) -> Result<Node, NodeError> {
        let addr = listener
            .local_addr()
            .map_err(|e| NodeError::Listen { addr: config.listen.clone(), message: e.to_string() })?;
        let (identity, pending) = crate::security::member_identity(&config, redirect.clone()).await?;
        let tls = skiff_tls::transport::server_config(identity.clone())
            .map_err(|e| NodeError::Config(format!("member certificate: {e}")))?;
        let connector: Arc<dyn Connector> =
            Arc::new(skiff_tls::TlsConnector::new(identity.clone()).with_redirect(redirect));
        let store_config = StoreConfig {
            node_id: config.id,
            data_dir: config.data_dir.clone(),
            raft: config.raft.openraft_config(),
            state_machine: StateMachineConfig {
                history: HistoryLimits {
                    revisions: config.raft.watch_history_revisions,
                    min_bytes: config.raft.watch_history_bytes,
                },
                ..Default::default()
            },
            log_cache_bytes: 64 << 20,
            write_timeout: config.raft.write_timeout(),
            max_in_flight_entries: config.raft.max_in_flight_entries,
            log_budget: Default::default(),
        };
        let store = KvStore::open(store_config, connector.clone()).await?;
        let channels = Arc::new(Channels::new(connector.clone()));
        let network = config.services.network().map_err(|e| NodeError::Config(format!("services: {e}")))?;
        let api = Arc::new(ApiServer::with_network(
            store.clone(),
            Arc::new(GrpcForward { channels: channels.clone() }),
            network.clone(),
        ));

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let authorizer = Arc::new(crate::authz::Authorizer::new(store.clone()));
        let router = tonic::transport::Server::builder()
            .layer(crate::authz::AuthLayer(authorizer))
            .add_service(SecurityServer::new(crate::security::SecurityService::new(
                api.clone(),
                pending.clone(),
                &config,
            )))
            .add_service(RaftService::server(store.raft().clone(), config.raft.inbound_limits()))
            .add_service(
                MembersServer::new(MemberService { api: api.clone() })
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(
                KvServer::new(KvService::new(api.clone()))
                    .max_decoding_message_size(MAX_REQUEST_BYTES)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            )
            .add_service(ClusterServer::new(ClusterService::new(api.clone(), channels.clone())))
            .add_service(ContainersServer::new(ContainerService::new(
                api.clone(),
                channels.clone(),
                config.name.clone(),
                pods.as_ref().map(|p| p.containers.clone()),
            )))
            .add_service(
                ResourcesServer::new(ResourceService::new(api.clone()))
                    .max_decoding_message_size(MAX_REQUEST_BYTES)
                    .max_encoding_message_size(MAX_RESPONSE_BYTES),
            );
        // TLS handshakes (and TCP_NODELAY) happen before tonic sees a connection.
        let incoming = skiff_tls::transport::incoming(listener, tls);
        let server = tokio::spawn(async move {
            let stopped = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stopped).await {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        });

        let mut node = Node {
            store: store.clone(),
            api: api.clone(),
            addr,
            http_addr: None,
            stop: Some(stop_tx),
            server,
            background: Vec::new(),
            proxy: None,
            dns: None,
        };
        let proxy_metrics = config.services.proxy.then(skiff_net::metrics::ProxyMetrics::default);
        if !config.http_listen.is_empty() {
            let sources = crate::http::Sources {
                api: api.clone(),
                node: config.name.clone(),
                agent: pods.as_ref().map(|p| p.metrics.clone()),
                proxy: proxy_metrics.clone(),
            };
            match serve_http(&config.http_listen, sources).await {
                Ok((http_addr, task)) => {
                    node.http_addr = Some(http_addr);
                    node.background.push(task);
                }
                Err(e) => {
                    node.shutdown().await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = node.bootstrap_or_join(&config, connector).await {
            node.shutdown().await;
            return Err(e);
        }
        node.background.push(tokio::spawn(initialize_cluster_objects(api.clone())));
        if let Some(pending) = pending {
            node.background.push(tokio::spawn(pending.publish(api.clone(), config.id)));
        }
        node.background.push(tokio::spawn(crate::security::renew_before_expiry(
            store.clone(),
            identity,
            config.data_dir.clone(),
            config.id,
            Duration::from_secs(config.security.member_cert_secs),
        )));
        // The controllers run on whichever member leads, through an API that never forwards.
        let controllers: Arc<dyn skiff_api::ResourceApi> = Arc::new(api.here_only());
        let run_controllers = if config.controllers {
            skiff_control::controllers(config.lifecycle.controller(), config.lifecycle.event_expiry())
        } else {
            Vec::new()
        };
        // Controllers that watch the same objects share one cache per term.
        let reflectors = skiff_control::reflector::Reflectors::default();
        for controller in run_controllers {
            node.background.push(tokio::spawn(skiff_control::runner::run(
                controller,
                controllers.clone(),
                control_leadership(&store),
                reflectors.clone(),
            )));
        }
        let mut access = None;
        if let Some(metrics) = proxy_metrics {
            let reader: Arc<dyn skiff_api::ResourceApi> = api.clone();
            let domain = &config.services.cluster_domain;
            let data_path = config.services.data_path.data_path();
            let proxy = skiff_net::ServiceProxy::start(reader, network, domain, data_path, metrics);
            if let Some(pods) = &pods {
                access = crate::agent_api::service_access(pods, &config).await;
                if let Some(access) = &access {
                    node.dns = start_dns(access, proxy.records()).await;
                }
            }
            node.proxy = Some(proxy);
        }
        if let Some(pods) = pods {
            let agent = crate::agent_api::run_agent(api.clone(), pods, config.clone(), access);
            node.background.push(tokio::spawn(agent));
        }
        tracing::info!(id = config.id, name = %config.name, %addr, "member started");
        Ok(node)
    }

    async fn bootstrap_or_join(&self, config: &NodeConfig, connector: Arc<dyn Connector>) -> Result<(), NodeError> {
        let raft = self.store.raft();
        let initialized = raft.is_initialized().await.map_err(|e| NodeError::Bootstrap(e.to_string()))?;
        if initialized {
            tracing::info!("restarting from existing data");
            return Ok(());
        }
        if let Some(join) = &config.join {
            return join_through(join, config, connector, &self.store).await;
        }
        if config.initial_members.is_empty() {
            tracing::info!(
                "not a member of any cluster yet: add it from any member with `skiff cluster add-member --id {} --name {} --addr {}`",
                config.id,
                config.name,
                config.advertise_addr()
            );
            return Ok(());
        }
        // The member with the lowest id creates the cluster; the others are brought in by it.
        let lowest = config.initial_members.iter().map(|m| m.id).min();
        if lowest == Some(config.id) {
            let members: BTreeMap<u64, Member> = config
                .initial_members
                .iter()
                .map(|m| (m.id, Member { name: m.name.clone(), addr: m.addr.clone() }))
                .collect();
            tracing::info!(?members, "initializing a new cluster");
            if let Err(e) = raft.initialize(members).await {
                // Another run may have initialized it already; anything else is fatal.
                if !matches!(e, openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) {
                    return Err(NodeError::Bootstrap(e.to_string()));
                }
            }
        }
        Ok(())
    }

    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// The member's API, in-process (what its agent and controllers use).
    pub fn api(&self) -> &Arc<ApiServer> {
        &self.api
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the HTTP listener (`/metrics`) is bound, when it is on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Stops serving, stops Raft and waits for both.
    pub async fn shutdown(mut self) {
        if let Some(dns) = self.dns.take() {
            dns.stop().await;
        }
        self.proxy.take();
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.store.shutdown().await;
        // Streams (watches) keep the server alive until their clients go; do not wait for them forever.
        let server = &mut self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut *server).await.is_err() {
            server.abort();
        }
    }
}

/// Cluster DNS on this member's address on the pod network, port 53, where its pods' resolver
/// points; other names go to the member's own resolvers (its /etc/resolv.conf). `None`, said once,
/// when pods cannot reach this member or the port cannot be bound: pods then resolve only outside
/// names (through the engine's defaults).
async fn start_dns(
    access: &skiff_agent::pod_spec::ServiceAccess,
    records: tokio::sync::watch::Receiver<Arc<skiff_net::dns::Records>>,
) -> Option<skiff_net::dns::DnsServer> {
    let ip: std::net::IpAddr = access.router.parse().ok()?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams = skiff_net::dns::upstreams_from_resolv_conf(&resolv);
    match skiff_net::dns::DnsServer::start(SocketAddr::new(ip, 53), upstreams, records).await {
        Ok(server) => {
            tracing::info!(addr = %server.local_addr(), "cluster DNS serving this member's pods");
            Some(server)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cluster DNS is not served on this member: pods resolve outside names only");
            None
        }
    }
}

/// Serves the member's HTTP routes on `addr` until the task is aborted.
async fn serve_http(addr: &str, sources: crate::http::Sources) -> Result<(SocketAddr, JoinHandle<()>), NodeError> {
    let listen_err =
        |e: std::io::Error| NodeError::Listen { addr: format!("{addr} (field `http_listen`)"), message: e.to_string() };
    let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
    let bound = listener.local_addr().map_err(listen_err)?;
    let router = crate::http::router(sources);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the HTTP listener stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics");
    Ok((bound, task))
}

/// The store's leadership as the controllers' runner takes it; closed when Raft stops.
fn control_leadership(store: &KvStore) -> tokio::sync::watch::Receiver<skiff_control::Leadership> {
    let mut from = store.leadership();
    let view = |l: &skiff_store::Leadership| skiff_control::Leadership { term: l.term, leads: l.is_leader };
    let (tx, rx) = tokio::sync::watch::channel(view(&from.borrow()));
    tokio::spawn(async move {
        while from.changed().await.is_ok() {
            let now = view(&from.borrow_and_update());
            if tx.send(now).is_err() {
                return;
            }
        }
    });
    rx
}

/// Asks an existing member to add this one, retrying while the cluster cannot answer.
async fn join_through(
    join: &str,
    config: &NodeConfig,
    connector: Arc<dyn Connector>,
    store: &KvStore,
) -> Result<(), NodeError> {
    let join_err = |message: String| NodeError::Join { addr: join.to_string(), message };
    let mut client = Client::with_connector(&[join.to_string()], connector).map_err(join_err)?;
    client.deadline = Duration::from_secs(60);
    client.call_timeout = Duration::from_secs(120);
    let req = AddMemberRequest { id: config.id, name: config.name.clone(), addr: config.advertise_addr().to_string() };
    tracing::info!(%join, "joining the cluster");
    let result = client
        .call(CallKind::Write, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).add_member(req).await.map(|r| r.into_inner()) }
        })
        .await;
    match result {
        Ok(resp) => {
            tracing::info!(cluster_id = %resp.cluster_id, voters = ?resp.voters, learners = ?resp.learners, "joined");
            Ok(())
        }
        Err(ClientError::Status { status, .. }) if status.code() == Code::AlreadyExists => {
            Err(join_err(status.message().to_string()))
        }
        Err(e) => {
            // The add may have gone through even if the answer was lost: then the log has arrived.
            if store.raft().is_initialized().await.unwrap_or(false) {
                return Ok(());
            }
            Err(join_err(e.to_string()))
        }
    }
}

/// Makes sure the cluster has an id and the `default` namespace: the leader writes them if they
/// are missing. Compare-and-swap ("must not exist") makes racing writers harmless. Wakes on every
/// leadership change, so they are written as soon as the first leader is elected.
async fn initialize_cluster_objects(api: Arc<ApiServer>) {
    let store = api.store().clone();
    let default_ns = skiff_apiserver::keys::object_key(Kind::Namespace, "", DEFAULT_NAMESPACE);
    let mut leadership = store.leadership();
    loop {
        let id = store.get_local(CLUSTER_ID_KEY);
        let ns = store.get_local(&default_ns);
        match (&id, &ns) {
            (Ok(Some(kv)), Ok(Some(_))) => {
                tracing::info!(cluster_id = %String::from_utf8_lossy(&kv.value), "cluster id");
                return;
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "reading cluster id"),
            _ => {}
        }
        let leads = leadership.borrow_and_update().is_leader;
        if leads {
            if matches!(id, Ok(None)) {
                let id = uuid::Uuid::new_v4().to_string();
                let op = Op::Put { key: CLUSTER_ID_KEY.into(), value: id.into_bytes(), expect: Some(0) };
                match store.write(vec![op]).await {
                    Ok(_) | Err(StoreError::Conflict(_)) => continue,
                    Err(e) => tracing::debug!(error = %e, "writing cluster id"),
                }
            } else if matches!(ns, Ok(None)) {
                let mut namespace = skiff_api::kinds::Namespace::default();
                namespace.metadata.name = DEFAULT_NAMESPACE.to_string();
                match api.create(Object::Namespace(namespace)).await {
                    Ok(_) => continue,
                    Err(e) if e.is(Reason::AlreadyExists) => continue,
                    Err(e) => tracing::debug!(error = %e, "creating the default namespace"),
                }
            }
        }
        // Raft stopped: nothing more to do. Otherwise wait for a change of leadership, or retry a
        // failed write a moment later.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(200), leadership.changed()).await {
            return;
        }
    }
}
