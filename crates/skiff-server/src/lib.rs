//! A Skiff member, wired together: its config, the gRPC API services, membership, forwarding to the
//! leader, and starting and stopping the parts.
//!
//! # Layout
//!
//! - [`config`]: the node's TOML config and its validation.
//! - [`node`]: [`node::Node`], a running member (store + listener + bootstrap/join + shutdown).
//! - [`kv_service`], [`cluster_service`], [`resource_service`], [`container_service`]: the client API
//!   (`proto/skiff.proto`), thin adapters over the member's `ApiServer` (skiff-apiserver).
//! - [`forward`]: the member-to-member `Members` service and its client, which carry the API
//!   server's calls to the leader; [`rpc_error`]: API errors as gRPC statuses.
//! - [`agent_api`]: this member's agent, wired to its runtime and the member's API in-process.
//! - [`http`]: the HTTP listener: `/metrics` now, the Kubernetes REST front door later.

pub mod agent_api;
pub mod authz;
pub mod cluster_service;
pub mod config;
pub mod container_service;
pub mod forward;
pub mod http;
pub mod kv_service;
pub mod node;
pub mod resource_service;
pub mod rpc_error;
pub mod security;

pub use node::Node;
