//! Generated gRPC code for Skiff.
//!
//! - [`api`]: the client API (`proto/skiff.proto`), served by every member.
//! - [`raft`]: the member-to-member Raft RPCs (`proto/raft.proto`).
//! - [`member`]: other member-to-member calls: forwarding to the leader (`proto/member.proto`).
//! - [`transport`]: how an address becomes a channel ([`transport::Connector`]); [`limits`]:
//!   message sizes of the client API.

#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("skiff.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod raft {
    tonic::include_proto!("skiff.raft.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod member {
    tonic::include_proto!("skiff.member.v1");
}

pub mod transport;

/// Message size limits of the client API, shared by its servers and clients.
pub mod limits {
    /// gRPC decoding limit of the client API (a little above the largest valid request).
    pub const MAX_REQUEST_BYTES: usize = 4 << 20;
    /// gRPC limit of a response (a list of many large objects). Clients raise their decoding limit
    /// to it. Paging long lists is future work.
    pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
}
