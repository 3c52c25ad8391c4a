//! What a member accepts from the Raft network before openraft sees it (pure checks).
//!
//! openraft trusts its peers: it stores any vote at least as high as its own, and its election adds
//! one to the stored term, so a message carrying term `u64::MAX` is flushed to disk and then
//! overflows the term at the next election, after every restart. It also writes each snapshot
//! chunk at the offset the sender names, so a chunk at offset 2^44 asks the in-memory snapshot
//! buffer for 16 TiB. These checks refuse such messages with `INVALID_ARGUMENT`; authenticating the
//! peers is the other half (members-only Raft).

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{LogId, Vote};

use crate::TypeConfig;

/// The highest term a message may carry. Terms grow by one per election: a member that campaigned
/// every 80 ms without pause would reach it after 700,000 years, and it leaves room for `+ 1`.
pub const MAX_TERM: u64 = 1 << 48;

/// Limits on what peers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundLimits {
    /// The largest snapshot a member receives, in bytes.
    pub max_snapshot_bytes: u64,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits { max_snapshot_bytes: 1 << 30 }
    }
}

fn check_vote(vote: &Vote<u64>) -> Result<u64, String> {
    let term = vote.leader_id.get_term();
    if term > MAX_TERM {
        return Err(format!("vote term {term} is above the highest term a member accepts ({MAX_TERM})"));
    }
    Ok(term)
}

/// A log id may not name a term above the sender's vote: a leader proposes in its own term only.
fn check_log_id(what: &str, log_id: Option<&LogId<u64>>, vote_term: u64) -> Result<(), String> {
    let Some(log_id) = log_id else { return Ok(()) };
    let term = log_id.leader_id.get_term();
    if term > vote_term {
        return Err(format!("{what} has term {term}, above the sender's vote term {vote_term}"));
    }
    Ok(())
}

pub fn check_append(req: &AppendEntriesRequest<TypeConfig>) -> Result<(), String> {
    let term = check_vote(&req.vote)?;
    check_log_id("prev_log_id", req.prev_log_id.as_ref(), term)?;
    check_log_id("leader_commit", req.leader_commit.as_ref(), term)?;
    let mut previous = req.prev_log_id.map(|l| l.index);
    for entry in &req.entries {
        check_log_id("an entry's log id", Some(&entry.log_id), term)?;
        let index = entry.log_id.index;
        if previous.is_some_and(|p| index != p + 1) {
            return Err(format!("entry index {index} does not follow {}", previous.unwrap_or_default()));
        }
        previous = Some(index);
    }
    Ok(())
}

pub fn check_vote_request(req: &VoteRequest<u64>) -> Result<(), String> {
    let term = check_vote(&req.vote)?;
    check_log_id("last_log_id", req.last_log_id.as_ref(), term)
}

pub fn check_snapshot(req: &InstallSnapshotRequest<TypeConfig>, limits: &InboundLimits) -> Result<(), String> {
    let term = check_vote(&req.vote)?;
    check_log_id("the snapshot's last_log_id", req.meta.last_log_id.as_ref(), term)?;
    let end = req.offset.checked_add(req.data.len() as u64);
    if end.is_none_or(|end| end > limits.max_snapshot_bytes) {
        return Err(format!(
            "snapshot chunk at offset {} ({} bytes) ends beyond the largest snapshot a member receives ({} bytes, [raft] max_snapshot_bytes)",
            req.offset,
            req.data.len(),
            limits.max_snapshot_bytes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, SnapshotMeta, StoredMembership};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn append(vote_term: u64, entries: &[(u64, u64)]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(vote_term, 1),
            prev_log_id: Some(log_id(1, 4)),
            entries: entries
                .iter()
                .map(|(term, index)| Entry { log_id: log_id(*term, *index), payload: EntryPayload::Blank })
                .collect(),
            leader_commit: Some(log_id(1, 4)),
        }
    }

    #[test]
    fn terms_beyond_the_bound_or_above_the_vote_are_refused() {
        assert_eq!(check_append(&append(3, &[(2, 5), (3, 6)])), Ok(()));
        let forged = check_append(&append(u64::MAX, &[])).expect_err("u64::MAX");
        assert!(forged.contains("above the highest term"), "{forged}");
        let ahead = check_append(&append(3, &[(9, 5)])).expect_err("entry ahead of the vote");
        assert!(ahead.contains("term 9, above the sender's vote term 3"), "{ahead}");
        let gap = check_append(&append(3, &[(3, 7)])).expect_err("a gap");
        assert!(gap.contains("does not follow 4"), "{gap}");
        let vote = VoteRequest { vote: Vote::new(MAX_TERM + 1, 2), last_log_id: None };
        assert!(check_vote_request(&vote).is_err());
        let vote = VoteRequest { vote: Vote::new(5, 2), last_log_id: Some(log_id(6, 1)) };
        assert!(check_vote_request(&vote).is_err());
        assert_eq!(check_vote_request(&VoteRequest { vote: Vote::new(MAX_TERM, 2), last_log_id: None }), Ok(()));
    }

    #[test]
    fn snapshot_chunks_end_within_the_configured_size() {
        let limits = InboundLimits { max_snapshot_bytes: 1024 };
        let chunk = |offset: u64, len: usize| InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(2, 10)),
                last_membership: StoredMembership::default(),
                snapshot_id: "s".into(),
            },
            offset,
            data: vec![0; len],
            done: false,
        };
        assert_eq!(check_snapshot(&chunk(0, 1024), &limits), Ok(()));
        assert_eq!(check_snapshot(&chunk(1000, 24), &limits), Ok(()));
        let far = check_snapshot(&chunk(1 << 44, 1), &limits).expect_err("2^44");
        assert!(far.contains("max_snapshot_bytes"), "{far}");
        assert!(check_snapshot(&chunk(1000, 25), &limits).is_err());
        assert!(check_snapshot(&chunk(u64::MAX, 2), &limits).is_err(), "no overflow");
    }
}
