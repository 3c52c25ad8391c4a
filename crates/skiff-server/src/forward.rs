//! Forwarding between members: [`GrpcForward`] carries calls to the leader (skiff-apiserver's one
//! forwarding path) over the `Members` gRPC service, and [`MemberService`] serves them there. The
//! channels to other members are kept in one [`Channels`] cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use skiff_api::ApiError;
use skiff_apiserver::ApiServer;
use skiff_proto::member::members_client::MembersClient;
use skiff_proto::member::members_server::Members;
use skiff_proto::member::{ForwardReply, ForwardRequest};
use skiff_store::network::Connector;
use skiff_store::Member;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::rpc_error::forwarding_error;

/// Metadata key marking a call forwarded by another member (logs and exec, which go to the member
/// that runs the pod): a member never forwards such a call again.
pub const FORWARDED: &str = "x-skiff-forwarded";

/// Channels to other members, by address, reused across calls.
pub struct Channels {
    connector: Arc<dyn Connector>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self { connector, channels: Mutex::new(HashMap::new()) }
    }

    /// A channel to `addr` (lazily connected).
    pub fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().map_err(|_| Status::internal("channel cache lock poisoned"))?;
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c =
            self.connector.channel(addr).map_err(|e| Status::internal(format!("bad member address {addr}: {e}")))?;
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// True when `req` was forwarded by another member.
pub fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

/// Wraps `msg` as a forwarded request.
pub fn forwarded<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    req
}

/// Forwarding to the leader over gRPC.
pub struct GrpcForward {
    pub channels: Arc<Channels>,
}

#[async_trait]
impl skiff_apiserver::Forward for GrpcForward {
    async fn forward(&self, leader: &Member, call: &str, payload: Vec<u8>, write: bool) -> Result<Vec<u8>, ApiError> {
        let channel = self.channels.channel(&leader.addr).map_err(|s| ApiError::internal(s.message().to_string()))?;
        let mut client = MembersClient::new(channel)
            .max_decoding_message_size(skiff_proto::limits::MAX_RESPONSE_BYTES)
            .max_encoding_message_size(skiff_proto::limits::MAX_RESPONSE_BYTES);
        let reply = client
            .forward(ForwardRequest { call: call.to_string(), payload })
            .await
            .map_err(|s| forwarding_error(&s, &leader.addr, write))?
            .into_inner();
        if reply.error.is_empty() {
            return Ok(reply.reply);
        }
        Err(bincode::deserialize(&reply.error)
            .unwrap_or_else(|e| ApiError::internal(format!("the leader's error cannot be read: {e}"))))
    }
}

/// Serves calls other members forward to this one (the leader).
pub struct MemberService {
    pub api: Arc<ApiServer>,
}

#[tonic::async_trait]
impl Members for MemberService {
    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<ForwardReply>, Status> {
        let msg = req.into_inner();
        let reply = match self.api.serve_forwarded(&msg.call, &msg.payload).await {
            Ok(reply) => ForwardReply { reply, error: Vec::new() },
            Err(e) => ForwardReply {
                reply: Vec::new(),
                error: bincode::serialize(&e).map_err(|e| Status::internal(e.to_string()))?,
            },
        };
        Ok(Response::new(reply))
    }
}
