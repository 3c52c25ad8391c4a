//! In-process three-member clusters on loopback: replication, forwarding, failover, restart from
//! disk, catch-up by snapshot, membership changes.

mod common;

use std::time::Duration;

use common::{eventually, get, list, put, test_raft, TestCluster};
use skiff_client::CallKind;
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::{RemoveMemberRequest, StatusRequest};
use skiff_server::config::RaftSettings;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_follower_reach_every_member() {
    let cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(T).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let via_follower = cluster.client_of(follower);
    let mut last = 0;
    for i in 0..20 {
        last = put(&via_follower, &format!("k{i}"), &format!("v{i}")).await.expect("write through follower");
    }
    cluster.all_applied(last, T).await;
    for id in 1..=3 {
        let (kvs, revision) = list(&cluster.client_of(id), "k", true).await.expect("stale list");
        assert_eq!(kvs.len(), 20, "member {id} has every key");
        assert!(revision >= last);
        assert_eq!(get(&cluster.client_of(id), "k7", true).await.expect("get"), Some("v7".into()));
    }
    // A linearizable read through a follower is forwarded and sees the last write.
    assert_eq!(get(&via_follower, "k19", false).await.expect("get"), Some("v19".into()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_the_old_one_catches_up_from_disk() {
    let mut cluster = TestCluster::start(3, test_raft()).await;
    let client = cluster.client();
    for i in 0..10 {
        put(&client, &format!("before/{i}"), "x").await.expect("write");
    }
    let old_leader = cluster.leader(T).await;
    let term_before = cluster.nodes[&old_leader].store().raft().metrics().borrow().current_term;
    cluster.stop(old_leader).await;

    let new_leader = cluster.leader(T).await;
    assert_ne!(new_leader, old_leader);
    let term_after = cluster.nodes[&new_leader].store().raft().metrics().borrow().current_term;
    assert!(term_after > term_before, "a new term began");
    let mut last = 0;
    for i in 0..10 {
        last = put(&client, &format!("after/{i}"), "y").await.expect("write after failover");
    }

    cluster.restart(old_leader).await;
    cluster.all_applied(last, T).await;
    let (kvs, _) = list(&cluster.client_of(old_leader), "", true).await.expect("list");
    assert_eq!(kvs.len(), 20, "the restarted member has every write: {kvs:?}");
    cluster.shutdown().await;
}

/// Waits until every running member has purged its log up to `upto`, asking for snapshots: openraft
/// checks its snapshot policy only when entries are applied, and ignores it while a snapshot is being
/// built. With the log purged on all of them, whichever member leads when a stopped one returns must
/// send it a snapshot.
async fn purge_on_running_members(cluster: &TestCluster, upto: u64) {
    eventually(&format!("the running members to purge their logs up to {upto}"), T, || async {
        let mut all_purged = true;
        for node in cluster.nodes.values() {
            let raft = node.store().raft();
            let purged = raft.metrics().borrow().purged;
            if purged.is_none_or(|p| p.index < upto) {
                all_purged = false;
                raft.trigger().snapshot().await.expect("trigger snapshot");
            }
        }
        if all_purged {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        None
    })
    .await;
}

/// A three-member cluster with one write, and one of its followers stopped.
async fn cluster_with_a_stopped_follower(raft: RaftSettings) -> (TestCluster, u64, u64) {
    let mut cluster = TestCluster::start(3, raft).await;
    put(&cluster.client(), "first", "1").await.expect("write");
    let leader = cluster.leader(T).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("follower");
    cluster.stop(lagging).await;
    (cluster, leader, lagging)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_down_while_the_log_is_purged_catches_up_by_snapshot() {
    // openraft does not purge log a replication to the stopped member has in flight; that range is
    // at most `max_payload_entries` long, so keep it short.
    let raft = RaftSettings { snapshot_every: 20, keep_logs_after_snapshot: 0, max_payload_entries: 4, ..test_raft() };
    let (mut cluster, _, lagging) = cluster_with_a_stopped_follower(raft).await;
    let client = cluster.client();

    // Enough writes for several snapshots; the log behind them is purged.
    let mut last = 0;
    for i in 0..120 {
        last = put(&client, &format!("during/{i:03}"), &"v".repeat(100)).await.expect("write");
    }
    let purged = last - 20;
    purge_on_running_members(&cluster, purged).await;

    cluster.restart(lagging).await;
    cluster.all_applied(last, T).await;
    let m = cluster.nodes[&lagging].store().raft().metrics().borrow().clone();
    let snapshot = m.snapshot.expect("the lagging member installed a snapshot");
    assert!(snapshot.index >= purged, "snapshot {snapshot:?} covers the purged log up to {purged}");
    let (kvs, _) = list(&cluster.client_of(lagging), "", true).await.expect("list");
    assert_eq!(kvs.len(), 121);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_larger_than_the_grpc_message_limit_is_sent_as_a_chunked_snapshot() {
    let raft = RaftSettings { snapshot_every: 8, keep_logs_after_snapshot: 0, max_payload_entries: 2, ..test_raft() };
    let (mut cluster, _, lagging) = cluster_with_a_stopped_follower(raft).await;
    let client = cluster.client();
    // 10 objects of 900 KiB: about 9 MiB of state, more than twice tonic's 4 MiB default limit.
    let big = "b".repeat(900 * 1024);
    let mut last = 0;
    for i in 0..10 {
        last = put(&client, &format!("big/{i}"), &big).await.expect("write big value");
    }
    for i in 0..10 {
        last = put(&client, &format!("small/{i}"), "s").await.expect("write");
    }
    // The big entries must be purged from the leader's log, so only a snapshot can bring them.
    purge_on_running_members(&cluster, last - 10).await;
    cluster.restart(lagging).await;
    cluster.all_applied(last, Duration::from_secs(60)).await;
    assert!(cluster.nodes[&lagging].store().raft().metrics().borrow().snapshot.is_some());
    let got = get(&cluster.client_of(lagging), "big/9", true).await.expect("get").expect("present");
    assert_eq!(got.len(), big.len());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_as_learners_are_promoted_to_odd_voter_counts_and_can_be_removed() {
    let mut cluster = TestCluster::start(3, test_raft()).await;
    put(&cluster.client(), "a", "1").await.expect("write");
    let voters = |c: &TestCluster, id: u64| -> Vec<u64> {
        c.nodes[&id].store().raft().metrics().borrow().membership_config.membership().voter_ids().collect()
    };

    cluster.join(4, 2, test_raft()).await.expect("join 4");
    assert_eq!(voters(&cluster, 1).len(), 3, "4 members: 3 voters and a learner");
    let rev = put(&cluster.client(), "b", "2").await.expect("write");
    cluster.all_applied(rev, T).await;
    assert_eq!(
        get(&cluster.client_of(4), "a", true).await.expect("get"),
        Some("1".into()),
        "the learner has a full replica"
    );

    cluster.join(5, 3, test_raft()).await.expect("join 5");
    assert_eq!(voters(&cluster, 1), vec![1, 2, 3, 4, 5], "5 members: 5 voters");

    // A duplicate id is refused with a clear error, and nothing changes.
    let Err(err) = cluster.join(2, 1, test_raft()).await else { panic!("a duplicate id must be refused") };
    assert!(err.to_string().contains("member 2 already holds a certificate"), "{err}");
    assert_eq!(voters(&cluster, 1), vec![1, 2, 3, 4, 5]);

    // Removing a member keeps the voters odd: 4 members left -> 3 voters.
    let client = cluster.client();
    let resp = client
        .call(
            CallKind::Write,
            |ch| async move { ClusterClient::new(ch).remove_member(RemoveMemberRequest { id: 5 }).await },
        )
        .await
        .expect("remove member 5")
        .into_inner();
    assert_eq!(resp.voters.len(), 3, "{resp:?}");
    assert_eq!(resp.voters.len() + resp.learners.len(), 4, "{resp:?}");
    cluster.stop(5).await;
    eventually("the cluster id on every member", T, || async {
        let ids: Vec<_> = cluster
            .nodes
            .values()
            .map(|n| n.store().get_local(skiff_server::node::CLUSTER_ID_KEY).ok().flatten())
            .collect();
        ids.iter().all(|id| id.is_some()).then_some(())
    })
    .await;
    let status = client
        .call(CallKind::Read, |ch| async move { ClusterClient::new(ch).status(StatusRequest {}).await })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.members.len(), 4);
    assert!(!status.cluster_id.is_empty(), "the cluster has an id: {status:?}");
    assert!(
        status.members.iter().all(|m| m.cluster_id == status.cluster_id),
        "every member records the same cluster id: {status:?}"
    );
    // Writes go on.
    put(&client, "c", "3").await.expect("write after removal");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_every_member_and_marks_a_stopped_one_unreachable() {
    let mut cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(T).await;
    let down = (1..=3).find(|id| *id != leader).expect("follower");
    cluster.stop(down).await;
    let status = cluster
        .client_of(leader)
        .call(CallKind::Read, |ch| async move { ClusterClient::new(ch).status(StatusRequest {}).await })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.leader_id, leader);
    let roles: Vec<(u64, String)> = status.members.iter().map(|m| (m.id, m.role.clone())).collect();
    assert!(roles.contains(&(leader, "leader".into())), "{roles:?}");
    assert!(roles.contains(&(down, "unreachable".into())), "{roles:?}");
    let _ = KvClient::<tonic::transport::Channel>::new; // the kv client is used by other tests
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_member_catches_up_on_large_entries_in_batches_under_the_message_limit() {
    // No snapshot: the lagging member gets about 22 MiB of log, more than one 16 MiB append batch.
    let raft = RaftSettings { snapshot_every: 100_000, ..test_raft() };
    let (mut cluster, _, lagging) = cluster_with_a_stopped_follower(raft).await;
    let client = cluster.client();
    let big = "L".repeat(900 * 1024);
    let mut last = 0;
    for i in 0..25 {
        last = put(&client, &format!("large/{i}"), &big).await.expect("write large value");
    }
    cluster.restart(lagging).await;
    cluster.all_applied(last, Duration::from_secs(60)).await;
    let m = cluster.nodes[&lagging].store().raft().metrics().borrow().clone();
    assert!(m.snapshot.is_none(), "caught up from the log, not a snapshot");
    let (kvs, _) = list(&cluster.client_of(lagging), "large/", true).await.expect("list");
    assert_eq!(kvs.len(), 25);
    assert!(kvs.iter().all(|(_, v)| v.len() == big.len()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_through_a_lagging_follower_never_returns_a_stale_value() {
    let (cluster, links) =
        TestCluster::start_behind_proxies(3, test_raft(), skiff_server::config::AgentSettings::none()).await;
    let leader = cluster.leader(T).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    let rev = put(&cluster.direct_client(leader), "key", "old").await.expect("first write");
    cluster.all_applied(rev, T).await;

    // Nothing reaches the follower any more; the other two go on without it.
    links[&lagging].cut_inbound();
    put(&cluster.direct_client(leader), "key", "new").await.expect("write while the follower is cut off");
    let mut through_lagging = cluster.direct_client(lagging);
    through_lagging.deadline = Duration::from_secs(2);
    assert_eq!(
        get(&through_lagging, "key", true).await.expect("stale read"),
        Some("old".into()),
        "the follower lags: its own replica has the old value"
    );

    // Linearizable reads through it, while it still follows the old leader and after it has given
    // up on it (its election timeout is 0.6-1.2 s): the latest write or an error, never the old value.
    let mut answers = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let answer = get(&through_lagging, "key", false).await;
        if let Ok(value) = &answer {
            assert_eq!(value.as_deref(), Some("new"), "a linearizable read returned a stale value");
        }
        answers.push(answer.map_err(|e| e.to_string()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{} linearizable reads through the lagging follower: {} returned the latest value, the others an error",
        answers.len(),
        answers.iter().filter(|a| a.is_ok()).count()
    );
    assert!(answers.iter().any(|a| a.is_ok()), "some reads were forwarded to the leader: {answers:?}");
    cluster.shutdown().await;
}
