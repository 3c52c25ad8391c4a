//! The agent against the in-memory runtime and an in-memory cluster: it registers its node (with
//! configured capacity overrides), runs a worker per pod bound to it, follows pod changes, removes
//! the containers of pods that are gone and orphans of its own node, and leaves other nodes'
//! containers alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_agent::agent::{Agent, AgentConfig};
use skiff_agent::backoff::BackoffConfig;
use skiff_agent::memory::{MemoryProber, MemoryRuntime};
use skiff_agent::pod_spec::{LABEL_CLUSTER, LABEL_NODE, LABEL_POD_UID};
use skiff_agent::runtime::{ContainerRuntime, ContainerSpec};
use skiff_agent::worker::WorkerConfig;
use skiff_api::api::{Consistency, DeleteOptions, ResourceApi};
use skiff_api::kinds::pod::Container;
use skiff_api::kinds::Pod;
use skiff_api::memory::MemoryApi;
use skiff_api::quantity::Quantity;
use skiff_api::{Kind, Object};
use skiff_testkit::eventually;

const T: Duration = Duration::from_secs(10);

fn pod(name: &str) -> Object {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata.namespace = "default".into();
    p.spec.node_name = Some("node1".into());
    p.spec.restart_policy = Some("Always".into());
    p.spec.containers.push(Container { name: "app".into(), image: "web:1".into(), ..Default::default() });
    Object::Pod(p)
}

fn labels(node: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), "c1".to_string()),
        (LABEL_NODE.to_string(), node.to_string()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
    ])
}

/// The pod's uid once its phase is Running.
async fn running(api: &MemoryApi, name: &str) -> Option<String> {
    match api.get(Kind::Pod, "default", name, Consistency::Stale).await.ok()? {
        Object::Pod(p) if p.status.as_ref()?.phase.as_deref() == Some("Running") => Some(p.metadata.uid),
        _ => None,
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

    let api = MemoryApi::new();
    api.apply(pod("a"), false).await.expect("pod a");
    let config = AgentConfig {
        worker: WorkerConfig {
            cluster_id: "c1".into(),
            node: "node1".into(),
            host_ip: Some("192.168.0.1".into()),
            extra_labels: BTreeMap::new(),
            sandbox_image: "skiff-pause:1".into(),
            network: None,
            service_access: None,
            backoff: BackoffConfig::default(),
            resync: Duration::from_millis(100),
            starts: Arc::new(tokio::sync::Semaphore::new(skiff_agent::worker::PARALLEL_STARTS)),
        },
        node_labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        capacity: BTreeMap::from([("memory".to_string(), Quantity::parse("2Gi").expect("quantity"))]),
        heartbeat: Duration::from_millis(200),
    };
    let agent = Agent {
        runtime: rt.clone(),
        prober: Arc::new(MemoryProber::new()),
        api: Arc::new(api.clone()),
        config,
        metrics: Default::default(),
    };
    let agent = tokio::spawn(skiff_agent::agent::run(agent));

    let uid_a = eventually("pod a running", T, || running(&api, "a")).await;
    eventually("this node's orphan removed", T, || async { rt.inspect(&orphan).await.is_err().then_some(()) }).await;
    assert!(rt.inspect(&other).await.is_ok(), "another node's container is left alone");
    let node = eventually("the node registered", T, || async {
        api.get(Kind::Node, "", "node1", Consistency::Stale).await.ok()
    })
    .await;
    let Object::Node(node) = node else { panic!("a node") };
    let status = node.status.expect("node status");
    assert_eq!(status.capacity.get("memory").map(Quantity::as_str), Some("2Gi"), "the configured override");
    assert_eq!(status.capacity.get("cpu").map(Quantity::as_str), Some("4"), "the engine's figure");
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert_eq!(node.metadata.labels.get("zone").map(String::as_str), Some("a"));

    // A new pod is picked up from the watch; a gone one loses its containers.
    api.apply(pod("b"), false).await.expect("pod b");
    let uid_b = eventually("pod b running", T, || running(&api, "b")).await;
    api.delete(Kind::Pod, "default", "a", &DeleteOptions::default()).await.expect("delete a");
    let gone = labels("node1", &uid_a);
    eventually("pod a's containers removed", T, || async { rt.list(&gone).await.ok().filter(|l| l.is_empty()) }).await;
    assert!(!rt.list(&labels("node1", &uid_b)).await.expect("list").is_empty());
    agent.abort();
}
