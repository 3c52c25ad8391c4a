//! Every decoder of what members send each other and store, fed arbitrary bytes and structures
//! (issue 12): no panic, no unbounded allocation, a clear error; and what the Raft message checks
//! admit is what openraft can take.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote};
use proptest::prelude::*;
use skiff_store::inbound::{self, InboundLimits, MAX_TERM};
use skiff_store::{codec, Change, Command, KeyValue, Op, TypeConfig};

/// Bytes as a member could receive them: often with a valid format byte in front, so the decoder
/// behind it is reached.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(codec::FORMAT_V1), Just(codec::FORMAT_V2), any::<u8>()],
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(format, rest)| std::iter::once(format).chain(rest).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn raft_messages_and_stored_values_decode_or_fail_cleanly(bytes in message_bytes()) {
        let errors = [
            codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes).err().map(|e| e.to_string()),
            codec::decode::<VoteRequest<u64>>(&bytes).err().map(|e| e.to_string()),
            codec::decode::<InstallSnapshotRequest<TypeConfig>>(&bytes).err().map(|e| e.to_string()),
            codec::decode::<Command>(&bytes).err().map(|e| e.to_string()),
            codec::decode::<KeyValue>(&bytes).err().map(|e| e.to_string()),
            codec::decode::<Vec<Change>>(&bytes).err().map(|e| e.to_string()),
        ];
        for e in errors.into_iter().flatten() {
            prop_assert!(e.starts_with("cannot decode"), "{e}");
        }
    }
}

fn log_id() -> impl Strategy<Value = Option<LogId<u64>>> {
    proptest::option::of(
        (any::<u64>(), 0..5u64, any::<u64>()).prop_map(|(t, n, i)| LogId::new(CommittedLeaderId::new(t, n), i)),
    )
}

fn vote() -> impl Strategy<Value = Vote<u64>> {
    (prop_oneof![any::<u64>(), 0..10u64, Just(u64::MAX)], 0..5u64, any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn raft_message_checks_admit_only_terms_that_cannot_overflow(
        vote in vote(),
        prev in log_id(),
        commit in log_id(),
        entries in proptest::collection::vec((0..20u64, any::<u64>()), 0..8),
        offset in prop_oneof![any::<u64>(), 0..4096u64],
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let append = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: prev,
            entries: entries
                .iter()
                .map(|(t, i)| Entry { log_id: LogId::new(CommittedLeaderId::new(*t, 1), *i), payload: EntryPayload::Blank })
                .collect(),
            leader_commit: commit,
        };
        if inbound::check_append(&append).is_ok() {
            prop_assert!(append.vote.leader_id.get_term() <= MAX_TERM);
            prop_assert!(append.entries.iter().all(|e| e.log_id.leader_id.get_term() <= MAX_TERM));
        }
        // Any such message goes through the codec unchanged (compared by its encoding).
        let bytes = codec::encode(&append).expect("encode");
        let decoded = codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes).expect("decode");
        prop_assert_eq!(codec::encode(&decoded).expect("encode again"), bytes);

        let limits = InboundLimits { max_snapshot_bytes: 4096 };
        let chunk = InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: SnapshotMeta { last_log_id: prev, last_membership: StoredMembership::default(), snapshot_id: "s".into() },
            offset,
            data,
            done: false,
        };
        if inbound::check_snapshot(&chunk, &limits).is_ok() {
            prop_assert!(chunk.offset + chunk.data.len() as u64 <= limits.max_snapshot_bytes);
        }
        let request = VoteRequest { vote, last_log_id: prev };
        if inbound::check_vote_request(&request).is_ok() {
            prop_assert!(request.vote.leader_id.get_term() <= MAX_TERM);
        }
    }

    #[test]
    fn commands_round_trip_through_the_codec(
        writes in proptest::collection::vec(
            proptest::collection::vec(
                (".{0,12}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)), proptest::option::of(any::<u64>())),
                0..4,
            ),
            0..4,
        ),
    ) {
        let command = Command::Writes(
            writes
                .into_iter()
                .map(|ops| {
                    ops.into_iter()
                        .map(|(key, value, expect)| match value {
                            Some(value) => Op::Put { key, value, expect },
                            None => Op::Delete { key, expect },
                        })
                        .collect()
                })
                .collect(),
        );
        let bytes = codec::encode(&command).expect("encode");
        prop_assert_eq!(codec::decode::<Command>(&bytes).expect("decode"), command);
    }
}
