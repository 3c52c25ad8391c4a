//! Issue 12, builds 1 and 2: who may talk to a member. Without credentials, with another cluster's
//! CA, with read-only credentials, with a forged Raft message from a non-member: refused, and the
//! cluster keeps working and loses nothing. A member joins with the token, not without it, not with
//! a rotated one; member certificates are renewed before they expire. In-process members on
//! loopback, no Docker.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{get, put, test_raft, TestCluster};
use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::containers_client::ContainersClient;
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::security_client::SecurityClient;
use skiff_proto::api::{
    ExecRequest, IssueCredentialRequest, JoinTokenRequest, PutRequest, RemoveMemberRequest, StatusRequest,
};
use skiff_proto::member::members_client::MembersClient;
use skiff_proto::member::ForwardRequest;
use skiff_proto::raft::raft_client::RaftClient;
use skiff_proto::raft::RaftMessage;
use skiff_proto::transport::Connector;
use tonic::Code;

const T: Duration = Duration::from_secs(20);

async fn raw_put(client: &Client, key: &str) -> Result<u64, ClientError> {
    let req = PutRequest { key: key.into(), value: b"forged".to_vec(), expected_revision: None };
    client
        .call(CallKind::Write, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await.map(|r| r.into_inner().revision) }
        })
        .await
}

/// Credentials for `role`, issued by the cluster to an admin.
async fn issued(cluster: &TestCluster, name: &str, role: &str) -> skiff_tls::Credentials {
    let (key, csr_pem) = skiff_tls::ca::new_key_and_csr().expect("CSR");
    let req = IssueCredentialRequest { name: name.into(), role: role.into(), csr_pem };
    let resp = cluster
        .client()
        .call(CallKind::Read, |ch| {
            let req = req.clone();
            async move { SecurityClient::new(ch).issue_credential(req).await.map(|r| r.into_inner()) }
        })
        .await
        .expect("an admin gets credentials issued");
    skiff_tls::Credentials { members: Vec::new(), ca: resp.ca_pem, cert: resp.cert_pem, key }
}

fn client_with(cluster: &TestCluster, connector: Arc<dyn Connector>) -> Client {
    let mut client = Client::with_connector(&[cluster.addr(1)], connector).expect("client");
    client.deadline = Duration::from_secs(2);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_credentials_or_from_another_cluster_are_refused_and_change_nothing() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(T).await;
    put(&cluster.client(), "kept", "1").await.expect("an admin writes");

    // No certificate: the handshake succeeds (joining needs none), the call does not.
    let anonymous = client_with(&cluster, cluster.anonymous());
    let err = raw_put(&anonymous, "forged").await.expect_err("refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("--credentials"), "the error says what to do: {err}");

    // Another cluster's CA and admin certificate: this cluster's listener refuses the handshake,
    // and the client does not trust the member either.
    let other = tempfile::tempdir().expect("tempdir");
    common::stand_in_tls("127.0.0.1:1", other.path());
    let foreign = skiff_tls::Credentials::load(&other.path().join("admin.conf")).expect("foreign credentials");
    let foreign = client_with(&cluster, Arc::new(foreign.connector().expect("connector")));
    let err = raw_put(&foreign, "forged").await.expect_err("refused");
    assert_eq!(err.code(), Code::Unavailable, "never sent: {err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");

    // Nothing was written; the cluster goes on.
    assert_eq!(get(&cluster.client(), "forged", false).await.expect("read"), None);
    put(&cluster.client(), "after", "2").await.expect("an admin still writes");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_reads_but_cannot_write_run_or_change_the_cluster() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(T).await;
    put(&cluster.client(), "kept", "1").await.expect("an admin writes");
    let ro = issued(&cluster, "auditor", "read-only").await;
    let ro = client_with(&cluster, Arc::new(ro.connector().expect("connector")));

    assert_eq!(get(&ro, "kept", false).await.expect("a read"), Some("1".into()));
    let status = ro.call(CallKind::Read, |ch| async move { ClusterClient::new(ch).status(StatusRequest {}).await });
    assert!(status.await.is_ok(), "status is a read");

    let denied = |e: ClientError| {
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("read-only"), "the error names the role: {e}");
    };
    denied(raw_put(&ro, "kept").await.expect_err("a write"));
    let remove = ro.call(CallKind::Write, |ch| async move {
        ClusterClient::new(ch).remove_member(RemoveMemberRequest { id: 3 }).await
    });
    denied(remove.await.expect_err("a membership change"));
    let exec = ro.call(CallKind::Write, |ch| async move {
        let req = ExecRequest { pod: "any".into(), command: vec!["true".into()], ..Default::default() };
        ContainersClient::new(ch).exec(req).await
    });
    denied(exec.await.expect_err("an exec"));
    let token = ro.call(CallKind::Read, |ch| async move {
        SecurityClient::new(ch).join_token(JoinTokenRequest { rotate: false }).await
    });
    denied(token.await.expect_err("the join token"));
    let escalate = ro.call(CallKind::Read, |ch| async move {
        let (_, csr_pem) = skiff_tls::ca::new_key_and_csr().expect("CSR");
        let req = IssueCredentialRequest { name: "me".into(), role: "admin".into(), csr_pem };
        SecurityClient::new(ch).issue_credential(req).await
    });
    denied(escalate.await.expect_err("admin credentials"));

    // Nothing changed.
    assert_eq!(get(&cluster.client(), "kept", false).await.expect("read"), Some("1".into()));
    let voters = cluster.nodes[&1].store().raft().metrics().borrow().membership_config.membership().voter_ids().count();
    assert_eq!(voters, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_and_forwarding_are_for_members_only() {
    let cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(T).await;
    let follower = cluster.configs.keys().copied().find(|id| *id != leader).expect("a follower");
    let addr = cluster.addr(follower);
    // A vote request for a huge term: were it accepted, the follower would depose the leader.
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1 << 40, 99), None);
    let message = RaftMessage { data: skiff_store::codec::encode(&vote).expect("encode"), error: Vec::new() };
    let admin = cluster.admin().channel(&addr).expect("channel");
    let err = RaftClient::new(admin.clone()).vote(message.clone()).await.expect_err("an admin is no member");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let anonymous = cluster.anonymous().channel(&addr).expect("channel");
    let err = RaftClient::new(anonymous).vote(message).await.expect_err("no certificate");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let forward = ForwardRequest { call: "kv-write".into(), payload: Vec::new() };
    let err = MembersClient::new(admin).forward(forward).await.expect_err("forwarding is for members");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // The leader stayed the leader, in the same term, and writes go on.
    assert_eq!(cluster.leader(T).await, leader);
    let term = cluster.nodes[&follower].store().raft().metrics().borrow().current_term;
    assert!(term < 1 << 40, "the forged term was not taken: {term}");
    put(&cluster.client(), "after", "1").await.expect("writes go on");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_with_the_token_and_not_without_it_or_with_a_rotated_one() {
    let mut cluster = TestCluster::start(1, test_raft()).await;
    cluster.leader(T).await;
    let token = |client: Client, rotate: bool| async move {
        let resp = client
            .call(CallKind::Write, |ch| async move {
                SecurityClient::new(ch).join_token(JoinTokenRequest { rotate }).await.map(|r| r.into_inner())
            })
            .await
            .expect("the join token");
        resp.token
    };
    let first = token(cluster.client(), false).await;
    assert!(first.starts_with("SKIFF-1-"), "{first}");

    let err = cluster.join_with_token(2, 1, test_raft(), None).await.expect_err("no token");
    assert!(err.to_string().contains("SKIFF_JOIN_TOKEN"), "the error says what to do: {err}");
    let wrong = "f".repeat(32);
    let err = cluster.join_with_token(2, 1, test_raft(), Some(wrong)).await.expect_err("a wrong secret");
    assert!(err.to_string().contains("join token is not valid"), "{err}");

    cluster.join_with_token(2, 1, test_raft(), Some(first.clone())).await.expect("joins with the token");
    put(&cluster.client(), "joined", "1").await.expect("writes go on");

    let second = token(cluster.client(), true).await;
    assert_ne!(second, first, "rotating replaces the secret");
    let err = cluster.join_with_token(3, 1, test_raft(), Some(first)).await.expect_err("a rotated token");
    assert!(err.to_string().contains("join token is not valid"), "{err}");
    cluster.join_with_token(3, 1, test_raft(), Some(second)).await.expect("joins with the new token");
    let voters = cluster.nodes[&1].store().raft().metrics().borrow().membership_config.membership().voter_ids().count();
    assert_eq!(voters, 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_certificates_are_renewed_before_they_expire() {
    let validity = 12;
    let mut cluster = TestCluster::start_with(2, test_raft(), skiff_server::config::AgentSettings::none(), &|c| {
        c.security.member_cert_secs = validity;
    })
    .await;
    cluster.leader(T).await;
    let cert = |id: u64| {
        let dir = cluster.configs[&id].data_dir.join("tls");
        skiff_tls::Identity::load_dir(&dir).expect("read").expect("a certificate").cert_pem
    };
    let before = cert(2);
    let renewed = common::eventually("member 2's certificate renewed", T, || async {
        let now = cert(2);
        (now != before).then_some(now)
    })
    .await;
    let (not_after, _) = skiff_tls::pem::validity(&renewed).expect("validity");
    let (old_not_after, _) = skiff_tls::pem::validity(&before).expect("validity");
    assert!(not_after > old_not_after, "the new certificate lasts longer");
    // Past the first certificates' expiry, new connections (a restarted member) still get in.
    common::eventually("the first certificates to expire", T, || async {
        (std::time::SystemTime::now() > old_not_after + Duration::from_secs(1)).then_some(())
    })
    .await;
    cluster.stop(2).await;
    cluster.restart(2).await;
    let rev = put(&cluster.client(), "after-renewal", "1").await.expect("writes go on");
    cluster.all_applied(rev, T).await;
    cluster.shutdown().await;
}
