//! The agent of one node: registers the node, runs a pod worker per pod bound to it, removes its
//! containers whose pod is gone, and keeps the node's Ready condition fresh. It follows the pods
//! bound to its node with a reflector (skiff-control) over the `ResourceApi` it is given, which
//! the member serves from its own replica.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use skiff_api::api::{Consistency, Filter, ResourceApi};
use skiff_api::fields::FieldSelector;
use skiff_api::kinds::node::{NodeCondition, NodeStatus, NodeSystemInfo};
use skiff_api::kinds::{Node, Pod};
use skiff_api::meta::{Time, CONDITION_TRUE};
use skiff_api::quantity::Quantity;
use skiff_api::{Kind, Object};
use skiff_control::reflector::{Change, Reflector};
use tokio::sync::watch;

use crate::metrics::AgentMetrics;
use crate::pod_spec::{LABEL_CLUSTER, LABEL_NODE, LABEL_POD_UID};
use crate::probe::Prober;
use crate::runtime::ContainerRuntime;
use crate::worker::{PodWorker, WorkerConfig};

/// The node's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub worker: WorkerConfig,
    /// Node labels (the scheduler's `nodeSelector` matches them).
    pub node_labels: BTreeMap<String, String>,
    /// Capacity overrides (`cpu`, `memory`); the engine's figures otherwise. Members of a compose
    /// cluster share one engine, so each says what it offers.
    pub capacity: BTreeMap<String, Quantity>,
    /// How often the node renews with the leader (its liveness; nothing is written).
    pub heartbeat: Duration,
}

/// What the agent works with.
#[derive(Clone)]
pub struct Agent {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn Prober>,
    pub api: Arc<dyn ResourceApi>,
    pub config: AgentConfig,
    /// Where its workers count their actions.
    pub metrics: AgentMetrics,
}

/// The pods bound to `node`.
fn on_node(node: &str) -> Filter {
    let fields = FieldSelector::parse(&format!("spec.nodeName={node}")).unwrap_or_default();
    Filter { namespace: None, fields, ..Default::default() }
}

/// Runs the agent until the task is dropped.
pub async fn run(agent: Agent) {
    let node = agent.config.worker.node.clone();
    let pods = Reflector::start(agent.api.clone(), Kind::Pod, on_node(&node));
    let mut changes = pods.subscribe();
    let mut workers: BTreeMap<String, watch::Sender<Option<Pod>>> = BTreeMap::new();
    // The pod workers live as long as the agent: when the agent stops (its member shuts down), they
    // are aborted with it rather than left to start a container afterwards.
    let mut tasks = tokio::task::JoinSet::new();
    let mut heartbeat = tokio::time::interval(agent.config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The node is registered before its first renewal (the leader keeps renewals of nodes only).
    let mut registered = register(&agent, None).await;
    let engine = Arc::new(AtomicBool::new(true));
    let _beside = Tasks(vec![
        tokio::spawn(renew_forever(agent.clone(), engine.clone())),
        tokio::spawn(check_engine_forever(agent.clone(), engine)),
    ]);
    pods.synced().await;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(Change::Applied(object)) => {
                    if let Object::Pod(pod) = object.as_ref() {
                        deliver(&agent, &mut workers, &mut tasks, pod.clone());
                    }
                }
                Some(Change::Deleted(object)) => {
                    if let Some(tx) = workers.remove(&object.meta().uid) {
                        let _ = tx.send(None);
                    }
                }
                None => return, // the reflector stopped
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {} // a worker whose pod is gone ended
            _ = heartbeat.tick(), if registered.is_none() => registered = register(&agent, None).await,
            _ = sweep.tick() => {
                registered = register(&agent, registered).await;
                let current: Vec<Pod> = pods.list().iter().filter_map(|o| if let Object::Pod(p) = o.as_ref() { Some(p.clone()) } else { None }).collect();
                remove_orphans(agent.runtime.as_ref(), &agent.config, &current).await;
            }
        }
    }
}

/// How often the agent refreshes its node's status (capacity, addresses, versions) when it changed,
/// and removes containers whose pod is gone.
const SWEEP: Duration = Duration::from_secs(10);

/// Tasks that end with the agent.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// How often the agent asks its engine whether it answers, and how long it waits for the answer.
const ENGINE_CHECK: Duration = Duration::from_secs(2);
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Renews the node with the leader every beat while its engine answers (a node whose engine is
/// down cannot run pods, and the leader takes it out of service as it would a dead one). In a task
/// of its own, so that nothing else the agent waits for (a busy engine listing containers, a
/// sweep) delays a renewal: a late renewal takes a healthy node out of service.
async fn renew_forever(agent: Agent, engine: Arc<AtomicBool>) {
    let node = agent.config.worker.node.clone();
    let mut beat = tokio::time::interval(agent.config.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        if !engine.load(Ordering::Relaxed) {
            continue;
        }
        if let Err(e) = agent.api.renew_node(&node).await {
            tracing::debug!(%node, error = %e, "renewing the node with the leader (tried again next beat)");
        }
    }
}

/// Keeps `engine` saying whether the container engine answers. A busy engine may take seconds to
/// answer `info`: it is asked beside the renewals, never before each of them.
async fn check_engine_forever(agent: Agent, engine: Arc<AtomicBool>) {
    let node = agent.config.worker.node.clone();
    let mut check = tokio::time::interval(ENGINE_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        check.tick().await;
        let answered = match tokio::time::timeout(ENGINE_TIMEOUT, agent.runtime.info()).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(%node, error = %e, "the container engine does not answer: the node is not renewed");
                false
            }
            Err(_) => {
                tracing::warn!(%node, "the container engine did not answer within 10 s: the node is not renewed");
                false
            }
        };
        engine.store(answered, Ordering::Relaxed);
    }
}

/// Hands `pod` to its worker, starting one for a new pod.
fn deliver(
    agent: &Agent,
    workers: &mut BTreeMap<String, watch::Sender<Option<Pod>>>,
    tasks: &mut tokio::task::JoinSet<()>,
    pod: Pod,
) {
    let uid = pod.metadata.uid.clone();
    if let Some(tx) = workers.get(&uid) {
        if tx.send(Some(pod.clone())).is_ok() {
            return;
        }
    }
    let (tx, rx) = watch::channel(Some(pod));
    let worker =
        PodWorker::new(agent.runtime.clone(), agent.prober.clone(), agent.api.clone(), agent.config.worker.clone())
            .counting(agent.metrics.clone());
    tasks.spawn(worker.run(rx));
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

/// Creates the node object (labels, capacity, addresses, system info, Ready) the first time, and
/// rewrites its status when what the agent reports changed since `written` (what it last wrote).
/// The Ready condition belongs to the leader's node lifecycle controller once the node exists.
/// Returns what is written now.
async fn register(agent: &Agent, written: Option<NodeStatus>) -> Option<NodeStatus> {
    let config = &agent.config;
    let info = match agent.runtime.info().await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "the container engine does not answer; the node's status is not refreshed");
            return written;
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
    // The node is created once, as the kubelet registers: after that its spec (cordon, taints) and
    // labels are the users' and the controllers', and the agent refreshes only the status.
    let reported = node.status.clone();
    if let Ok(Object::Node(stored)) = agent.api.get(Kind::Node, "", &config.worker.node, Consistency::Stale).await {
        let without_ready = |s: &Option<NodeStatus>| {
            s.clone().map(|mut s| {
                s.conditions.retain(|c| c.type_ != "Ready");
                s
            })
        };
        if written.is_some() && without_ready(&written) == without_ready(&reported) {
            return written; // nothing new to say
        }
        if let (Some(status), Some(now)) = (node.status.as_mut(), stored.status.as_ref()) {
            if let Some(ready) = now.conditions.iter().find(|c| c.type_ == "Ready") {
                status.conditions = vec![ready.clone()];
            }
        }
        return match agent.api.update_status(Object::Node(node)).await {
            Ok(_) => reported,
            Err(e) => {
                tracing::warn!(node = %config.worker.node, error = %e, "refreshing the node's status");
                written
            }
        };
    }
    let registered = match agent.api.create(Object::Node(node.clone())).await {
        Err(e) if !e.is(skiff_api::Reason::AlreadyExists) => Err(e),
        _ => agent.api.update_status(Object::Node(node)).await.map(|_| ()),
    };
    match registered {
        Ok(()) => reported,
        Err(e) => {
            tracing::warn!(node = %config.worker.node, error = %e, "registering the node (tried again next beat)");
            written
        }
    }
}
