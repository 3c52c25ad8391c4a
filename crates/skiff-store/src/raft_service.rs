//! The server side of the Raft network: the tonic `Raft` service that hands member-to-member RPCs
//! to the local openraft instance, once [`crate::inbound`] has checked them.

use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use skiff_proto::raft::RaftMessage;
use tonic::{Request, Response, Status};

use crate::codec;
use crate::inbound::{self, InboundLimits};
use crate::network::MAX_RAFT_MESSAGE;
use crate::Raft;

/// Serves Raft RPCs for one member.
pub struct RaftService {
    raft: Raft,
    limits: InboundLimits,
}

impl RaftService {
    /// The tonic service, with message limits that fit the largest Raft batch.
    pub fn server(raft: Raft, limits: InboundLimits) -> RaftServer<Self> {
        RaftServer::new(Self { raft, limits })
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<T, Status> {
    codec::decode(&req.into_inner().data).map_err(|e| Status::invalid_argument(format!("raft message: {e}")))
}

/// Refuses a message the checks of [`inbound`] do not pass.
fn admit(what: &str, checked: Result<(), String>) -> Result<(), Status> {
    checked.map_err(|e| {
        tracing::warn!(rpc = what, "refused a Raft message: {e}");
        Status::invalid_argument(format!("raft {what}: {e}"))
    })
}

/// Encodes openraft's answer: the response in `data`, or its error in `error`.
fn reply<T: Serialize, E: Serialize>(result: Result<T, E>) -> Result<Response<RaftMessage>, Status> {
    let msg = match result {
        Ok(v) => {
            RaftMessage { data: codec::encode(&v).map_err(|e| Status::internal(e.to_string()))?, error: Vec::new() }
        }
        Err(e) => {
            RaftMessage { data: Vec::new(), error: codec::encode(&e).map_err(|e| Status::internal(e.to_string()))? }
        }
    };
    Ok(Response::new(msg))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req)?;
        admit("append_entries", inbound::check_append(&rpc))?;
        reply(self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req)?;
        admit("vote", inbound::check_vote_request(&rpc))?;
        reply(self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc = decode(req)?;
        admit("install_snapshot", inbound::check_snapshot(&rpc, &self.limits))?;
        reply(self.raft.install_snapshot(rpc).await)
    }
}
