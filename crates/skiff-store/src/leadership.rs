//! Who leads and who the members are, as values: callers watch [`Leadership`] or ask for a
//! [`MemberStatus`] instead of reading openraft's metrics themselves.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::types::Member;
use crate::Raft;

/// Who leads, as this member sees it. It changes with every new term or leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The Raft term this view belongs to.
    pub term: u64,
    /// The leader's id and address, when one is known.
    pub leader: Option<(u64, Member)>,
    /// This member is the leader of `term`.
    pub is_leader: bool,
}

/// What this member is in the Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Candidate,
    Follower,
    Learner,
    Shutdown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Candidate => "candidate",
            Role::Follower => "follower",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// One member's own view of itself and of the membership.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    pub id: u64,
    pub role: Role,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// The leader this member knows of.
    pub leader: Option<u64>,
    pub voters: BTreeSet<u64>,
    /// Every member (voters and learners) with its address.
    pub members: BTreeMap<u64, Member>,
}

impl MemberStatus {
    pub(crate) fn of(m: &RaftMetrics<u64, Member>) -> Self {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Candidate => Role::Candidate,
            ServerState::Follower if voters.contains(&m.id) => Role::Follower,
            ServerState::Follower | ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        MemberStatus {
            id: m.id,
            role,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            leader: m.current_leader,
            voters,
            members: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }

    /// The member with `name`, if there is one.
    pub fn member_named(&self, name: &str) -> Option<(u64, &Member)> {
        self.members.iter().find(|(_, m)| m.name == name).map(|(id, m)| (*id, m))
    }
}

fn leadership_of(m: &RaftMetrics<u64, Member>) -> Leadership {
    let leader = m
        .current_leader
        .and_then(|id| m.membership_config.membership().get_node(&id).cloned().map(|member| (id, member)));
    Leadership { term: m.current_term, is_leader: m.current_leader == Some(m.id), leader }
}

/// Follows openraft's metrics and publishes [`Leadership`] only when it changes. Ends with Raft.
pub(crate) fn watch_leadership(raft: &Raft) -> watch::Receiver<Leadership> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(leadership_of(&metrics.borrow()));
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let now = leadership_of(&metrics.borrow());
            tx.send_if_modified(|current| {
                let changed = *current != now;
                if changed {
                    *current = now;
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}
