//! The openraft type configuration and the vocabulary of the store: commands (what is proposed),
//! write results (what apply decided) and changes (what watchers see).

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Skiff's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = EntryResult,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What a member is to the others: its name and the address its gRPC listener is reached at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human name (`node1`), shown by `skiff cluster status`.
    pub name: String,
    /// `host:port` of the member's gRPC listener (Raft and client API share it).
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

/// One change inside a command.
///
/// `expect` is compare-and-swap: `Some(rev)` requires the key's current `mod_revision` to be `rev`,
/// with `Some(0)` meaning "must not exist". It is checked inside apply, so it is decided in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        expect: Option<u64>,
    },
    Delete {
        key: String,
        expect: Option<u64>,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }

    pub fn expect(&self) -> Option<u64> {
        match self {
            Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect,
        }
    }
}

/// A command proposed to Raft. Everything in it (keys, values, ids, timestamps) is fixed by the
/// proposer, so applying it is deterministic on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Independent writes committed in one entry (the proposer groups concurrent writes, so one
    /// flush serves many). Each write is atomic on its own: all of its ops apply or, if any
    /// `expect` fails, none. No two writes of one entry touch the same key, so a key changes at most
    /// once per revision.
    Writes(Vec<Vec<Op>>),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Writes(ws) => write!(f, "{} write(s)", ws.len()),
        }
    }
}

/// What apply decided for one entry: one result per write of a [`Command::Writes`], none for
/// blank and membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResult {
    pub writes: Vec<WriteResult>,
}

/// What apply decided for one write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The revision of the write: the Raft log index of its entry.
    pub revision: u64,
    /// `Some` when a compare-and-swap failed; nothing was changed then.
    pub conflict: Option<Conflict>,
    /// For each op, the state of its key before the write (`None` if it did not exist).
    pub prev: Vec<Option<KeyValue>>,
}

/// A failed compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: String,
    /// The revision the writer expected (0: "must not exist").
    pub expected: u64,
    /// The key's actual `mod_revision`, or 0 if it does not exist.
    pub actual: u64,
}

/// A stored object with its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the write that last changed the key.
    pub mod_revision: u64,
}

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Put,
    /// The event's `kv` is the last state of the deleted key.
    Delete,
}

/// One change of one key, at one revision: what watchers see (not the Kubernetes Event kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub revision: u64,
    pub kv: KeyValue,
    /// The key's `mod_revision` before this change: 0 when the change created the key, `None` when
    /// not recorded (history written by a Skiff that did not record it). With it, a watcher that
    /// filters can read the previous value ([`crate::KvStore::value_at`]) and tell whether the key
    /// just stopped (or started) matching.
    pub prev_revision: Option<u64>,
}

/// [`Change`] as history written before `prev_revision` was recorded (codec format 1) stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChangeV1 {
    pub kind: ChangeKind,
    pub revision: u64,
    pub kv: KeyValue,
}

impl From<ChangeV1> for Change {
    fn from(c: ChangeV1) -> Self {
        let prev_revision = match c.kind {
            ChangeKind::Delete => Some(c.kv.mod_revision),
            ChangeKind::Put if c.kv.create_revision == c.kv.mod_revision => Some(0),
            ChangeKind::Put => None,
        };
        Change { kind: c.kind, revision: c.revision, kv: c.kv, prev_revision }
    }
}
