//! The agent of one node: registers the node, runs a pod worker per pod bound to it, removes its
//! containers whose pod is gone, and keeps the node's Ready condition fresh. It reads pods through
//! [`ClusterApi`] (the member implements it on its local replica and writes through the API).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use skiff_api::kinds::node::{NodeCondition, NodeStatus, NodeSystemInfo};
use skiff_api::kinds::{Node, Pod};
use skiff_api::meta::{Time, CONDITION_TRUE};
use skiff_api::quantity::Quantity;
use tokio::sync::watch;

use crate::pod_spec::{LABEL_CLUSTER, LABEL_NODE, LABEL_POD_UID};
use crate::runtime::ContainerRuntime;
use crate::worker::{PodApi, PodWorker, WorkerConfig};

/// A change to a pod bound to this node.
#[derive(Debug, Clone)]
pub enum PodEvent {
    Changed(Pod),
    Gone(Pod),
}

/// What the agent needs from the cluster besides what its pod workers need.
#[async_trait::async_trait]
pub trait ClusterApi: PodApi {
    /// The pods bound to `node`, and the resourceVersion to watch from.
    async fn pods_on(&self, node: &str) -> Result<(Vec<Pod>, u64), String>;
    /// Changes to pods bound to `node` after `from`. The stream ends when it must be reopened.
    async fn watch_pods(&self, node: &str, from: u64) -> Result<BoxStream<'static, PodEvent>, String>;
    /// Creates or updates the node object, status included.
    async fn put_node(&self, node: &Node) -> Result<(), String>;
}

/// The node's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub worker: WorkerConfig,
    /// Node labels (the scheduler's `nodeSelector` matches them).
    pub node_labels: BTreeMap<String, String>,
    /// Capacity overrides (`cpu`, `memory`); the engine's figures otherwise. Members of a compose
    /// cluster share one engine, so each says what it offers.
    pub capacity: BTreeMap<String, Quantity>,
    /// How often the node's Ready condition is renewed.
    pub heartbeat: Duration,
}

/// Runs the agent until the task is dropped.
pub async fn run(runtime: Arc<dyn ContainerRuntime>, api: Arc<dyn ClusterApi>, config: AgentConfig) {
    let node = config.worker.node.clone();
    let mut workers: BTreeMap<String, watch::Sender<Option<Pod>>> = BTreeMap::new();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    loop {
        // List, then watch from the list's resourceVersion; list again whenever the watch ends.
        let from = match api.pods_on(&node).await {
            Ok((pods, rv)) => {
                remove_orphans(runtime.as_ref(), &config, &pods).await;
                let current: BTreeMap<String, Pod> = pods.into_iter().map(|p| (p.metadata.uid.clone(), p)).collect();
                let gone: Vec<String> = workers.keys().filter(|uid| !current.contains_key(*uid)).cloned().collect();
                for uid in gone {
                    if let Some(tx) = workers.remove(&uid) {
                        let _ = tx.send(None);
                    }
                }
                for pod in current.into_values() {
                    deliver(&runtime, &api, &config, &mut workers, pod);
                }
                rv
            }
            Err(e) => {
                tracing::warn!(%node, error = %e, "listing this node's pods");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut events = match api.watch_pods(&node, from).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%node, error = %e, "watching this node's pods; listing again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(PodEvent::Changed(pod)) => deliver(&runtime, &api, &config, &mut workers, pod),
                    Some(PodEvent::Gone(pod)) => {
                        if let Some(tx) = workers.remove(&pod.metadata.uid) {
                            let _ = tx.send(None);
                        }
                    }
                    None => break, // the watch ended: list again, then watch
                },
                _ = heartbeat.tick() => register(runtime.as_ref(), api.as_ref(), &config).await,
            }
        }
    }
}

/// Hands `pod` to its worker, starting one for a new pod.
fn deliver(
    runtime: &Arc<dyn ContainerRuntime>,
    api: &Arc<dyn ClusterApi>,
    config: &AgentConfig,
    workers: &mut BTreeMap<String, watch::Sender<Option<Pod>>>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone();
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Some(pod.clone())).is_ok() {
            return;
        }
    }
    let (tx, rx) = watch::channel(Some(pod));
    let pod_api: Arc<dyn PodApi> = api.clone();
    let worker = PodWorker::new(runtime.clone(), pod_api, config.worker.clone());
    tokio::spawn(worker.run(rx));
    workers.insert(uid, tx);
}

/// Removes this node's containers whose pod no longer exists. Containers of other nodes or
/// clusters are never touched (they do not carry this node's and cluster's labels).
async fn remove_orphans(runtime: &dyn ContainerRuntime, config: &AgentConfig, pods: &[Pod]) {
    let mine = BTreeMap::from([
        (LABEL_CLUSTER.to_string(), config.worker.cluster_id.clone()),
        (LABEL_NODE.to_string(), config.worker.node.clone()),
    ]);
    let Ok(containers) = runtime.list(&mine).await else { return };
    for c in containers {
        let owner = c.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
        if !pods.iter().any(|p| p.metadata.uid == owner) {
            tracing::info!(container = %c.name, pod_uid = %owner, "removing a container whose pod is gone");
            if let Err(e) = runtime.remove(&c.id).await {
                tracing::warn!(container = %c.name, error = %e, "removing an orphan container");
            }
        }
    }
}

/// Writes the node object: labels, capacity, addresses, system info, Ready now.
async fn register(runtime: &dyn ContainerRuntime, api: &dyn ClusterApi, config: &AgentConfig) {
    let info = match runtime.info().await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "the container engine does not answer; the node is not renewed");
            return;
        }
    };
    let mut capacity = BTreeMap::new();
    for (name, text) in
        [("cpu", info.cpus.to_string()), ("memory", info.memory_bytes.to_string()), ("pods", "110".into())]
    {
        if let Ok(q) = Quantity::parse(&text) {
            capacity.insert(name.to_string(), q);
        }
    }
    capacity.extend(config.capacity.clone());
    let now = Time(jiff::Timestamp::now());
    let mut node = Node::default();
    node.metadata.name = config.worker.node.clone();
    node.metadata.labels = config.node_labels.clone();
    node.metadata.labels.insert("kubernetes.io/hostname".into(), config.worker.node.clone());
    node.status = Some(NodeStatus {
        allocatable: capacity.clone(),
        capacity,
        conditions: vec![NodeCondition {
            type_: "Ready".into(),
            status: CONDITION_TRUE.into(),
            last_heartbeat_time: Some(now),
            last_transition_time: Some(now),
            reason: Some("AgentReady".into()),
            message: Some("the agent is running and its container engine answers".into()),
        }],
        addresses: config
            .worker
            .host_ip
            .iter()
            .map(|ip| skiff_api::kinds::node::NodeAddress { type_: "InternalIP".into(), address: ip.clone() })
            .collect(),
        node_info: Some(NodeSystemInfo {
            kernel_version: info.kernel_version,
            os_image: info.os_image,
            container_runtime_version: info.version,
            kubelet_version: format!("skiff-{}", env!("CARGO_PKG_VERSION")),
            operating_system: std::env::consts::OS.into(),
            architecture: info.architecture,
            ..Default::default()
        }),
    });
    if let Err(e) = api.put_node(&node).await {
        tracing::warn!(node = %config.worker.node, error = %e, "registering the node");
    }
}
