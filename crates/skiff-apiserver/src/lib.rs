//! Skiff's API server: Kubernetes' resource semantics over the replicated key-value store, and the
//! one path every call takes: served here when this member leads (or the call needs no leader),
//! forwarded to the leader otherwise.
//!
//! # Layout
//!
//! - [`keys`]: where objects live in the store and how they are encoded.
//! - [`strategy`]: per kind, what create, update and delete do (pure: the clock and uid are inputs).
//! - [`binding`], [`gc`]: binding a pod to a node; what goes with an owner and what lost its owner.
//! - [`cas`]: read, decide, compare-and-swap: the one way objects are changed.
//! - [`watch`]: store changes as Kubernetes watch events, filtered, with DELETED when an object
//!   stops matching.
//! - [`resources`]: the resource calls as this member serves them; [`kv`]: the `skiff kv` calls.
//! - [`call`]: every call that may be forwarded, as a value; [`server`]: [`server::ApiServer`],
//!   the one serve-here-or-forward path, which implements `ResourceApi`.
//! - [`error`]: store failures as API errors; "not the leader".
//! - [`metrics`]: calls, their latency and open watches, for `/metrics`.

pub mod binding;
pub mod call;
pub mod cas;
pub mod error;
pub mod gc;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod resources;
pub mod server;
pub mod strategy;
pub mod watch;

pub use server::{ApiServer, Forward};
