//! Cluster membership: which members vote, and adding and removing members on the leader.
//!
//! Voters stay at an odd number, up to five (1, 3, 5): every other member is a learner with a full
//! replica. [`desired_voters`] is the pure decision; [`Membership`] applies it through openraft.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::sync::Mutex;

use crate::{KvStore, Member};

/// The most voters a cluster has; more members are learners.
pub const MAX_VOTERS: usize = 5;

/// The voters a cluster of `members` should have, keeping the current voters where it can.
///
/// The count is the largest odd number not above `min(MAX_VOTERS, members)`. Current voters stay
/// (lowest ids first if some must go, never `keep` unless it is no longer a member); learners are
/// promoted lowest id first.
pub fn desired_voters(current: &BTreeSet<u64>, members: &BTreeSet<u64>, keep: Option<u64>) -> BTreeSet<u64> {
    let n = members.len().min(MAX_VOTERS);
    let target = if n == 0 {
        0
    } else if n % 2 == 1 {
        n
    } else {
        n - 1
    };
    let mut out: BTreeSet<u64> = BTreeSet::new();
    if let Some(k) = keep.filter(|k| current.contains(k) && members.contains(k)) {
        out.insert(k);
    }
    for id in current.iter().filter(|id| members.contains(id)) {
        if out.len() >= target {
            break;
        }
        out.insert(*id);
    }
    for id in members {
        if out.len() >= target {
            break;
        }
        out.insert(*id);
    }
    out
}

/// A membership change refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("member id {id} is already in use by {existing}: choose another id, or remove member {id} first")]
    IdInUse { id: u64, existing: Member },
    #[error("member name {name:?} is already in use by member {id}: choose another name")]
    NameInUse { name: String, id: u64 },
    #[error("member {0} is not a member of this cluster")]
    NotFound(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("this member is not the leader")]
    NotLeader,
    #[error("member {id} ({addr}) was added as a learner but did not catch up within {secs} s: is the address reachable from the leader? It stays a learner until `skiff cluster remove-member {id}`")]
    NotCaughtUp { id: u64, addr: String, secs: u64 },
    #[error("membership change failed: {0}")]
    Raft(String),
}

/// The voters and learners after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
}

/// Applies membership changes on the leader, one at a time.
pub struct Membership {
    store: KvStore,
    /// Changes are read-modify-write of the membership: serialize them.
    lock: Mutex<()>,
}

/// How long a new member may take to catch up as a learner before `add` gives up on it.
pub const CATCH_UP: Duration = Duration::from_secs(60);

impl Membership {
    pub fn new(store: KvStore) -> Self {
        Self { store, lock: Mutex::new(()) }
    }

    /// The current voters and all members with their addresses, from this member's view.
    pub fn current(&self) -> (BTreeSet<u64>, BTreeMap<u64, Member>) {
        let status = self.store.status();
        (status.voters, status.members)
    }

    fn view(&self) -> MembershipView {
        let (voters, nodes) = self.current();
        let learners = nodes.keys().filter(|id| !voters.contains(id)).copied().collect();
        MembershipView { voters, learners }
    }

    fn ensure_leader(&self) -> Result<(), MembershipError> {
        self.store.check_leader().map_err(|_| MembershipError::NotLeader)
    }

    /// Adds a member: it catches up as a learner, then voters are rebalanced. The caller has
    /// checked the name and address. The wait for the learner holds no lock, so a member that
    /// never answers (a wrong address) keeps no other change waiting: it can be removed meanwhile.
    pub async fn add(&self, id: u64, member: Member) -> Result<MembershipView, MembershipError> {
        {
            let _one = self.lock.lock().await;
            self.ensure_leader()?;
            if id == 0 {
                return Err(MembershipError::Invalid("member id must be positive".into()));
            }
            let (_, nodes) = self.current();
            if let Some(existing) = nodes.get(&id) {
                return Err(MembershipError::IdInUse { id, existing: existing.clone() });
            }
            if let Some((other, _)) = nodes.iter().find(|(_, m)| m.name == member.name) {
                return Err(MembershipError::NameInUse { name: member.name.clone(), id: *other });
            }
            tracing::info!(id, %member, "adding member as learner");
            let raft = self.store.raft();
            raft.add_learner(id, member.clone(), false).await.map_err(|e| MembershipError::Raft(e.to_string()))?;
        }
        self.caught_up(id, &member.addr).await?;
        let _one = self.lock.lock().await;
        self.ensure_leader()?;
        if !self.current().1.contains_key(&id) {
            return Err(MembershipError::Invalid(format!("member {id} was removed while it caught up")));
        }
        self.rebalance().await?;
        Ok(self.view())
    }

    /// Waits until learner `id` has replicated the log as far as it was when it was added.
    async fn caught_up(&self, id: u64, addr: &str) -> Result<(), MembershipError> {
        let raft = self.store.raft();
        let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let matched = move |m: &openraft::RaftMetrics<u64, Member>| {
            let progress = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
            progress.is_some_and(|log_id| log_id.index >= target)
        };
        let gone = move |m: &openraft::RaftMetrics<u64, Member>| {
            !m.membership_config.membership().nodes().any(|(n, _)| *n == id)
        };
        match raft.wait(Some(CATCH_UP)).metrics(move |m| matched(m) || gone(m), "the learner caught up").await {
            Ok(_) => Ok(()),
            Err(openraft::metrics::WaitError::ShuttingDown) => Err(MembershipError::NotLeader),
            Err(openraft::metrics::WaitError::Timeout(..)) => {
                Err(MembershipError::NotCaughtUp { id, addr: addr.to_string(), secs: CATCH_UP.as_secs() })
            }
        }
    }

    /// Removes a member, rebalancing the voters so they stay odd.
    pub async fn remove(&self, id: u64) -> Result<MembershipView, MembershipError> {
        let _one = self.lock.lock().await;
        self.ensure_leader()?;
        let (voters, nodes) = self.current();
        if !nodes.contains_key(&id) {
            return Err(MembershipError::NotFound(id));
        }
        let remaining: BTreeSet<u64> = nodes.keys().filter(|n| **n != id).copied().collect();
        if remaining.is_empty() {
            return Err(MembershipError::Invalid(format!("member {id} is the last member: a cluster cannot be empty")));
        }
        let new_voters = desired_voters(&voters, &remaining, Some(self.store.node_id()));
        tracing::info!(id, ?new_voters, "removing member");
        if new_voters != voters {
            self.change(ChangeMembers::ReplaceAllVoters(new_voters)).await?;
        }
        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
        Ok(self.view())
    }

    /// Promotes or demotes so that the voter count is the desired odd number.
    pub async fn rebalance(&self) -> Result<(), MembershipError> {
        let (voters, nodes) = self.current();
        let members: BTreeSet<u64> = nodes.keys().copied().collect();
        let want = desired_voters(&voters, &members, Some(self.store.node_id()));
        if want != voters {
            tracing::info!(?voters, ?want, "changing voters");
            self.change(ChangeMembers::ReplaceAllVoters(want)).await?;
        }
        Ok(())
    }

    async fn change(&self, change: ChangeMembers<u64, Member>) -> Result<(), MembershipError> {
        self.store.raft().change_membership(change, true).await.map_err(|e| MembershipError::Raft(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn voters_stay_odd_up_to_five() {
        assert_eq!(desired_voters(&set(&[1]), &set(&[1]), Some(1)), set(&[1]));
        assert_eq!(desired_voters(&set(&[1]), &set(&[1, 2]), Some(1)), set(&[1]));
        assert_eq!(desired_voters(&set(&[1]), &set(&[1, 2, 3]), Some(1)), set(&[1, 2, 3]));
        assert_eq!(desired_voters(&set(&[1, 2, 3]), &set(&[1, 2, 3, 4]), Some(1)), set(&[1, 2, 3]));
        assert_eq!(desired_voters(&set(&[1, 2, 3]), &set(&[1, 2, 3, 4, 5]), Some(1)), set(&[1, 2, 3, 4, 5]));
        assert_eq!(
            desired_voters(&set(&[1, 2, 3, 4, 5]), &set(&[1, 2, 3, 4, 5, 6, 7]), Some(1)),
            set(&[1, 2, 3, 4, 5])
        );
    }

    #[test]
    fn removing_a_voter_promotes_a_learner_or_demotes_to_stay_odd() {
        // 4 members left with 3 voters after removing voter 2: promote learner 4.
        assert_eq!(desired_voters(&set(&[1, 2, 3]), &set(&[1, 3, 4, 5]), Some(1)), set(&[1, 3, 4]));
        // 2 members left: one voter, and it is the leader.
        assert_eq!(desired_voters(&set(&[1, 2, 3]), &set(&[2, 3]), Some(3)), set(&[3]));
    }

    #[test]
    fn current_voters_are_kept_before_learners_are_promoted() {
        assert_eq!(desired_voters(&set(&[4, 5, 6]), &set(&[1, 2, 3, 4, 5, 6]), Some(5)), set(&[4, 5, 6, 1, 2]));
    }
}
