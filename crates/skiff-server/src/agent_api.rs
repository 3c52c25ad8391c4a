//! The agent's view of the cluster on a member: pods and config maps are read from the member's own
//! replica (the agent on every node watches locally), writes (status, finalization, the Node object)
//! go through the member's own API, which forwards them to the leader.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use skiff_agent::agent::{ClusterApi, PodEvent};
use skiff_agent::worker::PodApi;
use skiff_api::fields::FieldSelector;
use skiff_api::kinds::{ConfigMap, Node, Pod};
use skiff_api::{Kind, Object};
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{ApplyRequest, DeleteObjectRequest, ObjectRequest};
use skiff_store::registry::{Filter, Registry, WatchEvent};
use skiff_store::ReadConsistency;

use crate::client::{CallKind, Client};

pub struct MemberAgentApi {
    registry: Registry,
    /// This member's own API (it forwards writes to the leader).
    client: Client,
}

impl MemberAgentApi {
    pub fn new(registry: Registry, client: Client) -> Self {
        Self { registry, client }
    }

    async fn write<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: Fn(ResourcesClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.client
            .call(CallKind::Write, |ch| call(ResourcesClient::new(ch)))
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
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
        let object = Object::Pod(pod.clone()).to_json();
        self.write(|mut c| {
            let object = object.clone();
            async move { c.update_status(ObjectRequest { object }).await }
        })
        .await
        .map(|_| ())
    }

    async fn finalize(&self, pod: &Pod) -> Result<(), String> {
        let req = DeleteObjectRequest {
            kind: "Pod".into(),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            grace_period_seconds: Some(0),
            force: true,
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        match self
            .write(|mut c| {
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.contains("not found") => Ok(()), // already gone
            Err(e) => Err(e),
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
        let object = Object::Event(event).to_json();
        let created = self
            .write(|mut c| {
                let object = object.clone();
                async move { c.create(ObjectRequest { object }).await }
            })
            .await;
        if let Err(e) = created {
            tracing::debug!(pod = %pod.metadata.name, %reason, error = %e, "recording an event");
        }
    }

    async fn config_maps(&self, namespace: &str) -> Result<BTreeMap<String, ConfigMap>, String> {
        let filter = Filter { namespace: Some(namespace.to_string()), ..Default::default() };
        let (objects, _) =
            self.registry.list(Kind::ConfigMap, &filter, ReadConsistency::Stale).await.map_err(|e| e.to_string())?;
        Ok(objects
            .into_iter()
            .filter_map(|o| if let Object::ConfigMap(c) = o { Some((c.metadata.name.clone(), c)) } else { None })
            .collect())
    }
}

#[async_trait::async_trait]
impl ClusterApi for MemberAgentApi {
    async fn pods_on(&self, node: &str) -> Result<(Vec<Pod>, u64), String> {
        let (objects, rv) =
            self.registry.list(Kind::Pod, &on_node(node)?, ReadConsistency::Stale).await.map_err(|e| e.to_string())?;
        Ok((objects.into_iter().filter_map(|o| if let Object::Pod(p) = o { Some(p) } else { None }).collect(), rv))
    }

    async fn watch_pods(&self, node: &str, from: u64) -> Result<BoxStream<'static, PodEvent>, String> {
        let rx =
            self.registry.watch(Kind::Pod, on_node(node)?, from, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .take_while(|item| futures::future::ready(item.is_ok()))
            .filter_map(|item| async move {
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
        let object = Object::Node(node.clone()).to_json();
        let applied = self
            .write(|mut c| {
                let object = object.clone();
                async move { c.apply(ApplyRequest { object, dry_run: false }).await }
            })
            .await?;
        // Apply keeps the stored status of an existing node: the status goes through its own call.
        let _ = applied;
        self.write(|mut c| {
            let object = object.clone();
            async move { c.update_status(ObjectRequest { object }).await }
        })
        .await
        .map(|_| ())
    }
}

/// Runs this member's agent on the Docker engine, once the cluster has an id: waits for the engine
/// (retrying, so a member starts even when the engine is down) and then runs until aborted.
pub async fn run_agent(store: skiff_store::ObjectStore, config: crate::config::NodeConfig) {
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
    let client = match Client::new(&[config.advertise_addr().to_string()]) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the agent cannot talk to its own member; it does not run");
            return;
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
    let api = std::sync::Arc::new(MemberAgentApi::new(Registry::new(store), client));
    tracing::info!(node = %config.name, "agent started on the Docker engine");
    skiff_agent::agent::run(std::sync::Arc::new(runtime), api, agent_config).await;
}
