//! The `Containers` gRPC service: logs and exec of a pod's containers. The member whose node runs
//! the pod answers from its container engine; any other member forwards the call there (by the
//! node name, which is the member name).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use skiff_agent::pod_spec::{LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID};
use skiff_agent::runtime::{ContainerInfo, ContainerRuntime, LogOptions, RuntimeError, MAX_EXEC_TIMEOUT};
use skiff_api::api::{Consistency, ResourceApi};
use skiff_api::{Kind, Object};
use skiff_apiserver::ApiServer;
use skiff_proto::api::containers_client::ContainersClient;
use skiff_proto::api::containers_server::Containers;
use skiff_proto::api::{ExecRequest, ExecResponse, LogChunk, LogsRequest};
use skiff_proto::limits::MAX_RESPONSE_BYTES;
use tonic::{Request, Response, Status};

use crate::forward::{forwarded, is_forwarded, Channels};
use crate::rpc_error::{api_status, forwarded_status};

pub struct ContainerService {
    api: Arc<ApiServer>,
    channels: Arc<Channels>,
    /// This member's name (= its node's name).
    node: String,
    /// The runtime this member's agent runs pods on (shared with it); `None`: it runs no pods.
    runtime: Option<Arc<dyn ContainerRuntime>>,
}

impl ContainerService {
    pub fn new(
        api: Arc<ApiServer>,
        channels: Arc<Channels>,
        node: String,
        runtime: Option<Arc<dyn ContainerRuntime>>,
    ) -> Self {
        Self { api, channels, node, runtime }
    }

    fn runtime(&self) -> Result<Arc<dyn ContainerRuntime>, Status> {
        self.runtime.clone().ok_or_else(|| {
            Status::unavailable(format!("member {:?} runs no pods (its agent has no container engine)", self.node))
        })
    }

    /// The pod, and where to send the call when another node runs it.
    async fn locate(
        &self,
        namespace: &str,
        name: &str,
        again: bool,
    ) -> Result<(skiff_api::kinds::Pod, Option<(String, tonic::transport::Channel)>), Status> {
        let namespace = if namespace.is_empty() { "default" } else { namespace };
        let object = self.api.get(Kind::Pod, namespace, name, Consistency::Stale).await.map_err(api_status)?;
        let Object::Pod(pod) = object else { return Err(Status::internal("not a pod")) };
        let Some(node) = pod.spec.node_name.clone() else {
            return Err(Status::failed_precondition(format!(
                "pod {name:?} is not bound to a node yet: it has no containers"
            )));
        };
        if node == self.node || again {
            return Ok((pod, None));
        }
        let status = self.api.store().status();
        let member = status.member_named(&node).map(|(_, m)| m.clone());
        let Some(member) = member else {
            return Err(Status::unavailable(format!(
                "pod {name:?} runs on node {node:?}, which is not a member of this cluster"
            )));
        };
        let channel = self.channels.channel(&member.addr)?;
        Ok((pod, Some((member.addr, channel))))
    }

    /// The container's current (or previous) run on this node.
    async fn container(
        &self,
        pod: &skiff_api::kinds::Pod,
        container: &str,
        previous: bool,
    ) -> Result<ContainerInfo, Status> {
        let name = match (container, pod.spec.containers.as_slice()) {
            ("", [only]) => only.name.clone(),
            ("", many) => {
                let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
                return Err(Status::invalid_argument(format!(
                    "pod {:?} has several containers: choose one with -c ({})",
                    pod.metadata.name,
                    names.join(", ")
                )));
            }
            (name, _) => name.to_string(),
        };
        if !pod.spec.containers.iter().any(|c| c.name == name) {
            return Err(Status::not_found(format!("pod {:?} has no container {name:?}", pod.metadata.name)));
        }
        let runtime = self.runtime()?;
        let mut labels = BTreeMap::from([
            (LABEL_NODE.to_string(), self.node.clone()),
            (LABEL_POD_UID.to_string(), pod.metadata.uid.clone()),
            (LABEL_CONTAINER.to_string(), name.clone()),
        ]);
        if let Ok(Some(id)) = self.api.store().get_local(crate::node::CLUSTER_ID_KEY) {
            labels.insert(LABEL_CLUSTER.to_string(), String::from_utf8_lossy(&id.value).into_owned());
        }
        let mut runs = runtime.list(&labels).await.map_err(|e| Status::unavailable(e.to_string()))?;
        runs.sort_by_key(|c| {
            std::cmp::Reverse(c.labels.get(LABEL_ATTEMPT).and_then(|a| a.parse::<u32>().ok()).unwrap_or(0))
        });
        let index = usize::from(previous);
        runs.into_iter().nth(index).ok_or_else(|| {
            Status::not_found(format!(
                "container {name:?} of pod {:?} has {} on node {:?}",
                pod.metadata.name,
                if previous { "no previous run" } else { "not started yet" },
                self.node
            ))
        })
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Containers for ContainerService {
    type LogsStream = LogStream;

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<LogStream>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let (pod, remote) = self.locate(&msg.namespace, &msg.pod, again).await?;
        if let Some((addr, channel)) = remote {
            let stream = ContainersClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .logs(forwarded(msg))
                .await
                .map_err(|s| forwarded_status(s, &addr, false))?
                .into_inner();
            return Ok(Response::new(Box::pin(stream)));
        }
        let container = self.container(&pod, &msg.container, msg.previous).await?;
        let runtime = self.runtime()?;
        let options = LogOptions { follow: msg.follow, tail: (msg.tail > 0).then_some(msg.tail) };
        let stream = runtime.logs(&container.id, &options).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Box::pin(
            stream.map(|chunk| chunk.map(|data| LogChunk { data }).map_err(|e| Status::unavailable(e.to_string()))),
        )))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        if msg.command.is_empty() {
            return Err(Status::invalid_argument("command: give the command to run after --"));
        }
        let (pod, remote) = self.locate(&msg.namespace, &msg.pod, again).await?;
        if let Some((addr, channel)) = remote {
            // An exec's output may be up to 16 MiB: more than gRPC's default 4 MiB per message.
            return ContainersClient::new(channel)
                .max_decoding_message_size(MAX_RESPONSE_BYTES)
                .exec(forwarded(msg))
                .await
                .map_err(|s| forwarded_status(s, &addr, true));
        }
        let timeout = Duration::from_secs(if msg.timeout_seconds == 0 { 60 } else { msg.timeout_seconds });
        if timeout > MAX_EXEC_TIMEOUT {
            return Err(Status::invalid_argument(format!(
                "timeout_seconds: {} is more than the longest an exec may run ({} s)",
                msg.timeout_seconds,
                MAX_EXEC_TIMEOUT.as_secs()
            )));
        }
        let container = self.container(&pod, &msg.container, false).await?;
        let runtime = self.runtime()?;
        let out = runtime.exec(&container.id, &msg.command, timeout).await.map_err(|e| match e {
            // It ran: a retry elsewhere would run it twice.
            RuntimeError::TimedOut(m) => Status::deadline_exceeded(format!("{m} on node {:?}", self.node)),
            RuntimeError::NotFound(m) => Status::not_found(m),
            e => Status::unavailable(e.to_string()),
        })?;
        Ok(Response::new(ExecResponse { exit_code: out.exit_code, output: out.output }))
    }
}
