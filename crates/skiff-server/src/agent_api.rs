//! This member's agent, wired: its runtime and prober, and the member's own API in-process (pods
//! and config maps are read from the member's replica; writes take the one serve-here-or-forward
//! path, like every other caller's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_agent::probe::Prober;
use skiff_agent::runtime::ContainerRuntime;
use skiff_apiserver::ApiServer;

use crate::config::{AgentSettings, RuntimeKind};

/// Where a member's pods run: its container runtime and how its probes reach pods, and what its
/// agent counts.
#[derive(Clone)]
pub struct PodRuntime {
    pub containers: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn Prober>,
    pub metrics: skiff_agent::metrics::AgentMetrics,
}

impl PodRuntime {
    /// The runtime `settings` name: the Docker engine (contacted on first use), in memory with
    /// healthy pods, or none.
    pub fn from_settings(settings: &AgentSettings) -> Option<PodRuntime> {
        match settings.runtime {
            RuntimeKind::Docker => Some(PodRuntime {
                containers: Arc::new(skiff_agent::docker::DockerRuntime::new(settings.docker_socket.as_deref())),
                prober: Arc::new(skiff_agent::probe::NetProber),
                metrics: Default::default(),
            }),
            RuntimeKind::Memory => Some(PodRuntime {
                containers: Arc::new(skiff_agent::memory::MemoryRuntime::new()),
                prober: Arc::new(skiff_agent::memory::MemoryProber::healthy()),
                metrics: Default::default(),
            }),
            RuntimeKind::None => None,
        }
    }
}

/// How this member's pods reach Services: the service range routed to this member's address on
/// the pod network (and DNS there), when this member runs the proxy and its engine has a network
/// with a gateway. `None` otherwise, said once: pods then reach Services by node port only.
pub async fn service_access(
    pods: &PodRuntime,
    config: &crate::config::NodeConfig,
) -> Option<skiff_agent::pod_spec::ServiceAccess> {
    if !config.services.proxy {
        return None;
    }
    let network = config.agent.network.as_deref();
    let shown = network.unwrap_or("the engine's bridge");
    let gateway = match pods.containers.network_gateway(network).await {
        Ok(Some(gateway)) => gateway,
        Ok(None) => {
            tracing::warn!(network = shown, "the pod network has no gateway: pods will not reach cluster IPs");
            return None;
        }
        Err(e) => {
            tracing::warn!(network = shown, error = %e, "cannot read the pod network's gateway: pods will not reach cluster IPs");
            return None;
        }
    };
    let router = match skiff_net::routes::local_address_towards(gateway) {
        Ok(ip) => ip,
        Err(e) => {
            tracing::warn!(network = shown, %gateway, error = %e, "this member has no address towards the pod network: pods will not reach cluster IPs");
            return None;
        }
    };
    tracing::info!(network = shown, %router, "pods reach Services through this member");
    Some(skiff_agent::pod_spec::ServiceAccess {
        range: config.services.cluster_ip_range.clone(),
        router: router.to_string(),
        domain: config.services.cluster_domain.clone(),
    })
}

/// Runs this member's agent once the cluster has an id, until aborted.
pub async fn run_agent(
    api: Arc<ApiServer>,
    pods: PodRuntime,
    config: crate::config::NodeConfig,
    service_access: Option<skiff_agent::pod_spec::ServiceAccess>,
) {
    let settings = &config.agent;
    let store = api.store().clone();
    let cluster_id = loop {
        if let Ok(Some(kv)) = store.get_local(crate::node::CLUSTER_ID_KEY) {
            break String::from_utf8_lossy(&kv.value).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // status.hostIP is an address: a host name in `advertise` (compose: "node1") is resolved.
    let host_ip = match settings.host_ip.clone() {
        Some(ip) => Some(ip),
        None => match tokio::net::lookup_host(config.advertise_addr()).await {
            Ok(mut addrs) => addrs.next().map(|a| a.ip().to_string()),
            Err(e) => {
                tracing::warn!(addr = %config.advertise_addr(), error = %e, "cannot resolve this member's address for hostIP");
                None
            }
        },
    };
    let mut capacity = BTreeMap::new();
    for (name, value) in [("cpu", &settings.cpu), ("memory", &settings.memory)] {
        if let Some(q) = value.as_deref().and_then(|v| skiff_api::quantity::Quantity::parse(v).ok()) {
            capacity.insert(name.to_string(), q);
        }
    }
    let agent_config = skiff_agent::agent::AgentConfig {
        worker: skiff_agent::worker::WorkerConfig {
            cluster_id,
            node: config.name.clone(),
            host_ip,
            extra_labels: settings.container_labels.clone(),
            sandbox_image: settings.sandbox_image.clone(),
            network: settings.network.clone(),
            service_access,
            backoff: skiff_agent::backoff::BackoffConfig {
                base: Duration::from_millis(settings.backoff_base_ms),
                cap: Duration::from_millis(settings.backoff_cap_ms),
                reset_after: Duration::from_secs(600),
            },
            resync: Duration::from_secs(1),
            starts: std::sync::Arc::new(tokio::sync::Semaphore::new(settings.parallel_starts)),
        },
        node_labels: settings.node_labels.clone(),
        capacity,
        heartbeat: Duration::from_millis(settings.heartbeat_ms),
    };
    tracing::info!(node = %config.name, runtime = ?settings.runtime, "agent started");
    let agent = skiff_agent::agent::Agent {
        runtime: pods.containers,
        prober: pods.prober,
        api,
        config: agent_config,
        metrics: pods.metrics,
    };
    skiff_agent::agent::run(agent).await;
}
