//! The agent against the in-memory runtime and an in-memory cluster: it registers its node (with
//! configured capacity overrides), runs a worker per pod bound to it, follows pod changes, removes
//! the containers of pods that are gone and orphans of its own node, and leaves other nodes'
//! containers alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use skiff_agent::agent::{AgentConfig, ClusterApi, PodEvent};
use skiff_agent::backoff::BackoffConfig;
use skiff_agent::memory::MemoryRuntime;
use skiff_agent::pod_spec::{LABEL_CLUSTER, LABEL_NODE, LABEL_POD_UID};
use skiff_agent::runtime::{ContainerRuntime, ContainerSpec};
use skiff_agent::worker::{PodApi, WorkerConfig};
use skiff_api::kinds::pod::{Container, PodStatus};
use skiff_api::kinds::{ConfigMap, Node, Pod};
use skiff_api::quantity::Quantity;
use tokio::sync::mpsc;

#[derive(Default)]
struct FakeCluster {
    pods: Mutex<Vec<Pod>>,
    events: Mutex<Option<mpsc::UnboundedReceiver<PodEvent>>>,
    statuses: Mutex<BTreeMap<String, PodStatus>>,
    nodes: Mutex<Vec<Node>>,
}

#[async_trait::async_trait]
impl PodApi for FakeCluster {
    async fn update_status(&self, pod: &Pod) -> Result<(), String> {
        let status = pod.status.clone().unwrap_or_default();
        self.statuses.lock().map_err(|e| e.to_string())?.insert(pod.metadata.name.clone(), status);
        Ok(())
    }
    async fn finalize(&self, _pod: &Pod) -> Result<(), String> {
        Ok(())
    }
    async fn config_maps(&self, _namespace: &str) -> Result<BTreeMap<String, ConfigMap>, String> {
        Ok(BTreeMap::new())
    }
}

#[async_trait::async_trait]
impl ClusterApi for FakeCluster {
    async fn pods_on(&self, _node: &str) -> Result<(Vec<Pod>, u64), String> {
        Ok((self.pods.lock().map_err(|e| e.to_string())?.clone(), 1))
    }
    async fn watch_pods(&self, _node: &str, _from: u64) -> Result<BoxStream<'static, PodEvent>, String> {
        match self.events.lock().map_err(|e| e.to_string())?.take() {
            Some(rx) => Ok(tokio_stream_from(rx)),
            None => Ok(futures::stream::pending().boxed()),
        }
    }
    async fn put_node(&self, node: &Node) -> Result<(), String> {
        self.nodes.lock().map_err(|e| e.to_string())?.push(node.clone());
        Ok(())
    }
}

fn tokio_stream_from(mut rx: mpsc::UnboundedReceiver<PodEvent>) -> BoxStream<'static, PodEvent> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

fn pod(name: &str, uid: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.namespace = "default".into();
    p.metadata.uid = uid.into();
    p.spec.node_name = Some("node1".into());
    p.spec.restart_policy = Some("Always".into());
    p.spec.containers.push(Container { name: "app".into(), image: "web:1".into(), ..Default::default() });
    p
}

fn labels(node: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), "c1".to_string()),
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
    ])
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_runs_bound_pods_and_removes_only_its_own_orphans() {
    let rt = Arc::new(MemoryRuntime::new());
    // Left over from before a restart: an orphan of this node, and a container of another node.
    let orphan = ContainerSpec {
        name: "orphan".into(),
        image: "web:1".into(),
        labels: labels("node1", "dead"),
        ..Default::default()
    };
    let orphan = rt.create(&orphan).await.expect("create");
    let other = ContainerSpec {
        name: "other".into(),
        image: "web:1".into(),
        labels: labels("node2", "x"),
        ..Default::default()
    };
    let other = rt.create(&other).await.expect("create");

    let cluster = Arc::new(FakeCluster::default());
    cluster.pods.lock().expect("lock").push(pod("a", "uid-a"));
    let (events, rx) = mpsc::unbounded_channel();
    *cluster.events.lock().expect("lock") = Some(rx);
    let config = AgentConfig {
        worker: WorkerConfig {
            cluster_id: "c1".into(),
            node: "node1".into(),
            host_ip: Some("192.168.0.1".into()),
            extra_labels: BTreeMap::new(),
            sandbox_image: "skiff-pause:1".into(),
            network: None,
            backoff: BackoffConfig::default(),
            resync: Duration::from_millis(100),
        },
        node_labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        capacity: BTreeMap::from([("memory".to_string(), Quantity::parse("2Gi").expect("quantity"))]),
        heartbeat: Duration::from_millis(200),
    };
    let agent = tokio::spawn(skiff_agent::agent::run(rt.clone(), cluster.clone(), config));

    let running = |name: &str| {
        let statuses = cluster.statuses.lock().ok()?;
        statuses.get(name).filter(|s| s.phase.as_deref() == Some("Running")).map(|_| ())
    };
    until("pod a running", || running("a")).await;
    assert!(rt.inspect(&orphan).await.is_err(), "this node's orphan is removed");
    assert!(rt.inspect(&other).await.is_ok(), "another node's container is left alone");
    let node = until("the node registered", || cluster.nodes.lock().ok()?.last().cloned()).await;
    let status = node.status.expect("node status");
    assert_eq!(status.capacity.get("memory").map(Quantity::as_str), Some("2Gi"), "the configured override");
    assert_eq!(status.capacity.get("cpu").map(Quantity::as_str), Some("4"), "the engine's figure");
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert_eq!(node.metadata.labels.get("zone").map(String::as_str), Some("a"));

    // A new pod is picked up from the watch; a gone one loses its containers.
    events.send(PodEvent::Changed(pod("b", "uid-b"))).expect("send");
    until("pod b running", || running("b")).await;
    events.send(PodEvent::Gone(pod("a", "uid-a"))).expect("send");
    let gone = labels("node1", "uid-a");
    let rt2 = rt.clone();
    until("pod a's containers removed", || {
        futures::executor::block_on(rt2.list(&gone)).ok().filter(|l| l.is_empty()).map(|_| ())
    })
    .await;
    assert!(!rt.list(&labels("node1", "uid-b")).await.expect("list").is_empty());
    agent.abort();
}
