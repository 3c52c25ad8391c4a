//! The Raft network client: openraft's RPCs to other members over tonic.
//!
//! Connections are lazy (nothing is dialled until the first RPC) and reconnect by themselves after
//! a member restarts. A refused or failed connection is reported to openraft as `Unreachable`, so it
//! backs off instead of spinning. How an address becomes a channel is a [`Connector`] passed in, so
//! tests, and later TLS, plug in without touching this code.

use std::sync::Arc;

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
use tonic::transport::Channel;

use crate::codec;
use crate::types::{Member, TypeConfig};

/// Largest Raft message a member accepts (the gRPC decoding limit of the Raft service).
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;
/// An append-entries request is split (openraft resends fewer entries) above this size. openraft 0.9
/// gives an append-entries RPC one heartbeat interval (30 ms) to complete and, when it times out,
/// sends the same range again: a batch must be small enough to encode, send, decode and flush well
/// within it, or a busy follower never catches up and campaigns. At 2 MiB, the 30,000 pods of
/// bench/scale (entries of about 250 KB) set off election storms; a single entry larger than this
/// still goes alone, and entries are bounded (1 MiB by the proposer), far under
/// [`MAX_RAFT_MESSAGE`].
pub const SPLIT_APPEND_ABOVE: usize = 256 << 10;

pub use skiff_proto::transport::{is_connect_error, Connector, TcpConnector};

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

    /// Maps a transport failure: a member that cannot be connected to is `Unreachable` (openraft
    /// backs off), anything else is a `NetworkError` (openraft retries at once).
    fn transport_error<E: std::error::Error>(&self, status: tonic::Status) -> RPCError<u64, Member, RaftError<u64, E>> {
        if is_connect_error(&status) {
            RPCError::Unreachable(Unreachable::new(&status))
        } else {
            RPCError::Network(NetworkError::new(&status))
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
    /// How long openraft waits before it retries a member that could not be connected to. Shorter
    /// than openraft's 500 ms default and than the election timeout (300 ms at the earliest): a
    /// restarted member hears from the leader before its own election timer fires, instead of
    /// starting an election that bumps the term and unseats the leader.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(std::time::Duration::from_millis(100)))
    }

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
        // openraft bounds this call by `option.hard_ttl()` itself and retries on timeout; a gRPC
        // deadline as well would only turn a slow answer into an error.
        let _ = option;
        let req = tonic::Request::new(RaftMessage { data, error: Vec::new() });
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
