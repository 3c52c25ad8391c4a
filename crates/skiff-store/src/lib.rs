//! Skiff's replicated key-value store. It knows nothing of Kubernetes: keys, values, revisions,
//! compare-and-swap, atomic multi-writes and watches.
//!
//! Every member keeps a full replica of the cluster state: openraft replicates commands, sled keeps
//! the log and the state machine on disk, and each member serves reads and watches from its own
//! replica.
//!
//! # Layout
//!
//! - [`types`]: the openraft type configuration and the commands, results and changes of the store.
//! - [`codec`]: the versioned binary encoding of everything stored on disk or sent between members.
//! - [`log_store`]: the Raft log and vote in sled (`RaftLogStorage`); [`log_budget`]: when to
//!   snapshot and how much log to keep, by bytes.
//! - [`state_machine`]: the objects, their revisions and the watch history in sled
//!   (`RaftStateMachine`), with snapshots; [`history`]: how much history it keeps;
//!   [`snapshot`]: the snapshot's encoding, written and read without extra copies; [`values`]:
//!   large values in files of their own, out of sled's tree.
//! - [`watch`]: watch streams served from the local replica.
//! - [`network`]: the Raft network client over tonic; [`raft_service`]: its server side, which
//!   refuses what [`inbound`] does not admit (terms that would overflow, oversized snapshots).
//! - `proposer`: groups concurrent writes into one Raft entry (one flush for many writes).
//! - [`store`]: [`store::KvStore`], the handle the API layer uses: writes, reads, watches.
//! - [`leadership`]: who leads ([`Leadership`], watched) and each member's status, as values.
//! - [`membership`]: which members vote (odd up to five), adding and removing members.
//! - [`metrics`]: what the store counts for `/metrics`.

pub mod codec;
pub mod history;
pub mod inbound;
pub mod leadership;
pub mod log_budget;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod network;
mod proposer;
pub mod raft_service;
pub mod snapshot;
pub mod state_machine;
pub mod store;
pub mod types;
pub mod values;
pub mod watch;

pub use leadership::{Leadership, MemberStatus, Role};
pub use store::{KvStore, ReadConsistency, StoreConfig, StoreError};
pub use types::{Change, ChangeKind, Command, EntryResult, KeyValue, Member, Op, TypeConfig, WriteResult};

/// The Raft handle with Skiff's type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
