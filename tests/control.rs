//! The control plane in in-process clusters: controllers run on the leader only, through an API
//! that never forwards, and the garbage collector removes what lost its owner.

mod common;

use std::time::Duration;

use common::{eventually, test_raft, TestCluster};
use skiff_api::api::{Consistency, DeleteOptions, ResourceApi};
use skiff_api::kinds::ConfigMap;
use skiff_api::meta::OwnerReference;
use skiff_api::{Kind, Object, Reason};

const T: Duration = Duration::from_secs(30);

fn config_map(name: &str, owner: Option<(&str, &str)>) -> Object {
    let mut c = ConfigMap::default();
    c.metadata.name = name.into();
    if let Some((owner, uid)) = owner {
        c.metadata.owner_references.push(OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.into(),
            uid: uid.into(),
            ..Default::default()
        });
    }
    Object::ConfigMap(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_garbage_collector_removes_an_object_created_after_its_owner_was_deleted() {
    let cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(T).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let api = cluster.nodes[&follower].api().clone();
    let owner = api.create(config_map("owner", None)).await.expect("owner");
    let uid = owner.meta().uid.clone();
    // A dependant created with the owner: deleting the owner takes it along in the same write.
    api.create(config_map("with-owner", Some(("owner", &uid)))).await.expect("dependant");
    api.delete(Kind::ConfigMap, "default", "owner", &DeleteOptions::default()).await.expect("delete owner");
    let gone = api.get(Kind::ConfigMap, "default", "with-owner", Consistency::Linearizable).await;
    assert!(matches!(gone, Err(e) if e.is(Reason::NotFound)), "the cascade took the dependant along");
    // One created just after, naming the owner that is gone (as a controller racing the delete
    // would): only the garbage collector can remove it.
    api.create(config_map("late", Some(("owner", &uid)))).await.expect("late dependant");
    // And one whose owner lives: it stays.
    let living = api.create(config_map("living", None)).await.expect("living owner");
    api.create(config_map("kept", Some(("living", &living.meta().uid)))).await.expect("kept dependant");
    eventually("the garbage collector to remove the orphan", T, || async {
        let late = api.get(Kind::ConfigMap, "default", "late", Consistency::Linearizable).await;
        matches!(late, Err(e) if e.is(Reason::NotFound)).then_some(())
    })
    .await;
    let kept = api.get(Kind::ConfigMap, "default", "kept", Consistency::Linearizable).await;
    assert!(kept.is_ok(), "an object whose owner lives is kept: {kept:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_write_from_a_member_that_does_not_lead_is_refused_not_forwarded() {
    let cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(T).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let here_only = cluster.nodes[&follower].api().here_only();
    let refused = here_only.create(config_map("from-a-follower", None)).await.expect_err("refused");
    assert_eq!(refused.reason, Reason::Unavailable, "{refused}");
    assert!(refused.message.contains("no longer leads"), "{refused}");
    let leaders = cluster.nodes[&leader].api().here_only();
    leaders.create(config_map("from-the-leader", None)).await.expect("the leader's own write");
    let absent = cluster.nodes[&leader]
        .api()
        .get(Kind::ConfigMap, "default", "from-a-follower", Consistency::Linearizable)
        .await;
    assert!(matches!(absent, Err(e) if e.is(Reason::NotFound)), "nothing was forwarded");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_cluster_runs_a_pod_end_to_end_on_the_in_memory_runtime() {
    use skiff_server::config::{AgentSettings, RuntimeKind};
    let agent = AgentSettings { runtime: RuntimeKind::Memory, heartbeat_ms: 500, ..AgentSettings::default() };
    let cluster = TestCluster::start_with_agent(3, test_raft(), agent).await;
    cluster.leader(T).await;
    let api = cluster.nodes[&1].api().clone();
    eventually("three nodes registered", T, || async {
        let nodes = api.list(Kind::Node, &Default::default(), Consistency::Stale).await.ok()?;
        (nodes.items.len() == 3).then_some(())
    })
    .await;
    let mut pod = skiff_api::kinds::Pod::default();
    pod.metadata.name = "web".into();
    pod.spec.node_name = Some("node2".into());
    pod.spec.containers.push(skiff_api::kinds::pod::Container {
        name: "app".into(),
        image: "web:1".into(),
        ..Default::default()
    });
    api.apply(Object::Pod(pod), false).await.expect("apply the pod");
    let running = eventually("the pod Running and Ready on node2", T, || async {
        let Ok(Object::Pod(p)) = api.get(Kind::Pod, "default", "web", Consistency::Stale).await else { return None };
        let status = p.status?;
        let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (status.phase.as_deref() == Some("Running") && ready).then_some(status)
    })
    .await;
    assert!(running.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10.0.0.")), "{running:?}");
    // Only node2's runtime has its containers.
    let containers = |id: u64| cluster.pods[&id].as_ref().map(|p| p.containers.clone()).expect("a runtime");
    let on2 = containers(2).list(&Default::default()).await.expect("list");
    assert_eq!(on2.len(), 2, "a sandbox and the app: {on2:?}");
    assert!(containers(1).list(&Default::default()).await.expect("list").is_empty());
    // node2's metrics say what happened. They count pods from node2's own replica, which applies
    // the Running status a moment after the member the pod was read from (seen in CI): wait for it.
    let node2_http = cluster.nodes[&2].http_addr().expect("an HTTP listener");
    let figures = [
        "skiff_raft_term ",
        "skiff_raft_leader ",
        "skiff_raft_last_log_index ",
        "skiff_raft_applied_index ",
        "skiff_raft_proposal_batch_size_bucket",
        "skiff_api_calls_total{call=\"update-status\",code=\"OK\"}",
        "skiff_api_call_seconds_bucket",
        "skiff_api_open_watches ",
        "skiff_node_pods{phase=\"Running\"} 1",
        "skiff_agent_actions_total{action=\"start-container\"} 1",
    ];
    let metrics = eventually("node2's metrics to show the running pod", T, || async {
        let metrics = http_get(node2_http, "/metrics").await;
        figures.iter().all(|figure| metrics.contains(figure)).then_some(metrics)
    })
    .await;
    for figure in figures {
        assert!(metrics.contains(figure), "{figure} missing in:\n{metrics}");
    }
    // Deleted gracefully: its agent stops the containers, then the object goes.
    api.delete(Kind::Pod, "default", "web", &DeleteOptions::default()).await.expect("delete");
    eventually("the pod gone and its containers removed", T, || async {
        let gone = api.get(Kind::Pod, "default", "web", Consistency::Linearizable).await.is_err();
        let empty = containers(2).list(&Default::default()).await.ok()?.is_empty();
        (gone && empty).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

/// The body of `GET path` from `addr`.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: skiff\r\n\r\n").as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// A ReplicaSet of `replicas` pods labelled app=web.
fn replica_set(replicas: i32) -> Object {
    let mut rs = skiff_api::kinds::ReplicaSet::default();
    rs.metadata.name = "web".into();
    rs.spec.replicas = Some(replicas);
    rs.spec.selector.match_labels.insert("app".into(), "web".into());
    rs.spec.template.metadata.labels.insert("app".into(), "web".into());
    rs.spec.template.spec.containers.push(skiff_api::kinds::pod::Container {
        name: "app".into(),
        image: "web:1".into(),
        ..Default::default()
    });
    Object::ReplicaSet(rs)
}

/// The pods of the set `web` that are not being deleted, as (name, node, ready).
async fn web_pods(api: &skiff_apiserver::ApiServer) -> Vec<(String, Option<String>, bool)> {
    let Ok(list) = api.list(Kind::Pod, &Default::default(), Consistency::Stale).await else { return Vec::new() };
    list.items
        .into_iter()
        .filter_map(|o| match o {
            Object::Pod(p) if p.metadata.deletion_timestamp.is_none() => {
                let ready = p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                });
                Some((p.metadata.name, p.spec.node_name, ready))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_is_scheduled_evenly_run_replaced_and_scaled_by_the_leader() {
    use skiff_server::config::{AgentSettings, RuntimeKind};
    let agent = AgentSettings { runtime: RuntimeKind::Memory, heartbeat_ms: 500, ..AgentSettings::default() };
    let cluster = TestCluster::start_with_agent(3, test_raft(), agent).await;
    cluster.leader(T).await;
    let api = cluster.nodes[&1].api().clone();
    eventually("three nodes registered", T, || async {
        let nodes = api.list(Kind::Node, &Default::default(), Consistency::Stale).await.ok()?;
        (nodes.items.len() == 3).then_some(())
    })
    .await;
    api.apply(replica_set(6), false).await.expect("apply the replica set");
    let pods = eventually("six pods Running and Ready", T, || async {
        let pods = web_pods(&api).await;
        (pods.len() == 6 && pods.iter().all(|(_, _, ready)| *ready)).then_some(pods)
    })
    .await;
    let mut per_node = std::collections::BTreeMap::new();
    for (_, node, _) in &pods {
        *per_node.entry(node.clone().expect("bound")).or_insert(0) += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2], "spread: {per_node:?}");
    eventually("the set's status counts six ready", T, || async {
        let Ok(Object::ReplicaSet(rs)) = api.get(Kind::ReplicaSet, "default", "web", Consistency::Stale).await else {
            return None;
        };
        let s = rs.status?;
        (s.replicas == 6 && s.ready_replicas == Some(6) && s.available_replicas == Some(6)).then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = pods[0].0.clone();
    api.delete(Kind::Pod, "default", &victim, &DeleteOptions::default()).await.expect("delete a pod");
    eventually("a replacement", T, || async {
        let pods = web_pods(&api).await;
        (pods.len() == 6 && pods.iter().all(|(n, _, ready)| *n != victim && *ready)).then_some(())
    })
    .await;

    // Scaled down to two, never below.
    api.apply(replica_set(2), false).await.expect("scale down");
    eventually("two pods left", T, || async {
        let pods = web_pods(&api).await;
        (pods.len() == 2).then_some(())
    })
    .await;
    common::consistently("still two", Duration::from_secs(1), || async { web_pods(&api).await.len() == 2 }).await;
    let events = api.list(Kind::Event, &Default::default(), Consistency::Stale).await.expect("events");
    let reasons: std::collections::BTreeSet<String> =
        events.items.iter().filter_map(|o| if let Object::Event(e) = o { e.reason.clone() } else { None }).collect();
    for reason in ["Scheduled", "SuccessfulCreate", "SuccessfulDelete"] {
        assert!(reasons.contains(reason), "{reason} in {reasons:?}");
    }
    cluster.shutdown().await;
}

fn deployment(image: &str) -> Object {
    let mut d = skiff_api::kinds::Deployment::default();
    d.metadata.name = "web".into();
    d.spec.replicas = Some(4);
    d.spec.selector.match_labels.insert("app".into(), "web".into());
    d.spec.template.metadata.labels.insert("app".into(), "web".into());
    d.spec.template.spec.containers.push(skiff_api::kinds::pod::Container {
        name: "app".into(),
        image: image.into(),
        ..Default::default()
    });
    Object::Deployment(d)
}

/// The deployment `web`'s status, when it reports `image` fully rolled out and available.
async fn rolled_out(api: &skiff_apiserver::ApiServer, replicas: i32) -> Option<()> {
    let Ok(Object::Deployment(d)) = api.get(Kind::Deployment, "default", "web", Consistency::Stale).await else {
        return None;
    };
    let s = d.status?;
    let progressed =
        s.conditions.iter().any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    let available = s.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True");
    (progressed
        && available
        && s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.available_replicas == Some(replicas)
        && s.replicas == Some(replicas))
    .then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rolls_out_through_replica_sets_and_finishes_under_a_new_leader() {
    use skiff_server::config::{AgentSettings, RuntimeKind};
    let agent = AgentSettings { runtime: RuntimeKind::Memory, heartbeat_ms: 500, ..AgentSettings::default() };
    let mut cluster = TestCluster::start_with_agent(3, test_raft(), agent).await;
    let leader = cluster.leader(T).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let api = cluster.nodes[&follower].api().clone();
    eventually("three nodes registered", T, || async {
        let nodes = api.list(Kind::Node, &Default::default(), Consistency::Stale).await.ok()?;
        (nodes.items.len() == 3).then_some(())
    })
    .await;
    // The pods run on the followers only (the leader's node is cordoned): this is about the
    // control plane moving, not about a node's pods being lost.
    let Ok(Object::Node(mut node)) = api.get(Kind::Node, "", &format!("node{leader}"), Consistency::Linearizable).await
    else {
        panic!("the leader's node")
    };
    node.spec.unschedulable = Some(true);
    api.apply(Object::Node(node), false).await.expect("cordon the leader's node");
    api.apply(deployment("web:1"), false).await.expect("apply");
    eventually("web:1 rolled out", T, || rolled_out(&api, 4)).await;
    // The same manifest again changes nothing (the revision annotation the controller added stays).
    let (_, outcome) = api.apply(deployment("web:1"), false).await.expect("apply again");
    assert_eq!(outcome, skiff_api::api::ApplyOutcome::Unchanged);

    // A new image; the leader is killed while it rolls out, and the new leader finishes.
    api.apply(deployment("web:2"), false).await.expect("set image");
    eventually("the rollout under way", T, || async {
        let sets = api.list(Kind::ReplicaSet, &Default::default(), Consistency::Stale).await.ok()?;
        (sets.items.len() == 2).then_some(())
    })
    .await;
    cluster.stop(leader).await;
    let never_more_than = 4 + 1; // replicas + maxSurge (25% of 4, rounded up)
    let watch_ceiling = async {
        loop {
            let pods = web_pods(&api).await;
            assert!(pods.len() <= never_more_than, "{} pods: {pods:?}", pods.len());
            // replicas - maxUnavailable (25% of 4, rounded down) stay available throughout.
            let ready = pods.iter().filter(|(_, _, ready)| *ready).count();
            assert!(ready >= 4 - 1, "{ready} ready pods: {pods:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = watch_ceiling => {}
        _ = eventually("web:2 rolled out under the new leader", T, || rolled_out(&api, 4)) => {}
    }
    let sets = api.list(Kind::ReplicaSet, &Default::default(), Consistency::Linearizable).await.expect("sets");
    let live: Vec<(String, i32)> = sets
        .items
        .iter()
        .filter_map(|o| match o {
            Object::ReplicaSet(rs) => {
                Some((rs.spec.template.spec.containers[0].image.clone(), rs.spec.replicas.unwrap_or(0)))
            }
            _ => None,
        })
        .collect();
    assert!(live.contains(&("web:2".to_string(), 4)) && live.contains(&("web:1".to_string(), 0)), "{live:?}");
    cluster.shutdown().await;
}

/// The node's Ready condition status and its taints' effects.
async fn node_state(api: &skiff_apiserver::ApiServer, name: &str) -> Option<(String, Vec<String>)> {
    let Ok(Object::Node(n)) = api.get(Kind::Node, "", name, Consistency::Stale).await else { return None };
    let ready = n.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?.status;
    let taints = n.spec.taints.into_iter().map(|t| format!("{}:{}", t.key, t.effect)).collect();
    Some((ready, taints))
}

/// Once the three members' nodes are registered, applies the set `web` of six pods and waits until
/// all are Running and Ready; the names of the two on `node`.
async fn six_pods_spread_over_three_nodes(
    api: &skiff_apiserver::ApiServer,
    node: &str,
) -> std::collections::BTreeSet<String> {
    eventually("three nodes registered", T, || async {
        let nodes = api.list(Kind::Node, &Default::default(), Consistency::Stale).await.ok()?;
        (nodes.items.len() == 3).then_some(())
    })
    .await;
    api.apply(replica_set(6), false).await.expect("apply the replica set");
    let before = eventually("six pods Running and Ready", T, || async {
        let pods = web_pods(api).await;
        (pods.len() == 6 && pods.iter().all(|(_, _, ready)| *ready)).then_some(pods)
    })
    .await;
    let on_node: std::collections::BTreeSet<String> =
        before.iter().filter(|(_, n, _)| n.as_deref() == Some(node)).map(|(name, _, _)| name.clone()).collect();
    assert_eq!(on_node.len(), 2, "spread evenly: {before:?}");
    on_node
}

/// Waits until none of `evicted` is left, then checks that six pods stay Running and Ready.
async fn evicted_gone_and_six_ready(api: &skiff_apiserver::ApiServer, evicted: &std::collections::BTreeSet<String>) {
    eventually("the evicted pods are gone", T, || async {
        let list = api.list(Kind::Pod, &Default::default(), Consistency::Stale).await.ok()?;
        list.items.iter().all(|o| !evicted.contains(&o.meta().name)).then_some(())
    })
    .await;
    common::consistently("six pods, all ready", Duration::from_secs(1), || async {
        let pods = web_pods(api).await;
        pods.len() == 6 && pods.iter().all(|(_, _, ready)| *ready)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_goes_not_ready_its_pods_are_replaced_elsewhere_and_its_copies_removed_on_return() {
    use skiff_server::config::{AgentSettings, RuntimeKind};
    let agent = AgentSettings { runtime: RuntimeKind::Memory, ..AgentSettings::default() };
    let mut cluster = TestCluster::start_with_agent(3, test_raft(), agent).await;
    let leader = cluster.leader(T).await;
    let lost = if leader == 3 { 2 } else { 3 };
    let lost_name = format!("node{lost}");
    let api = cluster.nodes[&leader].api().clone();
    let on_lost = six_pods_spread_over_three_nodes(&api, &lost_name).await;

    cluster.stop(lost).await;
    let api = cluster.nodes[&leader].api().clone();
    eventually("the silent node is NotReady (Unknown) and tainted unreachable", T, || async {
        let (ready, taints) = node_state(&api, &lost_name).await?;
        (ready == "Unknown"
            && taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
            && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()))
        .then_some(())
    })
    .await;
    let replaced = eventually("six ready pods again, none on the lost node", T, || async {
        let pods = web_pods(&api).await;
        (pods.len() == 6 && pods.iter().all(|(_, node, ready)| *ready && node.as_deref() != Some(&lost_name)))
            .then_some(pods)
    })
    .await;
    let names: Vec<&String> = replaced.iter().map(|(n, _, _)| n).collect();
    assert!(on_lost.iter().all(|p| !names.contains(&p)), "the lost node's pods were replaced: {names:?}");
    let events = api.list(Kind::Event, &Default::default(), Consistency::Stale).await.expect("events");
    let reasons: std::collections::BTreeSet<String> =
        events.items.iter().filter_map(|o| if let Object::Event(e) = o { e.reason.clone() } else { None }).collect();
    for reason in ["NodeNotReady", "TaintManagerEviction"] {
        assert!(reasons.contains(reason), "{reason} in {reasons:?}");
    }

    // It returns: Ready again, untainted, and the copies it still runs are stopped (their pods
    // were deleted while it was away), so the set never counts more than six.
    cluster.restart(lost).await;
    eventually("the node is Ready and untainted again", T, || async {
        let (ready, taints) = node_state(&api, &lost_name).await?;
        (ready == "True" && taints.is_empty()).then_some(())
    })
    .await;
    evicted_gone_and_six_ready(&api, &on_lost).await;
    cluster.shutdown().await;
}

/// The names of the pods whose containers run on `runtime`.
async fn running_here(runtime: &skiff_server::agent_api::PodRuntime) -> std::collections::BTreeSet<String> {
    use skiff_agent::runtime::ContainerState;
    let Ok(containers) = runtime.containers.list(&Default::default()).await else { return Default::default() };
    containers
        .into_iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .filter_map(|c| c.labels.get(skiff_agent::pod_spec::LABEL_POD_NAME).cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_keeps_its_pods_running_while_they_are_replaced_and_stops_them_when_it_reconnects() {
    use skiff_server::config::{AgentSettings, RuntimeKind};
    let agent = AgentSettings { runtime: RuntimeKind::Memory, ..AgentSettings::default() };
    let (cluster, links) = TestCluster::start_behind_proxies(3, test_raft(), agent).await;
    let leader = cluster.leader(T).await;
    let cut = if leader == 3 { 2 } else { 3 };
    let cut_name = format!("node{cut}");
    let api = cluster.nodes[&leader].api().clone();
    let on_cut = six_pods_spread_over_three_nodes(&api, &cut_name).await;
    let runtime = cluster.pods[&cut].clone().expect("the member runs pods");
    assert_eq!(running_here(&runtime).await, on_cut);

    // A partition: the member neither hears from nor reaches anyone; it keeps running.
    links[&cut].cut();
    eventually("the cut-off node is NotReady (Unknown) and tainted unreachable", T, || async {
        let (ready, taints) = node_state(&api, &cut_name).await?;
        (ready == "Unknown" && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())).then_some(())
    })
    .await;
    eventually("six ready pods again, none on the cut-off node", T, || async {
        let pods = web_pods(&api).await;
        (pods.len() == 6 && pods.iter().all(|(_, node, ready)| *ready && node.as_deref() != Some(&cut_name)))
            .then_some(())
    })
    .await;
    assert_eq!(running_here(&runtime).await, on_cut, "the cut-off member keeps its pods running, as Kubernetes does");

    // It reconnects: Ready again, and it stops the copies whose pods were deleted meanwhile.
    links[&cut].heal();
    eventually("the node is Ready and untainted again", T, || async {
        let (ready, taints) = node_state(&api, &cut_name).await?;
        (ready == "True" && taints.is_empty()).then_some(())
    })
    .await;
    eventually("the stale copies are stopped", T, || async { running_here(&runtime).await.is_empty().then_some(()) })
        .await;
    evicted_gone_and_six_ready(&api, &on_cut).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pods_spread_evenly_over_ten_simulated_nodes() {
    let cluster = TestCluster::start(3, test_raft()).await; // members without nodes of their own
    cluster.leader(T).await;
    let api = cluster.nodes[&1].api().clone();
    let names: Vec<String> = (0..10).map(|i| format!("sim-{i}")).collect();
    for name in &names {
        let mut node = skiff_api::kinds::Node::default();
        node.metadata.name = name.clone();
        api.create(Object::Node(node.clone())).await.expect("create node");
        let mut status = skiff_api::kinds::node::NodeStatus::default();
        for (k, v) in [("cpu", "8"), ("memory", "32Gi"), ("pods", "110")] {
            status.allocatable.insert(k.into(), skiff_api::quantity::Quantity::parse(v).expect("quantity"));
        }
        status.conditions.push(skiff_api::kinds::node::NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
        node.status = Some(status);
        api.update_status(Object::Node(node)).await.expect("node status");
    }
    // The simulated nodes renew as their agents would, so the leader keeps them in service.
    let renewing = tokio::spawn({
        let (api, names) = (api.clone(), names.clone());
        async move {
            loop {
                for name in &names {
                    let _ = api.renew_node(name).await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    api.apply(replica_set(100), false).await.expect("apply the replica set");
    let per_node = eventually("a hundred pods bound", T, || async {
        let list = api.list(Kind::Pod, &Default::default(), Consistency::Stale).await.ok()?;
        let mut per_node = std::collections::BTreeMap::new();
        for o in &list.items {
            if let Object::Pod(p) = o {
                *per_node.entry(p.spec.node_name.clone()?).or_insert(0) += 1;
            }
        }
        (list.items.len() == 100 && per_node.values().sum::<i32>() == 100).then_some(per_node)
    })
    .await;
    assert_eq!(per_node.keys().cloned().collect::<Vec<_>>(), names, "every node got pods");
    assert!(per_node.values().all(|n| *n == 10), "ten per node: {per_node:?}");
    renewing.abort();
    cluster.shutdown().await;
}
