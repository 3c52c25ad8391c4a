//! What the benchmarks ask of Skiff and of etcd, over each one's own gRPC API, and how each one's
//! members are reached ([`Dialer`]): Skiff's over TLS with the cluster's admin credentials, etcd's
//! over TLS with a client certificate of its cluster's own CA (plain HTTP/2 with `--etcd-plain`).
//! The two paths never cross.

use std::time::Duration;

use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::{MemberStatusRequest, StatusRequest};
use tonic::transport::Channel;

use crate::access::{EtcdAccess, SkiffAccess};

#[allow(clippy::all)]
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

/// How long a status question to one member may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One member's own view, as it answers for itself.
#[derive(Debug, Clone, Copy)]
pub struct MemberState {
    /// The leader's id as this member knows it (0: none).
    pub leader: u64,
    pub is_leader: bool,
    pub last_index: u64,
    pub applied: u64,
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
                let mut req =
                    tonic::Request::new(etcdpb::PutRequest { key: key.into_bytes(), value, ..Default::default() });
                // clientv3's WithRequireLeader: a member that knows no leader refuses at once (as
                // Skiff's members do) instead of holding the request until it times out.
                req.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
                etcdpb::kv_client::KvClient::new(channel).put(req).await.map(|_| ())
            }
        }
    }

    /// A linearizable read of `key` over `channel`: its value, `None` if absent.
    pub async fn get(self, channel: Channel, key: String) -> Result<Option<Vec<u8>>, tonic::Status> {
        match self {
            System::Skiff => {
                let req = skiff_proto::api::GetRequest { key, stale: false };
                match KvClient::new(channel).get(req).await {
                    Ok(r) => Ok(r.into_inner().kv.map(|kv| kv.value)),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(s),
                }
            }
            System::Etcd => {
                let req = etcdpb::RangeRequest { key: key.into_bytes(), ..Default::default() };
                let r = etcdpb::kv_client::KvClient::new(channel).range(req).await?.into_inner();
                Ok(r.kvs.into_iter().next().map(|kv| kv.value))
            }
        }
    }
}

/// How the harness reaches one system's members, each in its own way: Skiff's members serve only
/// TLS and want a client certificate of the cluster CA; etcd's are started with client and peer TLS
/// and want a client certificate of their own CA (or, with `--etcd-plain`, plain HTTP/2).
#[derive(Clone)]
pub enum Dialer {
    Skiff(SkiffAccess),
    Etcd(EtcdAccess),
}

impl Dialer {
    pub fn system(&self) -> System {
        match self {
            Dialer::Skiff(_) => System::Skiff,
            Dialer::Etcd(_) => System::Etcd,
        }
    }

    /// A connected channel to `endpoint`, failing fast when it is down.
    pub async fn connect(&self, endpoint: &str) -> anyhow::Result<Channel> {
        match self {
            Dialer::Skiff(access) => access.connect(endpoint).await,
            Dialer::Etcd(access) => access.connect(endpoint).await,
        }
    }

    /// A lazily connected channel (reconnects by itself).
    pub fn lazy(&self, endpoint: &str) -> anyhow::Result<Channel> {
        match self {
            Dialer::Skiff(access) => access.lazy(endpoint),
            Dialer::Etcd(access) => access.lazy(endpoint),
        }
    }

    /// The index (into `endpoints`) of the leader, if the members agree on one.
    pub async fn leader(&self, endpoints: &[String]) -> Option<usize> {
        self.status(endpoints).await.map(|(leader, _)| leader)
    }

    /// `(leader index, term)` as the leader reports them. Each member is asked over a lazy channel
    /// whose first call, the connection included, has [`ASK_TIMEOUT`]: a member that is down or
    /// slow is passed over.
    pub async fn status(&self, endpoints: &[String]) -> Option<(usize, u64)> {
        match self {
            Dialer::Skiff(access) => {
                for e in endpoints {
                    let Ok(ch) = access.lazy(e) else { continue };
                    let mut client = ClusterClient::new(ch);
                    let ask = client.status(StatusRequest {});
                    let Ok(Ok(s)) = tokio::time::timeout(ASK_TIMEOUT, ask).await else { continue };
                    let s = s.into_inner();
                    let leader = s.members.iter().find(|m| m.id == s.leader_id && m.role == "leader");
                    if let Some(m) = leader {
                        if let Some(i) = endpoints.iter().position(|e| *e == m.addr) {
                            return Some((i, s.term));
                        }
                    }
                }
                None
            }
            Dialer::Etcd(access) => {
                for (i, e) in endpoints.iter().enumerate() {
                    let Ok(ch) = access.lazy(e) else { continue };
                    let mut client = etcdpb::maintenance_client::MaintenanceClient::new(ch);
                    let ask = client.status(etcdpb::StatusRequest {});
                    let Ok(Ok(s)) = tokio::time::timeout(ASK_TIMEOUT, ask).await else { continue };
                    let s = s.into_inner();
                    let member = s.header.as_ref().map(|h| h.member_id).unwrap_or(0);
                    if member != 0 && s.leader == member {
                        return Some((i, s.raft_term));
                    }
                }
                None
            }
        }
    }

    /// Each member's own state, by index into `endpoints`; `None` for a member that did not answer.
    pub async fn members(&self, endpoints: &[String]) -> Vec<Option<MemberState>> {
        let mut out = Vec::new();
        for e in endpoints {
            out.push(self.member(e).await);
        }
        out
    }

    async fn member(&self, endpoint: &str) -> Option<MemberState> {
        match self {
            Dialer::Skiff(access) => {
                let mut client = ClusterClient::new(access.lazy(endpoint).ok()?);
                let ask = client.member_status(MemberStatusRequest {});
                let m = tokio::time::timeout(ASK_TIMEOUT, ask).await.ok()?.ok()?.into_inner();
                Some(MemberState {
                    leader: m.leader_id,
                    is_leader: m.role == "leader",
                    last_index: m.last_log_index,
                    applied: m.applied_index,
                })
            }
            Dialer::Etcd(access) => {
                let mut client = etcdpb::maintenance_client::MaintenanceClient::new(access.lazy(endpoint).ok()?);
                let ask = client.status(etcdpb::StatusRequest {});
                let s = tokio::time::timeout(ASK_TIMEOUT, ask).await.ok()?.ok()?.into_inner();
                let id = s.header.as_ref().map(|h| h.member_id).unwrap_or(0);
                Some(MemberState {
                    leader: s.leader,
                    is_leader: id != 0 && s.leader == id,
                    last_index: s.raft_index,
                    applied: s.raft_applied_index,
                })
            }
        }
    }
}
