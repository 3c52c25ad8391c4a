//! What the benchmarks ask of Skiff and of etcd, over each one's own gRPC API.

use std::time::Duration;

use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::StatusRequest;
use tonic::transport::{Channel, Endpoint};

#[allow(clippy::all)]
mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Skiff,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Skiff => "skiff",
            System::Etcd => "etcd",
        }
    }

    /// One write of `value` at `key` over `channel`.
    pub async fn put(self, channel: Channel, key: String, value: Vec<u8>) -> Result<(), tonic::Status> {
        match self {
            System::Skiff => {
                let req = skiff_proto::api::PutRequest { key, value, expected_revision: None };
                KvClient::new(channel).put(req).await.map(|_| ())
            }
            System::Etcd => {
                let req = etcdpb::PutRequest { key: key.into_bytes(), value, ..Default::default() };
                etcdpb::kv_client::KvClient::new(channel).put(req).await.map(|_| ())
            }
        }
    }

    /// The index (into `endpoints`) of the leader, if the members agree on one.
    pub async fn leader(self, endpoints: &[String]) -> anyhow::Result<Option<usize>> {
        Ok(self.status(endpoints).await?.map(|(leader, _)| leader))
    }

    /// `(leader index, term)` as the leader reports them.
    pub async fn status(self, endpoints: &[String]) -> anyhow::Result<Option<(usize, u64)>> {
        match self {
            System::Skiff => {
                for e in endpoints {
                    let Ok(ch) = connect(e).await else { continue };
                    let Ok(s) = ClusterClient::new(ch).status(StatusRequest {}).await else { continue };
                    let s = s.into_inner();
                    let leader = s.members.iter().find(|m| m.id == s.leader_id && m.role == "leader");
                    if let Some(m) = leader {
                        if let Some(i) = endpoints.iter().position(|e| *e == m.addr) {
                            return Ok(Some((i, s.term)));
                        }
                    }
                }
                Ok(None)
            }
            System::Etcd => {
                for (i, e) in endpoints.iter().enumerate() {
                    let Ok(ch) = connect(e).await else { continue };
                    let Ok(s) =
                        etcdpb::maintenance_client::MaintenanceClient::new(ch).status(etcdpb::StatusRequest {}).await
                    else {
                        continue;
                    };
                    let s = s.into_inner();
                    let member = s.header.as_ref().map(|h| h.member_id).unwrap_or(0);
                    if member != 0 && s.leader == member {
                        return Ok(Some((i, s.raft_term)));
                    }
                }
                Ok(None)
            }
        }
    }
}

/// A connected channel to `endpoint`, failing fast when it is down.
pub async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// A lazily connected channel (reconnects by itself).
pub fn lazy(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))?
        .connect_timeout(Duration::from_millis(300))
        .tcp_nodelay(true)
        .connect_lazy())
}
