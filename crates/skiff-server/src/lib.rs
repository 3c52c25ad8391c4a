//! A Skiff member, wired together: its config, the gRPC API services, membership, forwarding to the
//! leader, and starting and stopping the parts.
//!
//! # Layout
//!
//! - [`config`]: the node's TOML config and its validation.
//! - [`node`]: [`node::Node`], a running member (store + listener + bootstrap/join + shutdown).
//! - [`kv_service`], [`cluster_service`], [`resource_service`], [`container_service`]: the client API
//!   (`proto/skiff.proto`).
//! - [`membership`]: voters and learners, adding and removing members.
//! - [`forward`]: forwarding calls to the leader; [`rpc_error`]: what failures mean.
//! - [`limits`]: size limits on requests.
//! - [`agent_api`]: the agent's view of the cluster on a member (local reads, forwarded writes).
//! - [`client`]: a client that tries the next member when one is down (CLI, join, tests).

pub mod agent_api;
pub mod client;
pub mod cluster_service;
pub mod config;
pub mod container_service;
pub mod forward;
pub mod kv_service;
pub mod limits;
pub mod membership;
pub mod node;
pub mod resource_service;
pub mod rpc_error;

pub use node::Node;
