//! The node config: one TOML file per member.
//!
//! ```toml
//! id = 1
//! name = "node1"
//! listen = "0.0.0.0:7420"        # where the gRPC listener binds
//! advertise = "node1:7420"       # how other members and clients reach it
//! data_dir = "/var/lib/skiff"
//! # Either the members that bootstrap a new cluster together (this one among them) ...
//! initial_members = [
//!   { id = 1, name = "node1", addr = "node1:7420" },
//!   { id = 2, name = "node2", addr = "node2:7420" },
//! ]
//! # ... or an existing member to join through:
//! # join = "node1:7420"
//! # With neither, the member waits until `skiff cluster add-member` adds it.
//!
//! [raft]                         # all optional
//! heartbeat_ms = 30
//! election_timeout_min_ms = 80
//! election_timeout_max_ms = 160
//! ```
//!
//! Every error names the file and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialMember {
    pub id: u64,
    pub name: String,
    pub addr: String,
}

/// Raft timings and log retention.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so slow followers catch up without one.
    pub keep_logs_after_snapshot: u64,
    /// Entries per append-entries request.
    pub max_payload_entries: u64,
    /// Revisions of watch history kept for watches that resume.
    pub watch_history_revisions: u64,
    /// Bytes of watch history kept however small the cluster state is (a larger state is the
    /// budget itself: the history never costs more than the state, or this).
    pub watch_history_bytes: u64,
    /// How long a write waits for commit before its outcome is reported unknown.
    pub write_timeout_ms: u64,
    /// Raft entries proposed but not yet applied at once; concurrent writes share the next entry.
    pub max_in_flight_entries: usize,
    /// The largest snapshot this member receives from a leader, in bytes (a chunk beyond it is
    /// refused, so a forged one cannot make it allocate without bound).
    pub max_snapshot_bytes: u64,
}

impl Default for RaftSettings {
    /// Aims at a new leader within about 0.4 s of a crash, measured by bench/failover. Two facts of
    /// openraft 0.9 shape these numbers:
    /// - a follower that knows a leader waits `election_timeout_max` (the leader's lease) plus its
    ///   random election timeout after the last heartbeat before it campaigns: 160 + 80..160 ms;
    /// - timers are checked on a tick every 1.5 heartbeats, and each member draws its random timeout
    ///   once, at start. With 50 ms heartbeats (75 ms ticks) two followers often fired on the same
    ///   tick, split the vote and needed another round (0.7-1.2 s); 30 ms heartbeats (45 ms ticks)
    ///   keep that rarer and shorter.
    ///
    /// Eight heartbeats of silence pass before anyone campaigns, and no term changed under 1000
    /// concurrent writers in bench/store.
    fn default() -> Self {
        Self {
            heartbeat_ms: 30,
            election_timeout_min_ms: 80,
            election_timeout_max_ms: 160,
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 1_000,
            max_payload_entries: 512,
            watch_history_revisions: 100_000,
            watch_history_bytes: skiff_store::history::HistoryLimits::default().min_bytes,
            write_timeout_ms: 10_000,
            max_in_flight_entries: 4,
            max_snapshot_bytes: skiff_store::inbound::InboundLimits::default().max_snapshot_bytes,
        }
    }
}

impl RaftSettings {
    /// openraft's config for these settings.
    pub fn openraft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: "skiff".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            // Purge as soon as a snapshot allows, in batches no bigger than the snapshot interval.
            purge_batch_size: self.snapshot_every.clamp(1, 256),
            ..Default::default()
        }
    }

    /// What the member accepts from its peers.
    pub fn inbound_limits(&self) -> skiff_store::inbound::InboundLimits {
        skiff_store::inbound::InboundLimits { max_snapshot_bytes: self.max_snapshot_bytes }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// One member's config, as read from its TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    pub name: String,
    pub listen: String,
    /// Defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The member's HTTP listener: Prometheus metrics at `/metrics` (and later the Kubernetes REST
    /// API). Default `127.0.0.1:9420`; `""` turns it off.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub initial_members: Vec<InitialMember>,
    #[serde(default)]
    pub join: Option<String>,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub agent: AgentSettings,
    /// Whether this member runs the controllers (scheduler, ReplicaSets, Deployments, garbage
    /// collector) when it leads. Off, the cluster stores and serves objects and nothing decides,
    /// like a kube-apiserver without its controller manager (tests of the API alone use it).
    #[serde(default = "default_controllers")]
    pub controllers: bool,
    #[serde(default)]
    pub lifecycle: LifecycleSettings,
    #[serde(default)]
    pub services: ServiceSettings,
    #[serde(default)]
    pub security: SecuritySettings,
}

/// `[security]`: how this member gets its certificate and how long certificates last.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// The join token (`SKIFF-1-<CA digest>-<secret>`, from `skiff cluster join-token`), or for the
    /// members of a new cluster a shared bootstrap secret (32+ letters or digits). Needed once, by
    /// a member that has no certificate yet; the environment variable `SKIFF_JOIN_TOKEN` overrides
    /// it. The member that bootstraps a cluster makes a secret when it is given none.
    pub join_token: Option<String>,
    /// How long a member certificate is valid; it is renewed after two thirds of that.
    pub member_cert_secs: u64,
    /// How long client certificates (the admin credentials, `skiff cluster credentials`) are valid.
    pub client_cert_secs: u64,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self { join_token: None, member_cert_secs: 90 * 24 * 3600, client_cert_secs: 365 * 24 * 3600 }
    }
}

/// `[services]`: where Services get their addresses. Every member of a cluster must say the same
/// (the leader allocates, every member's proxy serves).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// Cluster IPs come from here (Kubernetes' `--service-cluster-ip-range`).
    pub cluster_ip_range: String,
    /// Node ports come from here, as `first-last` (Kubernetes' `--service-node-port-range`).
    pub node_port_range: String,
    /// Whether this member runs the service proxy (cluster IPs and node ports). On by default;
    /// off, the member's Services are reached through the other members only.
    pub proxy: bool,
    /// The cluster's DNS domain (`<service>.<namespace>.svc.cluster.local`).
    pub cluster_domain: String,
    /// `userspace` (the default: the proxy's listeners forward, and retry another endpoint) or
    /// `nftables` (the kernel rewrites connections; needs `nft`; no retry).
    pub data_path: DataPathSetting,
}

/// `[services] data_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataPathSetting {
    #[default]
    Userspace,
    Nftables,
}

impl DataPathSetting {
    pub fn data_path(self) -> skiff_net::DataPath {
        match self {
            DataPathSetting::Userspace => skiff_net::DataPath::Userspace,
            DataPathSetting::Nftables => skiff_net::DataPath::Nftables,
        }
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        let d = skiff_api::network::ServiceNetwork::default();
        ServiceSettings {
            cluster_ip_range: d.cluster_ips.to_string(),
            node_port_range: format!("{}-{}", d.node_ports.start(), d.node_ports.end()),
            proxy: true,
            cluster_domain: "cluster.local".into(),
            data_path: DataPathSetting::Userspace,
        }
    }
}

impl ServiceSettings {
    /// The network these settings describe (checked by [`NodeConfig::validate`]).
    pub fn network(&self) -> Result<skiff_api::network::ServiceNetwork, String> {
        skiff_api::network::ServiceNetwork::parse(&self.cluster_ip_range, &self.node_port_range)
    }
}

/// `[lifecycle]`: how soon the leader takes a silent node out of service and moves its pods, and
/// how long events live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSettings {
    /// A node whose agent has not renewed for this long is NotReady (Kubernetes'
    /// `--node-monitor-grace-period`, 40 s there). Must exceed every agent's `heartbeat_ms`.
    pub node_monitor_grace_ms: u64,
    /// How long the pods of a NotReady node stay before they are evicted and replaced elsewhere,
    /// unless they tolerate `node.kubernetes.io/unreachable` themselves (Kubernetes' default
    /// toleration, 300 s there).
    pub pod_eviction_grace_ms: u64,
    /// How long an event lives after it last happened (Kubernetes' `--event-ttl`).
    pub event_ttl_seconds: u64,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        let d = skiff_control::node_lifecycle::NodeLifecycle::default();
        LifecycleSettings {
            node_monitor_grace_ms: d.monitor_grace.as_millis() as u64,
            pod_eviction_grace_ms: d.eviction_grace.as_millis() as u64,
            event_ttl_seconds: skiff_control::events::EVENT_TTL.as_secs(),
        }
    }
}

impl LifecycleSettings {
    pub fn controller(&self) -> skiff_control::node_lifecycle::NodeLifecycle {
        skiff_control::node_lifecycle::NodeLifecycle {
            monitor_grace: Duration::from_millis(self.node_monitor_grace_ms),
            eviction_grace: Duration::from_millis(self.pod_eviction_grace_ms),
        }
    }

    pub fn event_expiry(&self) -> skiff_control::events::EventExpiry {
        skiff_control::events::EventExpiry { ttl: Duration::from_secs(self.event_ttl_seconds) }
    }
}

fn default_controllers() -> bool {
    true
}

/// Where a member runs its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The local Docker engine (the default).
    Docker,
    /// In memory: nothing runs, containers are records (simulated nodes, control-plane tests).
    Memory,
    /// No pods: the member stores and serves, its node does not register.
    None,
}

/// `[agent]`: how this member runs the pods bound to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSettings {
    /// `docker` (the default: the local engine), `memory` (simulated) or `none` (no pods).
    pub runtime: RuntimeKind,
    /// The engine's unix socket; default: `DOCKER_HOST` or /var/run/docker.sock.
    pub docker_socket: Option<String>,
    /// The image of pod sandboxes (built locally by scripts/build-pause-image.sh).
    pub sandbox_image: String,
    /// The engine network pod sandboxes join (default: the engine's bridge).
    pub network: Option<String>,
    /// Labels on every container this member creates (tests put `skiff.test` here).
    pub container_labels: BTreeMap<String, String>,
    /// Labels of this member's Node object.
    pub node_labels: BTreeMap<String, String>,
    /// CPU and memory this node offers (quantities, e.g. "2" and "4Gi"); default: the engine's.
    /// Members of one compose cluster share one engine, so each says its share.
    pub cpu: Option<String>,
    pub memory: Option<String>,
    /// The node's address for status.hostIP; default: the host part of `advertise`.
    pub host_ip: Option<String>,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// How often the agent renews its node with the leader (in memory there, never written).
    pub heartbeat_ms: u64,
    /// How many pods may be creating and starting containers at once on this node (the engine
    /// starts 50 containers sooner a few at a time than all at once; bench/deploy).
    pub parallel_starts: usize,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            runtime: RuntimeKind::Docker,
            docker_socket: None,
            sandbox_image: "skiff-pause:1".into(),
            network: None,
            container_labels: BTreeMap::new(),
            node_labels: BTreeMap::new(),
            cpu: None,
            memory: None,
            host_ip: None,
            backoff_base_ms: 10_000,
            backoff_cap_ms: 300_000,
            heartbeat_ms: 1_000,
            parallel_starts: skiff_agent::worker::PARALLEL_STARTS,
        }
    }
}

impl AgentSettings {
    /// A member that runs no pods (in-process test clusters).
    pub fn none() -> Self {
        Self { runtime: RuntimeKind::None, ..Self::default() }
    }
}

/// Where a member serves HTTP unless its config says otherwise.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9420";

fn default_http_listen() -> String {
    DEFAULT_HTTP_LISTEN.into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./skiff-data")
}

/// A config that cannot be used; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Invalid { file: String, field: String, message: String },
}

pub const DEFAULT_ADDR: &str = "127.0.0.1:7420";

impl NodeConfig {
    /// The config used when `skiff node` gets none: a one-member cluster on 127.0.0.1:7420 with its
    /// data in `./skiff-data`.
    pub fn single_member() -> Self {
        Self {
            id: 1,
            name: "node1".into(),
            listen: DEFAULT_ADDR.into(),
            advertise: None,
            http_listen: default_http_listen(),
            data_dir: default_data_dir(),
            initial_members: vec![InitialMember { id: 1, name: "node1".into(), addr: DEFAULT_ADDR.into() }],
            join: None,
            raft: RaftSettings::default(),
            agent: AgentSettings::default(),
            controllers: true,
            lifecycle: LifecycleSettings::default(),
            services: ServiceSettings::default(),
            security: SecuritySettings::default(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Self::parse(&file, &text)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// The address other members and clients use.
    pub fn advertise_addr(&self) -> &str {
        self.advertise.as_deref().unwrap_or(&self.listen)
    }

    /// Checks what serde cannot: ranges, addresses, and that the members agree with each other.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid =
            |field: &str, message: String| ConfigError::Invalid { file: file.into(), field: field.into(), message };
        if self.id == 0 {
            return Err(invalid("id", "must be a positive integer (0 is reserved)".into()));
        }
        check_name(&self.name).map_err(|m| invalid("name", m))?;
        check_addr(&self.listen).map_err(|m| invalid("listen", m))?;
        if !self.http_listen.is_empty() {
            // Port 0 is allowed here: the system picks one (tests).
            let port = self.http_listen.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) || self.http_listen.starts_with(':') {
                return Err(invalid(
                    "http_listen",
                    format!("{:?} is not host:port (\"\" turns the HTTP listener off)", self.http_listen),
                ));
            }
        }
        if let Some(a) = &self.advertise {
            check_addr(a).map_err(|m| invalid("advertise", m))?;
        }
        if !self.initial_members.is_empty() && self.join.is_some() {
            return Err(invalid(
                "join",
                "set either `initial_members` (a new cluster) or `join` (an existing one), not both".into(),
            ));
        }
        if let Some(j) = &self.join {
            check_addr(j).map_err(|m| invalid("join", m))?;
        }
        if let Some(token) = &self.security.join_token {
            skiff_tls::JoinToken::parse(token).map_err(|m| invalid("security.join_token", m))?;
        }
        if self.security.member_cert_secs < 10 || self.security.client_cert_secs < 10 {
            return Err(invalid("security", "certificates must be valid for at least 10 s".into()));
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, m) in self.initial_members.iter().enumerate() {
            let field = |f: &str| format!("initial_members[{i}].{f}");
            if m.id == 0 {
                return Err(invalid(&field("id"), "must be a positive integer".into()));
            }
            if !ids.insert(m.id) {
                return Err(invalid(&field("id"), format!("id {} is used by more than one member", m.id)));
            }
            check_name(&m.name).map_err(|e| invalid(&field("name"), e))?;
            if !names.insert(m.name.clone()) {
                return Err(invalid(&field("name"), format!("name {:?} is used by more than one member", m.name)));
            }
            check_addr(&m.addr).map_err(|e| invalid(&field("addr"), e))?;
            if m.id == self.id && (m.name != self.name || m.addr != self.advertise_addr()) {
                return Err(invalid(
                    &field("addr"),
                    format!(
                        "this member (id {}) is listed as {:?} at {}, but its own `name`/`advertise` say {:?} at {}",
                        m.id,
                        m.name,
                        m.addr,
                        self.name,
                        self.advertise_addr()
                    ),
                ));
            }
        }
        if !self.initial_members.is_empty() && !ids.contains(&self.id) {
            return Err(invalid("initial_members", format!("does not list this member (id {})", self.id)));
        }
        let a = &self.agent;
        for (field, value) in [("agent.cpu", &a.cpu), ("agent.memory", &a.memory)] {
            if let Some(v) = value {
                skiff_api::quantity::Quantity::parse(v).map_err(|e| invalid(field, e.to_string()))?;
            }
        }
        for (k, v) in a.container_labels.iter().chain(&a.node_labels) {
            skiff_api::name::check_label_key(k).map_err(|e| invalid("agent labels", e))?;
            skiff_api::name::check_label_value(v).map_err(|e| invalid("agent labels", e))?;
        }
        if a.parallel_starts == 0 {
            return Err(invalid("agent.parallel_starts", "must be at least 1".into()));
        }
        if a.backoff_base_ms == 0 || a.backoff_cap_ms < a.backoff_base_ms || a.heartbeat_ms == 0 {
            return Err(invalid(
                "agent.backoff_base_ms",
                "backoff_base_ms and heartbeat_ms must be positive and backoff_cap_ms at least backoff_base_ms".into(),
            ));
        }
        if self.lifecycle.node_monitor_grace_ms <= a.heartbeat_ms {
            return Err(invalid(
                "lifecycle.node_monitor_grace_ms",
                format!(
                    "must be greater than agent.heartbeat_ms ({}): a node would be NotReady between two renewals",
                    a.heartbeat_ms
                ),
            ));
        }
        if let Err(e) = self.services.network() {
            let field = if e.contains(&self.services.cluster_ip_range) {
                "services.cluster_ip_range"
            } else {
                "services.node_port_range"
            };
            return Err(invalid(field, e));
        }
        if self.lifecycle.event_ttl_seconds == 0 {
            return Err(invalid("lifecycle.event_ttl_seconds", "must be at least 1".into()));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 {
            return Err(invalid("raft.heartbeat_ms", "must be positive".into()));
        }
        if r.election_timeout_min_ms <= r.heartbeat_ms {
            return Err(invalid(
                "raft.election_timeout_min_ms",
                format!("must be greater than raft.heartbeat_ms ({})", r.heartbeat_ms),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                format!("must be greater than raft.election_timeout_min_ms ({})", r.election_timeout_min_ms),
            ));
        }
        if r.snapshot_every == 0 {
            return Err(invalid("raft.snapshot_every", "must be positive".into()));
        }
        if r.max_payload_entries == 0 {
            return Err(invalid("raft.max_payload_entries", "must be positive".into()));
        }
        if r.max_in_flight_entries == 0 {
            return Err(invalid("raft.max_in_flight_entries", "must be positive".into()));
        }
        if r.write_timeout_ms == 0 {
            return Err(invalid("raft.write_timeout_ms", "must be positive".into()));
        }
        Ok(())
    }
}

/// Member names follow DNS-1123 labels, as Kubernetes node names do.
pub fn check_name(name: &str) -> Result<(), String> {
    skiff_api::name::check_dns1123_label(name).map_err(|why| format!("not a valid member name: {why}"))
}

/// An address is `host:port` with a non-empty host and a port in 1..=65535.
pub fn check_addr(addr: &str) -> Result<(), String> {
    skiff_api::name::check_address(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 2
name = "node2"
listen = "0.0.0.0:7420"
advertise = "node2:7420"
data_dir = "/data"
initial_members = [
  { id = 1, name = "node1", addr = "node1:7420" },
  { id = 2, name = "node2", addr = "node2:7420" },
  { id = 3, name = "node3", addr = "node3:7420" },
]
[raft]
heartbeat_ms = 40
"#;

    #[test]
    fn good_config_parses_with_defaults_filled_in() {
        let c = NodeConfig::parse("node2.toml", GOOD).expect("valid");
        assert_eq!(c.id, 2);
        assert_eq!(c.advertise_addr(), "node2:7420");
        assert_eq!(c.raft.heartbeat_ms, 40);
        assert_eq!(c.raft.election_timeout_min_ms, RaftSettings::default().election_timeout_min_ms);
        assert_eq!(c.initial_members.len(), 3);
    }

    #[test]
    fn missing_field_names_file_and_field() {
        let err = NodeConfig::parse("bad.toml", "name = \"x\"\nlisten = \"a:1\"\n").expect_err("no id");
        let msg = err.to_string();
        assert!(msg.starts_with("bad.toml:"), "{msg}");
        assert!(msg.contains("missing field `id`"), "{msg}");
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let err = NodeConfig::parse("bad.toml", "id = 1\nname = \n").expect_err("malformed");
        let msg = err.to_string();
        assert!(msg.starts_with("bad.toml:") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let text = GOOD.replace("heartbeat_ms = 40", "heartbeat = 40");
        let msg = NodeConfig::parse("n.toml", &text).expect_err("unknown").to_string();
        assert!(msg.contains("unknown field `heartbeat`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = GOOD.replace("id = 2\n", "id = \"two\"\n");
        let msg = NodeConfig::parse("n.toml", &text).expect_err("type").to_string();
        assert!(msg.contains("id"), "{msg}");
    }

    #[test]
    fn duplicate_member_id_is_refused() {
        let text = GOOD.replace("{ id = 3, name = \"node3\"", "{ id = 1, name = \"node3\"");
        let msg = NodeConfig::parse("n.toml", &text).expect_err("dup").to_string();
        assert!(msg.contains("initial_members[2].id") && msg.contains("more than one"), "{msg}");
    }

    #[test]
    fn member_list_must_include_this_member_as_advertised() {
        let text = GOOD.replace("advertise = \"node2:7420\"", "advertise = \"other:7420\"");
        let msg = NodeConfig::parse("n.toml", &text).expect_err("mismatch").to_string();
        assert!(msg.contains("initial_members[1].addr"), "{msg}");
    }

    #[test]
    fn bad_address_and_timings_are_named() {
        let msg =
            NodeConfig::parse("n.toml", &GOOD.replace("0.0.0.0:7420", "0.0.0.0:99999")).expect_err("port").to_string();
        assert!(msg.contains("`listen`"), "{msg}");
        let msg = NodeConfig::parse("n.toml", &GOOD.replace("heartbeat_ms = 40", "heartbeat_ms = 500"))
            .expect_err("timing")
            .to_string();
        assert!(msg.contains("raft.election_timeout_min_ms"), "{msg}");
    }

    #[test]
    fn join_and_initial_members_are_exclusive() {
        let text = GOOD.replace("[raft]", "join = \"node1:7420\"\n[raft]");
        let msg = NodeConfig::parse("n.toml", &text).expect_err("both").to_string();
        assert!(msg.contains("`join`"), "{msg}");
        // Neither: the member waits to be added with `skiff cluster add-member`.
        let c = NodeConfig::parse("n.toml", "id = 4\nname = \"node4\"\nlisten = \"x:1\"\n").expect("valid");
        assert!(c.initial_members.is_empty() && c.join.is_none());
    }
}
