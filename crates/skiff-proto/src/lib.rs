//! Generated gRPC code for Skiff.
//!
//! - [`api`]: the client API (`proto/skiff.proto`), served by every member.
//! - [`raft`]: the member-to-member Raft RPCs (`proto/raft.proto`).

#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("skiff.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod raft {
    tonic::include_proto!("skiff.raft.v1");
}
