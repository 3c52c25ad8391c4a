//! The Raft network client: openraft's RPCs to other members over tonic.
//!
//! Connections are lazy (nothing is dialled until the first RPC) and reconnect by themselves after
//! a member restarts. A refused or failed connection is reported to openraft as `Unreachable`, so it
//! backs off instead of spinning. How an address becomes a channel is a [`Connector`] passed in, so
//! tests, and later TLS, plug in without touching this code.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skiff_proto::raft::raft_client::RaftClient;
use skiff_proto::raft::RaftMessage;
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::types::{Member, TypeConfig};

/// Largest Raft message a member accepts (the gRPC decoding limit of the Raft service).
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;
/// An append-entries request is split (openraft resends fewer entries) above this size, so batches
/// always stay well under [`MAX_RAFT_MESSAGE`]. One object is at most 1 MiB, so one entry always fits.
pub const SPLIT_APPEND_ABOVE: usize = 16 << 20;

/// Turns a member's address into a gRPC channel.
pub trait Connector: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error>;
}

/// Plain TCP (HTTP/2 without TLS), lazily connected.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub connect_timeout: Duration,
}

impl Default for TcpConnector {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_millis(500) }
    }
}

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    }
}

/// Creates one [`Connection`] per target member.
#[derive(Clone)]
pub struct Network {
    connector: Arc<dyn Connector>,
}

impl Network {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self { connector }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &Member) -> Connection {
        Connection { target, member: node.clone(), connector: self.connector.clone(), client: None }
    }
}

/// The Raft RPC client to one member.
pub struct Connection {
    target: u64,
    member: Member,
    connector: Arc<dyn Connector>,
    /// Created on first use; tonic's channel reconnects by itself afterwards.
    client: Option<RaftClient<Channel>>,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<u64, Member, RaftError<u64, E>>>;

impl Connection {
    fn client(&mut self) -> Result<RaftClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let channel = self.connector.channel(&self.member.addr).map_err(|e| Unreachable::new(&e))?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Maps a transport failure: connection problems are `Unreachable` (back off), anything else is
    /// a `NetworkError` (retry).
    fn transport_error<E: std::error::Error>(&self, status: tonic::Status) -> RPCError<u64, Member, RaftError<u64, E>> {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        }
    }

    fn decode_reply<Resp, E>(&self, reply: RaftMessage) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if !reply.error.is_empty() {
            let err: RaftError<u64, E> =
                codec::decode(&reply.error).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            return Err(RPCError::RemoteError(RemoteError::new_with_node(self.target, self.member.clone(), err)));
        }
        codec::decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

/// Encodes a request; a too-large one is left to the caller to judge.
fn encode_request<T: Serialize, E: std::error::Error>(req: &T) -> RpcResult<Vec<u8>, E> {
    codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let data = encode_request(&rpc)?;
        if data.len() > SPLIT_APPEND_ABOVE && rpc.entries.len() > 1 {
            // Ask openraft to resend with fewer entries, proportionally to the overshoot.
            let fit = (rpc.entries.len() as u64 * SPLIT_APPEND_ABOVE as u64 / data.len() as u64).max(1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit)));
        }
        let mut client = self.client()?;
        let mut req = tonic::Request::new(RaftMessage { data, error: Vec::new() });
        req.set_timeout(option.hard_ttl());
        let reply = client.append_entries(req).await.map_err(|s| self.transport_error(s))?;
        self.decode_reply(reply.into_inner())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        let data = encode_request(&rpc)?;
        let mut client = self.client()?;
        let mut req = tonic::Request::new(RaftMessage { data, error: Vec::new() });
        req.set_timeout(option.hard_ttl());
        let reply = client.install_snapshot(req).await.map_err(|s| self.transport_error(s))?;
        self.decode_reply(reply.into_inner())
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>> {
        let data = encode_request(&rpc)?;
        let mut client = self.client()?;
        let mut req = tonic::Request::new(RaftMessage { data, error: Vec::new() });
        req.set_timeout(option.hard_ttl());
        let reply = client.vote(req).await.map_err(|s| self.transport_error(s))?;
        self.decode_reply(reply.into_inner())
    }
}
