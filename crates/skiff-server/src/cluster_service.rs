//! The `Cluster` gRPC service: status of the members, adding and removing members.

use std::sync::Arc;
use std::time::Duration;

use skiff_apiserver::ApiServer;
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::cluster_server::Cluster;
use skiff_proto::api::{
    AddMemberRequest, AddMemberResponse, ClusterStatus, MemberInfo, MemberStatusRequest, RemoveMemberRequest,
    RemoveMemberResponse, StatusRequest,
};
use skiff_store::{KvStore, Member, Role};
use tonic::{Request, Response, Status};

use crate::forward::Channels;
use crate::node::CLUSTER_ID_KEY;
use crate::rpc_error::api_status;

/// Serves `Cluster` on one member.
pub struct ClusterService {
    api: Arc<ApiServer>,
    /// Asks the other members for their own status.
    channels: Arc<Channels>,
}

impl ClusterService {
    pub fn new(api: Arc<ApiServer>, channels: Arc<Channels>) -> Self {
        Self { api, channels }
    }

    fn store(&self) -> &KvStore {
        self.api.store()
    }

    /// This member's own view of itself.
    fn local_info(&self) -> MemberInfo {
        let s = self.store().status();
        let me = s.members.get(&s.id).cloned().unwrap_or_default();
        MemberInfo {
            id: s.id,
            name: me.name,
            addr: me.addr,
            role: if s.role == Role::Shutdown { "shutdown" } else { s.role.as_str() }.into(),
            voter: s.voters.contains(&s.id),
            term: s.term,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            leader_id: s.leader.unwrap_or(0),
            cluster_id: self.cluster_id(),
            error: String::new(),
        }
    }

    fn cluster_id(&self) -> String {
        self.store()
            .get_local(CLUSTER_ID_KEY)
            .ok()
            .flatten()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        let me = self.local_info();
        let view = self.store().status();
        let voters = &view.voters;
        let asks = view.members.into_iter().map(|(id, member)| async move {
            if id == me.id {
                return self.local_info();
            }
            let ask = async {
                let ch = self.channels.channel(&member.addr)?;
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
        let msg = req.into_inner();
        let view = self.api.add_member(msg.id, &msg.name, &msg.addr).await.map_err(api_status)?;
        Ok(Response::new(AddMemberResponse {
            cluster_id: self.cluster_id(),
            voters: view.voters,
            learners: view.learners,
        }))
    }

    async fn remove_member(&self, req: Request<RemoveMemberRequest>) -> Result<Response<RemoveMemberResponse>, Status> {
        let id = req.into_inner().id;
        let view = self.api.remove_member(id).await.map_err(api_status)?;
        // Its certificate is refused from now on, and the id may join again with a new one.
        let forget = skiff_store::Op::Delete { key: crate::security::member_record(id), expect: None };
        self.api.call(skiff_apiserver::call::SecurityWrite { ops: vec![forget] }).await.map_err(api_status)?;
        Ok(Response::new(RemoveMemberResponse { voters: view.voters, learners: view.learners }))
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
