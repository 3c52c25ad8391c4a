//! The `Cluster` gRPC service: status of the members, adding and removing members.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::cluster_server::Cluster;
use skiff_proto::api::{
    AddMemberRequest, AddMemberResponse, ClusterStatus, MemberInfo, MemberStatusRequest, RemoveMemberRequest,
    RemoveMemberResponse, StatusRequest,
};
use skiff_store::{Member, ObjectStore};
use tonic::{Request, Response, Status};

use crate::forward::{forwarded, is_forwarded, Forwarder};
use crate::membership::{Membership, MembershipError};
use crate::node::CLUSTER_ID_KEY;
use crate::rpc_error::forwarded_status;

/// Serves `Cluster` on one member.
pub struct ClusterService {
    store: ObjectStore,
    membership: Arc<Membership>,
    forwarder: Arc<Forwarder>,
}

impl ClusterService {
    pub fn new(store: ObjectStore, membership: Arc<Membership>, forwarder: Arc<Forwarder>) -> Self {
        Self { store, membership, forwarder }
    }

    /// This member's own view of itself.
    fn local_info(&self) -> MemberInfo {
        let m = self.store.raft().metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let me = membership.get_node(&m.id).cloned().unwrap_or_default();
        let voter = membership.voter_ids().any(|v| v == m.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower if voter => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        MemberInfo {
            id: m.id,
            name: me.name,
            addr: me.addr,
            role: role.into(),
            voter,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            leader_id: m.current_leader.unwrap_or(0),
            cluster_id: self.cluster_id(),
            error: String::new(),
        }
    }

    fn cluster_id(&self) -> String {
        self.store
            .get_local(CLUSTER_ID_KEY)
            .ok()
            .flatten()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default()
    }

    /// The leader's address and a channel to it, for forwarding.
    fn leader(&self) -> Result<(String, tonic::transport::Channel), Status> {
        let m = self.store.raft().metrics().borrow().clone();
        let Some(leader) = m.current_leader else {
            return Err(Status::unavailable("no leader is elected right now; retry"));
        };
        let Some(node) = m.membership_config.membership().get_node(&leader).cloned() else {
            return Err(Status::unavailable(format!(
                "leader {leader} is not in this member's membership view yet; retry"
            )));
        };
        Ok((node.addr.clone(), self.forwarder.channel(&node.addr)?))
    }
}

fn membership_status(e: MembershipError) -> Status {
    match e {
        MembershipError::IdInUse { .. } | MembershipError::NameInUse { .. } => Status::already_exists(e.to_string()),
        MembershipError::NotFound(_) => Status::not_found(e.to_string()),
        MembershipError::Invalid(m) => Status::invalid_argument(m),
        MembershipError::NotLeader => Status::unavailable("not the leader; retry"),
        MembershipError::Raft(m) => Status::unavailable(format!("membership change failed: {m}")),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        let me = self.local_info();
        let (voters, nodes) = self.membership.current();
        let voters = &voters;
        let asks = nodes.into_iter().map(|(id, member)| async move {
            if id == me.id {
                return self.local_info();
            }
            let ask = async {
                let ch = self.forwarder.channel(&member.addr)?;
                let mut req = Request::new(MemberStatusRequest {});
                req.set_timeout(Duration::from_secs(1));
                ClusterClient::new(ch).member_status(req).await.map(|r| r.into_inner())
            };
            let voter = voters.contains(&id);
            match tokio::time::timeout(Duration::from_millis(1500), ask).await {
                Ok(Ok(info)) => info,
                Ok(Err(s)) => unreachable_info(id, &member, voter, &describe(&s)),
                Err(_) => unreachable_info(id, &member, voter, "no answer within 1.5 s"),
            }
        });
        let members = futures::future::join_all(asks).await;
        Ok(Response::new(ClusterStatus {
            cluster_id: me.cluster_id.clone(),
            leader_id: me.leader_id,
            term: me.term,
            members,
        }))
    }

    async fn member_status(&self, _req: Request<MemberStatusRequest>) -> Result<Response<MemberInfo>, Status> {
        Ok(Response::new(self.local_info()))
    }

    async fn add_member(&self, req: Request<AddMemberRequest>) -> Result<Response<AddMemberResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        let member = Member { name: msg.name.clone(), addr: msg.addr.clone() };
        match self.membership.add(msg.id, member).await {
            Ok(view) => Ok(Response::new(AddMemberResponse {
                cluster_id: self.cluster_id(),
                voters: view.voters.into_iter().collect(),
                learners: view.learners.into_iter().collect(),
            })),
            Err(MembershipError::NotLeader) if !again => {
                let (addr, ch) = self.leader()?;
                ClusterClient::new(ch).add_member(forwarded(msg)).await.map_err(|s| forwarded_status(s, &addr, true))
            }
            Err(e) => Err(membership_status(e)),
        }
    }

    async fn remove_member(&self, req: Request<RemoveMemberRequest>) -> Result<Response<RemoveMemberResponse>, Status> {
        let again = is_forwarded(&req);
        let msg = req.into_inner();
        match self.membership.remove(msg.id).await {
            Ok(view) => Ok(Response::new(RemoveMemberResponse {
                voters: view.voters.into_iter().collect(),
                learners: view.learners.into_iter().collect(),
            })),
            Err(MembershipError::NotLeader) if !again => {
                let (addr, ch) = self.leader()?;
                ClusterClient::new(ch).remove_member(forwarded(msg)).await.map_err(|s| forwarded_status(s, &addr, true))
            }
            Err(e) => Err(membership_status(e)),
        }
    }
}

/// Why a member did not answer, with the transport's cause (e.g. "dns error: failed to lookup
/// address") rather than only its summary.
fn describe(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = e.source();
    }
    text
}

/// A member that did not answer: what this member knows of it (its membership), no live figures.
fn unreachable_info(id: u64, member: &Member, voter: bool, why: &str) -> MemberInfo {
    MemberInfo {
        id,
        name: member.name.clone(),
        addr: member.addr.clone(),
        role: "unreachable".into(),
        voter,
        error: why.to_string(),
        ..Default::default()
    }
}
