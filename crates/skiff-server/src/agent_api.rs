//! The agent's view of the cluster on a member, in-process through the member's [`ApiServer`]:
//! pods and config maps are read from the member's own replica (the agent on every node watches
//! locally), writes (status, finalization, events, the Node object) go through the one
//! serve-here-or-forward path, like every other caller's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use skiff_agent::agent::{ClusterApi, PodEvent};
use skiff_agent::worker::PodApi;
use skiff_api::api::{Consistency, DeleteOptions, Filter, ResourceApi, WatchEvent, WatchOptions};
use skiff_api::fields::FieldSelector;
use skiff_api::kinds::{ConfigMap, Node, Pod};
use skiff_api::{Kind, Object, Reason};
use skiff_apiserver::ApiServer;

pub struct MemberAgentApi {
    api: Arc<ApiServer>,
}

impl MemberAgentApi {
    pub fn new(api: Arc<ApiServer>) -> Self {
        Self { api }
    }
}

fn on_node(node: &str) -> Result<Filter, String> {
    Ok(Filter {
        namespace: None,
        fields: FieldSelector::parse(&format!("spec.nodeName={node}"))?,
        ..Default::default()
    })
}

#[async_trait::async_trait]
impl PodApi for MemberAgentApi {
    async fn update_status(&self, pod: &Pod) -> Result<(), String> {
        self.api.update_status(Object::Pod(pod.clone())).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn finalize(&self, pod: &Pod) -> Result<(), String> {
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            force: true,
            uid: Some(pod.metadata.uid.clone()),
            ..Default::default()
        };
        match self.api.delete(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name, &options).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(Reason::NotFound) => Ok(()), // already gone
            Err(e) => Err(e.to_string()),
        }
    }

    async fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        let now = skiff_api::meta::Time(jiff::Timestamp::now());
        let mut event = skiff_api::kinds::Event::default();
        let nanos = jiff::Timestamp::now().as_nanosecond();
        event.metadata.name = format!("{}.{:x}", pod.metadata.name, nanos);
        event.metadata.namespace = pod.metadata.namespace.clone();
        event.involved_object = skiff_api::kinds::event::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.metadata.namespace.clone()),
            name: Some(pod.metadata.name.clone()),
            uid: Some(pod.metadata.uid.clone()),
            ..Default::default()
        };
        event.reason = Some(reason.into());
        event.message = Some(message.into());
        event.type_ = Some(type_.into());
        event.count = Some(1);
        event.first_timestamp = Some(now);
        event.last_timestamp = Some(now);
        event.source = Some(skiff_api::kinds::event::EventSource {
            component: Some("skiff-agent".into()),
            host: pod.spec.node_name.clone(),
        });
        if let Err(e) = self.api.create(Object::Event(event)).await {
            tracing::debug!(pod = %pod.metadata.name, %reason, error = %e, "recording an event");
        }
    }

    async fn config_maps(&self, namespace: &str) -> Result<BTreeMap<String, ConfigMap>, String> {
        let list = self
            .api
            .list(Kind::ConfigMap, &Filter::namespace(namespace), Consistency::Stale)
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| if let Object::ConfigMap(c) = o { Some((c.metadata.name.clone(), c)) } else { None })
            .collect())
    }
}

#[async_trait::async_trait]
impl ClusterApi for MemberAgentApi {
    async fn pods_on(&self, node: &str) -> Result<(Vec<Pod>, u64), String> {
        let list = self.api.list(Kind::Pod, &on_node(node)?, Consistency::Stale).await.map_err(|e| e.to_string())?;
        let pods = list.items.into_iter().filter_map(|o| if let Object::Pod(p) = o { Some(p) } else { None }).collect();
        Ok((pods, list.resource_version))
    }

    async fn watch_pods(&self, node: &str, from: u64) -> Result<BoxStream<'static, PodEvent>, String> {
        let options =
            WatchOptions { filter: on_node(node)?, resource_version: from, bookmark_every: Duration::from_secs(5) };
        let events = self.api.watch(Kind::Pod, options).await.map_err(|e| e.to_string())?;
        let stream = events.take_while(|item| futures::future::ready(item.is_ok())).filter_map(|item| async move {
            match item {
                Ok(WatchEvent::Added(Object::Pod(p)) | WatchEvent::Modified(Object::Pod(p))) => {
                    Some(PodEvent::Changed(p))
                }
                Ok(WatchEvent::Deleted(Object::Pod(p))) => Some(PodEvent::Gone(p)),
                _ => None,
            }
        });
        Ok(stream.boxed())
    }

    async fn put_node(&self, node: &Node) -> Result<(), String> {
        // Apply keeps the stored status of an existing node: the status goes through its own call.
        self.api.apply(Object::Node(node.clone()), false).await.map_err(|e| e.to_string())?;
        self.api.update_status(Object::Node(node.clone())).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Runs this member's agent on the Docker engine, once the cluster has an id: waits for the engine
/// (retrying, so a member starts even when the engine is down) and then runs until aborted.
pub async fn run_agent(api: Arc<ApiServer>, config: crate::config::NodeConfig) {
    let store = api.store().clone();
    let settings = &config.agent;
    let cluster_id = loop {
        if let Ok(Some(kv)) = store.get_local(crate::node::CLUSTER_ID_KEY) {
            break String::from_utf8_lossy(&kv.value).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let runtime = loop {
        match skiff_agent::docker::DockerRuntime::connect(settings.docker_socket.as_deref()).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "the agent cannot reach the Docker engine; retrying in 5 s (this member runs no pods meanwhile)");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
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
            backoff: skiff_agent::backoff::BackoffConfig {
                base: Duration::from_millis(settings.backoff_base_ms),
                cap: Duration::from_millis(settings.backoff_cap_ms),
                reset_after: Duration::from_secs(600),
            },
            resync: Duration::from_secs(1),
        },
        node_labels: settings.node_labels.clone(),
        capacity,
        heartbeat: Duration::from_millis(settings.heartbeat_ms),
    };
    let api = Arc::new(MemberAgentApi::new(api));
    tracing::info!(node = %config.name, "agent started on the Docker engine");
    skiff_agent::agent::run(Arc::new(runtime), api, agent_config).await;
}
